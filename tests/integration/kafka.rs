//! Kafka in and out against a real broker (tansu): alerts arrive, a SIGKILL loses nothing, a
//! broker restart loses nothing, a poison message does not block its partition, a stalled sink
//! pauses consumption and nothing is lost when it resumes.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use crate::broker::{alert_ids, Broker, FETCH_WAIT_MS};
use crate::common::{file_lines, free_port, http_get, metric, read_alert_ids, run, stdout_alerts, wait_for, AttackData, Running};

const PARTITIONS: i32 = 3;
const WAIT: Duration = Duration::from_secs(120);

/// The generated attack and later traffic, one line a message (see [`AttackData`]).
fn data(dir: &Path, seed: u64) -> AttackData {
    AttackData::generate(dir, seed, |lines| lines)
}

/// `crowsnest run` reading `audit`, writing `alerts` and `dead`, killed when dropped.
fn start_pipeline(dir: &Path, broker: &Broker, group: &str) -> Running {
    let a = broker.addr();
    let source = format!(
        "kafka://{a}/audit?group={group}&start=earliest&commit_interval=1s&session.timeout.ms=6000&fetch.wait.max.ms={FETCH_WAIT_MS}"
    );
    let (alerts, dead) = (format!("kafka://{a}/alerts"), format!("kafka://{a}/dead"));
    Running::start(
        dir,
        "[metrics]\nenabled = false\n[rules]\nidle_timeout = \"5s\"\n",
        &["--source", &source, "--sink", &alerts, "--dead-letters", &dead],
    )
}

fn topics(broker: &Broker) {
    broker.create_topic("audit", PARTITIONS);
    broker.create_topic("alerts", 1);
    broker.create_topic("dead", 1);
}

/// Waits until every expected alert id arrived; returns every id that did.
fn delivered(broker: &Broker, expected: &HashSet<String>) -> HashSet<String> {
    let docs = broker.read_all("alerts", WAIT, |docs| alert_ids(docs).is_superset(expected));
    alert_ids(&docs)
}

/// `alerts_topic`: the broker whose `alerts` topic the pipeline wrote to, if it did, so a
/// failure shows the unexpected alerts whole.
fn check(alerts_topic: Option<&Broker>, delivered: &HashSet<String>, expected: &HashSet<String>, dir: &Path) {
    let missing: Vec<_> = expected.difference(delivered).collect();
    assert!(missing.is_empty(), "{} of {} alerts never arrived: {missing:?}\n{}", missing.len(), expected.len(), crowsnest_log(dir));
    // A repeat may only repeat an id; nothing the file replay does not produce.
    let extra: Vec<&String> = delivered.difference(expected).collect();
    if let (false, Some(broker)) = (extra.is_empty(), alerts_topic) {
        // The whole alerts, to see which rule and entities differ.
        let docs: Vec<String> = broker
            .read_all("alerts", Duration::from_secs(5), |docs| docs.len() >= delivered.len())
            .iter()
            .map(|doc| String::from_utf8_lossy(doc).into_owned())
            .filter(|doc| extra.iter().any(|id| doc.contains(id.as_str())))
            .collect();
        panic!("alerts the file replay does not give:\n{}", docs.join("\n"));
    }
    assert!(extra.is_empty(), "alerts the file replay does not give: {extra:?}");
}

#[test]
fn generated_records_on_several_partitions_give_every_expected_alert() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path(), 21);
    let broker = Broker::in_memory(dir.path());
    topics(&broker);
    broker.produce("audit", PARTITIONS, &d.attacks);
    broker.produce("audit", PARTITIONS, &d.later);
    let mut p = start_pipeline(dir.path(), &broker, "g-all");
    let got = delivered(&broker, &d.expected);
    check(Some(&broker), &got, &d.expected, dir.path());
    p.assert_running(dir.path());
    // The alert topic is keyed by alert id and holds schema-conformant alerts.
    let docs = broker.read_all("alerts", Duration::from_secs(5), |docs| docs.len() >= got.len());
    for doc in &docs {
        let a: serde_json::Value = serde_json::from_slice(doc).unwrap();
        assert!(a["rule_id"].as_str().unwrap().starts_with("CN-"), "{a}");
    }
}

