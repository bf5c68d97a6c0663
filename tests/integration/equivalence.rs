//! The streaming engine against plain DataFusion: random events, shuffled within the allowed
//! lateness and cut into random batches, must give every windowed rule exactly the rows that
//! the same rule computed in batch (date_bin / GROUP BY over all events at once; sessions with
//! window functions) gives.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use crowsnest::decode::time::format_nanos;
use crowsnest::decode::{Decoder, Origin};
use crowsnest::engine::{scalar_to_json, Engine, EngineOptions};
// Seeded, so a failure names its seed.
use crowsnest::gen::Rng;
use crowsnest::rules::RuleSet;
use crowsnest::tables::KUBE_AUDIT;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::catalog::MemTable;
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use serde_json::{json, Value};

const SEC: i64 = 1_000_000_000;
/// 2026-11-01T08:00:00Z
const T0: i64 = 1_793_520_000 * SEC;

struct Event {
    nanos: i64,
    doc: String,
}

/// `n` events over two hours: 12 users (a few busy), 6 namespaces, mostly 200s with 403s.
fn events(rng: &mut Rng, n: usize) -> Vec<Event> {
    events_over(rng, n, 10, 7200)
}

/// `n` events over `secs` seconds: a third from 2 busy users, the rest spread over `users`
/// others.
fn events_over(rng: &mut Rng, n: usize, users: u64, secs: u64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let nanos = T0 + rng.below(secs * 1000) as i64 * 1_000_000;
            let user = if rng.below(3) == 0 { format!("busy{}", rng.below(2)) } else { format!("user{}", rng.below(users)) };
            let code = [200, 200, 201, 403, 403, 404][rng.below(6) as usize];
            let t = format_nanos(nanos);
            let doc = json!({"kind": "Event", "auditID": format!("e0000000-0000-4000-8000-{i:012}"), "stage": "ResponseComplete",
                "verb": "get", "user": {"username": user},
                "objectRef": {"resource": "secrets", "namespace": format!("ns{}", rng.below(6))},
                "responseStatus": {"code": code}, "requestReceivedTimestamp": t, "stageTimestamp": t})
            .to_string();
            Event { nanos, doc }
        })
        .collect()
}

fn decode(docs: &[&str]) -> RecordBatch {
    let mut d = Decoder::new();
    for (i, doc) in docs.iter().enumerate() {
        d.decode(Origin { source: "t", unit: "line", index: i as u64 + 1 }, doc.as_bytes());
    }
    assert!(d.dead_letters.is_empty());
    d.finish_audit().unwrap()
}

/// A windowed rule and the batch SQL that must give the same rows. `{T}` in the batch SQL is
/// the table of all events with a `ws` column added per window the event belongs to.
struct Case {
    rule: &'static str,
    /// (width, slide) in minutes, to build the batch table's window starts.
    window: (i64, i64),
    batch: &'static str,
}

