//! Every form AKS audit logs are kept in gives the same `kube_audit` rows as the Event Hubs
//! envelope of the same events: files as Windows and Azure tools save them (a byte-order
//! mark, pretty-printed), diagnostic records archived to a storage account (`PT1H.json` in a
//! `y=/m=/d=/h=/m=` tree, gzip or not), Log Analytics resource-specific rows (`AKSAudit`,
//! `AKSAuditAdmin`) as data export and `az monitor log-analytics query` write them, and legacy
//! `AzureDiagnostics` rows. Each form is made here from the same generated records, read by the
//! real file sources (directory walk included) and the real decoder, with zero dead letters.

use std::io::Write;
use std::path::{Path, PathBuf};

use crowsnest::decode::{Decoder, Origin};
use crowsnest::gen::{generate, GenOptions};
use crowsnest::source::file::open_paths;
use crowsnest::source::FramingLimits;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{concat_batches, lexsort_to_indices, take_record_batch, SortColumn};
use serde_json::{json, Map, Value};

use crate::common;

const BOM: &str = "\u{feff}";

/// The generated diagnostic records (audit and other categories), a third of the audit ones
/// moved to kube-audit-admin so both resource-specific tables appear.
fn records() -> Vec<Value> {
    let mut out = Vec::new();
    let opts = GenOptions { events: 400, seed: 15, insights: false, events_per_second: 0.05, ..GenOptions::default() };
    generate(&opts, &mut out).unwrap();
    let mut records = Vec::new();
    for line in String::from_utf8(out).unwrap().lines() {
        let doc: Value = serde_json::from_str(line).unwrap();
        records.extend(doc["records"].as_array().unwrap().iter().cloned());
    }
    for (i, r) in records.iter_mut().enumerate() {
        if r["category"] == "kube-audit" && i % 3 == 0 {
            r["category"] = json!("kube-audit-admin");
        }
    }
    records
}

fn is_audit(r: &Value) -> bool {
    r["category"] == "kube-audit" || r["category"] == "kube-audit-admin"
}

/// The audit Event a record carries.
fn event(r: &Value) -> Value {
    serde_json::from_str(r["properties"]["log"].as_str().unwrap()).unwrap()
}

/// A Log Analytics row as the resource-specific tables hold the record (`strings`: every value
/// written as a string, dynamic ones as JSON text, as the az CLI prints query results).
fn resource_specific_row(r: &Value, strings: bool) -> Value {
    let mut row = Map::new();
    let resource_id = r["resourceId"].as_str().unwrap().to_ascii_lowercase();
    if !is_audit(r) {
        row.insert("Type".into(), json!("AKSControlPlane"));
        row.insert("Category".into(), r["category"].clone());
        row.insert("Message".into(), r["properties"]["log"].clone());
        row.insert("TimeGenerated".into(), r["time"].clone());
        row.insert("_ResourceId".into(), json!(resource_id));
        return Value::Object(row);
    }
    let ev = event(r);
    let table = if r["category"] == "kube-audit" { "AKSAudit" } else { "AKSAuditAdmin" };
    let dynamic = |v: &Value| if strings { json!(v.to_string()) } else { v.clone() };
    let columns = [
        ("AuditId", ev["auditID"].clone()),
        ("Level", ev["level"].clone()),
        ("Stage", ev["stage"].clone()),
        ("RequestUri", ev["requestURI"].clone()),
        ("Verb", ev["verb"].clone()),
        ("UserAgent", ev["userAgent"].clone()),
        ("RequestReceivedTime", ev["requestReceivedTimestamp"].clone()),
        ("StageReceivedTime", ev["stageTimestamp"].clone()),
    ];
    for (name, v) in columns {
        if !v.is_null() {
            row.insert(name.into(), v);
        }
    }
    let dynamics = [
        ("User", "user"),
        ("SourceIps", "sourceIPs"),
        ("ObjectRef", "objectRef"),
        ("ResponseStatus", "responseStatus"),
        ("RequestObject", "requestObject"),
        ("ResponseObject", "responseObject"),
        ("Annotations", "annotations"),
    ];
    for (name, field) in dynamics {
        match ev.get(field) {
            Some(v) => row.insert(name.into(), dynamic(v)),
            // Log Analytics has every column in every row; an absent dynamic is empty.
            None => row.insert(name.into(), if strings { json!("") } else { Value::Null }),
        };
    }
    row.insert("PodName".into(), r["properties"]["pod"].clone());
    row.insert("TimeGenerated".into(), r["time"].clone());
    row.insert("SourceSystem".into(), json!("Azure"));
    row.insert("TenantId".into(), json!("0b6f3a0e-5f0c-4c1e-9f4e-1c2d3e4f5a6b"));
    row.insert("_ResourceId".into(), json!(resource_id));
    row.insert("Type".into(), json!(table));
    if strings {
        row.insert("TableName".into(), json!("PrimaryResult"));
    }
    Value::Object(row)
}