#[test]
fn a_pipeline_killed_mid_run_and_restarted_still_delivers_every_alert() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path(), 31);
    let broker = Broker::in_memory(dir.path());
    topics(&broker);
    let half = d.attacks.len() / 2;
    broker.produce("audit", PARTITIONS, &d.attacks[..half]);
    let mut p = start_pipeline(dir.path(), &broker, "g-kill");
    // Some alerts are out and some offsets committed; windows of the first half are still
    // open (their events are not committed). Then SIGKILL.
    let first = broker.read_all("alerts", WAIT, |docs| !docs.is_empty());
    assert!(!first.is_empty(), "no alert before the kill");
    std::thread::sleep(Duration::from_secs(3));
    p.kill();
    broker.produce("audit", PARTITIONS, &d.attacks[half..]);
    broker.produce("audit", PARTITIONS, &d.later);
    // As in the lake's kill test: tansu gives a member that joins before the killed one's
    // session expires (6 s) no partition and never rebalances after (CI saw 'partitions
    // assigned: none'); a Kafka broker would. The restart comes after the timeout.
    std::thread::sleep(Duration::from_secs(7));
    let mut p = start_pipeline(dir.path(), &broker, "g-kill");
    let got = delivered(&broker, &d.expected);
    check(Some(&broker), &got, &d.expected, dir.path());
    p.assert_running(dir.path());
}

#[test]
fn a_broker_restart_while_the_pipeline_runs_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path(), 41);
    let mut broker = Broker::on_disk(dir.path());
    topics(&broker);
    let half = d.attacks.len() / 2;
    broker.produce("audit", PARTITIONS, &d.attacks[..half]);
    let mut p = start_pipeline(dir.path(), &broker, "g-restart");
    let first = broker.read_all("alerts", WAIT, |docs| !docs.is_empty());
    assert!(!first.is_empty(), "no alert before the broker restart");
    broker.stop();
    std::thread::sleep(Duration::from_secs(3));
    broker.start();
    broker.produce("audit", PARTITIONS, &d.attacks[half..]);
    broker.produce("audit", PARTITIONS, &d.later);
    let got = delivered(&broker, &d.expected);
    check(Some(&broker), &got, &d.expected, dir.path());
    p.assert_running(dir.path());
}

