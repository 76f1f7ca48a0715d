//! What the fixtures that run a server as a child process share (Prometheus, Alertmanager,
//! PostgreSQL): the reason to try a start again, and the tail of the child's log for a
//! failure's message. Also included by the library's own tests (`store::testing`), so it
//! depends on nothing in this crate.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Why a fixture's start-up should be tried again on another port.
pub struct Retry(pub String);

/// The last 8 KiB of a child's log file, headed with `name` and the path.
pub fn log_tail(name: &str, path: &Path) -> String {
    const TAIL: u64 = 8 * 1024;
    let mut buf = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL)));
        let mut bytes = Vec::new();
        let _ = f.read_to_end(&mut bytes);
        buf = String::from_utf8_lossy(&bytes).into_owned();
    }
    format!("--- {name} log ({}) ---\n{buf}", path.display())
}
