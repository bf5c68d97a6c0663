//! `crowsnest rules coverage`: which MITRE ATT&CK techniques, Threat Matrix cells and hardening
//! controls the loaded rules cover, and which controls have no rule yet.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::catalog::{CONTROLS, THREAT_MATRIX};
use super::RuleSet;

pub struct Coverage {
    /// Technique id → rules.
    pub mitre: BTreeMap<String, Vec<String>>,
    /// Every Threat Matrix cell, in matrix order, with its rules (empty: not covered).
    pub threat_matrix: Vec<(&'static str, Vec<String>)>,
    /// Every control, with its description and rules.
    pub controls: Vec<(&'static str, &'static str, Vec<String>)>,
}

impl Coverage {
    pub fn of(set: &RuleSet) -> Coverage {
        let mut mitre: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &set.rules {
            for t in &r.mitre {
                mitre.entry(t.clone()).or_default().push(r.id.clone());
            }
        }
        let rules_with = |f: &dyn Fn(&super::Rule) -> bool| set.rules.iter().filter(|r| f(r)).map(|r| r.id.clone()).collect::<Vec<_>>();
        let threat_matrix = THREAT_MATRIX.iter().map(|&cell| (cell, rules_with(&|r| r.threat_matrix.iter().any(|c| c == cell)))).collect();
        let controls = CONTROLS.iter().map(|&(id, what)| (id, what, rules_with(&|r| r.controls.iter().any(|c| c == id)))).collect();
        Coverage { mitre, threat_matrix, controls }
    }

    pub fn uncovered_controls(&self) -> Vec<&'static str> {
        self.controls.iter().filter(|(_, _, r)| r.is_empty()).map(|(id, _, _)| *id).collect()
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let covered = |v: &[(&str, Vec<String>)]| v.iter().filter(|(_, r)| !r.is_empty()).count();
        let _ = writeln!(s, "MITRE ATT&CK techniques: {}", self.mitre.len());
        for (t, rules) in &self.mitre {
            let _ = writeln!(s, "  {t:<11} {}", rules.join(", "));
        }
        let _ = writeln!(s, "\nThreat Matrix for Kubernetes: {} of {} cells", covered(&self.threat_matrix), self.threat_matrix.len());
        for (cell, rules) in &self.threat_matrix {
            let by = if rules.is_empty() { "-".to_string() } else { rules.join(", ") };
            let _ = writeln!(s, "  {cell:<68} {by}");
        }
        let done = self.controls.iter().filter(|(_, _, r)| !r.is_empty()).count();
        let _ = writeln!(s, "\nHardening controls: {done} of {}", self.controls.len());
        for (id, what, rules) in &self.controls {
            let by = if rules.is_empty() { "NO RULE".to_string() } else { rules.join(", ") };
            let _ = writeln!(s, "  {id:<30} {by:<40} {what}");
        }
        let missing = self.uncovered_controls();
        if missing.is_empty() {
            let _ = writeln!(s, "\nevery control has a rule");
        } else {
            let _ = writeln!(s, "\ncontrols with no rule yet: {}", missing.join(", "));
        }
        s
    }
}
