//! The engine on hand-made streams: HOP windows, lateness, aggregate filters, list functions.

use std::path::PathBuf;

use crowsnest::alert::Alert;
use crowsnest::engine::{Engine, EngineOptions};
use crowsnest::rule_tests::evaluate;
use crowsnest::rules::RuleSet;
use crowsnest::sink::router::AlertRouter;
use crowsnest::tables::KUBE_AUDIT;
use serde_json::{json, Value};

fn rule_set(rule_yaml: &str) -> RuleSet {
    let lists = vec![(PathBuf::from("l.yaml"), "name: admins\nvalues: [alice, bob]\n".to_string())];
    RuleSet::from_texts(&PathBuf::from("test"), vec![(PathBuf::from("r.yaml"), rule_yaml.to_string())], lists).unwrap()
}

/// A 403 by `user` at second `sec` past 08:00.
fn denied(user: &str, sec: u32, n: u32) -> String {
    let t = format!("2026-11-01T08:{:02}:{:02}.000000Z", sec / 60, sec % 60);
    json!({"kind": "Event", "auditID": format!("e0000000-0000-4000-8000-{n:012}"), "stage": "ResponseComplete", "verb": "get",
        "user": {"username": user}, "objectRef": {"resource": "secrets", "namespace": format!("ns{}", n % 7)},
        "responseStatus": {"code": 403}, "requestReceivedTimestamp": t, "stageTimestamp": t})
    .to_string()
}

fn run(rule: &str, docs: &[String], lateness_secs: i64) -> (Vec<Alert>, Engine) {
    let set = rule_set(rule);
    let mut engine =
        Engine::new(&set, &EngineOptions { allowed_lateness: lateness_secs * 1_000_000_000, ..EngineOptions::default() }).unwrap();
    let mut router = AlertRouter::new(Default::default(), 1000);
    // One document per batch, so the watermark advances between them as in a stream.
    let mut alerts = Vec::new();
    for d in docs {
        alerts.extend(evaluate_one(&mut engine, &mut router, d));
    }
    alerts.extend(router.route(engine.finish()));
    (alerts, engine)
}

fn evaluate_one(engine: &mut Engine, router: &mut AlertRouter, doc: &str) -> Vec<Alert> {
    let mut d = crowsnest::decode::Decoder::new();
    d.decode(crowsnest::decode::Origin { source: "t", unit: "line", index: 1 }, doc.as_bytes());
    assert!(d.dead_letters.is_empty());
    router.route(engine.process(KUBE_AUDIT, &d.finish_audit().unwrap()))
}

const HOP_RULE: &str = "id: H-1\ntitle: hop\nseverity: low\nentities: [user_name]\nquery: |\n  SELECT user_name, count(*) AS n FROM kube_audit WHERE response_code = 403\n  GROUP BY user_name, HOP(event_time, INTERVAL '1 minute', INTERVAL '3 minutes') HAVING count(*) >= 3\n";

#[test]
fn hop_windows_overlap() {
    // Denials at 0:10, 0:50, 1:30, 2:10: the 3-minute windows starting at -2:00 … 2:00 each see
    // some; those starting at 0:00 see all four, -1:00 sees 0:10, 0:50, 1:30 (3), 1:00 sees 2.
    let docs: Vec<String> = [10, 50, 90, 130].iter().enumerate().map(|(i, s)| denied("mallory", *s, i as u32)).collect();
    let (alerts, _) = run(HOP_RULE, &docs, 0);
    let mut got: Vec<(String, i64)> = alerts.iter().map(|a| (a.window_start.clone().unwrap(), a.fields["n"].as_i64().unwrap())).collect();
    got.sort();
    assert_eq!(got, vec![("2026-11-01T07:59:00.000000Z".to_string(), 3), ("2026-11-01T08:00:00.000000Z".to_string(), 4)], "{alerts:#?}");
    let ids: std::collections::HashSet<_> = alerts.iter().map(|a| a.id.clone()).collect();
    assert_eq!(ids.len(), 2, "one id per window");
}

const TUMBLE_RULE: &str = "id: T-1\ntitle: tumble\nseverity: low\nentities: [user_name]\nquery: |\n  SELECT user_name, count(*) AS n, count(*) FILTER (WHERE namespace = 'ns1') AS in_ns1 FROM kube_audit\n  WHERE response_code = 403 AND NOT in_list(user_name, 'admins')\n  GROUP BY user_name, TUMBLE(event_time, INTERVAL '1 minute') HAVING count(*) >= 2\n";

