//! Integration tests: the real binary and the real pipeline on real inputs.

mod azurite;
mod bad_input;
mod broker;
mod common;
mod drift;
mod engine;
mod equivalence;
mod eventhubs;
mod flight_sql;
mod forms;
mod fuzz_regressions;
mod insights;
mod kafka;
mod lake;
mod replay;
mod rules_tools;
mod security;
mod sentinel;
mod sentinel_templates;
mod service;
mod standin;