/// A legacy `AzureDiagnostics` row.
fn azure_diagnostics_row(r: &Value) -> Value {
    json!({
        "TenantId": "0b6f3a0e-5f0c-4c1e-9f4e-1c2d3e4f5a6b", "TimeGenerated": r["time"], "ResourceId": r["resourceId"],
        "Category": r["category"], "ResourceProvider": "MICROSOFT.CONTAINERSERVICE", "Resource": "AKS-PROD-WEU",
        "ResourceType": "MANAGEDCLUSTERS", "OperationName": r["operationName"], "log_s": r["properties"]["log"],
        "pod_s": r["properties"]["pod"], "stream_s": r["properties"]["stream"], "SourceSystem": "Azure",
        "Type": "AzureDiagnostics", "_ResourceId": r["resourceId"].as_str().unwrap().to_ascii_lowercase(),
    })
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

fn write_gz(path: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    gz.finish().unwrap();
    path.to_path_buf()
}

fn lines(values: impl Iterator<Item = Value>) -> String {
    values.map(|v| v.to_string() + "\n").collect()
}

/// The storage-account archive of the records: PT1H.json per hour of `time`, every other hour
/// gzipped, written as the storage account holds them (one record per line, CRLF from Windows
/// tools in one file).
fn archive_tree(dir: &Path, records: &[Value]) -> PathBuf {
    let root = dir.join("insights-logs-kube-audit");
    let mut hours: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for r in records {
        let t = r["time"].as_str().unwrap();
        let folder =
            format!("resourceId={}/y={}/m={}/d={}/h={}/m=00", r["resourceId"].as_str().unwrap(), &t[0..4], &t[5..7], &t[8..10], &t[11..13]);
        hours.entry(folder).or_default().push(r.clone());
    }
    assert!(hours.len() >= 2, "the records should span hours");
    for (i, (folder, recs)) in hours.iter().enumerate() {
        let text = lines(recs.iter().cloned());
        match i % 3 {
            0 => write_gz(&root.join(folder.trim_start_matches('/')).join("PT1H.json.gz"), &text),
            1 => write(&root.join(folder.trim_start_matches('/')).join("PT1H.json"), &text.replace('\n', "\r\n")),
            _ => write(&root.join(folder.trim_start_matches('/')).join("PT1H.json"), &format!("{BOM}{text}")),
        };
    }
    root
}

/// Reads `paths` through the file sources and the decoder: the `kube_audit` rows, sorted by
/// (audit id, stage), and the dead letters.
fn decode_paths(paths: &[PathBuf]) -> (RecordBatch, Vec<String>, u64) {
    decode_paths_with(paths, &FramingLimits::default())
}

fn decode_paths_with(paths: &[PathBuf], limits: &FramingLimits) -> (RecordBatch, Vec<String>, u64) {
    let opened = open_paths(paths, limits, &Default::default()).unwrap();
    let mut decoder = Decoder::new();
    for mut source in opened.sources {
        while let Some(chunk) = source.next_chunk().unwrap() {
            for doc in &chunk.docs {
                let origin = Origin { source: &chunk.source, unit: chunk.unit, index: doc.index };
                decoder.decode(origin, &chunk.buf[doc.start..doc.end]);
            }
        }
    }
    let dead = decoder.dead_letters.iter().map(|d| format!("{} {:?} {}", d.position, d.reason, d.detail)).collect();
    let skipped = decoder.stats.skipped.values().sum();
    let batch = decoder.finish_audit().expect("rows");
    let batch = concat_batches(&batch.schema(), &[batch]).unwrap();
    let keys: Vec<SortColumn> =
        ["audit_id", "stage"].iter().map(|c| SortColumn { values: batch.column_by_name(c).unwrap().clone(), options: None }).collect();
    let order = lexsort_to_indices(&keys, None).unwrap();
    (take_record_batch(&batch, &order).unwrap(), dead, skipped)
}

/// Columns holding JSON text.
const JSON_TEXT: &[&str] = &["request_object", "response_object", "user_extra"];

fn json_values(column: &datafusion::arrow::array::ArrayRef) -> Vec<Option<Value>> {
    let strings = column.as_any().downcast_ref::<datafusion::arrow::array::StringArray>().expect("a Utf8 column");
    strings.iter().map(|s| s.map(|s| serde_json::from_str(s).expect("JSON text"))).collect()
}

#[test]
fn every_form_decodes_to_the_rows_of_the_event_hubs_envelope() {
    let records = records();
    let audit: Vec<Value> = records.iter().filter(|r| is_audit(r)).cloned().collect();
    let others = records.len() - audit.len();
    assert!(audit.len() >= 400 && others > 0, "{} audit, {others} other records", audit.len());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The reference: the envelope lines diagnostic settings send to Event Hubs.
    let envelope_lines: String = records.chunks(7).map(|c| json!({ "records": c }).to_string() + "\n").collect();
    let reference = write(&d.join("eventhubs.jsonl"), &envelope_lines);
    let (expected, dead, _) = decode_paths(&[reference]);
    assert!(dead.is_empty(), "{dead:?}");
    assert_eq!(expected.num_rows(), audit.len());

    let pretty_records: String = records.iter().map(|r| serde_json::to_string_pretty(r).unwrap() + "\n").collect();
    let export = |table_rows: Vec<Value>| lines(table_rows.chunks(50).map(|c| json!({ "records": c })));
    let forms: Vec<(&str, Vec<PathBuf>, u64)> = vec![
        ("envelope lines after a byte-order mark", vec![write(&d.join("bom.jsonl"), &format!("{BOM}{envelope_lines}"))], 0),
        (
            "one pretty-printed envelope with a byte-order mark (a portal download)",
            vec![write(&d.join("pretty.json"), &format!("{BOM}{}", serde_json::to_string_pretty(&json!({ "records": records })).unwrap()))],
            0,
        ),
        ("bare diagnostic records, one per line", vec![write(&d.join("records.jsonl"), &lines(records.iter().cloned()))], 0),
        (
            "bare records pretty-printed one after another",
            vec![write(&d.join("records-pretty.json"), &format!("{BOM}{pretty_records}"))],
            0,
        ),
        ("a JSON array of bare records", vec![write_gz(&d.join("records-array.json.gz"), &Value::Array(records.clone()).to_string())], 0),
        ("the storage-account archive tree", vec![archive_tree(d, &records)], 0),
        (
            "AKSAudit/AKSAuditAdmin rows from Log Analytics data export",
            vec![write(&d.join("la-export.json"), &export(records.iter().map(|r| resource_specific_row(r, false)).collect()))],
            others as u64,
        ),
        (
            "az monitor log-analytics query output (every value a string)",
            vec![write(
                &d.join("az-query.json"),
                &serde_json::to_string_pretty(&records.iter().map(|r| resource_specific_row(r, true)).collect::<Vec<_>>()).unwrap(),
            )],
            others as u64,
        ),
        (
            "AzureDiagnostics rows",
            vec![write(&d.join("azure-diagnostics.jsonl"), &lines(records.iter().map(azure_diagnostics_row)))],
            others as u64,
        ),
    ];
    // A query's output is one pretty-printed array, read an element at a time: it may be far
    // larger than the document limit.
    let az = forms.iter().find(|f| f.0.starts_with("az monitor")).unwrap().1.clone();
    let size = std::fs::metadata(&az[0]).unwrap().len() as usize;
    let small = FramingLimits { max_document_bytes: size / 50, chunk_bytes: size / 7 };
    let (got, dead, _) = decode_paths_with(&az, &small);
    assert!(dead.is_empty(), "az output under a limit of {} bytes: {dead:?}", size / 50);
    assert_eq!(got.num_rows(), expected.num_rows());
    for (name, paths, skipped_expected) in forms {
        let (got, dead, skipped) = decode_paths(&paths);
        assert!(dead.is_empty(), "{name}: {} dead letters, first: {:?}", dead.len(), dead.first());
        assert_eq!(got.num_rows(), expected.num_rows(), "{name}");
        for (i, field) in expected.schema().fields().iter().enumerate() {
            if JSON_TEXT.contains(&field.name().as_str()) {
                // Log Analytics stores dynamic values re-serialized: the same JSON, not the same text.
                assert_eq!(json_values(got.column(i)), json_values(expected.column(i)), "{name}: column {}", field.name());
            } else {
                assert_eq!(got.column(i), expected.column(i), "{name}: column {}", field.name());
            }
        }
        if skipped_expected > 0 {
            assert_eq!(skipped, skipped_expected, "{name}: the non-audit rows are counted as skipped");
        }
    }
}

/// `crowsnest replay DIR` on an archive tree: zero dead letters and the same alerts as the
/// Event Hubs envelope of the same records.
#[test]
fn replay_walks_an_archive_tree_in_time_order() {
    let records = records();
    let dir = tempfile::tempdir().unwrap();
    let envelope_lines: String = records.chunks(7).map(|c| json!({ "records": c }).to_string() + "\n").collect();
    write(&dir.path().join("eventhubs.jsonl"), &envelope_lines);
    let tree = archive_tree(dir.path(), &records);
    // Files that are not logs are passed over, and said to be.
    write(&tree.join("README.txt"), "downloaded with azcopy\n");
    let ids = |args: &[&str]| {
        let out = common::run(args, dir.path());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let mut ids: Vec<String> = common::stdout_alerts(&out).iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
        ids.sort();
        (ids, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (from_envelope, _) = ids(&["replay", "eventhubs.jsonl", "--dead-letters", "dl-a.jsonl"]);
    let (from_tree, stderr) = ids(&["replay", tree.to_str().unwrap(), "--dead-letters", "dl-b.jsonl"]);
    assert!(!from_envelope.is_empty());
    assert_eq!(from_tree, from_envelope);
    assert!(stderr.contains("1 files in the directories are not JSON"), "{stderr}");
    assert!(!dir.path().join("dl-b.jsonl").exists(), "no dead letters from the tree");
}
