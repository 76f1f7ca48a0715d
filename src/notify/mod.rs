//! Talking to people: rendering alert changes into messages, and delivering them through a
//! durable outbox to Slack (Web API or incoming webhook), Alertmanager, generic webhooks and
//! the console.

pub mod apply;
pub mod console;
pub mod deliver;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod matcher;
pub mod outbox;
pub mod queue;
pub mod render;
pub mod sinks;
pub mod wire;
