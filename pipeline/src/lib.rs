//! Crowsnest: a streaming security-analytics pipeline for Kubernetes (AKS first).
//!
//! Modules, from the command line down to the shared vocabulary (imports point down):
//!
//! - [`cli`], [`config`], [`bench`] — the `crowsnest` binary and its TOML config
//! - [`backtest`], [`rule_tests`], [`rule_lint`] — one rule over recorded input; every rule's own
//!   test cases; what a rule needs before it ships (they drive the engine, so they sit above it)
//! - [`pipeline`] — wires sources, decoders, engine, router and sinks together
//! - [`source`] (files, archive trees, stdin, Kafka), [`decode`] (envelopes, audit Events, Log
//!   Analytics rows, Arrow batches),
//!   [`engine`] (rules planned once; single-event and windowed evaluation, watermarks; what
//!   it learns from the stream: the clusters' egress, workload authors), [`rules`] (rule files,
//!   lists, test cases, Sigma import), [`sink`] (stdout, files, Kafka, alert routing),
//!   [`checkpoint`] (which source offsets are safe to commit), [`kafka`] (connections, presets,
//!   URLs), [`server`]
//! - [`hunt`] — read-only SQL over the lake or raw input, the hunt library, the shell (above
//!   the engine, whose functions it uses)
//! - [`lake`] — the Parquet lake: where it is, how its files are named, compaction and retention
//! - [`gen`] — synthetic AKS audit data with attack scenarios
//! - [`tables`], [`alert`], [`deadletter`], [`redact`], [`metrics`] — shared vocabulary

pub mod alert;
pub mod azure;
pub mod backtest;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod deadletter;
pub mod decode;
pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod gen;
pub mod hunt;
pub mod kafka;
pub mod lake;
pub mod memory;
pub mod metrics;
pub mod permissions;
pub mod pipeline;
pub mod redact;
pub mod rule_lint;
pub mod rule_tests;
pub mod rules;
pub mod server;
pub mod sink;
pub mod source;
pub mod standin;
pub mod tables;
pub mod url;
