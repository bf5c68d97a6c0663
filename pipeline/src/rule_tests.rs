//! The runner behind `crowsnest rules test`: every rule's own test cases (see
//! [`crate::rules::test_case`]) through the real decoder, engine and alert router, in memory.

use std::collections::HashMap;

use anyhow::{bail, Result};
use serde_json::Value;

use crate::alert::Alert;
use crate::decode::{Decoder, Origin};
use crate::engine::{Engine, EngineOptions};
use crate::rules::test_case::{expand_events, to_documents};
use crate::rules::{Rule, RuleSet};
use crate::sink::router::AlertRouter;

/// Runs documents through the decoder, an engine and a router, as the pipeline does, in memory.
pub fn evaluate(engine: &mut Engine, router: &mut AlertRouter, docs: &[String]) -> Result<Vec<Alert>> {
    let mut decoder = Decoder::new();
    for (i, d) in docs.iter().enumerate() {
        decoder.decode(Origin { source: "test", unit: "document", index: i as u64 + 1 }, d.as_bytes());
    }
    if let Some(dl) = decoder.dead_letters.first() {
        bail!("test input is not valid ({} at {}: {})", dl.reason.as_str(), dl.position, dl.detail);
    }
    let mut alerts = Vec::new();
    alerts.extend(router.route(engine.process_chunk(&decoder.finish(), None)));
    alerts.extend(router.route(engine.finish()));
    Ok(alerts)
}

/// The outcome of one test case.
pub struct CaseResult {
    pub rule_id: String,
    pub case: String,
    pub failure: Option<String>,
    pub alerts: Vec<Alert>,
}

fn router_for(rule: &Rule) -> AlertRouter {
    let periods: HashMap<String, i64> = rule.suppress.map(|p| (rule.id.clone(), p)).into_iter().collect();
    AlertRouter::new(periods, 100_000)
}

/// Runs every test case of every rule in `set`. A rule without a positive and a negative case
/// is reported as a failure: every rule ships with both.
pub fn run_all(set: &RuleSet, opts: &EngineOptions) -> Result<Vec<CaseResult>> {
    let mut results = Vec::new();
    for rule in &set.rules {
        let single = RuleSet { rules: vec![rule.clone()], lists: set.lists.clone(), dir: set.dir.clone() };
        if !rule.tests.iter().any(|t| t.expect > 0) || !rule.tests.iter().any(|t| t.expect == 0) {
            results.push(CaseResult {
                rule_id: rule.id.clone(),
                case: "(coverage)".into(),
                failure: Some("needs at least one positive (expect > 0) and one negative (expect: 0) test case".into()),
                alerts: vec![],
            });
        }
        for case in &rule.tests {
            let outcome = (|| -> Result<(Option<String>, Vec<Alert>)> {
                let mut engine = Engine::new(&single, opts)?;
                let docs = to_documents(&expand_events(case)?, case.envelope);
                let alerts = evaluate(&mut engine, &mut router_for(rule), &docs)?;
                let mut failure = None;
                if let Some(err) = engine.stats().find_map(|(_, s)| s.last_error) {
                    failure = Some(format!("the rule failed to evaluate: {err}"));
                } else if alerts.len() != case.expect {
                    failure = Some(format!("expected {} alert(s), got {}", case.expect, alerts.len()));
                } else {
                    for a in &alerts {
                        let wanted = [(&case.entities, &a.entities, "entity"), (&case.fields, &a.fields, "field")];
                        for (want, have, what) in wanted {
                            for (k, v) in want.iter().flatten() {
                                if have.get(k) != Some(v) {
                                    failure = Some(format!(
                                        "alert {} has {what} {k} = {}, expected {v}",
                                        a.id,
                                        have.get(k).unwrap_or(&Value::Null)
                                    ));
                                }
                            }
                        }
                    }
                }
                Ok((failure, alerts))
            })();
            let (failure, alerts) = match outcome {
                Ok(x) => x,
                Err(e) => (Some(format!("{e:#}")), vec![]),
            };
            results.push(CaseResult { rule_id: rule.id.clone(), case: case.name.clone(), failure, alerts });
        }
    }
    Ok(results)
}
