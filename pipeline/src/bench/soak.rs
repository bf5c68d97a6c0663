//! `crowsnest bench --soak DURATION`: the service as it runs in production, for a long time.
//!
//! `crowsnest run` follows a file that a feeder thread appends to at a steady rate: generated
//! AKS records (attack scenarios included, so windows fill and alerts fire) in one-minute rounds,
//! each round with its own seed (new audit ids, pods and addresses: keys come and go) and the
//! next minute of event time (windows close), with a line that is not JSON every 100 records and
//! a record cut short every 1,000. Every 5 s the sampler records the process's resident memory,
//! threads and open file descriptors, and from `/metrics` the open window groups, events,
//! dead letters and alerts, into `DIR/soak.csv`; `bench/plot_soak.py` draws it. A flat curve
//! after warm-up is the promise.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

const SAMPLE_EVERY: Duration = Duration::from_secs(5);

pub fn run(dir: &Path, duration: Duration, rate: u64, seed: u64) -> Result<()> {
    let dir = std::path::absolute(dir.join("soak"))?;
    std::fs::create_dir_all(&dir)?;
    let input = dir.join("soak.jsonl");
    std::fs::write(&input, b"")?;
    for f in ["alerts.jsonl", "dead-letters.jsonl", "late-events.jsonl"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    std::fs::write(
        dir.join("soak.toml"),
        format!(
            "[source]\nkind = \"file\"\npaths = [\"{}\"]\nfollow = true\n[sinks]\nstdout = false\nfile = \"alerts.jsonl\"\n\
             [dead_letters]\nfile = \"dead-letters.jsonl\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            input.display()
        ),
    )?;
    let log = std::fs::File::create(dir.join("soak.log"))?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["run", "-c", "soak.toml"])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting crowsnest run")?;
    let pid = child.id();

    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let (stop, input) = (stop.clone(), input.clone());
        std::thread::spawn(move || feed(&input, rate, seed, &stop))
    };
    let mut csv = std::io::BufWriter::new(std::fs::File::create(dir.join("soak.csv"))?);
    writeln!(csv, "seconds,rss_mb,threads,open_fds,window_groups,events,dead_letters,alerts")?;
    eprintln!(
        "soak: {} at {rate} events/s into {} (metrics on port {port}); samples in {}",
        fmt(duration),
        input.display(),
        dir.join("soak.csv").display()
    );
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < duration {
        std::thread::sleep(SAMPLE_EVERY);
        if let Some(status) = child.try_wait()? {
            stop.store(true, Ordering::Relaxed);
            anyhow::bail!("crowsnest run exited during the soak ({status}); see {}", dir.join("soak.log").display());
        }
        let s = sample(pid, port, started.elapsed());
        writeln!(csv, "{:.0},{:.1},{},{},{},{},{},{}", s.secs, s.rss_mb, s.threads, s.fds, s.groups, s.events, s.dead, s.alerts)?;
        csv.flush()?;
        samples.push(s);
    }
    stop.store(true, Ordering::Relaxed);
    let written = feeder.join().map_err(|_| anyhow::anyhow!("the feeder panicked"))??;
    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let status = child.wait()?;

    let (first_half, second_half) = samples.split_at(samples.len() / 2);
    let max = |f: fn(&Sample) -> f64, s: &[Sample]| s.iter().map(f).fold(f64::MIN, f64::max);
    let mut out = std::io::stdout().lock();
    writeln!(out, "crowsnest bench --soak — {} at {rate} events/s: {written} records written, stop: {status}", fmt(duration))?;
    writeln!(out, "{:<16} {:>12} {:>14} {:>14} {:>10}", "", "first sample", "max 1st half", "max 2nd half", "last")?;
    let rows: [(&str, fn(&Sample) -> f64); 4] = [
        ("rss MB", |s| s.rss_mb),
        ("threads", |s| s.threads as f64),
        ("open fds", |s| s.fds as f64),
        ("window groups", |s| s.groups as f64),
    ];
    for (name, f) in rows {
        let first = samples.first().map_or(0.0, f);
        let last = samples.last().map_or(0.0, f);
        writeln!(out, "{name:<16} {first:>12.1} {:>14.1} {:>14.1} {last:>10.1}", max(f, first_half), max(f, second_half))?;
    }
    if let Some(l) = samples.last() {
        writeln!(out, "events decoded {}, dead letters {}, alerts {}", l.events, l.dead, l.alerts)?;
    }
    Ok(())
}

