//! The command line: `crowsnest replay|run|validate|rules|schema|gen|bench`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, DeadLetterConfig, SinksConfig, SourceConfig};
use crate::engine::{Engine, EngineOptions};
use crate::kafka::{Connection, Role};
use crate::lake::LakeConfig;
use crate::metrics::Metrics;
use crate::pipeline::{self, Control, Outputs, Summary};
use crate::rules::{parse_duration, RuleSet};
use crate::sink::kafka::KafkaSink;
use crate::sink::lake::LakeSink;
use crate::sink::router::AlertRouter;
use crate::sink::sentinel::config::SentinelConfig;
use crate::sink::sentinel::events::EventForwarder;
use crate::sink::sentinel::{DeadLetterOut, Drain, SentinelSink};
use crate::sink::{JsonLinesFile, Sink, StdoutSink};
use crate::source::eventhubs::EventHubsSource;
use crate::source::file::{open_paths, FileSource, Opened};
use crate::source::kafka::{KafkaSource, KafkaSourceOptions};
use crate::source::{FramingLimits, Source};
use crate::{bench, gen, server, tables};

/// The bundled sample: AKS diagnostic-settings records, `crowsnest gen --events 3000 --seed 7`.
pub static SAMPLE: &[u8] = include_bytes!("../samples/aks-sample.jsonl.gz");
pub const SAMPLE_EVENTS: u64 = 3000;
pub const SAMPLE_SEED: u64 = 7;

#[derive(Parser)]
#[command(
    name = "crowsnest",
    version,
    about = "Streaming security analytics for Kubernetes audit logs (AKS first), on Arrow and DataFusion"
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run files (or stdin, or the bundled sample) through the pipeline: alerts as JSON lines on stdout, a summary on stderr.
    Replay(ReplayArgs),
    /// Run the service from a TOML config and/or source and sink URLs, with /metrics, /healthz and /readyz.
    Run(RunArgs),
    /// Check a config (and URLs) and the rules without running; --check also tries the sinks.
    Validate(ValidateArgs),
    /// List and test detection rules.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Print a table's schema (kube_audit, the Container Insights tables, alerts).
    Schema {
        /// Table name; omit with --write-dir.
        table: Option<String>,
        /// Print the published JSON form (what schemas/TABLE.json holds).
        #[arg(long)]
        json: bool,
        /// Write schemas/TABLE.json for every table into this directory.
        #[arg(long)]
        write_dir: Option<PathBuf>,
    },
    /// Generate realistic AKS kube-audit records (with attack scenarios) as JSON lines.
    Gen {
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Average events per second of event time.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// Output file (stdout when omitted); a name ending .gz is compressed.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Event time of the first event, RFC 3339 (default 2026-11-01T08:00:00Z).
        #[arg(long)]
        start: Option<String>,
        /// Background traffic only, no attack scenarios.
        #[arg(long)]
        no_attacks: bool,
        /// Audit records only, no Container Insights records (the audit records stay the same).
        #[arg(long)]
        no_insights: bool,
        /// Background traffic: calm (the bundled sample's), or public-api (a cluster whose API
        /// server has a public endpoint: nodes and agents call from the cluster's egress IP).
        #[arg(long, value_enum, default_value_t = gen::Profile::Calm)]
        profile: gen::Profile,
    },
    /// Measure replay throughput against serde_json::Value parsing (and DuckDB when available).
    Bench(bench::BenchArgs),
    /// Read-only SQL over the lake (or raw files, or the bundled sample): a query, a named hunt
    /// from the library, or, with neither, an interactive shell.
    Hunt(HuntArgs),
    /// Serve the lake (or files, or the bundled sample) over Arrow Flight SQL, read-only, to
    /// notebooks (ADBC), DBeaver (JDBC) and Grafana: the tables and named hunts of `hunt`.
    ServeSql(ServeSqlArgs),
    /// Look after the lake: compact small files of closed hours, prune old hours, show its size.
    Lake {
        #[command(subcommand)]
        command: LakeCommand,
    },
    /// Local stand-ins of Azure services, to try Crowsnest against with no Azure.
    Standin {
        #[command(subcommand)]
        command: StandinCommand,
    },
}

#[derive(Subcommand)]
enum StandinCommand {
    /// Serve AKS records (the bundled sample by default) over the Event Hubs AMQP protocol on a
    /// loopback port, with Azurite for checkpoints (--azurite DIR), and print the run command.
    Eventhubs(crate::standin::serve::StandinArgs),
}

#[derive(Args)]
struct HuntArgs {
    /// SQL, or the name of a hunt (crowsnest hunt --list); omit for the interactive shell.
    query: Option<String>,
    /// Raw input to hunt in, decoded on the fly (AKS envelopes, Events, Container Insights… as
    /// for replay). Without files or --lake: the bundled sample.
    files: Vec<PathBuf>,
    /// The lake: file:///PATH or az://CONTAINER/PREFIX (as the lake sink writes it).
    #[arg(long, value_name = "URL", env = "CROWSNEST_LAKE")]
    lake: Option<String>,
    /// Only events from this long ago (24h, 7d) or this RFC 3339 time on.
    #[arg(long)]
    since: Option<String>,
    /// Only events before this time (RFC 3339, or a duration back from now).
    #[arg(long)]
    until: Option<String>,
    /// A hunt's parameter, NAME=VALUE (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Output: table (default on a terminal), csv, json, ndjson (default when piped), parquet.
    #[arg(long, value_enum)]
    format: Option<crate::hunt::Format>,
    /// Print at most this many rows.
    #[arg(long)]
    max_rows: Option<usize>,
    /// List the hunt library.
    #[arg(long)]
    list: bool,
    /// Print a rule's matching rows (rules that match single events).
    #[arg(long, value_name = "ID")]
    rule: Option<String>,
    /// Print the SQL a named hunt runs, with its parameters filled in, instead of running it.
    #[arg(long)]
    show_sql: bool,
    #[command(flatten)]
    rules: RulesArg,
}