#[test]
fn windows_fire_on_the_watermark_and_late_events_are_counted() {
    // Window 08:00-08:01 gets two events; an event at 08:05 moves the watermark (lateness 30 s)
    // past 08:01, so the window fires then, not at the end. Then an event for 08:00:40 arrives:
    // its window has fired, so it is late and does not reopen it.
    let docs = vec![
        denied("mallory", 5, 1),
        denied("mallory", 20, 2),
        denied("mallory", 300, 3),
        denied("mallory", 40, 4),
        denied("alice", 1, 5),
        denied("alice", 2, 6),
    ];
    let set = rule_set(TUMBLE_RULE);
    let mut engine = Engine::new(&set, &EngineOptions { allowed_lateness: 30_000_000_000, ..EngineOptions::default() }).unwrap();
    let mut router = AlertRouter::new(Default::default(), 1000);
    assert!(evaluate_one(&mut engine, &mut router, &docs[0]).is_empty());
    assert!(evaluate_one(&mut engine, &mut router, &docs[1]).is_empty(), "window still open");
    let fired = evaluate_one(&mut engine, &mut router, &docs[2]);
    assert_eq!(fired.len(), 1, "the watermark passed 08:01");
    assert_eq!(fired[0].fields["n"], json!(2));
    assert_eq!(fired[0].fields["in_ns1"], json!(1), "FILTER (WHERE …) applies per aggregate");
    assert_eq!(fired[0].first_seen, "2026-11-01T08:00:05.000000Z");
    assert_eq!(fired[0].last_seen, "2026-11-01T08:00:20.000000Z");
    assert!(evaluate_one(&mut engine, &mut router, &docs[3]).is_empty(), "late event does not refire");
    let (_, stats) = engine.stats().next().unwrap();
    assert_eq!(stats.late_events, 1);
    let late = engine.take_late();
    assert_eq!(late.len(), 1, "handed over for the late-events output");
    assert_eq!(late[0].rows.num_rows(), 1);
    let ids = late[0].rows.column_by_name("audit_id").unwrap();
    assert_eq!(
        crowsnest::engine::scalar_to_json(&datafusion::common::ScalarValue::try_from_array(ids, 0).unwrap()),
        json!("e0000000-0000-4000-8000-000000000004")
    );
    // alice is on the admins list: excluded by in_list.
    assert!(evaluate_one(&mut engine, &mut router, &docs[4]).is_empty());
    assert!(evaluate_one(&mut engine, &mut router, &docs[5]).is_empty());
    assert!(router.route(engine.finish()).is_empty(), "the 08:05 window has one event: below the threshold");
}

#[test]
fn within_lateness_out_of_order_events_still_count() {
    let docs = vec![denied("m", 50, 1), denied("m", 70, 2), denied("m", 55, 3)];
    let (alerts, engine) = run(TUMBLE_RULE, &docs, 30);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].fields["n"], json!(2), "08:00:50 and 08:00:55 in the first minute");
    assert_eq!(engine.stats().next().unwrap().1.late_events, 0);
}

#[test]
fn single_event_alert_ids_do_not_depend_on_batching() {
    let rule =
        "id: S-1\ntitle: s\nseverity: low\nentities: [user_name]\nquery: SELECT user_name FROM kube_audit WHERE response_code = 403\n";
    let docs: Vec<String> = (0..5).map(|i| denied("x", i, i)).collect();
    let (a, _) = run(rule, &docs, 0);
    let set = rule_set(rule);
    let mut engine = Engine::new(&set, &EngineOptions::default()).unwrap();
    let b = evaluate(&mut engine, &mut AlertRouter::new(Default::default(), 100), &docs).unwrap();
    let ids = |v: &[Alert]| v.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(a.len(), 5);
    let v: Value = serde_json::to_value(&a[0]).unwrap();
    assert!(v.get("last_seen_nanos").is_none(), "internal fields stay internal");
}

#[test]
fn unsupported_sql_is_refused_with_a_reason() {
    for (sql, says) in [
        ("SELECT user_name FROM kube_audit ORDER BY user_name", "ORDER BY"),
        ("SELECT a.user_name FROM kube_audit a JOIN kube_audit b ON a.audit_id = b.audit_id", "joins"),
        ("SELECT user_name, count(*) FROM kube_audit GROUP BY user_name, TUMBLE(stage_time, INTERVAL '1 minute')", "event_time"),
        ("SELECT user_name, count(*) FROM kube_audit GROUP BY user_name, TUMBLE(event_time, INTERVAL '1 month')", "month"),
    ] {
        let set = rule_set(&format!("id: U-1\ntitle: u\nseverity: low\nquery: \"{sql}\"\n"));
        let err = format!("{:#}", Engine::new(&set, &EngineOptions::default()).err().expect(sql));
        assert!(err.contains(says), "{sql}: {err}");
    }
}

