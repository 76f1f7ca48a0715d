//! burnwatch: SLO error-budget alerting with multi-window, multi-burn-rate conditions.
//!
//! Data flows one way (see ARCHITECTURE.md): spec files → [`config`] → [`slo::Slo`] →
//! window values from a [`source`] → [`burn`] verdicts → [`alert`] state machines, stepped by
//! the [`engine`] → events rendered by [`notify`]. [`replay`] and [`demo`] drive the engine
//! over recorded history on a virtual clock.

pub mod alert;
pub mod burn;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod engine;
pub mod ha;
pub mod history;
pub mod metrics;
pub mod notify;
pub mod page;
pub mod query;
pub mod replay;
pub mod score;
pub mod server;
pub mod slo;
pub mod source;
pub mod store;
pub mod tune;
pub mod window;
