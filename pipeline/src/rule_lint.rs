//! `crowsnest rules lint`: what a rule needs before it ships, checked without running it. It
//! plans rules with the engine, so it sits above it (the engine reads rules, not the other way).
//!
//! Errors: missing metadata the SOC relies on (description, false-positive notes, entities,
//! suppression, MITRE ids, Threat Matrix cells), names outside the catalog, no positive or no
//! negative test case, and SQL that does not plan — a column not in the table, a list that does
//! not exist, an entity that is not an output column. Warnings: things worth a look.

use std::fmt;

use crate::engine::{Engine, EngineOptions};
use crate::rules::catalog::{is_control, is_threat_matrix_cell};
use crate::rules::{Rule, RuleSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Warning,
    Error,
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub rule_id: String,
    pub level: Level,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        write!(f, "{level}: {}", self.message)
    }
}

/// Every finding for every rule of the set, rule by rule.
pub fn lint(set: &RuleSet) -> Vec<Finding> {
    set.rules.iter().flat_map(|r| lint_rule(set, r)).collect()
}

fn lint_rule(set: &RuleSet, r: &Rule) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut error = |m: String| out.push(Finding { rule_id: r.id.clone(), level: Level::Error, message: m });
    if r.description.trim().is_empty() {
        error("no description: say what the rule detects and why it matters".into());
    }
    if r.false_positives.trim().is_empty() {
        error("no false_positives: name the benign causes and how to tune them".into());
    }
    if r.entities.is_empty() {
        error("no entities: they key dedup and suppression and become Sentinel entities".into());
    }
    if r.suppress.is_none() {
        error("no suppress period: without one a noisy entity floods the SOC".into());
    }
    if r.mitre.is_empty() {
        error("no mitre technique ids".into());
    }
    if r.threat_matrix.is_empty() {
        error("no threat_matrix cell (Microsoft Threat Matrix for Kubernetes)".into());
    }
    for cell in r.threat_matrix.iter().filter(|c| !is_threat_matrix_cell(c)) {
        error(format!("threat_matrix {cell:?} is not a cell of the Threat Matrix for Kubernetes (see `crowsnest rules coverage`)"));
    }
    for c in r.controls.iter().filter(|c| !is_control(c)) {
        error(format!("controls {c:?} is not a known control id (see `crowsnest rules coverage`)"));
    }
    if !r.tests.iter().any(|t| t.expect > 0) {
        error("no positive test case (expect > 0)".into());
    }
    if !r.tests.iter().any(|t| t.expect == 0) {
        error("no negative test case (expect: 0)".into());
    }
    // Planning checks columns, lists, functions, entities and the rule's shape.
    let single = RuleSet { rules: vec![r.clone()], lists: set.lists.clone(), dir: set.dir.clone() };
    if let Err(e) = Engine::new(&single, &EngineOptions::default()) {
        error(plan_message(&format!("{e:#}"), &r.id));
    }
    let mut warn = |m: String| out.push(Finding { rule_id: r.id.clone(), level: Level::Warning, message: m });
    if r.controls.is_empty() {
        warn("no controls: the rule counts for no hardening control in `rules coverage`".into());
    }
    if !r.tests.iter().any(|t| t.envelope) {
        warn("no test case uses the AKS envelope (envelope: true)".into());
    }
    if r.title.len() > 100 {
        warn("the title is over 100 characters: alerts and Sentinel incident titles get cut".into());
    }
    out
}

/// The planner's message, without the engine's "N rule(s) do not plan" wrapper and with
/// DataFusion's list of every valid field cut (the table has 40): `crowsnest schema` shows it.
fn plan_message(full: &str, id: &str) -> String {
    let msg = full.split_once(&format!("{id} (")).and_then(|(_, rest)| rest.split_once("): ")).map_or(full, |(_, m)| m);
    let msg = match msg.find("Valid fields are") {
        Some(i) => format!("{} (`crowsnest schema kube_audit` lists the columns)", msg[..i].trim_end_matches(['.', ' ', '\n'])),
        None => msg.to_string(),
    };
    let msg = msg.replace("kube_audit.", "");
    format!("does not plan: {}", msg.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn set(rule: &str) -> RuleSet {
        let lists = vec![(PathBuf::from("l.yaml"), "name: admins\nvalues: [alice]\n".to_string())];
        RuleSet::from_texts(&PathBuf::from("t"), vec![(PathBuf::from("r.yaml"), rule.to_string())], lists).unwrap()
    }

    #[test]
    fn a_bare_rule_gets_every_metadata_error_and_an_unknown_column_is_named() {
        let findings = lint(&set("id: X-1\ntitle: t\nseverity: low\nquery: SELECT user_nme FROM kube_audit\n"));
        let errors: Vec<String> = findings.iter().filter(|f| f.level == Level::Error).map(|f| f.message.clone()).collect();
        for want in [
            "no description",
            "no false_positives",
            "no entities",
            "no suppress",
            "no mitre",
            "no threat_matrix",
            "no positive",
            "no negative",
            "user_nme",
        ] {
            assert!(errors.iter().any(|e| e.contains(want)), "{want} missing from {errors:#?}");
        }
        assert!(!errors.iter().any(|e| e.contains("Valid fields are")), "{errors:#?}");
    }

    #[test]
    fn catalog_names_are_checked() {
        let rule = "id: X-2\ntitle: t\nseverity: low\nthreat_matrix: [Execution - Exec into pod]\ncontrols: [exec]\nquery: SELECT user_name FROM kube_audit\n";
        let findings = lint(&set(rule));
        assert!(findings.iter().any(|f| f.message.contains("Exec into pod")));
        assert!(findings.iter().any(|f| f.message.contains("\"exec\"")));
    }
}
