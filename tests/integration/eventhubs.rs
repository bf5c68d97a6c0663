//! Event Hubs natively: `crowsnest run --source eventhubs://…` reading through the Azure SDK
//! from the local AMQP stand-in (`crowsnest::standin::eventhubs`: the service's wire protocol,
//! strict as the service), with partition ownership and checkpoints in Azurite through the
//! SDK's Blob checkpoint store. Neither is Azure; both speak what Azure speaks.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use crowsnest::standin::eventhubs::{EventHubsStandin, StandinOptions};
use serde_json::Value;

use crate::common::{file_lines, free_port, http_get, metric, read_alert_ids, read_jsonl, run, AttackData, Running};
use crowsnest::standin::azurite::Azurite;

const NAMESPACE: &str = "crowsnest-test.servicebus.windows.net";
const HUB: &str = "aks-audit";
const PARTITIONS: usize = 4;
const WAIT: Duration = Duration::from_secs(120);
/// The largest message the service accepts (Standard tier): what a busy cluster's diagnostic
/// setting sends.
const MAX_MESSAGE: usize = 1 << 20;

fn standin() -> EventHubsStandin {
    EventHubsStandin::start(StandinOptions {
        namespace: NAMESPACE.into(),
        hub: HUB.into(),
        consumer_groups: vec!["crowsnest".into()],
        partitions: PARTITIONS,
    })
    .expect("the Event Hubs stand-in starts")
}

/// Generated envelope lines batched as a diagnostic setting batches them into messages.
fn envelopes(lines: &[Vec<u8>], max: usize) -> Vec<Vec<u8>> {
    crowsnest::gen::rebatch(lines.iter().map(Vec::as_slice), max)
}

/// Publishes `messages` round-robin over the partitions.
fn publish(hub: &EventHubsStandin, messages: &[Vec<u8>]) {
    for (i, m) in messages.iter().enumerate() {
        hub.publish(i % PARTITIONS, m.clone());
    }
}

/// The generated attack and later traffic, batched into envelopes of up to 64 KiB a message.
fn data(dir: &Path, seed: u64) -> AttackData {
    AttackData::generate(dir, seed, |lines| envelopes(&lines, 64 << 10))
}

struct Checkpoints {
    azurite: Azurite,
    sas: String,
}

fn checkpoints(dir: &Path) -> Checkpoints {
    let azurite = Azurite::start(dir).expect("Azurite starts");
    azurite.create_container("checkpoints").unwrap();
    let sas = azurite.account_sas();
    Checkpoints { azurite, sas }
}

fn source_url(hub: &EventHubsStandin, c: &Checkpoints, group: &str) -> String {
    format!(
        "eventhubs://{NAMESPACE}/{HUB}?group={group}&checkpoints={}/checkpoints&auth=emulator&checkpoint_auth=sas\
         &endpoint={}&commit_interval=1s&balance_interval=1s&ownership_expiry=4s",
        c.azurite.endpoint(),
        hub.endpoint()
    )
}

/// `crowsnest run` reading the hub as `group`, alerts to `alerts-NAME.jsonl`, dead letters to
/// `dead-NAME.jsonl`, metrics on the port returned, its config and log in `NAME/`; killed when
/// dropped.
fn start(dir: &Path, name: &str, hub: &EventHubsStandin, c: &Checkpoints, group: &str, options: &str) -> (Running, u16) {
    let port = free_port();
    let config =
        format!("[metrics]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n[rules]\nidle_timeout = \"5s\"\n[sinks]\nstdout = false\n");
    let source = source_url(hub, c, group) + options;
    let (alerts, dead) = (format!("file://{}/alerts-{name}.jsonl", dir.display()), format!("file://{}/dead-{name}.jsonl", dir.display()));
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let args = ["--source", &*source, "--sink", &alerts, "--dead-letters", &dead];
    (Running::start_with_env(&home, &config, &args, &[("AZURE_STORAGE_SAS_KEY", &c.sas)]), port)
}

fn alert_ids(dir: &Path, names: &[&str]) -> HashSet<String> {
    names.iter().flat_map(|n| read_jsonl(&dir.join(format!("alerts-{n}.jsonl")))).map(|a| a["id"].as_str().unwrap().to_string()).collect()
}

