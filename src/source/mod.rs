//! Where window values come from: a recorded OpenMetrics file (the Prometheus HTTP API source
//! comes with `serve`).

pub mod history;
pub mod incremental;
pub mod live;
pub mod openmetrics;
pub mod prometheus;
pub mod recorded;
pub mod version;