#[test]
fn a_future_timestamp_does_not_close_open_windows() {
    // mallory's two denials are one minute apart; a forged event from 2099 in between must not
    // move the watermark past their window.
    let forged = denied("forger", 0, 9).replace("2026-11-01T08:00:00", "2099-01-01T00:00:00");
    let docs = vec![denied("mallory", 5, 1), forged, denied("mallory", 20, 2)];
    let (alerts, engine) = run(TUMBLE_RULE, &docs, 0);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].fields["n"], json!(2));
    assert_eq!(engine.future_events, 1);
    assert_eq!(engine.stats().next().unwrap().1.late_events, 0);
}

const EARLY_RULE: &str = "id: E-1\ntitle: early\nseverity: low\nentities: [user_name]\nearly: true\nquery: |\n  SELECT user_name, count(*) AS n FROM kube_audit WHERE response_code = 403\n  GROUP BY user_name, TUMBLE(event_time, INTERVAL '10 minutes') HAVING count(*) >= 3\n";

#[test]
fn an_early_rule_alerts_when_the_threshold_is_crossed_and_not_again_at_close() {
    let set = rule_set(EARLY_RULE);
    let mut engine = Engine::new(&set, &EngineOptions::default()).unwrap();
    let mut router = AlertRouter::new(Default::default(), 1000);
    let per_doc: Vec<usize> = [10, 20, 30, 40]
        .iter()
        .enumerate()
        .map(|(i, s)| evaluate_one(&mut engine, &mut router, &denied("mallory", *s, i as u32)).len())
        .collect();
    assert_eq!(per_doc, vec![0, 0, 1, 0], "one alert, at the third denial, with the window still open");
    assert!(router.route(engine.finish()).is_empty(), "nothing more when the window closes");
    // The same id the rule gives when it waits for the window to close.
    let (at_close, _) = run(
        &EARLY_RULE.replace("early: true\n", ""),
        &[10, 20, 30, 40].iter().enumerate().map(|(i, s)| denied("mallory", *s, i as u32)).collect::<Vec<_>>(),
        60,
    );
    assert_eq!(at_close.len(), 1);
    assert_eq!(at_close[0].fields["n"], 4, "the closing alert counts the whole window");
    let mut engine = Engine::new(&set, &EngineOptions::default()).unwrap();
    let early: Vec<Alert> = [10, 20, 30]
        .iter()
        .enumerate()
        .flat_map(|(i, s)| evaluate_one(&mut engine, &mut router_fresh(), &denied("mallory", *s, i as u32)))
        .collect();
    assert_eq!(early.len(), 1);
    assert_eq!(early[0].id, at_close[0].id, "one id per window and key, early or not");
    assert_eq!(early[0].fields["n"], 3, "the early alert counts what crossed the threshold");
}

fn router_fresh() -> AlertRouter {
    AlertRouter::new(Default::default(), 1000)
}

#[test]
fn a_rule_at_its_group_cap_evicts_the_least_recently_active_key_and_counts_it() {
    let rule = HOP_RULE
        .replace("entities: [user_name]\n", "entities: [user_name]\nmax_groups: 3\n")
        .replace("HOP(event_time, INTERVAL '1 minute', INTERVAL '3 minutes')", "TUMBLE(event_time, INTERVAL '10 minutes')");
    // Five users, three denials each, one user after the other, all in one window.
    let docs: Vec<String> = (0..15).map(|i| denied(&format!("user{}", i / 3), 10 + i * 5, i)).collect();
    let (alerts, engine) = run(&rule, &docs, 600);
    let mut users: Vec<String> = alerts.iter().map(|a| a.entities["user_name"].as_str().unwrap().to_string()).collect();
    users.sort();
    assert_eq!(users, vec!["user2", "user3", "user4"], "the two oldest keys were evicted");
    let (_, stats) = engine.stats().next().unwrap();
    assert_eq!(stats.evictions, 2);
    assert_eq!(stats.live_groups, 0, "every window fired at the end");
}

#[test]
fn early_and_max_groups_are_refused_on_single_event_rules() {
    let rule = "id: S-1\ntitle: s\nseverity: low\nearly: true\nquery: SELECT user_name FROM kube_audit\n";
    let err = Engine::new(&rule_set(rule), &EngineOptions::default()).err().expect("refused").to_string();
    assert!(err.contains("windowed rules"), "{err}");
}