/// Every instance's log.
fn log(dir: &Path) -> String {
    let mut logs: Vec<_> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path().join("crowsnest.log")).filter(|p| p.exists()).collect();
    logs.sort();
    logs.iter().map(|p| format!("== {}\n{}", p.display(), std::fs::read_to_string(p).unwrap_or_default())).collect()
}

/// Waits until the instances' alerts hold every expected id, then checks there is nothing else.
fn expect_alerts(dir: &Path, names: &[&str], expected: &HashSet<String>) {
    wait_for_or_log(dir, "every expected alert", || alert_ids(dir, names).is_superset(expected).then_some(()));
    let got = alert_ids(dir, names);
    let extra: Vec<&String> = got.difference(expected).collect();
    assert!(extra.is_empty(), "alerts the file replay does not give: {extra:?}\n{}", log(dir));
}

fn wait_for_or_log<T>(dir: &Path, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}\n{}", log(dir));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn metric_at(port: u16, name: &str) -> f64 {
    http_get(port, "/metrics").and_then(|(_, m)| metric(&m, name)).unwrap_or(0.0)
}

#[test]
fn every_message_arrives_once_and_the_alerts_equal_a_file_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = data(dir, 51);
    let hub = standin();
    let c = checkpoints(dir);
    publish(&hub, &d.attacks);
    publish(&hub, &d.later);
    let (mut p, port) = start(dir, "a", &hub, &c, "crowsnest", "");
    expect_alerts(dir, &["a"], &d.expected);
    let sent = (d.attacks.len() + d.later.len()) as f64;
    wait_for_or_log(dir, "every message counted", || {
        (metric_at(port, "crowsnest_eventhubs_messages_received_total") >= sent).then_some(())
    });
    assert_eq!(metric_at(port, "crowsnest_eventhubs_messages_received_total"), sent, "a message was received twice");
    assert_eq!(metric_at(port, "crowsnest_duplicate_events_total"), 0.0);
    // Checkpoints are written at the commit interval, one blob per partition.
    wait_for_or_log(dir, "checkpoints", || (metric_at(port, "crowsnest_offset_commits_total") > 0.0).then_some(()));
    assert!(std::fs::read_to_string(dir.join("dead-a.jsonl")).unwrap_or_default().is_empty(), "no dead letter from good input");
    p.assert_running(&dir.join("a"));
}

#[test]
fn of_two_instances_one_reads_and_the_other_takes_over_from_the_checkpoints_when_it_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = data(dir, 61);
    let hub = standin();
    let c = checkpoints(dir);
    publish(&hub, &d.attacks);
    let (a, port_a) = start(dir, "a", &hub, &c, "crowsnest", "");
    let (b, port_b) = start(dir, "b", &hub, &c, "crowsnest", "");
    let mut instances = [(a, port_a, "a"), (b, port_b, "b")];
    // One holds the reader lease and reads every partition; the other stands by.
    let reading = |port| metric_at(port, "crowsnest_eventhubs_reading") == 1.0;
    let reader = wait_for_or_log(dir, "one instance reading", || instances.iter().position(|(_, port, _)| reading(*port)));
    let (standby_port, standby) = (instances[1 - reader].1, instances[1 - reader].2);
    // Killed once it read and alerted, while windows are still open (the traffic that closes
    // them is not published yet): the standby must rebuild them from its checkpoints.
    let reader_port = instances[reader].1;
    wait_for_or_log(dir, "the reader alerting", || (!alert_ids(dir, &[instances[reader].2]).is_empty()).then_some(()));
    assert!(!reading(standby_port), "both instances read");
    assert_eq!(metric_at(standby_port, "crowsnest_eventhubs_messages_received_total"), 0.0, "the standby read messages");
    let commits = metric_at(reader_port, "crowsnest_offset_commits_total");
    instances[reader].0.kill();
    publish(&hub, &d.later);
    expect_alerts(dir, &["a", "b"], &d.expected);
    assert!(reading(standby_port), "the standby took over (the killed reader had written {commits} checkpoints)");
    instances[1 - reader].0.assert_running(&dir.join(standby));
}

