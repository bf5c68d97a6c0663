//! Names in the lake. A file's name says what it holds, so writing the same rows again gives
//! the same name (and a create-only write that finds it there is a success):
//!
//! - `k-TOPIC-P-FIRST-NEXT.parquet`: rows of Kafka partition P from offsets FIRST..NEXT (one
//!   flush of that partition; every table and hour it touched gets a file of that name);
//! - `f-HASH.parquet`: rows from files (a replay), named by a hash of the Parquet bytes, which
//!   are the same whenever the input is;
//! - `a-HASH.parquet`: alerts, named by a hash of their ids (stable across replays, unlike
//!   `detected_at`);
//! - `c-HASH.parquet`: a compaction of the files whose names are hashed.

use anyhow::{anyhow, Result};
use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};

/// Where the writer keeps what it needs to resume; no table lives under it.
pub const STATE_DIR: &str = "_crowsnest";

pub const HOUR_NANOS: i64 = 3_600_000_000_000;

pub fn table_dir(table: &str) -> String {
    format!("table={table}")
}

/// `table=T/date=YYYY-MM-DD/hour=HH` of the hour starting at `hour` (hours since the epoch).
pub fn partition_dir(table: &str, hour: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp(hour * 3600, 0).unwrap_or_default();
    format!("{}/date={:04}-{:02}-{:02}/hour={:02}", table_dir(table), t.year(), t.month(), t.day(), t.hour())
}

/// The hour (since the epoch) a partition directory names: `…/date=2026-11-01/hour=08/…`.
pub fn hour_of_path(path: &str) -> Option<i64> {
    let date = path.split('/').find_map(|p| p.strip_prefix("date="))?;
    let hour: i64 = path.split('/').find_map(|p| p.strip_prefix("hour="))?.parse().ok()?;
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp() / 3600 + hour)
}

/// The table a path is in.
pub fn table_of_path(path: &str) -> Option<&str> {
    path.split('/').find_map(|p| p.strip_prefix("table="))
}

/// Keeps a name part to characters every store and reader takes as they are: those of Kafka
/// topic names (letters, digits, `.`, `_`, `-`), so distinct topics keep distinct names.
pub fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect()
}

pub fn kafka_file(topic: &str, partition: i32, first: i64, next: i64) -> String {
    format!("k-{}-{partition}-{first:020}-{next:020}.parquet", sanitize(topic))
}

/// A short hex digest (128 bits) of some bytes.
pub fn digest(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Parses a duration such as `90d`, `36h` into hours.
pub fn hours_of(duration: &str) -> Result<i64> {
    let ns = crate::rules::parse_duration(duration)?;
    if ns <= 0 {
        return Err(anyhow!("{duration:?}: give a positive duration"));
    }
    Ok((ns + HOUR_NANOS - 1) / HOUR_NANOS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_directories_round_trip_and_names_say_what_they_hold() {
        let hour = 1_777_593_600 / 3600 + 8; // 2026-05-01T08 (midnight is 1_777_593_600)
        let dir = partition_dir("kube_audit", hour);
        assert_eq!(dir, "table=kube_audit/date=2026-05-01/hour=08");
        assert_eq!(hour_of_path(&format!("{dir}/f-00.parquet")), Some(hour));
        assert_eq!(table_of_path(&dir), Some("kube_audit"));
        assert_eq!(kafka_file("aks/audit", 3, 10, 20), "k-aks_audit-3-00000000000000000010-00000000000000000020.parquet");
        assert_ne!(kafka_file("aks-audit", 3, 10, 20), kafka_file("aks_audit", 3, 10, 20));
        assert_ne!(digest(&[b"ab", b"c"]), digest(&[b"a", b"bc"]));
        assert_eq!(hours_of("90d").unwrap(), 2160);
    }
}