const CASES: &[Case] = &[
    Case {
        rule: "SELECT user_name, count(*) AS n, count(DISTINCT namespace) AS ns FROM kube_audit \
               GROUP BY user_name, TUMBLE(event_time, INTERVAL '5 minutes') HAVING count(*) >= 4",
        window: (5, 5),
        batch: "SELECT user_name, ws, count(*) AS n, count(DISTINCT namespace) AS ns FROM {T} GROUP BY user_name, ws HAVING count(*) >= 4",
    },
    Case {
        rule: "SELECT user_name, count(DISTINCT namespace) AS ns, min(response_code) AS lo, max(response_code) AS hi \
               FROM kube_audit WHERE verb = 'get' \
               GROUP BY user_name, HOP(event_time, INTERVAL '1 minute', INTERVAL '5 minutes') HAVING count(DISTINCT namespace) >= 3",
        window: (5, 1),
        batch: "SELECT user_name, ws, count(DISTINCT namespace) AS ns, min(response_code) AS lo, max(response_code) AS hi \
                FROM {T} WHERE verb = 'get' GROUP BY user_name, ws HAVING count(DISTINCT namespace) >= 3",
    },
    Case {
        rule: "SELECT user_name, namespace, count(*) FILTER (WHERE response_code = 403) AS denied, sum(response_code) AS total \
               FROM kube_audit GROUP BY user_name, namespace, TUMBLE(event_time, INTERVAL '10 minutes') \
               HAVING count(*) FILTER (WHERE response_code = 403) >= 2",
        window: (10, 10),
        batch: "SELECT user_name, namespace, ws, count(*) FILTER (WHERE response_code = 403) AS denied, sum(response_code) AS total \
                FROM {T} GROUP BY user_name, namespace, ws HAVING count(*) FILTER (WHERE response_code = 403) >= 2",
    },
    Case {
        rule: "SELECT namespace, avg(response_code) AS mean, count(*) AS n FROM kube_audit WHERE response_code >= 400 \
               GROUP BY namespace, HOP(event_time, INTERVAL '10 minutes', INTERVAL '30 minutes') HAVING count(*) > 20",
        window: (30, 10),
        batch: "SELECT namespace, ws, avg(response_code) AS mean, count(*) AS n FROM {T} WHERE response_code >= 400 \
                GROUP BY namespace, ws HAVING count(*) > 20",
    },
    Case {
        rule: "SELECT user_name, count(*) AS n, count(DISTINCT namespace) AS ns, max(response_code) AS hi FROM kube_audit \
               WHERE response_code >= 400 GROUP BY user_name, SESSION(event_time, INTERVAL '90 seconds') HAVING count(*) >= 3",
        // Not used: the batch query finds the sessions itself, with window functions (a new
        // session where the gap to the previous event of the key exceeds 90 s).
        window: (1, 1),
        batch: "WITH f AS (SELECT * FROM kube_audit WHERE response_code >= 400), \
                s AS (SELECT *, CASE WHEN lag(event_time) OVER (PARTITION BY user_name ORDER BY event_time, audit_id) IS NULL \
                  OR event_time - lag(event_time) OVER (PARTITION BY user_name ORDER BY event_time, audit_id) > INTERVAL '90 seconds' \
                  THEN 1 ELSE 0 END AS new_session FROM f), \
                g AS (SELECT *, sum(new_session) OVER (PARTITION BY user_name ORDER BY event_time, audit_id \
                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sid FROM s) \
                SELECT user_name, min(event_time) AS ws, count(*) AS n, count(DISTINCT namespace) AS ns, max(response_code) AS hi \
                FROM g GROUP BY user_name, sid HAVING count(*) >= 3",
    },
];

/// One row as comparable text: the window start, then every selected value.
type Row = Vec<String>;

fn batch_rows(case: &Case, all: &RecordBatch) -> BTreeSet<Row> {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(all.schema(), vec![vec![all.clone()]]).unwrap();
    ctx.register_table("kube_audit", Arc::new(table)).unwrap();
    // Every window an event is in: date_bin to the slide, then back by 0 … width/slide - 1 slides.
    let (width, slide) = case.window;
    let windows: Vec<String> = (0..width / slide)
        .map(|k| {
            format!(
                "SELECT *, date_bin(INTERVAL '{slide} minutes', event_time, TIMESTAMP '1970-01-01T00:00:00Z') \
                 - INTERVAL '{} minutes' AS ws FROM kube_audit",
                k * slide
            )
        })
        .collect();
    let sql = case.batch.replace("{T}", &format!("({}) AS windowed", windows.join(" UNION ALL ")));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let batches = runtime.block_on(async { ctx.sql(&sql).await.unwrap().collect().await.unwrap() });
    let mut rows = BTreeSet::new();
    for b in &batches {
        let ws = b.schema().index_of("ws").unwrap();
        for i in 0..b.num_rows() {
            let value = |c: usize| scalar_to_json(&ScalarValue::try_from_array(b.column(c), i).unwrap());
            let mut row = vec![value(ws).as_str().unwrap().to_string()];
            let skip = |c: usize| c == ws || b.schema().field(c).name() == "sid";
            row.extend((0..b.num_columns()).filter(|&c| !skip(c)).map(|c| canonical(&value(c))));
            rows.insert(row);
        }
    }
    rows
}