#[test]
fn a_poison_message_goes_to_dead_letters_and_does_not_block_its_partition() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path(), 51);
    let broker = Broker::in_memory(dir.path());
    topics(&broker);
    // Poison lands on partition 0 (every third message) in the middle of the attack data.
    let mut messages = d.attacks.clone();
    let at = (messages.len() / 2) / PARTITIONS as usize * PARTITIONS as usize;
    messages.insert(at, br#"{"records":[{"category":"kube-audit","properties":{"log":"{\"kind\":\"Event\",\"auditID\""#.to_vec());
    messages.insert(at + PARTITIONS as usize, b"\xff\xfe not even UTF-8".to_vec());
    broker.produce("audit", PARTITIONS, &messages);
    broker.produce("audit", PARTITIONS, &d.later);
    let mut p = start_pipeline(dir.path(), &broker, "g-poison");
    let got = delivered(&broker, &d.expected);
    check(Some(&broker), &got, &d.expected, dir.path());
    // Traffic from still later closes the windows of the first later part, so every chunk up
    // to it can be committed. Its own seed: the later part's seed would repeat its audit ids,
    // and the pipeline drops repeated events.
    let gen_last = ["gen", "--events", "600", "--seed", "53", "--no-attacks", "--start", "2026-11-01T16:00:00Z", "--out", "last.jsonl"];
    assert!(run(&gen_last, dir.path()).status.success());
    broker.produce("audit", PARTITIONS, &file_lines(&dir.path().join("last.jsonl")));
    let dead = broker.read_all("dead", WAIT, |docs| docs.len() >= 2);
    let reasons: HashSet<String> = dead
        .iter()
        .map(|doc| {
            let v: serde_json::Value = serde_json::from_slice(doc).unwrap();
            assert!(v["source"].as_str().unwrap().starts_with("kafka:audit/0"), "{v}");
            assert!(v["position"].as_str().unwrap().starts_with("offset "), "{v}");
            v["reason"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(dead.len(), 2, "one dead letter per poison message");
    assert!(reasons.contains("invalid_utf8"), "{reasons:?}");
    // The partition moved past the poison: its committed offset is beyond it.
    let poison_offset = (at / PARTITIONS as usize) as i64;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let c = broker.committed("g-poison", "audit", 0);
        if c.is_some_and(|c| c > poison_offset + 1) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "partition 0 never committed past the poison (committed {c:?})");
        std::thread::sleep(Duration::from_millis(500));
    }
    p.assert_running(dir.path());
}

/// The value of a metric without labels (or summed over its labels) in a /metrics page.
/// `DIR/rules/rules/rule.yaml` holding `yaml`: a rule directory for `--rules rules`.
fn rule_dir(dir: &Path, yaml: &str) {
    std::fs::create_dir_all(dir.join("rules/rules")).unwrap();
    std::fs::write(dir.join("rules/rules/rule.yaml"), yaml).unwrap();
}

#[test]
fn a_stalled_sink_pauses_consumption_and_loses_nothing_when_it_resumes() {
    let dir = tempfile::tempdir().unwrap();
    // A rule that alerts on every event: thousands of alerts, far more than the stdout pipe
    // holds while nobody reads it — the stalled sink.
    rule_dir(
        dir.path(),
        "id: T-ALL\ntitle: every event\nseverity: low\nentities: [user_name]\nquery: SELECT user_name, verb FROM kube_audit\n",
    );
    // About 30 MB: twice what the pipeline may hold in flight with librdkafka's prefetch cut
    // to 2 MB (a dozen 1 MiB chunks between reader, decoders and engine).
    assert!(run(&["gen", "--events", "20000", "--seed", "61", "--no-attacks", "--out", "in.jsonl"], dir.path()).status.success());
    let replay = run(&["replay", "--no-progress", "--rules", "rules", "in.jsonl"], dir.path());
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let expected: HashSet<String> = stdout_alerts(&replay).iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    let messages = file_lines(&dir.path().join("in.jsonl"));
    assert!(expected.len() > 15000, "the rule fires on every event: {}", expected.len());

    let broker = Broker::in_memory(dir.path());
    topics(&broker);
    broker.produce("audit", PARTITIONS, &messages);
    let port = free_port();
    std::fs::write(dir.path().join("crowsnest.toml"), format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    let a = broker.addr();
    let source =
        format!("kafka://{a}/audit?group=g-stall&start=earliest&fetch.wait.max.ms={FETCH_WAIT_MS}&queued.max.messages.kbytes=2048");
    let args = ["-c", "crowsnest.toml", "--rules", "rules", "--sink", "stdout", "--source", &source];
    let (mut p, stdout) = Running::with_stdout(dir.path(), &args, &[]);
    let page = || http_get(port, "/metrics").map(|(_, body)| body);

    // Nobody reads stdout: the pipeline fills up and pauses its partitions.
    wait_for("consumption to pause", WAIT, || page().filter(|m| metric(m, "crowsnest_kafka_paused") == Some(1.0)));
    let consumed = || consumed_total(port);
    let at_pause = consumed();
    std::thread::sleep(Duration::from_secs(3));
    let later = consumed();
    assert_eq!(at_pause, later, "still consuming while paused");
    assert!(later < messages.len() as f64, "everything was read into memory: {later} of {} messages", messages.len());
    p.assert_running(dir.path());

    // The sink comes back: every alert arrives, none that the replay does not give.
    let got = read_alert_ids(stdout, expected.len());
    check(None, &got, &expected, dir.path());
    wait_for("consumption to resume", WAIT, || page().filter(|m| metric(m, "crowsnest_kafka_paused") == Some(0.0)));
}

/// An audit Event as one JSON line: `user` gets `code` at `t` (RFC 3339).
fn audit_line(n: u32, user: &str, code: u16, t: &str) -> Vec<u8> {
    serde_json::json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": format!("7a000000-0000-4000-8000-{n:012}"),
        "stage": "ResponseComplete", "verb": "list", "user": {"username": user}, "sourceIPs": ["10.0.0.9"],
        "objectRef": {"resource": "secrets", "namespace": "default"}, "responseStatus": {"code": code},
        "requestReceivedTimestamp": t, "stageTimestamp": t})
    .to_string()
    .into_bytes()
}