#[test]
fn instances_that_share_read_every_message_between_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = data(dir, 65);
    let hub = standin();
    let c = checkpoints(dir);
    publish(&hub, &d.attacks);
    let (mut a, port_a) = start(dir, "a", &hub, &c, "crowsnest", "&instances=share");
    let (mut b, port_b) = start(dir, "b", &hub, &c, "crowsnest", "&instances=share");
    let received = |port| metric_at(port, "crowsnest_eventhubs_messages_received_total");
    let sent = d.attacks.len() as f64;
    // Each ends up with its share, and together they read everything (a partition changing
    // hands may be read twice from its checkpoint, never skipped).
    wait_for_or_log(dir, "every message read by one or the other", || {
        (received(port_a) > 0.0 && received(port_b) > 0.0 && received(port_a) + received(port_b) >= sent).then_some(())
    });
    a.assert_running(&dir.join("a"));
    b.assert_running(&dir.join("b"));
}

#[test]
fn a_restart_resumes_after_the_checkpoints_with_no_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = data(dir, 71);
    let hub = standin();
    let c = checkpoints(dir);
    publish(&hub, &d.attacks);
    let (mut p, port) = start(dir, "a", &hub, &c, "crowsnest", "");
    let first = d.attacks.len() as f64;
    wait_for_or_log(dir, "the first part read", || (metric_at(port, "crowsnest_eventhubs_messages_received_total") >= first).then_some(()));
    wait_for_or_log(dir, "checkpoints", || (metric_at(port, "crowsnest_offset_commits_total") >= 1.0).then_some(()));
    p.kill();
    publish(&hub, &d.later);
    let (mut p, port) = start(dir, "b", &hub, &c, "crowsnest", "");
    expect_alerts(dir, &["a", "b"], &d.expected);
    // The restart read from the checkpoints, not from the start: fewer messages than all.
    let all = (d.attacks.len() + d.later.len()) as f64;
    let again = metric_at(port, "crowsnest_eventhubs_messages_received_total");
    assert!(again < all, "the restart read {again} of {all} messages: it did not resume from the checkpoints");
    p.assert_running(&dir.join("b"));
}

#[test]
fn bad_messages_go_to_dead_letters_and_a_full_size_envelope_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(run(&["gen", "--events", "3000", "--seed", "81", "--out", "in.jsonl"], dir).status.success());
    let big = envelopes(&file_lines(&dir.join("in.jsonl")), MAX_MESSAGE);
    assert!(big[0].len() > MAX_MESSAGE * 9 / 10, "a near 1 MB envelope: {}", big[0].len());
    let hub = standin();
    let c = checkpoints(dir);
    hub.publish(0, b"this is not JSON".to_vec());
    let truncated = br#"{"records":[{"time":"2026-11-01T08:00:00Z","category":"kube-audit","properties":{"log":"{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"auditID\":\"x"}}]}"#;
    hub.publish(1, truncated.to_vec());
    hub.publish(2, big[0].clone());
    let (mut p, port) = start(dir, "a", &hub, &c, "crowsnest", "");
    let dead_path = dir.join("dead-a.jsonl");
    let dead: Vec<Value> = wait_for_or_log(dir, "two dead letters", || Some(read_jsonl(&dead_path)).filter(|d| d.len() >= 2));
    let sources: HashSet<&str> = dead.iter().map(|d| d["source"].as_str().unwrap_or_default()).collect();
    assert_eq!(sources, HashSet::from([&*format!("eventhubs:{HUB}/0"), &*format!("eventhubs:{HUB}/1")]), "{dead:?}");
    for d in &dead {
        assert!(d["position"].as_str().unwrap_or_default().starts_with("sequence number 0"), "{d}");
        assert!(!d["reason"].as_str().unwrap_or_default().is_empty(), "{d}");
    }
    // The big envelope's events were decoded: every record, none lost to its size.
    let records = serde_json::from_slice::<Value>(&big[0]).unwrap()["records"].as_array().unwrap().len() as f64;
    wait_for_or_log(dir, "the big envelope decoded", || {
        (metric_at(port, "crowsnest_events_decoded_total") + metric_at(port, "crowsnest_records_skipped_total") >= records).then_some(())
    });
    p.assert_running(&dir.join("a"));
}

