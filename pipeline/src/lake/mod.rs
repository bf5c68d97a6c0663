//! The lake: every decoded row kept as Parquet, Hive-partitioned on event time, on local disk or
//! in Azure Blob Storage / ADLS Gen2, so hunts (and DuckDB, ADX, Synapse, Spark) can read it.
//!
//! ```text
//! PREFIX/table=kube_audit/date=2026-11-01/hour=08/<name>.parquet
//! PREFIX/_crowsnest/…       what the writer needs to resume (offsets, flushes in progress)
//! ```
//!
//! [`config`] says where the lake is, [`store`] talks to it (create-only writes), [`layout`]
//! names what is in it; the writer is the lake sink (`sink::lake`), the readers are `hunt` and
//! `rules backtest --lake`, and [`maintain`] compacts and prunes.

pub mod config;
pub mod layout;
pub mod maintain;
pub mod store;

pub use config::LakeConfig;
pub use store::Store;