#[derive(Args)]
struct ServeSqlArgs {
    /// Raw input to serve, decoded at start (as for hunt). Without files or --lake: the sample.
    files: Vec<PathBuf>,
    /// The lake: file:///PATH or az://CONTAINER/PREFIX (as the lake sink writes it).
    #[arg(long, value_name = "URL", env = "CROWSNEST_LAKE")]
    lake: Option<String>,
    /// IP:PORT to listen on (port 0: any free port). Beyond loopback, tokens and TLS are required.
    #[arg(long, default_value = crate::hunt::flight::DEFAULT_LISTEN)]
    listen: String,
    /// Token file: lines USER:TOKEN (the token is also the user's password). $CROWSNEST_SQL_TOKEN
    /// adds one more ([USER:]TOKEN). With none, only loopback clients are served, unauthenticated.
    #[arg(long, value_name = "FILE")]
    tokens: Option<PathBuf>,
    /// PEM certificate chain: serve over TLS (clients connect to grpc+tls://).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve clear text beyond loopback (only behind a TLS-terminating proxy or mesh).
    #[arg(long)]
    allow_plaintext: bool,
    /// Memory one query may hold for sorts, joins and aggregations, MiB (nothing spills to disk).
    #[arg(long, default_value_t = 512)]
    memory_limit_mb: usize,
    /// Longest a query may run (30s, 5m).
    #[arg(long, default_value = "5m")]
    query_timeout: String,
    /// Queries running at once (more wait for a slot).
    #[arg(long, default_value_t = 4)]
    max_concurrent: usize,
    #[command(flatten)]
    rules: RulesArg,
}

impl ServeSqlArgs {
    fn config(&self) -> crate::hunt::flight::ServeConfig {
        crate::hunt::flight::ServeConfig {
            listen: self.listen.clone(),
            tokens_file: self.tokens.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            allow_plaintext: self.allow_plaintext,
            memory_limit_mb: self.memory_limit_mb,
            query_timeout: self.query_timeout.clone(),
            max_concurrent: self.max_concurrent,
        }
    }
}

#[derive(Subcommand)]
enum LakeCommand {
    /// Merge the small files of every hour that closed (idempotent; safe to run from cron).
    Compact {
        #[arg(long, value_name = "URL", env = "CROWSNEST_LAKE")]
        lake: String,
        /// Aim for files of about this many bytes.
        #[arg(long, default_value_t = 128 << 20)]
        target_bytes: u64,
        /// Only hours that ended at least this long ago (late rows may still arrive before).
        #[arg(long, default_value = "2h")]
        min_age: String,
    },
    /// Delete every hour older than the retention period.
    Prune {
        #[arg(long, value_name = "URL", env = "CROWSNEST_LAKE")]
        lake: String,
        /// Retention, e.g. 90d.
        #[arg(long)]
        older_than: String,
        /// Say what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Files, bytes and hours per table.
    Stats {
        #[arg(long, value_name = "URL", env = "CROWSNEST_LAKE")]
        lake: String,
    },
}

#[derive(Args, Clone)]
pub struct RulesArg {
    /// Rule directory (with rules/ and lists/) instead of the bundled rules.
    #[arg(long = "rules", value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl RulesArg {
    pub fn load(&self) -> Result<RuleSet> {
        match &self.dir {
            Some(d) => RuleSet::load(d),
            None => RuleSet::bundled(),
        }
    }
}

#[derive(Args)]
struct RunArgs {
    /// TOML config (see crowsnest.example.toml); the URLs below replace its sections.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// kafka://HOST:PORT/TOPIC[,TOPIC]?group=G&start=earliest|latest, file:///PATH[?follow=true],
    /// eventhubs://NAMESPACE.servicebus.windows.net/HUB?checkpoints=URL&auth=workload_identity[&group=G], or stdin.
    #[arg(long, value_name = "URL")]
    source: Option<String>,
    /// Where alerts go (repeatable): stdout, file:///PATH, kafka://HOST:PORT/TOPIC,
    /// sentinel://HOST?dcr=DCR_IMMUTABLE_ID&stream=Custom-CrowsnestAlert&auth=workload_identity.
    #[arg(long = "sink", value_name = "URL")]
    sinks: Vec<String>,
    /// Where dead letters go: file:///PATH (or a path) or kafka://HOST:PORT/TOPIC.
    #[arg(long, value_name = "URL")]
    dead_letters: Option<String>,
    /// Keep every decoded row and alert as Parquet: file:///PATH or az://CONTAINER/PREFIX (replaces [sinks.lake] url).
    #[arg(long, value_name = "URL")]
    lake: Option<String>,
    #[command(flatten)]
    rules: RulesArg,
}

#[derive(Args)]
struct ValidateArgs {
    #[command(flatten)]
    run: RunArgs,
    /// Also try the source and sinks: the Sentinel sink gets a token and posts an empty batch;
    /// an Event Hubs source opens the hub, a reader and the checkpoint container. Each says
    /// what a refusal (401, 403, 404, unauthorized-access, not-found) means.
    #[arg(long)]
    check: bool,
}

impl RunArgs {
    fn config(&self) -> Result<Config> {
        let mut cfg = match &self.config {
            Some(p) => Config::load(p)?,
            None if self.source.is_some() => Config::default(),
            None => bail!("give a config (-c FILE) or a source (--source URL)"),
        };
        cfg.override_with(self.source.as_deref(), &self.sinks, self.dead_letters.as_deref())?;
        if let Some(url) = &self.lake {
            let from_url = LakeConfig::from_url(url)?;
            cfg.sinks.lake = Some(match cfg.sinks.lake.take() {
                // The URL replaces where the lake is; the file's roll settings stay.
                Some(l) => LakeConfig { url: from_url.url, options: l.options.into_iter().chain(from_url.options).collect(), ..l },
                None => from_url,
            });
        }
        Ok(cfg)
    }