#[test]
fn session_windows_run_while_events_keep_coming_within_the_gap() {
    let rule = "id: SE-1\ntitle: session\nseverity: low\nentities: [user_name]\nquery: |\n  SELECT user_name, count(*) AS n FROM kube_audit WHERE response_code = 403\n  GROUP BY user_name, SESSION(event_time, INTERVAL '90 seconds') HAVING count(*) >= 2\n";
    // 0:10, 1:30, 2:50 are each within 90 s of the previous: one session of 3. 6:00 starts a
    // new one (alone: below the threshold). 2:00 arrives last, out of order, inside the first.
    let docs: Vec<String> = [10, 90, 170, 360, 120].iter().enumerate().map(|(i, s)| denied("mallory", *s, i as u32)).collect();
    let (alerts, _) = run(rule, &docs, 300);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].fields["n"], json!(4));
    assert_eq!(alerts[0].window_start.as_deref(), Some("2026-11-01T08:00:10.000000Z"));
    assert_eq!(alerts[0].window_end.as_deref(), Some("2026-11-01T08:04:20.000000Z"), "a gap after the newest event");
    // An event between two sessions that is within the gap of both merges them.
    let docs: Vec<String> = [10, 90, 250, 330, 170].iter().enumerate().map(|(i, s)| denied("mallory", *s, i as u32)).collect();
    let (alerts, _) = run(rule, &docs, 300);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].fields["n"], json!(5), "0:10–1:30 and 4:10–5:30 joined by 2:50");
}

const SEQUENCE_RULE: &str = "id: SQ-1\ntitle: seq\nseverity: high\nentities: [user_name]\nsequence:\n  by: [user_name]\n  within: 5m\n  steps:\n    - SELECT user_name, namespace AS first_ns FROM kube_audit WHERE response_code = 403 AND namespace = 'ns1'\n    - SELECT user_name, namespace AS then_ns FROM kube_audit WHERE response_code = 403 AND namespace = 'ns2'\n";

/// SEQUENCE_RULE as an absence: ns1 not followed by ns2 within 5 minutes.
fn absence_rule() -> String {
    SEQUENCE_RULE.replace("  within: 5m\n", "  within: 5m\n  absent: true\n")
}

/// An engine with no allowed lateness (the watermark is the newest event) and a router, for
/// feeding events one batch at a time.
fn streaming(rule: &str) -> (Engine, AlertRouter) {
    let engine = Engine::new(&rule_set(rule), &EngineOptions { allowed_lateness: 0, ..EngineOptions::default() }).unwrap();
    (engine, AlertRouter::new(Default::default(), 1000))
}

#[test]
fn a_sequence_matches_in_event_time_order_whatever_the_arrival_order() {
    // denied(…, n) puts the event in namespace ns{n % 7}: n = 1 → ns1, n = 2 → ns2.
    // In order: ns1 at 0:10, then ns2 at 2:00.
    let (alerts, _) = run(SEQUENCE_RULE, &[denied("mallory", 10, 1), denied("mallory", 120, 2)], 300);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].fields["first_ns"], json!("ns1"));
    assert_eq!(alerts[0].fields["then_ns"], json!("ns2"));
    assert_eq!(alerts[0].first_seen, "2026-11-01T08:00:10.000000Z");
    // The second step arrives first (out of order, within the lateness): same alert, same id.
    let (swapped, _) = run(SEQUENCE_RULE, &[denied("mallory", 120, 2), denied("mallory", 10, 1)], 300);
    assert_eq!(swapped.len(), 1);
    assert_eq!(swapped[0].id, alerts[0].id);
    // Wrong order in event time, or too far apart, or another key: nothing.
    assert!(run(SEQUENCE_RULE, &[denied("mallory", 10, 2), denied("mallory", 120, 1)], 300).0.is_empty());
    assert!(run(SEQUENCE_RULE, &[denied("mallory", 10, 1), denied("mallory", 400, 2)], 600).0.is_empty());
    assert!(run(SEQUENCE_RULE, &[denied("mallory", 10, 1), denied("eve", 120, 2)], 300).0.is_empty());
}

#[test]
fn an_absence_alerts_when_the_watermark_passes_the_span_and_state_is_released() {
    let (mut engine, mut router) = streaming(&absence_rule());
    assert!(evaluate_one(&mut engine, &mut router, &denied("mallory", 10, 1)).is_empty(), "the span is still open");
    assert!(evaluate_one(&mut engine, &mut router, &denied("eve", 10, 1)).is_empty());
    // eve's second step comes in time; then an event at 8:00 closes both spans.
    assert!(evaluate_one(&mut engine, &mut router, &denied("eve", 200, 2)).is_empty());
    let fired = evaluate_one(&mut engine, &mut router, &denied("bob", 480, 5));
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].entities["user_name"], json!("mallory"));
    assert_eq!(fired[0].window_end.as_deref(), Some("2026-11-01T08:05:10.000000Z"), "the end of the span that passed");
    assert!(router.route(engine.finish()).is_empty());
    assert_eq!(engine.oldest_open_window(), i64::MAX, "no state left");
}

