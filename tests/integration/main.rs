//! Integration tests: the real binary and the real pipeline on real inputs.

mod bad_input;
mod common;
mod drift;
mod engine;
mod replay;
mod service;
