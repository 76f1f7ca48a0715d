//! Stores on both backends for the library's tests: the tests of the store, the outbox and
//! its queue run each scenario on SQLite (in a temp dir) and on a real PostgreSQL (the
//! integration tests' fixture, `tests/it/pg.rs`: Debian's PostgreSQL 15 started in a temp dir
//! on a loopback port; the fixture panics, naming the package, when it is missing).

#[path = "../../tests/it/child.rs"]
mod child;
#[path = "../../tests/it/pg.rs"]
#[allow(dead_code)]
mod pg;

use super::Store;

/// What a test store lives on; says which backend a failing test ran on.
pub struct Backend {
    pub name: &'static str,
    _dir: Option<tempfile::TempDir>,
    _server: Option<pg::Pg>,
}

impl Backend {
    /// Another store on the same database, as after a restart.
    pub fn reopen(&self) -> Store {
        match (&self._dir, &self._server) {
            (Some(dir), _) => Store::open_beside(dir.path()).expect("reopen SQLite store"),
            (None, Some(server)) => {
                Store::open_postgres(&server.url()).expect("reopen PostgreSQL store")
            }
            (None, None) => unreachable!("a backend lives somewhere"),
        }
    }
}

impl Backend {
    /// Stops the PostgreSQL server (its data kept).
    pub fn stop_server(&mut self) {
        self._server.as_mut().expect("a PostgreSQL backend").stop();
    }

    /// Starts the stopped PostgreSQL server again, on the same port with the same data.
    pub fn start_server_again(&mut self) {
        self._server
            .as_mut()
            .expect("a PostgreSQL backend")
            .start_again();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("(the failure above is on the {} backend)", self.name);
        }
    }
}

/// A fresh, empty store on SQLite and one on PostgreSQL. Bind as `for (_backend, mut store)`
/// so the store is dropped before what it lives on.
pub fn stores() -> Vec<(Backend, Store)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = Store::open(dir.path()).expect("open SQLite store");
    let server = pg::Pg::start();
    let postgres = Store::open_postgres(&server.url()).expect("open PostgreSQL store");
    vec![
        (
            Backend {
                name: "sqlite",
                _dir: Some(dir),
                _server: None,
            },
            sqlite,
        ),
        (
            Backend {
                name: "postgres",
                _dir: None,
                _server: Some(server),
            },
            postgres,
        ),
    ]
}