#[test]
fn a_late_first_step_of_an_absence_is_counted_and_written_out_not_alerted() {
    let (mut engine, mut router) = streaming(&absence_rule());
    // mallory's first step at 0:10 and its second at 2:00 arrive in time: nothing pending.
    assert!(evaluate_one(&mut engine, &mut router, &denied("mallory", 10, 1)).is_empty());
    assert!(evaluate_one(&mut engine, &mut router, &denied("mallory", 120, 2)).is_empty());
    // The watermark moves to 9:00 and drops the spans it passed.
    assert!(evaluate_one(&mut engine, &mut router, &denied("bob", 540, 5)).is_empty());
    assert!(engine.take_late().is_empty());
    // A replayed copy of the first step arrives now, far behind the watermark: its second step
    // came and went, so alerting on it would be false. It is late: counted and handed out.
    let mut again = denied("mallory", 10, 1);
    again = again.replace("e0000000-0000-4000-8000-000000000001", "e0000000-0000-4000-8000-000000000099");
    assert!(evaluate_one(&mut engine, &mut router, &again).is_empty());
    assert!(router.route(engine.finish()).is_empty(), "no absence alert for a late first step");
    let late = engine.take_late();
    assert_eq!(late.len(), 1);
    assert_eq!(late[0].rule_id, "SQ-1");
    assert_eq!(late[0].rows.num_rows(), 1);
    let (_, stats) = engine.stats().next().unwrap();
    assert_eq!(stats.late_events, 1);
}

#[test]
fn a_late_step_still_completes_a_chain_and_is_counted() {
    let (mut engine, mut router) = streaming(SEQUENCE_RULE);
    // The second step at 3:00 moves the watermark there; the first, at 2:50, is 10 s late.
    assert!(evaluate_one(&mut engine, &mut router, &denied("mallory", 180, 2)).is_empty());
    let fired = evaluate_one(&mut engine, &mut router, &denied("mallory", 170, 1));
    assert_eq!(fired.len(), 1, "a chain found with a late step is still a real chain");
    assert_eq!(engine.take_late().len(), 1);
}

const FIRST_SEEN_RULE: &str = "id: FS-1\ntitle: new namespace for a user\nseverity: medium\nentities: [user_name, namespace]\nfirst_seen: {by: [user_name], value: namespace}\nquery: |\n  SELECT user_name, namespace FROM kube_audit WHERE response_code = 403\n";

#[test]
fn first_seen_alerts_on_a_new_value_of_a_known_entity_and_keeps_its_history_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let set = rule_set(FIRST_SEEN_RULE);
    // No lateness: each event is decided as soon as it is in (the watermark is its time).
    let opts = EngineOptions { allowed_lateness: 0, ..EngineOptions::default() };
    let mut engine = Engine::new(&set, &opts).unwrap();
    let mut router = AlertRouter::new(Default::default(), 1000);
    // n % 7 is the namespace: n = 1, 8 → ns1; n = 2 → ns2.
    assert!(evaluate_one(&mut engine, &mut router, &denied("mallory", 10, 1)).is_empty(), "a first sighting is the baseline");
    assert!(evaluate_one(&mut engine, &mut router, &denied("mallory", 20, 8)).is_empty(), "seen before");
    let fired = evaluate_one(&mut engine, &mut router, &denied("mallory", 30, 2));
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].entities["namespace"], json!("ns2"));
    assert!(evaluate_one(&mut engine, &mut router, &denied("eve", 40, 3)).is_empty(), "eve has no history yet");
    engine.save_state(dir.path()).unwrap();
    // A new engine (a restart) with the saved history: eve's ns4 is new for a known entity,
    // mallory's ns2 is not.
    let mut restarted = Engine::new(&set, &opts).unwrap();
    restarted.load_state(dir.path()).unwrap();
    let mut router = AlertRouter::new(Default::default(), 1000);
    assert!(evaluate_one(&mut restarted, &mut router, &denied("mallory", 50, 9)).is_empty());
    let fired = evaluate_one(&mut restarted, &mut router, &denied("eve", 60, 4));
    assert_eq!(fired.len(), 1, "{fired:#?}");
    // Without the saved history, eve's ns4 would be her baseline.
    let mut cold = Engine::new(&set, &opts).unwrap();
    assert!(evaluate_one(&mut cold, &mut AlertRouter::new(Default::default(), 1000), &denied("eve", 60, 4)).is_empty());
}

