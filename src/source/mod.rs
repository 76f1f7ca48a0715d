//! Where window values come from: a recorded OpenMetrics file (the Prometheus HTTP API source
//! comes with `serve`).

pub mod openmetrics;
pub mod recorded;