#[test]
fn the_hub_going_away_and_coming_back_is_survived() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let d = data(dir, 91);
    let hub = standin();
    let c = checkpoints(dir);
    let half = d.attacks.len() / 2;
    publish(&hub, &d.attacks[..half]);
    let (mut p, port) = start(dir, "a", &hub, &c, "crowsnest", "");
    wait_for_or_log(dir, "the first part read", || {
        (metric_at(port, "crowsnest_eventhubs_messages_received_total") >= half as f64).then_some(())
    });
    let hub_port = hub.port();
    let state = hub.shutdown();
    wait_for_or_log(dir, "the failure counted", || (metric_at(port, "crowsnest_eventhubs_errors_total") > 0.0).then_some(()));
    p.assert_running(&dir.join("a"));
    let hub = EventHubsStandin::start_with(
        StandinOptions { namespace: NAMESPACE.into(), hub: HUB.into(), consumer_groups: vec!["crowsnest".into()], partitions: PARTITIONS },
        hub_port,
        state,
    )
    .expect("the stand-in comes back on its port");
    publish(&hub, &d.attacks[half..]);
    publish(&hub, &d.later);
    expect_alerts(dir, &["a"], &d.expected);
    p.assert_running(&dir.join("a"));
}

#[test]
fn a_stalled_sink_stops_the_partition_readers_and_nothing_is_lost_when_it_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A rule alerting on every event: far more alerts than the stdout pipe holds while nobody
    // reads it — the stalled sink.
    std::fs::create_dir_all(dir.join("rules/rules")).unwrap();
    let rule = "id: T-ALL\ntitle: every event\nseverity: low\nentities: [user_name]\nquery: SELECT user_name, verb FROM kube_audit\n";
    std::fs::write(dir.join("rules/rules/rule.yaml"), rule).unwrap();
    assert!(run(&["gen", "--events", "20000", "--seed", "97", "--no-attacks", "--out", "in.jsonl"], dir).status.success());
    let replay = run(&["replay", "--no-progress", "--rules", "rules", "in.jsonl"], dir);
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let expected: HashSet<String> = crate::common::stdout_alerts(&replay).iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    assert!(expected.len() > 15000, "the rule fires on every event: {}", expected.len());
    let messages = envelopes(&file_lines(&dir.join("in.jsonl")), 64 << 10);

    let hub = standin();
    let c = checkpoints(dir);
    publish(&hub, &messages);
    let port = free_port();
    std::fs::write(dir.join("crowsnest.toml"), format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    // A small link credit: what waits in memory is the pipeline's chunks plus 10 messages a
    // partition.
    let source = source_url(&hub, &c, "crowsnest") + "&prefetch=10";
    let args = ["-c", "crowsnest.toml", "--rules", "rules", "--sink", "stdout", "--source", &source];
    let (mut p, stdout) = Running::with_stdout(dir, &args, &[("AZURE_STORAGE_SAS_KEY", &c.sas)]);
    let received = || metric_at(port, "crowsnest_eventhubs_messages_received_total");

    // Nobody reads stdout: the pipeline fills up and the readers stop taking messages.
    let stalled = wait_for_or_log(dir, "the readers to stop", || {
        let before = received();
        std::thread::sleep(Duration::from_secs(2));
        let after = received();
        (after > 0.0 && after == before).then_some(after)
    });
    assert!(stalled < messages.len() as f64, "everything was read into memory: {stalled} of {} messages", messages.len());
    assert!(hub.stats().delivered() < messages.len() as u64, "the stand-in sent everything: the link credit did not hold it back");
    p.assert_running(dir);

    // The sink comes back: every alert arrives, none that the replay does not give.
    assert_eq!(read_alert_ids(stdout, expected.len()), expected);
    p.assert_running(dir);
}

#[test]
fn validate_check_opens_the_hub_and_the_container_and_names_a_wrong_consumer_group() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let hub = standin();
    let c = checkpoints(dir);
    let check = |group: &str| {
        crate::common::bin()
            .args(["validate", "--check", "--source", &source_url(&hub, &c, group)])
            .env("AZURE_STORAGE_SAS_KEY", &c.sas)
            .current_dir(dir)
            .output()
            .unwrap()
    };
    let ok = check("crowsnest");
    let out = String::from_utf8_lossy(&ok.stdout).into_owned() + &String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{out}");
    assert!(out.contains(&format!("{PARTITIONS} partitions")) && out.contains("writable"), "{out}");
    let bad = check("nosuchgroup");
    let out = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(out.contains("consumer group") && out.contains("nosuchgroup"), "{out}");
    assert!(!out.contains(c.sas.split("sig=").nth(1).unwrap()), "the SAS signature was printed: {out}");
}
