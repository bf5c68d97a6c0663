//! Crowsnest: a streaming security-analytics pipeline for Kubernetes (AKS first).
//!
//! Modules, from the command line down to the shared vocabulary (imports point down):
//!
//! - [`cli`], [`config`], [`bench`] — the `crowsnest` binary and its TOML config
//! - [`pipeline`] — wires sources, decoders, engine, router and sinks together
//! - [`source`] (files, stdin, Kafka), [`decode`] (envelopes, audit Events, Arrow batches),
//!   [`engine`] (rules planned once; single-event and windowed evaluation, watermarks),
//!   [`rules`] (rule files, lists, tests), [`sink`] (stdout, files, Kafka, alert routing),
//!   [`checkpoint`] (which source offsets are safe to commit), [`kafka`] (connections, presets,
//!   URLs), [`server`]
//! - [`gen`] — synthetic AKS audit data with attack scenarios
//! - [`tables`], [`alert`], [`deadletter`], [`redact`], [`metrics`] — shared vocabulary

pub mod alert;
pub mod backtest;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod deadletter;
pub mod decode;
pub mod engine;
pub mod gen;
pub mod kafka;
pub mod metrics;
pub mod pipeline;
pub mod redact;
pub mod rules;
pub mod server;
pub mod sink;
pub mod source;
pub mod tables;