#[test]
fn a_restart_mid_window_rebuilds_the_window_from_uncommitted_offsets_and_gives_the_same_alert() {
    let dir = tempfile::tempdir().unwrap();
    // 20 denials in a 10-minute window, threshold 15: 10 before the kill, 10 after. Had the
    // offsets of the first 10 been committed, the restarted pipeline would count only 10 and
    // never alert.
    rule_dir(dir.path(), DENIALS_RULE);
    let t = window_time;
    // Before the window: benign traffic, whose offsets may be committed.
    let mut first: Vec<Vec<u8>> =
        (0..5).map(|i| audit_line(i, "alice@contoso.com", 200, &format!("2026-11-01T07:00:{:02}.000000Z", i * 10))).collect();
    first.extend((0..10).map(|i| audit_line(100 + i, "mallory@contoso.com", 403, &t(i * 20))));
    let mut second: Vec<Vec<u8>> = (10..20).map(|i| audit_line(100 + i, "mallory@contoso.com", 403, &t(i * 20))).collect();
    second.push(audit_line(999, "alice@contoso.com", 200, &t(3600))); // closes the window
    let all: Vec<u8> = first.iter().chain(&second).flat_map(|l| l.iter().copied().chain([b'\n'])).collect();
    std::fs::write(dir.path().join("all.jsonl"), all).unwrap();
    let replay = run(&["replay", "--no-progress", "--rules", "rules", "all.jsonl"], dir.path());
    let expected = stdout_alerts(&replay);
    assert_eq!(expected.len(), 1, "{}", String::from_utf8_lossy(&replay.stderr));
    assert_eq!(expected[0]["count"], 20);

    let broker = Broker::in_memory(dir.path());
    broker.create_topic("waudit", 1);
    broker.create_topic("walerts", 1);
    broker.produce("waudit", 1, &first);
    let a = broker.addr();
    let start = |port: u16| {
        let (sink, source) = (
            format!("kafka://{a}/walerts"),
            format!("kafka://{a}/waudit?group=g-win&start=earliest&commit_interval=1s&session.timeout.ms=6000&fetch.wait.max.ms={FETCH_WAIT_MS}"),
        );
        Running::start(
            dir.path(),
            &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
            &["--rules", "rules", "--sink", &sink, "--source", &source],
        )
    };
    let port = free_port();
    let mut p = start(port);
    let consumed = || consumed_total(port);
    wait_for("the first part to be consumed", WAIT, || (consumed() >= first.len() as f64).then_some(()));
    // Checkpoints run every second: the window's events must stay uncommitted.
    std::thread::sleep(Duration::from_secs(3));
    p.assert_running(dir.path());
    p.kill();
    let committed = broker.committed("g-win", "waudit", 0);
    assert!(committed.is_none_or(|o| o <= 5), "offsets of the open window were committed: {committed:?}");

    broker.produce("waudit", 1, &second);
    let _p = start(free_port());
    let docs = broker.read_all("walerts", WAIT, |docs| !docs.is_empty());
    assert_eq!(docs.len(), 1, "one alert: {docs:?}\n{}", crowsnest_log(dir.path()));
    let got: serde_json::Value = serde_json::from_slice(&docs[0]).unwrap();
    assert_eq!(got["id"], expected[0]["id"], "the same alert id as the file replay");
    assert_eq!(got["count"], 20, "the window was rebuilt from the replayed offsets");
    // Nothing else arrives (the first run never alerted: its window was still open).
    let more = broker.read_all("walerts", Duration::from_secs(3), |docs| docs.len() > 1);
    assert_eq!(more.len(), 1, "{more:?}");
}