#[test]
fn first_sightings_are_decided_in_event_time_order_not_arrival_order() {
    // Within the allowed lateness, mallory's ns2 (8:00:30) arrives before her ns1 (8:00:10):
    // ns1 is still her baseline and ns2 the news, as if they had come in time order.
    let mut engine = Engine::new(&rule_set(FIRST_SEEN_RULE), &EngineOptions::default()).unwrap();
    let mut router = AlertRouter::new(Default::default(), 1000);
    assert!(evaluate_one(&mut engine, &mut router, &denied("mallory", 30, 2)).is_empty(), "undecided until the watermark passes");
    assert!(evaluate_one(&mut engine, &mut router, &denied("mallory", 10, 1)).is_empty());
    let fired = router.route(engine.finish());
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!(fired[0].entities["namespace"], json!("ns2"));
    // Checkpoints keep the offsets of undecided events: the oldest one holds them.
    let mut engine = Engine::new(&rule_set(FIRST_SEEN_RULE), &EngineOptions::default()).unwrap();
    evaluate_one(&mut engine, &mut AlertRouter::new(Default::default(), 1000), &denied("mallory", 30, 2));
    assert_ne!(engine.oldest_open_window(), i64::MAX);
}

fn batch_of(doc: &str) -> datafusion::arrow::array::RecordBatch {
    let mut d = crowsnest::decode::Decoder::new();
    d.decode(crowsnest::decode::Origin { source: "t", unit: "line", index: 1 }, doc.as_bytes());
    d.finish_audit().unwrap()
}

#[test]
fn an_idle_partition_stops_holding_the_watermark_unless_it_has_a_backlog() {
    let idle = std::time::Duration::from_millis(100);
    let opts = EngineOptions { allowed_lateness: 0, idle_timeout: idle, ..EngineOptions::default() };
    let (p0, p1): (std::sync::Arc<str>, std::sync::Arc<str>) = ("kafka:audit/0".into(), "kafka:audit/1".into());
    for backlog in [false, true] {
        let mut engine = Engine::new(&rule_set(TUMBLE_RULE), &opts).unwrap();
        // Partition 1 delivered up to 8:00:05; partition 0 goes on to 8:03 with two denials in
        // the 8:00 window, which cannot fire while partition 1 holds the watermark at 8:00:05.
        assert!(engine.process_from(KUBE_AUDIT, &batch_of(&denied("carol", 5, 20)), Some(&p1)).is_empty());
        assert!(engine.process_from(KUBE_AUDIT, &batch_of(&denied("mallory", 10, 1)), Some(&p0)).is_empty());
        assert!(engine.process_from(KUBE_AUDIT, &batch_of(&denied("mallory", 20, 2)), Some(&p0)).is_empty());
        assert!(engine.process_from(KUBE_AUDIT, &batch_of(&denied("eve", 180, 3)), Some(&p0)).is_empty(), "partition 1 holds the window");
        // Both go quiet past the idle timeout; partition 1 may still have unread messages.
        engine.note_backlog(if backlog { std::slice::from_ref(&p1) } else { &[] });
        std::thread::sleep(idle * 2);
        let fired = engine.tick();
        if backlog {
            assert!(fired.is_empty(), "a partition with unread messages is slow, not idle: {fired:?}");
        } else {
            assert_eq!(fired.len(), 1, "the quiet partition no longer holds the window back");
            assert_eq!(fired[0].entities["user_name"], json!("mallory"));
        }
    }
}

