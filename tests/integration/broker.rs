//! A real Kafka-compatible broker for the tests: the `tansu` binary (`.ci/run` installs it;
//! `TANSU_BIN` points at another), started on a free loopback port, in memory or on SQLite so
//! it can be stopped and started again with its topics and committed offsets.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;

use crate::common::free_port;

/// tansu holds every fetch this long even when it has data (a Kafka broker answers at once):
/// consumers in the tests ask for a short wait so they are not slowed down for nothing.
pub const FETCH_WAIT_MS: &str = "10";

pub fn tansu_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("TANSU_BIN") {
        return p.into();
    }
    let mut candidates: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).map(|d| d.join("tansu")).collect()).unwrap_or_default();
    let cargo_home =
        std::env::var_os("CARGO_HOME").map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    candidates.extend(cargo_home.map(|h| h.join("bin/tansu")));
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("the Kafka tests need the tansu broker: cargo install tansu --locked --features dynostore,libsql (or set TANSU_BIN)")
    })
}

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    storage: String,
    dir: PathBuf,
    log: PathBuf,
}

impl Broker {
    /// Topics in memory: gone when the broker stops.
    pub fn in_memory(dir: &Path) -> Broker {
        Self::start_with(dir, "memory://tansu/".to_string())
    }

    /// Topics and committed offsets in a SQLite file: they survive a restart.
    pub fn on_disk(dir: &Path) -> Broker {
        // tansu resolves the path against its working directory (the test's directory).
        Self::start_with(dir, "sqlite://tansu.db".to_string())
    }

    fn start_with(dir: &Path, storage: String) -> Broker {
        let mut b = Broker { child: None, port: free_port(), storage, dir: dir.to_path_buf(), log: dir.join("tansu.log") };
        b.start();
        b
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("broker log");
        let child = Command::new(tansu_bin())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", &self.storage])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting tansu");
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", self.addr()).create().expect("metadata client");
        loop {
            if consumer.fetch_metadata(None, Duration::from_secs(2)).is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "tansu did not come up; see {}", self.log.display());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.addr()).create().expect("admin client");
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let result =
            futures::executor::block_on(admin.create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &opts))
                .expect("create_topics");
        for r in result {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
    }

    /// One message per batch: tansu 0.6 answers a fetch that starts inside a stored batch
    /// with the next batch, silently skipping the rest (a Kafka broker returns the batch that
    /// holds the offset). Consumers start mid-batch after every restart or pause, so batched
    /// test data would test that bug instead of Crowsnest.
    pub fn producer(&self) -> ThreadedProducer<DefaultProducerContext> {
        ClientConfig::new()
            .set("bootstrap.servers", self.addr())
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .set("message.timeout.ms", "60000")
            .set("message.max.bytes", "20000000")
            .create()
            .expect("producer")
    }

    /// Sends each message to partition `i % partitions`, in order, and waits for the broker.
    pub fn produce(&self, topic: &str, partitions: i32, messages: &[Vec<u8>]) {
        let p = self.producer();
        for (i, m) in messages.iter().enumerate() {
            let mut record = BaseRecord::<(), [u8]>::to(topic).payload(&m[..]).partition(i as i32 % partitions);
            loop {
                match p.send(record) {
                    Ok(()) => break,
                    Err((_, r)) => {
                        record = r;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
        p.flush(Duration::from_secs(60)).expect("the broker took every message");
    }

    /// Every message of `topic` (all partitions, from the beginning), read until `done`
    /// says so or `timeout` passes.
    pub fn read_all(&self, topic: &str, timeout: Duration, done: impl Fn(&[Vec<u8>]) -> bool) -> Vec<Vec<u8>> {
        // librdkafka wants a group id even for manually assigned partitions; nothing is committed.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.addr())
            .set("group.id", format!("test-reader-{}", free_port()))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", FETCH_WAIT_MS)
            .create()
            .expect("consumer");
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("topic metadata");
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning).expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        while Instant::now() < deadline && !done(&out) {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                out.push(m.payload().unwrap_or_default().to_vec());
            }
        }
        out
    }

    /// The group's committed offset of `topic`/`partition`, if any.
    pub fn committed(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", self.addr()).set("group.id", group).create().expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        let c = consumer.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
        c.elements().first().and_then(|e| e.offset().to_raw()).filter(|&o| o >= 0)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The ids of alert JSON documents.
pub fn alert_ids(docs: &[Vec<u8>]) -> HashSet<String> {
    docs.iter()
        .map(|d| {
            let v: serde_json::Value = serde_json::from_slice(d).expect("alerts are JSON");
            v["id"].as_str().expect("alerts have an id").to_string()
        })
        .collect()
}