/// Numbers compared as f64 rounded, so 403 and 403.0 (sum's type) are the same value.
fn canonical(v: &Value) -> String {
    match v {
        Value::Number(n) => format!("{:.6}", n.as_f64().unwrap()),
        other => other.to_string(),
    }
}

/// The streamed rows, the late events, and the most live groups the rule held.
fn stream_rows(case: &Case, arrival: &[&str], rng: &mut Rng, lateness: i64) -> (BTreeSet<Row>, u64, usize) {
    let yaml = format!("id: EQ-1\ntitle: eq\nseverity: low\nquery: \"{}\"\n", case.rule);
    let set = RuleSet::from_texts(&PathBuf::from("eq"), vec![(PathBuf::from("r.yaml"), yaml)], vec![]).unwrap();
    let mut engine = Engine::new(&set, &EngineOptions { allowed_lateness: lateness, ..EngineOptions::default() }).unwrap();
    let mut alerts = Vec::new();
    let mut at = 0;
    let mut peak_groups = 0;
    // Batches of up to 60 events, or about 8,000 (the pipeline's size) when there are many.
    let most = if arrival.len() > 20_000 { 16_000 } else { 60 };
    while at < arrival.len() {
        let n = (1 + rng.below(most) as usize).min(arrival.len() - at);
        alerts.extend(engine.process(KUBE_AUDIT, &decode(&arrival[at..at + n])));
        peak_groups = peak_groups.max(engine.stats().map(|(_, s)| s.live_groups).sum());
        at += n;
    }
    alerts.extend(engine.finish());
    let late: u64 = engine.stats().map(|(_, s)| s.late_events).sum();
    let rows = alerts
        .iter()
        .map(|a| {
            let mut row = vec![a.window_start.clone().unwrap()];
            // The SELECT list in order (the alert keeps it as a JSON object; names are unique).
            let names: Vec<&str> = select_names(case.rule);
            row.extend(names.iter().map(|n| canonical(&a.fields[*n])));
            row
        })
        .collect();
    (rows, late, peak_groups)
}