#[test]
fn a_partition_whose_only_new_event_is_a_repeat_does_not_hold_the_watermark_back() {
    let dir = tempfile::tempdir().unwrap();
    rule_dir(dir.path(), DENIALS_RULE);
    let t = window_time;
    let broker = Broker::in_memory(dir.path());
    broker.create_topic("raudit", 2);
    broker.create_topic("ralerts", 1);
    // 20 denials in the window, on both partitions.
    let denials: Vec<Vec<u8>> = (0..20).map(|i| audit_line(100 + i, "mallory@contoso.com", 403, &t(i * 20))).collect();
    broker.produce("raudit", 2, &denials);
    let a = broker.addr();
    let (sink, source) = (
        format!("kafka://{a}/ralerts"),
        format!("kafka://{a}/raudit?group=g-repeat&start=earliest&commit_interval=1s&fetch.wait.max.ms={FETCH_WAIT_MS}"),
    );
    // An idle partition holds the watermark for ten minutes: longer than the test waits.
    let port = free_port();
    let mut p = Running::start(
        dir.path(),
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n[rules]\nidle_timeout = \"10m\"\n"),
        &["--rules", "rules", "--sink", &sink, "--source", &source],
    );
    let consumed = || consumed_total(port);
    wait_for("the denials to be consumed", WAIT, || (consumed() >= 20.0).then_some(()));
    // An hour later, one event reaches both partitions (a record sent twice): on one of them it
    // is a repeat, dropped before any rule sees it. Both partitions are now past the window.
    let later = audit_line(999, "alice@contoso.com", 200, &t(3600));
    broker.produce("raudit", 2, &[later.clone(), later]);
    let alerts = broker.read_all("ralerts", Duration::from_secs(60), |docs| !docs.is_empty());
    p.assert_running(dir.path());
    assert_eq!(alerts.len(), 1, "the window never fired: a partition's clock stayed behind\n{}", crowsnest_log(dir.path()));
}

fn crowsnest_log(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("crowsnest.log")).unwrap_or_default()
}

/// 15 denials of one user in a 10-minute window: the windowed rule of the restart tests.
const DENIALS_RULE: &str = "id: W-1\ntitle: denied\nseverity: low\nentities: [user_name]\nquery: |\n  SELECT user_name, count(*) AS denied FROM kube_audit WHERE response_code = 403\n  GROUP BY user_name, TUMBLE(event_time, INTERVAL '10 minutes') HAVING count(*) >= 15\n";

/// `s` seconds after 2026-11-01T08:00:00Z.
fn window_time(s: u32) -> String {
    format!("2026-11-01T{:02}:{:02}:{:02}.000000Z", 8 + s / 3600, (s / 60) % 60, s % 60)
}

/// Messages the service on `port` has consumed, from its metrics (0 until it answers).
fn consumed_total(port: u16) -> f64 {
    http_get(port, "/metrics").and_then(|(_, m)| metric(&m, "crowsnest_kafka_messages_consumed_total")).unwrap_or(0.0)
}
