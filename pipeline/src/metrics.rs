//! Prometheus metrics, in one registry the HTTP server exposes at /metrics.

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub events_decoded: IntCounterVec,
    pub records_skipped: IntCounterVec,
    pub bytes_read: IntCounter,
    pub dead_letters: IntCounterVec,
    pub duplicate_events: IntCounter,
    pub rule_matches: IntCounterVec,
    pub rule_errors: IntCounterVec,
    pub late_events: IntCounterVec,
    pub future_events: IntCounter,
    pub window_groups: IntGaugeVec,
    /// Addresses learned as a cluster's own egress (see `engine::egress`).
    pub cluster_egress_addresses: IntGaugeVec,
    pub window_state_bytes: IntGaugeVec,
    pub window_evictions: IntCounterVec,
    pub alerts: IntCounterVec,
    pub alerts_suppressed: IntCounter,
    pub alerts_duplicate: IntCounter,
    pub batch_latency: Histogram,
    pub watermark_lag_seconds: IntGauge,
    pub watermark_seconds: IntGauge,
    pub build_info: IntGaugeVec,
    /// Source offsets committed (result = ok | error), and checkpoints skipped because a sink
    /// could not confirm delivery in time.
    pub offset_commits: IntCounterVec,
    pub checkpoints_skipped: IntCounter,
    pub kafka_consumer_lag: IntGaugeVec,
    pub kafka_messages_consumed: IntCounterVec,
    pub kafka_bytes_consumed: IntCounterVec,
    pub kafka_rebalances: IntCounterVec,
    pub kafka_consumer_errors: IntCounter,
    pub kafka_produced: IntCounterVec,
    pub kafka_produce_errors: IntCounterVec,
    pub kafka_produce_retries: IntCounterVec,
    pub kafka_paused: IntGauge,
    pub kafka_offset_gaps: IntCounterVec,
    pub eventhubs_messages: IntCounterVec,
    pub eventhubs_bytes: IntCounterVec,
    pub eventhubs_lag: IntGaugeVec,
    pub eventhubs_ownership: IntCounterVec,
    pub eventhubs_errors: IntCounterVec,
    pub eventhubs_reading: IntGauge,
    /// The Sentinel sink (Logs Ingestion API), by stream.
    pub sentinel_requests: IntCounterVec,
    pub sentinel_bytes: IntCounterVec,
    pub sentinel_records: IntCounterVec,
    pub sentinel_retries: IntCounterVec,
    pub sentinel_throttled: IntCounterVec,
    pub sentinel_dead_letters: IntCounterVec,
    pub sentinel_spool_bytes: IntGaugeVec,
    pub sentinel_spool_oldest_seconds: IntGaugeVec,
    pub sentinel_token_refreshes: IntCounterVec,
    pub sentinel_token_failures: IntCounterVec,
    pub sentinel_events_errors: IntCounterVec,
    /// The lake sink: Parquet files, rows and bytes written.
    pub lake_files: IntCounter,
    pub lake_rows: IntCounter,
    pub lake_bytes: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone())).expect("metric names are unique");
            c
        }
        let cv =
            |name: &str, help: &str, labels: &[&str]| reg(&r, IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"));
        let c = |name: &str, help: &str| reg(&r, IntCounter::new(name, help).expect("valid metric"));
        let m = Metrics {
            events_decoded: cv(
                "crowsnest_events_decoded_total",
                "Events decoded into a table, by table and AKS category (raw: no envelope)",
                &["table", "category"],
            ),
            records_skipped: cv(
                "crowsnest_records_skipped_total",
                "Envelope records of categories that hold no audit events (kube-apiserver, cluster-autoscaler…)",
                &["category"],
            ),
            bytes_read: c("crowsnest_bytes_read_total", "Bytes read from sources, before decompression"),
            dead_letters: cv("crowsnest_dead_letters_total", "Inputs that could not be decoded, by reason", &["reason"]),
            duplicate_events: c("crowsnest_duplicate_events_total", "Events dropped as repeats of an (auditID, stage) already seen"),
            rule_matches: cv("crowsnest_rule_matches_total", "Events that passed a rule's WHERE clause", &["rule"]),
            rule_errors: cv("crowsnest_rule_errors_total", "Batches on which a rule failed to evaluate", &["rule"]),
            late_events: cv("crowsnest_late_events_total", "Events that arrived after their window had fired", &["rule"]),
            future_events: c(
                "crowsnest_future_events_total",
                "Events stamped more than 15 minutes ahead of the wall clock (they do not advance the watermark)",
            ),
            window_groups: reg(
                &r,
                IntGaugeVec::new(Opts::new("crowsnest_window_groups", "Open (window, key) groups held by a windowed rule"), &["rule"])
                    .expect("valid metric"),
            ),
            cluster_egress_addresses: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "crowsnest_cluster_egress_addresses",
                        "Source addresses learned as a cluster's own egress (its nodes call from them)",
                    ),
                    &["cluster"],
                )
                .expect("valid metric"),
            ),
            window_state_bytes: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("crowsnest_window_state_bytes", "Approximate bytes of a windowed rule's open groups"),
                    &["rule"],
                )
                .expect("valid metric"),
            ),
            window_evictions: cv(
                "crowsnest_window_evictions_total",
                "Groups a windowed rule dropped at its cap on live groups (least recently active first)",
                &["rule"],
            ),
            alerts: cv("crowsnest_alerts_total", "Alerts delivered to the sinks, by rule and severity", &["rule", "severity"]),
            alerts_suppressed: c("crowsnest_alerts_suppressed_total", "Alerts dropped by their rule's suppression period"),
            alerts_duplicate: c(
                "crowsnest_alerts_duplicate_total",
                "Alerts dropped because an alert with the same id was already delivered",
            ),
            batch_latency: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("crowsnest_batch_latency_seconds", "Time to run a decoded batch through the engine and sinks")
                        .buckets(prometheus::exponential_buckets(0.0005, 2.0, 14).expect("valid buckets")),
                )
                .expect("valid metric"),
            ),
            watermark_lag_seconds: reg(
                &r,
                IntGauge::new("crowsnest_watermark_lag_seconds", "Wall clock minus the newest event time seen").expect("valid metric"),
            ),
            watermark_seconds: reg(
                &r,
                IntGauge::new("crowsnest_watermark_seconds", "Newest event time seen, Unix seconds").expect("valid metric"),
            ),
            build_info: reg(
                &r,
                IntGaugeVec::new(Opts::new("crowsnest_build_info", "Build information"), &["version"]).expect("valid metric"),
            ),
            offset_commits: cv("crowsnest_offset_commits_total", "Source offset commits, by result", &["result"]),
            checkpoints_skipped: c(
                "crowsnest_checkpoints_skipped_total",
                "Checkpoints skipped because a sink had not confirmed delivery in time (offsets stay uncommitted)",
            ),
            kafka_consumer_lag: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "crowsnest_kafka_consumer_lag",
                        "Messages between the group's committed offset and the partition end (includes what open windows hold)",
                    ),
                    &["topic", "partition"],
                )
                .expect("valid metric"),
            ),
            kafka_messages_consumed: cv("crowsnest_kafka_messages_consumed_total", "Kafka messages consumed", &["topic"]),
            kafka_bytes_consumed: cv("crowsnest_kafka_bytes_consumed_total", "Kafka message payload bytes consumed", &["topic"]),
            kafka_rebalances: cv(
                "crowsnest_kafka_rebalances_total",
                "Consumer group rebalances, by kind (assign, revoke, error)",
                &["kind"],
            ),
            kafka_consumer_errors: c("crowsnest_kafka_consumer_errors_total", "Errors reported by the Kafka consumer (it retries)"),
            kafka_produced: cv("crowsnest_kafka_produced_total", "Records the broker acknowledged, by topic", &["topic"]),
            kafka_produce_errors: cv("crowsnest_kafka_produce_errors_total", "Records the broker finally refused, by topic", &["topic"]),
            kafka_produce_retries: cv(
                "crowsnest_kafka_produce_retries_total",
                "Waits for room in the producer queue (the broker is slow or down), by topic",
                &["topic"],
            ),
            kafka_paused: reg(
                &r,
                IntGauge::new("crowsnest_kafka_paused", "1 while consumption is paused because the pipeline is full (back-pressure)")
                    .expect("valid metric"),
            ),
            kafka_offset_gaps: cv(
                "crowsnest_kafka_offset_gaps_total",
                "Offsets a partition skipped between two messages read in order (normal on compacted topics; \
                 on others the broker failed to return them)",
                &["topic"],
            ),
            eventhubs_messages: cv(
                "crowsnest_eventhubs_messages_received_total",
                "Event Hubs messages received, by hub and partition",
                &["hub", "partition"],
            ),
            eventhubs_bytes: cv("crowsnest_eventhubs_bytes_received_total", "Event Hubs message body bytes received", &["hub"]),
            eventhubs_lag: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "crowsnest_eventhubs_partition_lag",
                        "Messages between the newest one received and the partition's last enqueued one, for owned partitions",
                    ),
                    &["hub", "partition"],
                )
                .expect("valid metric"),
            ),
            eventhubs_ownership: cv(
                "crowsnest_eventhubs_ownership_changes_total",
                "Partitions this instance started (claimed) or stopped (lost) reading",
                &["hub", "change"],
            ),
            eventhubs_errors: cv(
                "crowsnest_eventhubs_errors_total",
                "Event Hubs failures, by kind (connect, processor, receive, properties, lease); all but a lost reader lease are retried",
                &["kind"],
            ),
            eventhubs_reading: reg(
                &r,
                IntGauge::new(
                    "crowsnest_eventhubs_reading",
                    "1 while this instance reads the hub (standby mode: it holds the reader lease; share mode: always)",
                )
                .expect("valid metric"),
            ),
            sentinel_requests: cv(
                "crowsnest_sentinel_requests_total",
                "Requests to the Logs Ingestion API, by stream and HTTP status (0: no answer: connection error or timeout)",
                &["stream", "status"],
            ),
            sentinel_bytes: cv(
                "crowsnest_sentinel_bytes_total",
                "Request bytes accepted by the Logs Ingestion API, by stream and stage (raw JSON, gzip on the wire)",
                &["stream", "stage"],
            ),
            sentinel_records: cv("crowsnest_sentinel_records_total", "Rows accepted by the Logs Ingestion API, by stream", &["stream"]),
            sentinel_retries: cv(
                "crowsnest_sentinel_retries_total",
                "Requests retried, by stream and reason (throttled, server, connection, auth, split)",
                &["stream", "reason"],
            ),
            sentinel_throttled: cv("crowsnest_sentinel_throttled_total", "429 answers (Retry-After honoured), by stream", &["stream"]),
            sentinel_dead_letters: cv(
                "crowsnest_sentinel_dead_letters_total",
                "Rows the service refused (400, 404, too large) and sent to the dead-letter output, by stream",
                &["stream"],
            ),
            sentinel_spool_bytes: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("crowsnest_sentinel_spool_bytes", "Bytes of batches spooled on disk, not yet accepted"),
                    &["stream"],
                )
                .expect("valid metric"),
            ),
            sentinel_spool_oldest_seconds: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("crowsnest_sentinel_spool_oldest_seconds", "Age of the oldest spooled batch (0 when the spool is empty)"),
                    &["stream"],
                )
                .expect("valid metric"),
            ),
            sentinel_token_refreshes: cv("crowsnest_sentinel_token_refreshes_total", "Entra ID tokens obtained, by stream", &["stream"]),
            sentinel_token_failures: cv(
                "crowsnest_sentinel_token_failures_total",
                "Failures to obtain an Entra ID token, by stream",
                &["stream"],
            ),
            sentinel_events_errors: cv(
                "crowsnest_sentinel_events_errors_total",
                "Batches of audit events that events_where or the ASIM mapping failed on (not forwarded), by stream",
                &["stream"],
            ),
            lake_files: c("crowsnest_lake_files_total", "Parquet files written to the lake"),
            lake_rows: c("crowsnest_lake_rows_total", "Rows written to the lake (every table, alerts included)"),
            lake_bytes: c("crowsnest_lake_bytes_total", "Bytes of Parquet written to the lake"),
            registry: r,
        };
        m.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        m
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("encoding to memory");
        String::from_utf8(buf).unwrap_or_default()
    }
}