/// The output names of a rule's SELECT list: the alias after AS, else the column name.
fn select_names(sql: &str) -> Vec<&str> {
    let list = &sql["SELECT ".len()..sql.find(" FROM").unwrap()];
    let mut names = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in list.char_indices().chain([(list.len(), ',')]) {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                let item = list[start..i].trim();
                names.push(item.rsplit(" AS ").next().unwrap().trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    names
}

#[test]
fn windowed_rules_over_shuffled_streams_equal_the_batch_query() {
    let lateness = 120 * SEC;
    for seed in [1, 2, 3, 4, 5] {
        let mut rng = Rng(seed);
        let evs = events(&mut rng, 2500);
        // Arrival order: by time plus a random delay below the allowed lateness, so no event
        // arrives later than the lateness behind the newest one before it.
        let mut order: Vec<(i64, usize)> = evs.iter().enumerate().map(|(i, e)| (e.nanos + rng.below(lateness as u64) as i64, i)).collect();
        order.sort();
        let arrival: Vec<&str> = order.iter().map(|&(_, i)| evs[i].doc.as_str()).collect();
        let all = {
            let docs: Vec<&str> = evs.iter().map(|e| e.doc.as_str()).collect();
            let batch = decode(&docs);
            concat_batches(&batch.schema(), [&batch]).unwrap()
        };
        for (c, case) in CASES.iter().enumerate() {
            let expected = batch_rows(case, &all);
            let (got, late, _) = stream_rows(case, &arrival, &mut rng, lateness);
            assert_eq!(late, 0, "seed {seed}, case {c}: no event was later than the allowed lateness");
            assert!(!expected.is_empty(), "seed {seed}, case {c}: the batch query finds something to compare");
            let missing: Vec<_> = expected.difference(&got).take(5).collect();
            let extra: Vec<_> = got.difference(&expected).take(5).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "seed {seed}, case {c}: {} rows in batch, {} streamed; missing {missing:?}; extra {extra:?}",
                expected.len(),
                got.len()
            );
        }
    }
}

/// HOP with DISTINCT and SESSION where keys are many: 100,000 users (what a scan or a spray
/// looks like), most groups holding one or two events, every session compared.
#[test]
fn windowed_rules_over_100k_keys_equal_the_batch_query() {
    const MANY: &[Case] = &[
        Case {
            rule: "SELECT user_name, count(DISTINCT namespace) AS ns, count(*) AS n, min(response_code) AS lo \
                   FROM kube_audit GROUP BY user_name, HOP(event_time, INTERVAL '1 minute', INTERVAL '5 minutes') \
                   HAVING count(DISTINCT namespace) >= 2",
            window: (5, 1),
            batch: "SELECT user_name, ws, count(DISTINCT namespace) AS ns, count(*) AS n, min(response_code) AS lo \
                    FROM {T} GROUP BY user_name, ws HAVING count(DISTINCT namespace) >= 2",
        },
        Case {
            rule: "SELECT user_name, count(*) AS n, count(DISTINCT namespace) AS ns FROM kube_audit \
                   GROUP BY user_name, SESSION(event_time, INTERVAL '90 seconds') HAVING count(*) >= 1",
            window: (1, 1),
            batch: "WITH s AS (SELECT *, CASE WHEN lag(event_time) OVER (PARTITION BY user_name ORDER BY event_time, audit_id) IS NULL \
                      OR event_time - lag(event_time) OVER (PARTITION BY user_name ORDER BY event_time, audit_id) > INTERVAL '90 seconds' \
                      THEN 1 ELSE 0 END AS new_session FROM kube_audit), \
                    g AS (SELECT *, sum(new_session) OVER (PARTITION BY user_name ORDER BY event_time, audit_id \
                      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sid FROM s) \
                    SELECT user_name, min(event_time) AS ws, count(*) AS n, count(DISTINCT namespace) AS ns \
                    FROM g GROUP BY user_name, sid HAVING count(*) >= 1",
        },
    ];
    let lateness = 120 * SEC;
    let mut rng = Rng(100_000);
    // Ten minutes: tens of thousands of keys live in every pane and session at once.
    let evs = events_over(&mut rng, 150_000, 100_000, 600);
    let mut order: Vec<(i64, usize)> = evs.iter().enumerate().map(|(i, e)| (e.nanos + rng.below(lateness as u64) as i64, i)).collect();
    order.sort();
    let arrival: Vec<&str> = order.iter().map(|&(_, i)| evs[i].doc.as_str()).collect();
    let docs: Vec<&str> = evs.iter().map(|e| e.doc.as_str()).collect();
    let all = decode(&docs);
    for (c, case) in MANY.iter().enumerate() {
        let expected = batch_rows(case, &all);
        let (got, late, peak_groups) = stream_rows(case, &arrival, &mut rng, lateness);
        assert_eq!(late, 0, "case {c}: no event was later than the allowed lateness");
        assert!(peak_groups > 20_000, "case {c}: many keys live at once ({peak_groups})");
        assert!(expected.len() > 100, "case {c}: the batch query finds something to compare ({})", expected.len());
        let missing: Vec<_> = expected.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&expected).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "case {c}: {} rows in batch, {} streamed; missing {missing:?}; extra {extra:?}",
            expected.len(),
            got.len()
        );
    }
}
