//! Integration tests (one test binary, `cargo test --test it`).

mod cli;
mod differential;
mod engine;
mod prom;
mod serve;
mod strategies;
