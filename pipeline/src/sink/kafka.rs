//! Alerts (or dead letters) to a Kafka topic, keyed by alert id. `flush` returns only once the
//! broker acknowledged everything sent, so the source commits nothing the topic does not hold.
//! While the broker is slow or down, `send` waits for room in a bounded producer queue: the
//! pipeline slows down and the source pauses instead of buffering without bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use crate::kafka::{set_default, Connection, Role};
use crate::metrics::Metrics;

use super::{Record, Sink};

struct DeliveryContext {
    topic: String,
    /// The first delivery the broker finally refused (after librdkafka's own retries).
    failed: Mutex<Option<String>>,
    errors: AtomicU64,
    metrics: Metrics,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if crate::kafka::worth_logging(self.errors.fetch_add(1, Ordering::Relaxed) + 1) {
            log::warn!("kafka producer ({}): {error} ({reason}); retrying", self.topic);
        }
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.metrics.kafka_produced.with_label_values(&[&self.topic]).inc(),
            Err((e, _)) => {
                self.metrics.kafka_produce_errors.with_label_values(&[&self.topic]).inc();
                let mut failed = self.failed.lock().expect("delivery lock");
                if failed.is_none() {
                    *failed = Some(e.to_string());
                }
            }
        }
    }
}

pub struct KafkaSink {
    label: String,
    topic: String,
    producer: ThreadedProducer<DeliveryContext>,
    context: Arc<DeliveryContext>,
    flush_timeout: Duration,
}

impl KafkaSink {
    /// `label`: "alerts" or "dead-letters", for logs.
    pub fn new(connection: &Connection, topic: &str, label: &str, metrics: Metrics) -> Result<Self> {
        let mut c = connection.client_config(Role::Producer)?;
        let mut default = |k: &str, v: &str| set_default(&mut c, k, v);
        // Every replica must have it before it counts as delivered.
        default("acks", "all");
        // Never give up on a record because the broker is away for a while: retry until it is
        // back (the bounded queue below turns the wait into back-pressure).
        default("message.timeout.ms", "0");
        default("queue.buffering.max.messages", "100000");
        default("queue.buffering.max.kbytes", "65536");
        default("linger.ms", "5");
        let context = DeliveryContext { topic: topic.to_string(), failed: Mutex::new(None), errors: AtomicU64::new(0), metrics };
        let producer: ThreadedProducer<DeliveryContext> = c.create_with_context(context).context("creating the Kafka producer")?;
        let context = producer.context().clone();
        Ok(KafkaSink {
            label: format!("kafka {label}:{topic}"),
            topic: topic.to_string(),
            producer,
            context,
            flush_timeout: Duration::from_secs(30),
        })
    }

    fn check_failed(&self) -> Result<()> {
        if let Some(e) = self.context.failed.lock().expect("delivery lock").as_ref() {
            bail!("the broker refused a record for {}: {e}", self.topic);
        }
        Ok(())
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.label
    }

    fn send(&mut self, records: &[Record]) -> Result<()> {
        self.check_failed()?;
        for r in records {
            loop {
                let record = BaseRecord::to(&self.topic).key(r.key.as_bytes()).payload(&r.json[..]);
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // The broker is slow or away: wait for room rather than buffer more.
                        self.context.metrics.kafka_produce_retries.with_label_values(&[&self.topic]).inc();
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err((e, _)) => bail!("producing to {}: {e}", self.topic),
                }
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.producer
            .flush(self.flush_timeout)
            .with_context(|| format!("{}: not every record was acknowledged within {:?}", self.label, self.flush_timeout))?;
        self.check_failed()
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        // Best effort: the pipeline flushed before committing anything; this only helps a
        // run that stops on an error.
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}