    fn label(&self) -> String {
        self.config.as_ref().map_or_else(|| "command line".to_string(), |p| p.display().to_string())
    }
}

#[derive(Args)]
struct ReplayArgs {
    /// AKS envelopes, audit Events or EventLists: JSON lines or one document, gzip or not; `-` is stdin. Without files, the bundled sample.
    files: Vec<PathBuf>,
    #[command(flatten)]
    rules: RulesArg,
    /// Where dead letters go (created only when there is one).
    #[arg(long, default_value = "dead-letters.jsonl")]
    dead_letters: PathBuf,
    /// Where events that arrived after their window fired go (created only when there is one).
    #[arg(long, default_value = "late-events.jsonl")]
    late_events: PathBuf,
    /// Also append alerts to this file.
    #[arg(long)]
    alerts: Option<PathBuf>,
    /// Where alerts go instead of stdout (repeatable), as for `run`: file:///PATH,
    /// kafka://HOST:PORT/TOPIC, sentinel://HOST?dcr=…&stream=…&auth=… (a backfill into Sentinel
    /// is a replay: it ends once Azure accepted every alert).
    #[arg(long = "sink", value_name = "URL")]
    sinks: Vec<String>,
    /// Do not print alerts on stdout (with --alerts, or to see only the summary).
    #[arg(long)]
    no_stdout: bool,
    /// How late an event may be and still count in its window, e.g. 30s, 5m.
    #[arg(long, default_value = "1m")]
    allowed_lateness: String,
    /// Decode threads (default: cores, at most 8).
    #[arg(long)]
    workers: Option<usize>,
    /// Largest line or document accepted, bytes.
    #[arg(long, default_value_t = 16 << 20)]
    max_document_bytes: usize,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Load first-sighting histories from DIR and save them there at the end.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Also keep every decoded row and alert as Parquet, for `crowsnest hunt`: file:///PATH
    /// or az://CONTAINER/PREFIX. Replaying the same input again adds nothing.
    #[arg(long, value_name = "URL")]
    lake: Option<String>,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// List the loaded rules.
    List {
        #[command(flatten)]
        rules: RulesArg,
    },
    /// Run every rule's own test cases (or those of the given rule ids).
    Test {
        ids: Vec<String>,
        #[command(flatten)]
        rules: RulesArg,
        /// Print the alerts each case produced.
        #[arg(long)]
        show_alerts: bool,
    },
    /// Check every rule's metadata, catalog names, test cases and SQL (columns, lists, entities).
    Lint {
        #[command(flatten)]
        rules: RulesArg,
    },
    /// Which MITRE techniques, Threat Matrix cells and hardening controls the rules cover.
    Coverage {
        #[command(flatten)]
        rules: RulesArg,
    },
    /// Run one rule over recorded input (files, or the lake) and show what it would have fired, per day.
    Backtest {
        /// The rule id.
        rule: String,
        /// Input files (as for replay); `-` is stdin.
        #[arg(required_unless_present = "lake")]
        files: Vec<PathBuf>,
        /// Read the rows from the lake instead of files.
        #[arg(long, value_name = "URL", conflicts_with = "files")]
        lake: Option<String>,
        /// With --lake: only events from this long ago (30d) or this RFC 3339 time on.
        #[arg(long, requires = "lake")]
        since: Option<String>,
        #[arg(long, requires = "lake")]
        until: Option<String>,
        #[command(flatten)]
        rules: RulesArg,
        /// Print the alerts as JSON lines instead of a table.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = "1m")]
        allowed_lateness: String,
        /// Decode threads (default: cores, at most 8).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Convert Sigma rules (logsource product: kubernetes, service: audit) into Crowsnest rules.
    ImportSigma {
        /// A Sigma rule file, or a directory searched for *.yml/*.yaml.
        path: PathBuf,
        /// Where the converted rules are written (created if needed).
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // The Azure SDK logs through `tracing` (forwarded to `log`): its info lines narrate every
    // balancing round, so it says only what goes wrong unless asked (-vv, or CROWSNEST_LOG).
    let level = match cli.verbose {
        // Flight SQL's query log (user, text hash, rows, time) is an audit trail: always on.
        0 => "warn,crowsnest::sql=info",
        1 => "info,azure_messaging_eventhubs=warn,azure_messaging_eventhubs_checkpointstore_blob=warn,azure_core_amqp=warn,fe2o3_amqp=warn",
        _ => "debug,fe2o3_amqp=info,hyper_util=info,reqwest=info",
    };
    env_logger::Builder::from_env(env_logger::Env::default().filter_or("CROWSNEST_LOG", level)).target(env_logger::Target::Stderr).init();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crowsnest: error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn dispatch(cmd: Command) -> Result<std::process::ExitCode> {
    use std::process::ExitCode;
    match cmd {
        Command::Replay(a) => replay(a).map(|_| ExitCode::SUCCESS),
        Command::Run(a) => run_service(&a).map(|_| ExitCode::SUCCESS),
        Command::Validate(a) => validate(&a.run, a.check).map(|_| ExitCode::SUCCESS),
        Command::Rules { command: RulesCommand::List { rules } } => rules_list(&rules).map(|_| ExitCode::SUCCESS),
        Command::Rules { command: RulesCommand::Test { ids, rules, show_alerts } } => rules_test(&ids, &rules, show_alerts),
        Command::Rules { command: RulesCommand::Lint { rules } } => rules_lint(&rules),
        Command::Rules { command: RulesCommand::Coverage { rules } } => {
            print!("{}", crate::rules::coverage::Coverage::of(&rules.load()?).render());
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules { command: RulesCommand::Backtest { rule, files, lake, since, until, rules, json, allowed_lateness, workers } } => {
            let opts = EngineOptions {
                allowed_lateness: parse_duration(&allowed_lateness).context("--allowed-lateness")?,
                ..EngineOptions::default()
            };
            let b = match lake {
                Some(url) => {
                    let range = crate::hunt::TimeRange::parse(since.as_deref(), until.as_deref())?;
                    crate::backtest::run_lake(rules.load()?, &rule, &LakeConfig::from_url(&url)?, range, &opts)?
                }
                None => crate::backtest::run(rules.load()?, &rule, &files, &opts, workers)?,
            };
            let mut out = std::io::stdout().lock();
            if json {
                for a in &b.alerts {
                    writeln!(out, "{a}")?;
                }
            } else {
                write!(out, "{}", b.render())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules { command: RulesCommand::ImportSigma { path, out } } => import_sigma(&path, &out),
        Command::Schema { table, json, write_dir } => schema(table.as_deref(), json, write_dir.as_deref()).map(|_| ExitCode::SUCCESS),
        Command::Gen { events, seed, rate, out, start, no_attacks, no_insights, profile } => {
            let mut opts = gen::GenOptions {
                events,
                seed,
                events_per_second: rate,
                attacks: !no_attacks,
                insights: !no_insights,
                profile,
                ..gen::GenOptions::default()
            };
            if let Some(s) = start {
                let nanos =
                    crate::decode::time::parse_rfc3339_nanos(&s).with_context(|| format!("--start {s:?} is not an RFC 3339 time"))?;
                opts.start_unix_secs = nanos.div_euclid(1_000_000_000);
            }
            generate(&opts, out.as_deref()).map(|_| ExitCode::SUCCESS)
        }
        Command::Bench(a) => bench::run(&a).map(|_| ExitCode::SUCCESS),
        Command::Hunt(a) => hunt(a),
        Command::ServeSql(a) => serve_sql(&a).map(|_| ExitCode::SUCCESS),
        Command::Lake { command } => lake(command).map(|_| ExitCode::SUCCESS),
        Command::Standin { command: StandinCommand::Eventhubs(a) } => crate::standin::serve::run(&a).map(|_| ExitCode::SUCCESS),
    }
}

fn hunt(a: HuntArgs) -> Result<std::process::ExitCode> {
    use crate::hunt::{library, Presentation, TimeRange};
    let lib = library::Library::load(a.rules.dir.as_deref())?;
    if a.list {
        print!("{}", lib.render_list());
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let set = a.rules.load()?;
    let params = library::parse_params(&a.params)?;
    let sql = match (&a.rule, &a.query) {
        (Some(_), Some(_)) => bail!("give a query or --rule, not both"),
        (Some(id), None) => Some(crate::hunt::rule_sql(&set, id)?),
        (None, Some(q)) => match lib.get(q) {
            Some(h) => Some(h.render(&params)?),
            None if !params.is_empty() => bail!("--param is for named hunts, and there is no hunt {q:?} (crowsnest hunt --list)"),
            // A word that is no SQL is most likely a mistyped hunt name.
            None if !q.contains(char::is_whitespace) => bail!("no hunt named {q:?} (crowsnest hunt --list); SQL needs quotes"),
            None => Some(q.clone()),
        },
        (None, None) => None,
    };
    if a.show_sql {
        println!("{}", sql.as_deref().unwrap_or_default());
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let input = hunt_input(a.lake.as_deref(), &a.files)?;
    let range = TimeRange::parse(a.since.as_deref(), a.until.as_deref())?;
    let session = crate::hunt::open(&input, range, Arc::new(set.lists.clone()))?;
    session.register_hunts(&lib)?;
    let p = Presentation::default_for_stdout(a.format, a.max_rows);
    match sql {
        Some(sql) => {
            crate::hunt::run_and_print(&session, &sql, &p, &mut std::io::stdout().lock())?;
        }
        None => crate::hunt::shell::run(&session, p)?,
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The lake `[hunt]` serves: the one this run writes.
fn hunt_lake(cfg: &Config) -> Result<LakeConfig> {
    cfg.sinks.lake.clone().context("[hunt] serves the lake this run writes: configure [sinks.lake] too")
}

fn hunt_input(lake: Option<&str>, files: &[PathBuf]) -> Result<crate::hunt::Input> {
    use crate::hunt::Input;
    Ok(match (lake, files.is_empty()) {
        (Some(_), false) => bail!("give --lake or files, not both"),
        (Some(url), true) => Input::Lake(LakeConfig::from_url(url)?),
        (None, false) => Input::Files(files.to_vec()),
        (None, true) => {
            eprintln!("crowsnest: hunting in the bundled sample; give --lake URL or FILE… for your own data");
            Input::Sample
        }
    })
}

/// Opens the hunt catalog over `input` with the named hunts as table functions.
fn hunt_catalog(input: &crate::hunt::Input, rules: &RulesArg) -> Result<crate::hunt::HuntSession> {
    let set = rules.load()?;
    let lib = crate::hunt::library::Library::load(rules.dir.as_deref())?;
    let session = crate::hunt::open(input, crate::hunt::TimeRange::default(), Arc::new(set.lists.clone()))?;
    session.register_hunts(&lib)?;
    Ok(session)
}

fn serve_sql(a: &ServeSqlArgs) -> Result<()> {
    use crate::hunt::flight;
    let session = hunt_catalog(&hunt_input(a.lake.as_deref(), &a.files)?, &a.rules)?;
    let cfg = a.config();
    session.block_on(async {
        let bound = flight::bind(&cfg).await?;
        eprintln!("crowsnest: serving Flight SQL on {} ({})", bound.url(), describe_sql_server(&bound, &cfg));
        flight::serve(bound, session.context().clone(), wait_for_signal()).await
    })
}

fn describe_sql_server(bound: &crate::hunt::flight::Bound, cfg: &crate::hunt::flight::ServeConfig) -> String {
    let auth = match bound.auth().users() {
        0 => "no authentication: loopback only".to_string(),
        n => format!("{n} user(s) with tokens"),
    };
    format!("{auth}; {} MiB and {} per query, {} at once; Ctrl-C stops", cfg.memory_limit_mb, cfg.query_timeout, cfg.max_concurrent)
}

fn lake(cmd: LakeCommand) -> Result<()> {
    use crate::lake::{layout, maintain, Store};
    match cmd {
        LakeCommand::Compact { lake, target_bytes, min_age } => {
            let store = Store::open(&LakeConfig::from_url(&lake)?)?;
            let min_age = layout::hours_of(&min_age).context("--min-age")?;
            let r = maintain::compact(&store, target_bytes, min_age, &|dir| eprintln!("compacting {dir}"))?;
            println!(
                "compacted {} partitions: {} files into {} ({} rows, {} duplicate rows dropped, {:.1} MB into {:.1} MB)",
                r.partitions,
                r.files_in,
                r.files_out,
                r.rows,
                r.duplicates_dropped,
                r.bytes_in as f64 / 1e6,
                r.bytes_out as f64 / 1e6
            );
        }
        LakeCommand::Prune { lake, older_than, dry_run } => {
            let store = Store::open(&LakeConfig::from_url(&lake)?)?;
            let hours = layout::hours_of(&older_than).context("--older-than")?;
            let r = maintain::prune(&store, hours, dry_run)?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            println!("{verb} {} files ({:.1} MB) of hours older than {older_than}", r.files, r.bytes as f64 / 1e6);
        }
        LakeCommand::Stats { lake } => {
            let store = Store::open(&LakeConfig::from_url(&lake)?)?;
            println!("{:<22} {:>8} {:>12}  HOURS", "TABLE", "FILES", "MB");
            for (table, files, bytes, range) in maintain::stats(&store)? {
                let hours = range.map_or(String::new(), |(a, b)| {
                    let p = |h| layout::partition_dir("", h).trim_start_matches("table=/").to_string();
                    format!("{} … {}", p(a), p(b))
                });
                println!("{table:<22} {files:>8} {:>12.1}  {hours}", bytes as f64 / 1e6);
            }
        }
    }
    Ok(())
}

fn replay(a: ReplayArgs) -> Result<Summary> {
    let set = a.rules.load()?;
    let mut control = Control { progress: !a.no_progress, state_dir: a.state_dir.clone(), ..Control::default() };
    if let Some(w) = a.workers {
        control.workers = w.max(1);
    }
    let limits = FramingLimits { max_document_bytes: a.max_document_bytes, ..FramingLimits::default() };
    let opened = if a.files.is_empty() {
        eprintln!("crowsnest: replaying the bundled sample ({SAMPLE_EVENTS} generated AKS audit events with attack scenarios); pass FILE… or - for your own data");
        let sample: Box<dyn Source> =
            Box::new(FileSource::from_bytes("sample:aks-sample.jsonl.gz", SAMPLE, limits, control.bytes_read.clone())?);
        Opened { sources: vec![sample], ..Opened::default() }
    } else {
        open_paths(&a.files, &limits, &control.bytes_read)?
    };
    let opts = EngineOptions {
        allowed_lateness: parse_duration(&a.allowed_lateness).context("--allowed-lateness")?,
        min_lateness: opened.lateness(),
        ..EngineOptions::default()
    };
    opened.notices().iter().for_each(|n| eprintln!("crowsnest: {n}"));
    let engine = Engine::new(&set, &opts)?;
    log::info!("{} rules planned", engine.rule_count());
    let sources = opened.sources;
    let metrics = Metrics::new();
    // A replay's output is bounded by its input: its files are written whole, never rolled over.
    let dead_letter_cfg = DeadLetterConfig { file: a.dead_letters.clone(), max_file_mb: 0, ..DeadLetterConfig::default() };
    let cx = SinkContext {
        dead_letters: &dead_letter_cfg,
        state_dir: a.state_dir.as_deref(),
        metrics: &metrics,
        drain: Drain::Complete,
        stop: None,
    };
    // --sink URLs, read once: the alert sinks, and the Sentinel sink's events stream.
    let sinks_cfg = if a.sinks.is_empty() {
        None
    } else {
        let mut cfg = Config::default();
        cfg.override_with(None, &a.sinks, None)?;
        Some(cfg.sinks)
    };
    let mut sinks = match &sinks_cfg {
        Some(s) => alert_sinks(s, &cx)?,
        None if a.no_stdout => vec![],
        None => vec![Box::new(StdoutSink) as Box<dyn Sink>],
    };
    if let Some(p) = &a.alerts {
        sinks.push(Box::new(JsonLinesFile::new(p, "file")));
    }
    let events = match sinks_cfg.as_ref().and_then(|s| s.sentinel.as_ref()) {
        Some(s) => event_forwarder(s, &set, &cx)?,
        None => None,
    };
    let lake = match &a.lake {
        Some(url) => Some(LakeSink::new(&LakeConfig::from_url(url)?)?),
        None => None,
    };
    let mut outputs = Outputs {
        sinks,
        dead_letters: Some(Box::new(JsonLinesFile::new(&a.dead_letters, "dead-letters"))),
        late_events: Some(Box::new(JsonLinesFile::new(&a.late_events, "late-events"))),
        events,
        lake,
    };
    let router = AlertRouter::new(set.suppression_periods(), 1 << 20);
    let summary = pipeline::run(sources, engine, router, &mut outputs, &metrics, &control)?;
    eprint!("{}", summary.render(Some(&a.dead_letters.display().to_string())));
    Ok(summary)
}

fn load_rules_for(cfg: &Config, arg: &RulesArg) -> Result<RuleSet> {
    let arg = RulesArg { dir: arg.dir.clone().or_else(|| cfg.rules.dir.clone()) };
    let mut set = arg.load()?;
    for (name, o) in &cfg.rules.lists {
        set.lists.set(name, o.values.clone(), o.replace);
    }
    Ok(set)
}

fn engine_options(cfg: &Config) -> Result<EngineOptions> {
    let mut opts = EngineOptions::default();
    if let Some(l) = &cfg.rules.allowed_lateness {
        opts.allowed_lateness = parse_duration(l)?;
    }
    if let Some(l) = &cfg.rules.idle_timeout {
        opts.idle_timeout = std::time::Duration::from_nanos(parse_duration(l)?.max(0) as u64);
    }
    if let Some(n) = cfg.rules.max_groups_per_rule {
        opts.max_groups_per_rule = n;
    }
    Ok(opts)
}

fn kafka_source_options(cfg: &Config) -> Option<(KafkaSourceOptions, Option<&str>)> {
    let SourceConfig::Kafka { brokers, topics, group, start, preset, password_env, librdkafka, commit_interval } = &cfg.source else {
        return None;
    };
    let connection =
        Connection { brokers: brokers.clone(), preset: *preset, password_env: password_env.clone(), librdkafka: librdkafka.clone() };
    let opts = KafkaSourceOptions {
        connection,
        topics: topics.clone(),
        group: group.clone(),
        start: *start,
        linger: crate::source::kafka::DEFAULT_LINGER,
    };
    Some((opts, commit_interval.as_deref()))
}

fn describe_source(cfg: &Config) -> String {
    match &cfg.source {
        SourceConfig::Stdin => "stdin".to_string(),
        SourceConfig::File { paths, follow } => {
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            format!("file {}{}", names.join(", "), if *follow { " (follow)" } else { "" })
        }
        SourceConfig::Kafka { brokers, topics, group, preset, .. } => {
            let preset = if preset.is_some() { " (Event Hubs)" } else { "" };
            format!("kafka {} at {brokers}{preset}, group {group}", topics.join(","))
        }
        SourceConfig::Eventhubs(e) => e.describe(),
    }
}

/// What the sinks with a spool of their own are given besides their config.
struct SinkContext<'a> {
    dead_letters: &'a DeadLetterConfig,
    state_dir: Option<&'a Path>,
    metrics: &'a Metrics,
    /// How long the Sentinel sink may take to deliver its spool when the run ends.
    drain: Drain,
    /// The service's stop flag (none for a replay): a wait for room in a full spool ends there.
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl SinkContext<'_> {
    fn sentinel(&self, cfg: &SentinelConfig) -> Result<SentinelSink> {
        // Rows the service refuses go where the pipeline's dead letters go, through an output
        // of the sink's own (it writes them from its sender thread).
        let dead = DeadLetterOut::new(dead_letter_sink(self.dead_letters, self.metrics)?);
        let sink = SentinelSink::new(cfg, self.state_dir, dead, self.metrics.clone(), self.drain.clone())?;
        Ok(match &self.stop {
            Some(stop) => sink.with_stop(stop.clone()),
            None => sink,
        })
    }
}

/// The alert sinks a config names.
fn alert_sinks(sinks_cfg: &SinksConfig, cx: &SinkContext<'_>) -> Result<Vec<Box<dyn Sink>>> {
    let metrics = cx.metrics;
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if sinks_cfg.stdout {
        sinks.push(Box::new(StdoutSink));
    }
    if let Some(p) = &sinks_cfg.file {
        sinks.push(Box::new(JsonLinesFile::new(p, "file")));
    }
    if let Some(k) = &sinks_cfg.kafka {
        sinks.push(Box::new(KafkaSink::new(&k.connection(), &k.topic, "alerts", metrics.clone())?));
    }
    if let Some(s) = &sinks_cfg.sentinel {
        sinks.push(Box::new(cx.sentinel(s)?));
    }
    Ok(sinks)
}

/// The normalized-events stream of a Sentinel sink, when `forward_events` asks for it.
fn event_forwarder(s: &SentinelConfig, set: &RuleSet, cx: &SinkContext<'_>) -> Result<Option<EventForwarder>> {
    let Some(events_cfg) = s.events_config() else { return Ok(None) };
    let sink = cx.sentinel(&events_cfg)?.prebuilt_rows();
    let forwarder = EventForwarder::new(s.events_where.as_deref(), Arc::new(set.lists.clone()), Box::new(sink))?
        .counting_errors_in(cx.metrics.sentinel_events_errors.with_label_values(&[&events_cfg.stream]));
    log::warn!(
        "forwarding audit events{} as ASIM Audit Events to stream {}",
        s.events_where.as_deref().map(|w| format!(" where {w}")).unwrap_or_default(),
        events_cfg.stream
    );
    Ok(Some(forwarder))
}

fn dead_letter_sink(cfg: &DeadLetterConfig, metrics: &Metrics) -> Result<Box<dyn Sink>> {
    Ok(match &cfg.kafka {
        Some(k) => Box::new(KafkaSink::new(&k.connection(), &k.topic, "dead-letters", metrics.clone())?),
        None => Box::new(JsonLinesFile::new(&cfg.file, "dead-letters").rotating(crate::config::rotation(cfg.max_file_mb, cfg.keep_files))),
    })
}

/// The alert sinks and the dead-letter output a config names.
fn build_outputs(cfg: &Config, set: &RuleSet, metrics: &Metrics, stop: &Arc<std::sync::atomic::AtomicBool>) -> Result<Outputs> {
    let drain = Drain::at_most(cfg.sinks.sentinel.as_ref().map_or(std::time::Duration::ZERO, |s| s.drain_timeout()));
    let cx = SinkContext { dead_letters: &cfg.dead_letters, state_dir: cfg.state.dir.as_deref(), metrics, drain, stop: Some(stop.clone()) };
    let sinks = alert_sinks(&cfg.sinks, &cx)?;
    if sinks.is_empty() {
        bail!("no alert sink configured: alerts would go nowhere");
    }
    let dead_letters = dead_letter_sink(&cfg.dead_letters, metrics)?;
    let late_events: Box<dyn Sink> = Box::new(
        JsonLinesFile::new(&cfg.late_events.file, "late-events")
            .rotating(crate::config::rotation(cfg.late_events.max_file_mb, cfg.late_events.keep_files)),
    );
    let events = match &cfg.sinks.sentinel {
        Some(s) => event_forwarder(s, set, &cx)?,
        None => None,
    };
    let lake = match &cfg.sinks.lake {
        Some(l) => {
            let sink = LakeSink::new(l)?.for_service(metrics.clone());
            log::warn!("keeping every row in the lake {}", sink.name());
            Some(sink)
        }
        None => None,
    };
    Ok(Outputs { sinks, dead_letters: Some(dead_letters), late_events: Some(late_events), events, lake })
}

fn validate(args: &RunArgs, check: bool) -> Result<()> {
    let cfg = args.config()?;
    let set = load_rules_for(&cfg, &args.rules)?;
    let engine = Engine::new(&set, &engine_options(&cfg)?)?;
    if let SourceConfig::File { paths, .. } = &cfg.source {
        for p in paths {
            if !p.exists() {
                bail!("[source] path {} does not exist", p.display());
            }
        }
    }
    // Kafka settings are checked as the clients would be built (presets, password variables),
    // without connecting.
    if let Some((opts, _)) = kafka_source_options(&cfg) {
        opts.connection.client_config(Role::Consumer).context("[source]")?;
    }
    for k in cfg.sinks.kafka.iter().chain(cfg.dead_letters.kafka.iter()) {
        k.connection().client_config(Role::Producer).with_context(|| format!("kafka sink {}", k.topic))?;
    }
    if let SourceConfig::Eventhubs(e) = &cfg.source {
        if check {
            for line in crate::source::eventhubs::validate::check(e)? {
                println!("{line}");
            }
        }
    }
    if let Some(s) = &cfg.sinks.sentinel {
        // The identity settings are checked as the credential would be built.
        let http = crate::sink::sentinel::auth::http_client(s)?;
        crate::sink::sentinel::auth::Auth::new(s, http)?;
        if s.forward_events.is_some() {
            crate::sink::sentinel::events::check(s.events_where.as_deref(), Arc::new(set.lists.clone()))?;
        }
        if check {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            println!("{}", rt.block_on(crate::sink::sentinel::check::check(s))?);
            // The events stream is a stream of its own in the DCR: it may be missing there.
            if let Some(events) = s.events_config() {
                println!("{}", rt.block_on(crate::sink::sentinel::check::check(&events))?);
            }
        }
    }
    if let Some(l) = &cfg.sinks.lake {
        l.roll_age()?;
        // Opening builds the client (settings, credentials from the environment); --check
        // also lists the writer's state folder, which needs read access to the container.
        let store = crate::lake::Store::open(l)?;
        if check {
            store.list(crate::lake::layout::STATE_DIR).context("[sinks.lake] the lake could not be read")?;
            println!("lake {}: reachable", store.display());
        }
    }
    if let Some(h) = &cfg.hunt {
        hunt_lake(&cfg)?;
        println!("[hunt] Flight SQL on {}", h.check().context("[hunt]")?);
    }
    let metrics = if cfg.metrics.enabled { cfg.metrics.listen.as_str() } else { "off" };
    println!(
        "{}: OK — {} rules planned, {} lists; source: {}; metrics: {metrics}",
        args.label(),
        engine.rule_count(),
        set.lists.lists.len(),
        describe_source(&cfg)
    );
    Ok(())
}

fn run_service(args: &RunArgs) -> Result<()> {
    let cfg = args.config()?;
    let set = load_rules_for(&cfg, &args.rules)?;
    let engine = Engine::new(&set, &engine_options(&cfg)?)?;
    let mut control = Control { state_dir: cfg.state.dir.clone(), ..Control::default() };
    if let Some(w) = cfg.limits.workers {
        control.workers = w.max(1);
    }
    let limits = FramingLimits { max_document_bytes: cfg.limits.max_document_bytes, ..FramingLimits::default() };
    let metrics = Arc::new(Metrics::new());
    // Kafka chunks are smaller: offsets are committed chunk by chunk.
    let kafka_limits = FramingLimits { chunk_bytes: 1 << 20, ..limits.clone() };
    let sources: Vec<Box<dyn Source>> = match &cfg.source {
        SourceConfig::Kafka { .. } => {
            let (opts, interval) = kafka_source_options(&cfg).expect("a kafka source");
            if let Some(i) = interval {
                control.checkpoint_interval = std::time::Duration::from_nanos(parse_duration(i)?.max(1) as u64);
            }
            let source = KafkaSource::new(&opts, kafka_limits, control.bytes_read.clone(), control.stop.clone(), (*metrics).clone())?;
            vec![Box::new(source)]
        }
        SourceConfig::Eventhubs(e) => {
            if let Some(i) = e.commit_interval() {
                control.checkpoint_interval = i;
            }
            let source = EventHubsSource::new(e, kafka_limits, control.bytes_read.clone(), control.stop.clone(), (*metrics).clone())?;
            vec![Box::new(source)]
        }
        SourceConfig::Stdin => vec![Box::new(FileSource::stdin(limits, control.bytes_read.clone())?)],
        SourceConfig::File { paths, follow } => {
            let mut v: Vec<Box<dyn Source>> = Vec::new();
            for p in paths {
                let s = FileSource::open(p, limits.clone(), control.bytes_read.clone())?;
                v.push(Box::new(if *follow { s.follow(control.stop.clone()) } else { s }));
            }
            v
        }
    };
    let mut outputs = build_outputs(&cfg, &set, &metrics, &control.stop)?;
    let dead_letter_name = outputs.dead_letters.as_ref().map(|d| d.name().to_string());
    log::warn!("source: {}", describe_source(&cfg));
    let health = Arc::new(server::Health::default());
    let router = AlertRouter::new(set.suppression_periods(), 1 << 20);

    // `[hunt] listen`: the lake this run writes, served over Flight SQL on its own runtime
    // (queries never share the engine's thread); new files show in the next query.
    if let Some(hunt) = &cfg.hunt {
        let session = hunt_catalog(&crate::hunt::Input::Lake(hunt_lake(&cfg)?), &args.rules)?;
        let bound = session.block_on(crate::hunt::flight::bind(hunt))?;
        log::warn!("Flight SQL on {} ({})", bound.url(), describe_sql_server(&bound, hunt));
        std::thread::Builder::new().name("sql-server".into()).spawn(move || {
            let ctx = session.context().clone();
            if let Err(e) = session.block_on(crate::hunt::flight::serve(bound, ctx, std::future::pending())) {
                log::error!("the Flight SQL server stopped: {e:#}");
            }
        })?;
    }

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let summary = rt.block_on(async {
        if cfg.metrics.enabled {
            let listener = server::bind(&cfg.metrics.listen).await?;
            log::warn!("metrics and health on http://{}/metrics", cfg.metrics.listen);
            tokio::spawn(server::serve(listener, metrics.clone(), health.clone()));
        }
        let stop = control.stop.clone();
        let h = health.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            log::warn!("stopping: finishing the input read so far, firing open windows, flushing sinks");
            h.stopping.store(true, Ordering::Relaxed);
            stop.store(true, Ordering::Relaxed);
            // A source blocked in a read (stdin) cannot see the flag: give it a grace period.
            wait_for_signal().await;
            log::error!("second signal: exiting without flushing");
            std::process::exit(130);
        });
        health.ready.store(true, Ordering::Relaxed);
        let m = metrics.clone();
        let result = tokio::task::spawn_blocking(move || pipeline::run(sources, engine, router, &mut outputs, &m, &control)).await?;
        health.ready.store(false, Ordering::Relaxed);
        result
    })?;
    eprint!("{}", summary.render(dead_letter_name.as_deref()));
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

fn rules_list(rules: &RulesArg) -> Result<()> {
    let set = rules.load()?;
    let engine = Engine::new(&set, &EngineOptions::default())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<14} {:<9} {:<10} {:<22} TITLE", "ID", "SEVERITY", "KIND", "MITRE")?;
    for (rule, kind) in engine.rules() {
        writeln!(out, "{:<14} {:<9} {:<10} {:<22} {}", rule.id, rule.severity.as_str(), kind, rule.mitre.join(","), rule.title)?;
    }
    writeln!(out, "{} rules, {} lists ({})", set.rules.len(), set.lists.lists.len(), set.dir.display())?;
    Ok(())
}

fn rules_test(ids: &[String], rules: &RulesArg, show: bool) -> Result<std::process::ExitCode> {
    let mut set = rules.load()?;
    if !ids.is_empty() {
        set.retain_ids(ids)?;
    }
    let results = crate::rule_tests::run_all(&set, &EngineOptions::default())?;
    let mut out = std::io::stdout().lock();
    let (mut passed, mut failed) = (0, 0);
    let mut current = String::new();
    for r in &results {
        if r.rule_id != current {
            let rule = set.rules.iter().find(|x| x.id == r.rule_id).map(|x| x.title.as_str()).unwrap_or("");
            writeln!(out, "{} {rule}", r.rule_id)?;
            current = r.rule_id.clone();
        }
        match &r.failure {
            None => {
                passed += 1;
                writeln!(out, "  ok    {}", r.case)?;
            }
            Some(f) => {
                failed += 1;
                writeln!(out, "  FAIL  {}: {f}", r.case)?;
            }
        }
        if show {
            for a in &r.alerts {
                writeln!(out, "        {}", serde_json::to_string(a)?)?;
            }
        }
    }
    writeln!(out, "rules: {passed} passed, {failed} failed")?;
    Ok(if failed == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}

fn rules_lint(rules: &RulesArg) -> Result<std::process::ExitCode> {
    use crate::rule_lint::{lint, Level};
    let set = rules.load()?;
    let findings = lint(&set);
    let mut out = std::io::stdout().lock();
    for r in &set.rules {
        let mine: Vec<_> = findings.iter().filter(|f| f.rule_id == r.id).collect();
        if !mine.is_empty() {
            writeln!(out, "{} ({})", r.id, r.path.display())?;
            for f in mine {
                writeln!(out, "  {f}")?;
            }
        }
    }
    let errors = findings.iter().filter(|f| f.level == Level::Error).count();
    let warnings = findings.len() - errors;
    writeln!(out, "lint: {} rules, {errors} error(s), {warnings} warning(s)", set.rules.len())?;
    Ok(if errors == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}

fn import_sigma(path: &Path, out_dir: &Path) -> Result<std::process::ExitCode> {
    let results = crate::rules::sigma::import_path(path, out_dir)?;
    let mut out = std::io::stdout().lock();
    let mut converted = 0;
    for r in &results {
        match &r.outcome {
            Ok(written) => {
                converted += 1;
                writeln!(out, "converted  {} -> {}", r.source.display(), written.display())?;
            }
            Err(why) => writeln!(out, "skipped    {}: {why}", r.source.display())?,
        }
    }
    writeln!(out, "import-sigma: {converted} of {} converted into {}", results.len(), out_dir.display())?;
    if converted > 0 {
        // --out DIR/rules makes DIR a rule directory; any other folder is one by itself.
        let dir = out_dir.parent().filter(|p| out_dir.ends_with("rules") && !p.as_os_str().is_empty()).unwrap_or(out_dir).display();
        writeln!(
            out,
            "run them with --rules {dir}; add test cases and check them with `crowsnest rules lint --rules {dir}` before relying on them"
        )?;
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn schema(table: Option<&str>, json: bool, write_dir: Option<&Path>) -> Result<()> {
    if let Some(dir) = write_dir {
        std::fs::create_dir_all(dir)?;
        for t in tables::TABLE_NAMES {
            let s = tables::schema_of(t).expect("listed table");
            let path = dir.join(format!("{t}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(&tables::schema_json(t, &s))? + "\n")?;
            eprintln!("wrote {}", path.display());
        }
        // The Sentinel streams the sink sends (what deploy/sentinel declares).
        let dir = dir.join("sentinel");
        std::fs::create_dir_all(&dir)?;
        for (name, doc) in crate::sink::sentinel::published_streams() {
            let path = dir.join(format!("{name}.json"));
            std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
            eprintln!("wrote {}", path.display());
        }
        return Ok(());
    }
    let Some(t) = table else { bail!("name a table ({}) or pass --write-dir", tables::TABLE_NAMES.join(", ")) };
    let Some(s) = tables::schema_of(t) else { bail!("no table {t:?}; tables: {}", tables::TABLE_NAMES.join(", ")) };
    if json {
        println!("{}", serde_json::to_string_pretty(&tables::schema_json(t, &s))?);
    } else {
        print!("{}", tables::schema_text(&s));
    }
    Ok(())
}

fn generate(opts: &gen::GenOptions, out: Option<&Path>) -> Result<()> {
    let stats = match out {
        None => gen::generate(opts, &mut std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock()))?,
        Some(p) => {
            let f = std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
            if p.extension().is_some_and(|e| e == "gz") {
                let mut gz = flate2::write::GzEncoder::new(std::io::BufWriter::new(f), flate2::Compression::default());
                let s = gen::generate(opts, &mut gz)?;
                gz.finish()?.flush()?;
                s
            } else {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
                let s = gen::generate(opts, &mut w)?;
                w.flush()?;
                s
            }
        }
    };
    let attacks = stats.attack_events.iter().map(|(n, c)| format!("{n} {c}")).collect::<Vec<_>>().join(", ");
    eprintln!(
        "generated {} audit events, {} Container Insights records and {} other records in {} lines ({} bytes); attacks: {attacks}",
        stats.audit_events, stats.insights_records, stats.other_records, stats.lines, stats.bytes
    );
    Ok(())
}