fn fmt(d: Duration) -> String {
    format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
}

struct Sample {
    secs: f64,
    rss_mb: f64,
    threads: u64,
    fds: u64,
    groups: u64,
    events: u64,
    dead: u64,
    alerts: u64,
}

fn sample(pid: u32, port: u16, at: Duration) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    let page = metrics_page(port).unwrap_or_default();
    // The sum of a metric's samples (every label set).
    let total = |name: &str| -> u64 {
        page.lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    Sample {
        secs: at.as_secs_f64(),
        rss_mb: field("VmRSS:") as f64 / 1024.0,
        threads: field("Threads:"),
        fds,
        groups: total("crowsnest_window_groups"),
        events: total("crowsnest_events_decoded_total"),
        dead: total("crowsnest_dead_letters_total"),
        alerts: total("crowsnest_alerts_total"),
    }
}

fn metrics_page(port: u16) -> Option<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// Appends rounds of generated records to `input`, `rate` audit events a second (with their
/// Container Insights records), until `stop`; returns how many records (lines) it wrote.
fn feed(input: &Path, rate: u64, seed: u64, stop: &AtomicBool) -> Result<u64> {
    let mut file = std::fs::OpenOptions::new().append(true).open(input)?;
    let first = chrono::Utc::now().timestamp() - 24 * 3600;
    let (mut written, mut round) = (0u64, 0u64);
    let began = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // One minute of traffic, the minute after the last round's: event time keeps pace with
        // the wall clock.
        let start = first + round as i64 * 60;
        let opts = crate::gen::GenOptions {
            events: rate * 60,
            seed: seed + round,
            start_unix_secs: start,
            events_per_second: rate as f64,
            insights: true,
            ..Default::default()
        };
        let mut buf = Vec::new();
        crate::gen::generate(&opts, &mut buf)?;
        // Some attack scenarios run for most of an hour: their records past the minute are
        // dropped, or the next round would arrive behind the watermark they moved (a first
        // soak had 13 % late events that way) and event time would outrun the clock.
        let lines: Vec<&[u8]> =
            buf.split(|&b| b == b'\n').filter(|l| !l.is_empty() && latest_time(l).is_none_or(|t| t < start + 60)).collect();
        let n = lines.len().max(1) as f64;
        for (i, line) in lines.into_iter().enumerate() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            written += 1;
            if written % 100 == 0 {
                file.write_all(b"not json at all\n")?;
            }
            if written % 1000 == 0 {
                file.write_all(&line[..line.len() / 2])?;
                file.write_all(b"\n")?;
            }
            file.write_all(line)?;
            file.write_all(b"\n")?;
            // Steady pace: each round's minute of event time over a minute of wall time.
            let due = Duration::from_secs_f64(round as f64 * 60.0 + i as f64 * 60.0 / n);
            if let Some(wait) = due.checked_sub(began.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        round += 1;
    }
    Ok(written)
}

/// The latest record time (`time`, `TimeGenerated`; whole seconds) in a generated line. Times
/// inside bodies (expirations, certificates) may lie ahead, so only those two are read.
fn latest_time(text: &[u8]) -> Option<i64> {
    // Compiled once: this runs on every generated line.
    static STAMP: std::sync::LazyLock<regex::bytes::Regex> =
        std::sync::LazyLock::new(|| regex::bytes::Regex::new(r#""(?:time|TimeGenerated)":"([^"]+)""#).expect("a valid pattern"));
    let stamps = STAMP.captures_iter(text).filter_map(|c| std::str::from_utf8(c.get(1)?.as_bytes()).ok());
    stamps.filter_map(crate::decode::time::parse_rfc3339_nanos).max().map(|ns| ns.div_euclid(1_000_000_000))
}

#[cfg(test)]
mod tests {
    #[test]
    fn latest_time_reads_record_times_only() {
        let line = br#"{"records":[{"time":"2026-11-01T08:00:59.9Z","properties":{"log":"{\"expirationTimestamp\":\"2026-11-01T09:00:00Z\"}"}},{"TimeGenerated":"2026-11-01T08:00:30Z"}]}"#;
        assert_eq!(super::latest_time(line), crate::decode::time::parse_rfc3339_nanos("2026-11-01T08:00:59Z").map(|ns| ns / 1_000_000_000));
        assert_eq!(super::latest_time(b"not json"), None);
    }
}
