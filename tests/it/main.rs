//! Integration tests (one test binary, `cargo test --test it`).

mod alertmanager;
mod browser;
mod child;
mod cli;
mod delivery;
mod deploy;
mod differential;
mod engine;
mod fake_slack;
mod ha;
mod lease;
mod native;
mod pg;
mod prom;
mod report_html;
mod score;
mod serve;
mod sloth_rules;
mod strategies;
mod tools;
mod tune;