#[test]
fn array_agg_in_a_window_keeps_a_bounded_sample() {
    let rule = "id: A-1\ntitle: agg\nseverity: low\nentities: [user_name]\nquery: |\n  SELECT user_name, array_agg(DISTINCT namespace) AS namespaces, array_agg(verb) AS verbs, count(*) AS n FROM kube_audit WHERE response_code = 403\n  GROUP BY user_name, TUMBLE(event_time, INTERVAL '10 minutes') HAVING count(*) >= 1\n";
    // denied(…, n) puts event n in namespace ns{n % 7}: 7 distinct namespaces over 300 events.
    let docs: Vec<String> = (0..300).map(|n| denied("mallory", n % 600, n)).collect();
    let (alerts, _) = run(rule, &docs, 60);
    assert_eq!(alerts.len(), 1);
    let a = &alerts[0];
    assert_eq!(a.fields["n"], json!(300));
    let mut ns: Vec<&str> = a.fields["namespaces"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    ns.sort();
    assert_eq!(ns, vec!["ns0", "ns1", "ns2", "ns3", "ns4", "ns5", "ns6"], "DISTINCT keeps each value once");
    assert_eq!(a.fields["verbs"].as_array().unwrap().len(), crowsnest::engine::functions::ARRAY_AGG_LIMIT, "bounded");
}

/// `rules` run over one batch: 100 requests by alice (even n) and bob (odd n) at second n past
/// 08:00 in namespace ns{n % 7}, the first 70 denied (403) and the last 30 allowed (200).
fn one_batch_of_100(rules: &[&str]) -> (Vec<Alert>, Engine) {
    let texts = rules.iter().enumerate().map(|(i, r)| (PathBuf::from(format!("r{i}.yaml")), r.to_string())).collect();
    let set = RuleSet::from_texts(&PathBuf::from("test"), texts, Vec::new()).unwrap();
    let mut engine = Engine::new(&set, &EngineOptions::default()).unwrap();
    let mut d = crowsnest::decode::Decoder::new();
    for n in 0..100u32 {
        let mut doc: Value = serde_json::from_str(&denied(if n % 2 == 0 { "alice" } else { "bob" }, n, n)).unwrap();
        if n >= 70 {
            doc["responseStatus"]["code"] = json!(200);
        }
        d.decode(crowsnest::decode::Origin { source: "t", unit: "line", index: n as u64 }, doc.to_string().as_bytes());
    }
    let mut alerts = engine.process(KUBE_AUDIT, &d.finish_audit().unwrap());
    alerts.extend(engine.finish());
    (alerts, engine)
}

#[test]
fn rules_that_share_the_start_of_their_where_clause_each_get_their_own_rows() {
    // Rules are evaluated together on one batch and share WHERE prefixes (SharedSelections):
    // each must still see exactly its rows, whether its selection is copied out or (windowed,
    // most rows kept) read in place.
    let rules = [
        "id: P-1\ntitle: p\nseverity: low\nentities: [user_name]\nquery: SELECT user_name FROM kube_audit WHERE response_code = 403 AND namespace = 'ns1'\n",
        "id: P-2\ntitle: p\nseverity: low\nentities: [user_name]\nquery: SELECT user_name FROM kube_audit WHERE response_code = 403 AND namespace = 'ns2'\n",
        "id: P-3\ntitle: p\nseverity: low\nentities: [user_name]\nquery: SELECT user_name FROM kube_audit WHERE namespace = 'ns1' AND response_code = 403\n",
        "id: P-4\ntitle: p\nseverity: low\nentities: [user_name]\nquery: |\n  SELECT user_name, count(*) AS n, count(DISTINCT namespace) AS namespaces FROM kube_audit WHERE response_code = 403\n  GROUP BY user_name, TUMBLE(event_time, INTERVAL '10 minutes') HAVING count(*) >= 1\n",
        "id: P-5\ntitle: p\nseverity: low\nentities: [user_name]\nquery: |\n  SELECT user_name, count(*) AS n FROM kube_audit WHERE response_code = 403 AND namespace = 'ns3'\n  GROUP BY user_name, TUMBLE(event_time, INTERVAL '10 minutes') HAVING count(*) >= 1\n",
    ];
    let (alerts, _) = one_batch_of_100(&rules);
    let count = |id: &str| alerts.iter().filter(|a| a.rule_id == id).count();
    assert_eq!((count("P-1"), count("P-2"), count("P-3")), (10, 10, 10), "ns1, ns2, ns1 again (the same conjuncts in another order)");
    let windowed = |id: &str, user: &str| {
        let a = alerts.iter().find(|a| a.rule_id == id && a.fields["user_name"] == json!(user)).unwrap_or_else(|| panic!("{id} {user}"));
        (a.fields["n"].as_i64().unwrap(), a.fields.get("namespaces").and_then(Value::as_i64))
    };
    assert_eq!(windowed("P-4", "alice"), (35, Some(7)));
    assert_eq!(windowed("P-4", "bob"), (35, Some(7)));
    // ns3 holds n = 3, 10, 17, …, 66: alice has the even ones (5), bob the odd (5).
    assert_eq!((windowed("P-5", "alice").0, windowed("P-5", "bob").0), (5, 5));
}

#[test]
fn sessions_that_merge_count_distinct_values_once() {
    let rule = "id: SE-2\ntitle: session\nseverity: low\nentities: [user_name]\nquery: |\n  SELECT user_name, count(*) AS n, count(DISTINCT namespace) AS namespaces FROM kube_audit WHERE response_code = 403\n  GROUP BY user_name, SESSION(event_time, INTERVAL '90 seconds') HAVING count(*) >= 2\n";
    // Events 0…4 are in ns0…ns4, and 7, 8 in ns0, ns1 again; 2:50 (event 4) joins the two sessions.
    let docs: Vec<String> =
        [(10, 0), (90, 1), (250, 2), (330, 3), (400, 7), (420, 8), (170, 4)].iter().map(|&(s, n)| denied("mallory", s, n)).collect();
    let (alerts, _) = run(rule, &docs, 600);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0].fields["n"], json!(7));
    assert_eq!(alerts[0].fields["namespaces"], json!(5), "ns0…ns4, each once across the merged sessions");
}

#[test]
fn an_expression_that_could_fail_runs_only_on_the_rows_the_guards_let_through() {
    // `2030 / (response_code - 200)` divides by zero on the allowed requests: the guard before
    // it must keep them out, even when most rows pass the guard and the engine would otherwise
    // read the batch in place (for the WHERE clause, and for a window's aggregate arguments).
    let rules = [
        "id: G-1\ntitle: g\nseverity: low\nentities: [user_name]\nquery: SELECT user_name FROM kube_audit WHERE response_code <> 200 AND 2030 / (response_code - 200) > 0\n",
        "id: G-2\ntitle: g\nseverity: low\nentities: [user_name]\nquery: |\n  SELECT user_name, sum(2030 / (response_code - 200)) AS s FROM kube_audit WHERE response_code <> 200\n  GROUP BY user_name, TUMBLE(event_time, INTERVAL '10 minutes') HAVING count(*) >= 1\n",
    ];
    let (alerts, engine) = one_batch_of_100(&rules);
    let errors: Vec<_> = engine.stats().filter(|(_, s)| s.errors > 0).map(|(r, s)| (r.id.clone(), s.last_error.clone())).collect();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(alerts.iter().filter(|a| a.rule_id == "G-1").count(), 70);
    let alice = alerts.iter().find(|a| a.rule_id == "G-2" && a.fields["user_name"] == json!("alice")).expect("G-2 alice");
    assert_eq!(alice.fields["s"], json!(350), "35 denials × 2030 / 203");
}

#[test]
fn a_suppressed_repeat_is_dropped_before_its_alert_is_built_and_still_counted() {
    let rule = "id: SU-1\ntitle: sup\nseverity: low\nentities: [user_name]\nsuppress: 1h\nquery: SELECT user_name, namespace FROM kube_audit WHERE response_code = 403\n";
    let set = rule_set(rule);
    let mut engine = Engine::new(&set, &EngineOptions::default()).unwrap();
    let mut router = AlertRouter::new(set.suppression_periods(), 1000);
    // 50 denials by mallory and one by eve in one batch, then 10 more by mallory in the next
    // hour's period (09:00 onwards: a new period, one more alert).
    let mut d = crowsnest::decode::Decoder::new();
    for i in 0..50 {
        d.decode(crowsnest::decode::Origin { source: "t", unit: "line", index: i }, denied("mallory", 10 + i as u32, i as u32).as_bytes());
    }
    d.decode(crowsnest::decode::Origin { source: "t", unit: "line", index: 50 }, denied("eve", 30, 50).as_bytes());
    let first = engine.process(KUBE_AUDIT, &d.finish_audit().unwrap());
    assert_eq!(first.len(), 2, "one candidate per user reaches the router: {first:#?}");
    let mut alerts = router.route(first);
    router.count_suppressed_upstream(engine.take_suppressed());
    let next_hour: Vec<String> = (0..10).map(|i| denied("mallory", i, 100 + i).replace("T08:", "T09:")).collect();
    for doc in &next_hour {
        alerts.extend(evaluate_one(&mut engine, &mut router, doc));
        router.count_suppressed_upstream(engine.take_suppressed());
    }
    let users: Vec<&str> = alerts.iter().map(|a| a.entities["user_name"].as_str().unwrap()).collect();
    assert_eq!(users, vec!["mallory", "eve", "mallory"], "one alert per user and hour");
    assert_eq!(router.suppressed, 49 + 9, "every repeat counted, wherever it was dropped");
    assert_eq!(engine.stats().next().unwrap().1.alerts, 3, "no alert was built for a repeat");
}

/// One rule flooded with 10 million distinct keys under max_groups: memory stays bounded, the
/// rule is named in a warning, and another rule still fires every alert (the bench prints its
/// expected count from the input it generated).
#[test]
fn a_flood_of_ten_million_keys_stays_under_the_cap_and_other_rules_keep_alerting() {
    let out = crate::common::bin()
        .args(["bench", "--windows", "--flood", "10000000", "--max-groups", "100000"])
        .env("CROWSNEST_LOG", "warn")
        .output()
        .expect("runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let figure = |name: &str| -> f64 {
        let line = stdout.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in {stdout}"));
        line[name.len()..].trim().trim_end_matches(" MB").parse().unwrap()
    };
    assert!(figure("peak live groups of the flooded rule") <= 100_000.0 + 8192.0, "{stdout}");
    assert!(figure("evictions") >= 9_000_000.0, "{stdout}");
    assert_eq!(figure("alerts of the other rule"), figure("  expected"), "{stdout}");
    assert!(figure("alerts of the other rule") >= 2000.0, "{stdout}");
    // 100,000 groups of a few hundred bytes, with room for the allocator; ten million groups
    // would take gigabytes.
    assert!(figure("peak RSS growth") < 200.0, "{stdout}");
    assert!(stderr.contains("rule FLOOD holds its max_groups cap of 100000"), "{stderr}");
}
