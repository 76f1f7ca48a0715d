//! The embedded database under `--state-dir`: alert states survive a restart, so a restart
//! neither re-pages a firing alert nor forgets to resolve it.
//!
//! SQLite (rusqlite, bundled): one file, transactions, WAL, and a schema ops can inspect with
//! the `sqlite3` shell. The schema version lives in `PRAGMA user_version`; each migration moves
//! it by one, and a database from a newer burnwatch is refused rather than misread.

use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use crate::engine::SavedAlert;
use crate::slo::Millis;

/// The schema this build writes.
pub const SCHEMA_VERSION: i64 = 4;

const MIGRATIONS: [&str; 4] = [
    "
    CREATE TABLE alerts (
        slo_id TEXT NOT NULL,
        labels TEXT NOT NULL,   -- JSON array of [name, value]
        tier   TEXT NOT NULL,   -- page | ticket
        state  TEXT NOT NULL,   -- JSON of the alert state
        PRIMARY KEY (slo_id, labels, tier)
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
",
    "
    CREATE TABLE checkpoints (
        slo_id   TEXT PRIMARY KEY,
        saved_at INTEGER NOT NULL,  -- milliseconds since the epoch
        data     BLOB NOT NULL      -- MessagePack of the incremental state
    );
",
    crate::notify::outbox::SCHEMA,
    "
    CREATE TABLE histories (
        slo_id   TEXT PRIMARY KEY,
        saved_at INTEGER NOT NULL,  -- milliseconds since the epoch
        data     BLOB NOT NULL      -- MessagePack of the status page's history
    );
    -- The checkpoint kept for each SLO: a checkpoint is written to a row of its own (keyed
    -- `<slo id>\x01<saved at>`) and kept by pointing the head at it, so keeping it never
    -- rewrites hundreds of MiB of blob.
    CREATE TABLE checkpoint_heads (
        slo_id   TEXT PRIMARY KEY,
        data_row INTEGER NOT NULL   -- rowid in checkpoints
    );
    INSERT INTO checkpoint_heads (slo_id, data_row) SELECT slo_id, rowid FROM checkpoints;
",
];

#[derive(Debug)]
pub struct StoreError(String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "state store: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    pub fn new(message: impl Into<String>) -> StoreError {
        StoreError(message.into())
    }
}

pub(crate) fn failed(context: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |error| StoreError(format!("{context}: {error}"))
}

pub struct Store {
    connection: Connection,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) `burnwatch.db` in `dir` and migrates it to [`SCHEMA_VERSION`].
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|error| StoreError(format!("cannot create {}: {error}", dir.display())))?;
        let path = dir.join("burnwatch.db");
        let connection = Connection::open(&path).map_err(failed("open"))?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(failed("enable WAL"))?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(failed("set synchronous"))?;
        let mut store = Store { connection, path };
        store.migrate()?;
        Ok(store)
    }

    /// A database that lives in memory only (the demo's outbox).
    pub fn in_memory() -> Result<Store, StoreError> {
        let connection = Connection::open_in_memory().map_err(failed("open"))?;
        let mut store = Store {
            connection,
            path: PathBuf::from(":memory:"),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn connection(&self) -> &Connection {
        &self.connection
    }

    pub(crate) fn connection_mut(&mut self) -> &mut Connection {
        &mut self.connection
    }

    /// A random id of this database, made once: it tells this burnwatch's notification keys
    /// from another's in a shared Slack channel.
    pub fn database_id(&mut self) -> Result<String, StoreError> {
        if let Some(id) = self.meta("database_id")? {
            return Ok(id);
        }
        let id = format!("bw{:016x}", fastrand::u64(..));
        self.set_meta("database_id", &id)?;
        Ok(id)
    }

    /// Saves the alert states and, in the same transaction, whatever `also` writes (the
    /// notifications those states caused): both or neither survive a crash.
    pub fn save_cycle<T>(
        &mut self,
        alerts: &[SavedAlert],
        also: impl FnOnce(&rusqlite::Transaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let transaction = self.connection.transaction().map_err(failed("begin"))?;
        write_alerts(&transaction, alerts)?;
        let result = also(&transaction)?;
        transaction.commit().map_err(failed("commit"))?;
        Ok(result)
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(failed("read schema version"))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError(format!(
                "{} has schema version {version}, newer than this burnwatch's {SCHEMA_VERSION}",
                self.path.display()
            )));
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let transaction = self
                .connection
                .transaction()
                .map_err(failed("begin migration"))?;
            transaction
                .execute_batch(migration)
                .map_err(failed("migrate"))?;
            transaction
                .pragma_update(None, "user_version", index as i64 + 1)
                .map_err(failed("write schema version"))?;
            transaction.commit().map_err(failed("commit migration"))?;
        }
        Ok(())
    }

    /// Replaces the saved alert states with `alerts`, atomically.
    /// Runs `work` in a transaction that leaves the alert states alone.
    pub fn save_cycle_notifications<T>(
        &mut self,
        work: impl FnOnce(&rusqlite::Transaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let transaction = self.connection.transaction().map_err(failed("begin"))?;
        let result = work(&transaction)?;
        transaction.commit().map_err(failed("commit"))?;
        Ok(result)
    }

    pub fn save_alerts(&mut self, alerts: &[SavedAlert]) -> Result<(), StoreError> {
        self.save_cycle(alerts, |_| Ok(()))
    }

    /// The saved alert states; rows that cannot be read are skipped with a warning (a bad row
    /// must not keep the daemon from starting).
    pub fn load_alerts(&self) -> Result<Vec<SavedAlert>, StoreError> {
        let mut query = self
            .connection
            .prepare("SELECT slo_id, labels, tier, state FROM alerts ORDER BY slo_id, labels, tier")
            .map_err(failed("prepare select"))?;
        let rows = query
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .map_err(failed("select alerts"))?;
        let mut alerts = Vec::new();
        for row in rows {
            let (slo_id, labels, tier, state) = row.map_err(failed("read alert"))?;
            let parsed = (|| {
                let labels = serde_json::from_str(&labels).ok()?;
                let tier = serde_json::from_value(serde_json::Value::String(tier)).ok()?;
                // (alert, tripped); schema-3 databases of earlier releases add the budget left
                // at firing, which is no longer used.
                let (alert, tripped) = serde_json::from_str(&state)
                    .or_else(|_| {
                        serde_json::from_str::<(_, _, Option<f64>)>(&state)
                            .map(|(alert, tripped, _)| (alert, tripped))
                    })
                    .ok()?;
                Some(SavedAlert {
                    slo_id: slo_id.clone(),
                    labels,
                    tier,
                    alert,
                    tripped,
                })
            })();
            match parsed {
                Some(alert) => alerts.push(alert),
                None => tracing::warn!(slo_id, "skipping an unreadable saved alert state"),
            }
        }
        Ok(alerts)
    }

    /// Saves (or replaces) one SLO's incremental state, held whole (small states and tests;
    /// the daemon streams with [`Store::begin_checkpoint`]).
    pub fn save_checkpoint(
        &mut self,
        slo_id: &str,
        saved_at: Millis,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let row = self.begin_checkpoint(slo_id, saved_at, data.len())?;
        self.write_checkpoint_at(row, 0, data)?;
        self.commit_checkpoint(slo_id, row)
    }

    /// Saves (or replaces) one SLO's status-page history.
    pub fn save_history(
        &mut self,
        slo_id: &str,
        saved_at: Millis,
        data: &[u8],
    ) -> Result<(), StoreError> {
        self.connection
            .execute(
                "INSERT INTO histories (slo_id, saved_at, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT(slo_id) DO UPDATE SET saved_at = excluded.saved_at, data = excluded.data",
                params![slo_id, saved_at, data],
            )
            .map_err(failed("save history"))?;
        Ok(())
    }

    /// Every saved history: (SLO id, bytes).
    pub fn load_histories(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut query = self
            .connection
            .prepare("SELECT slo_id, data FROM histories")
            .map_err(failed("prepare histories"))?;
        let rows = query
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(failed("select histories"))?;
        rows.collect::<Result<_, _>>()
            .map_err(failed("read histories"))
    }

    /// Forgets the checkpoints and histories of SLOs not in `keep`, and checkpoint rows no
    /// head points at (one a crash left half-written).
    pub fn retain_checkpoints(&mut self, keep: &[&str]) -> Result<(), StoreError> {
        let saved: Vec<String> = self
            .checkpoint_times()?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| !keep.contains(&id.as_str()))
            .collect();
        for id in saved {
            self.connection
                .execute(
                    "DELETE FROM checkpoint_heads WHERE slo_id = ?1",
                    params![id],
                )
                .map_err(failed("forget checkpoint"))?;
        }
        self.connection
            .execute(
                "DELETE FROM checkpoints WHERE rowid NOT IN (SELECT data_row FROM checkpoint_heads)",
                [],
            )
            .map_err(failed("delete checkpoints"))?;
        let histories: Vec<String> = {
            let mut query = self
                .connection
                .prepare("SELECT slo_id FROM histories")
                .map_err(failed("prepare select"))?;
            let ids = query
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(failed("select histories"))?;
            ids.collect::<Result<Vec<String>, _>>()
                .map_err(failed("read histories"))?
                .into_iter()
                .filter(|id| !keep.contains(&id.as_str()))
                .collect()
        };
        for id in histories {
            self.connection
                .execute("DELETE FROM histories WHERE slo_id = ?1", params![id])
                .map_err(failed("delete history"))?;
        }
        Ok(())
    }

    /// The saved incremental states: (SLO id, when saved, bytes).
    /// Every checkpoint kept, bytes included (all in memory).
    #[cfg(test)]
    fn load_checkpoints(&self) -> Result<Vec<(String, Millis, Vec<u8>)>, StoreError> {
        let mut query = self
            .connection
            .prepare(
                "SELECT h.slo_id, c.saved_at, c.data FROM checkpoint_heads h
                 JOIN checkpoints c ON c.rowid = h.data_row",
            )
            .map_err(failed("prepare select"))?;
        let rows = query
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .map_err(failed("select checkpoints"))?;
        rows.collect::<Result<_, _>>()
            .map_err(failed("read checkpoint"))
    }

    /// The checkpoints kept: (SLO id, when saved).
    pub fn checkpoint_times(&self) -> Result<Vec<(String, Millis)>, StoreError> {
        let mut query = self
            .connection
            .prepare(
                "SELECT h.slo_id, c.saved_at FROM checkpoint_heads h
                 JOIN checkpoints c ON c.rowid = h.data_row",
            )
            .map_err(failed("prepare select"))?;
        let rows = query
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(failed("select checkpoints"))?;
        rows.collect::<Result<_, _>>()
            .map_err(failed("read checkpoint"))
    }

    /// Decodes one SLO's checkpoint with `decode`, which reads the bytes as a stream (a
    /// checkpoint of 10,000 instances is hundreds of MiB: it is never held whole).
    pub fn read_checkpoint<T>(
        &self,
        slo_id: &str,
        decode: impl FnOnce(&mut dyn std::io::Read) -> Result<T, String>,
    ) -> Result<Option<Result<T, String>>, StoreError> {
        let row: Option<i64> = self
            .connection
            .query_row(
                "SELECT data_row FROM checkpoint_heads WHERE slo_id = ?1",
                params![slo_id],
                |row| row.get(0),
            )
            .optional()
            .map_err(failed("find checkpoint"))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let blob = self
            .connection
            .blob_open(rusqlite::MAIN_DB, "checkpoints", "data", row, true)
            .map_err(failed("open checkpoint"))?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, blob);
        Ok(Some(decode(&mut reader)))
    }

    /// Begins writing one SLO's checkpoint of `size` bytes into a row of its own, beside the
    /// one kept (a crash before [`Store::commit_checkpoint`] leaves the kept one as it was);
    /// returns that row, for [`Store::write_checkpoint_at`].
    pub fn begin_checkpoint(
        &mut self,
        slo_id: &str,
        saved_at: Millis,
        size: usize,
    ) -> Result<i64, StoreError> {
        self.connection
            .execute(
                "INSERT INTO checkpoints (slo_id, saved_at, data) VALUES (?1, ?2, zeroblob(?3))",
                params![
                    format!("{slo_id}{STAGED}{saved_at}-{:016x}", fastrand::u64(..)),
                    saved_at,
                    size as i64
                ],
            )
            .map_err(failed("stage checkpoint"))?;
        Ok(self.connection.last_insert_rowid())
    }

    /// Writes `bytes` at `offset` of a checkpoint being written.
    pub fn write_checkpoint_at(
        &mut self,
        row: i64,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let mut blob = self
            .connection
            .blob_open(rusqlite::MAIN_DB, "checkpoints", "data", row, false)
            .map_err(failed("open staged checkpoint"))?;
        blob.write_all_at(bytes, offset)
            .map_err(failed("write checkpoint"))
    }

    /// Keeps the checkpoint written to `row` as `slo_id`'s, in one transaction, and drops the
    /// one it replaces.
    pub fn commit_checkpoint(&mut self, slo_id: &str, row: i64) -> Result<(), StoreError> {
        let transaction = self.connection.transaction().map_err(failed("begin"))?;
        let previous: Option<i64> = transaction
            .query_row(
                "SELECT data_row FROM checkpoint_heads WHERE slo_id = ?1",
                params![slo_id],
                |found| found.get(0),
            )
            .optional()
            .map_err(failed("find checkpoint"))?;
        transaction
            .execute(
                "INSERT INTO checkpoint_heads (slo_id, data_row) VALUES (?1, ?2)
                 ON CONFLICT(slo_id) DO UPDATE SET data_row = excluded.data_row",
                params![slo_id, row],
            )
            .map_err(failed("keep checkpoint"))?;
        if let Some(previous) = previous.filter(|previous| *previous != row) {
            transaction
                .execute(
                    "DELETE FROM checkpoints WHERE rowid = ?1",
                    params![previous],
                )
                .map_err(failed("drop the checkpoint replaced"))?;
        }
        transaction.commit().map_err(failed("commit checkpoint"))
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.connection
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map(|_| ())
            .map_err(failed("write meta"))
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.connection
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                params![key],
                |row| row.get(0),
            )
            .optional()
            .map_err(failed("read meta"))
    }
}

/// Replaces the saved alert states with `alerts` inside `transaction`.
fn write_alerts(
    transaction: &rusqlite::Transaction,
    alerts: &[SavedAlert],
) -> Result<(), StoreError> {
    transaction
        .execute("DELETE FROM alerts", [])
        .map_err(failed("clear alerts"))?;
    let mut insert = transaction
        .prepare_cached("INSERT INTO alerts (slo_id, labels, tier, state) VALUES (?1, ?2, ?3, ?4)")
        .map_err(failed("prepare insert"))?;
    for alert in alerts {
        let labels =
            serde_json::to_string(&alert.labels).map_err(|error| StoreError(error.to_string()))?;
        let state = serde_json::to_string(&(alert.alert, alert.tripped))
            .map_err(|error| StoreError(error.to_string()))?;
        insert
            .execute(params![alert.slo_id, labels, alert.tier.as_str(), state])
            .map_err(failed("insert alert"))?;
    }
    Ok(())
}

/// Separates an SLO id from the rest of a checkpoint row's key
/// (`<slo id>\x01<saved at>-<random>`).
const STAGED: &str = "\u{1}";

type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// The one handle on the state store. A dedicated thread (`burnwatch-store`) owns the SQLite
/// connection and runs the work sent to it one call at a time, in the order sent: no lock,
/// and no SQLite call ever runs on the async runtime's threads. Clones share the thread,
/// which ends when the last clone is dropped.
#[derive(Clone)]
pub struct StoreHandle {
    jobs: std::sync::mpsc::Sender<Job>,
    path: std::sync::Arc<Path>,
}

impl fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreHandle")
            .field("path", &self.path)
            .finish()
    }
}

impl StoreHandle {
    /// Moves `store` onto its own thread.
    pub fn spawn(mut store: Store) -> Result<StoreHandle, StoreError> {
        let path: std::sync::Arc<Path> = store.path.clone().into();
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("burnwatch-store".to_string())
            .spawn(move || {
                for job in queue {
                    job(&mut store);
                }
            })
            .map_err(|error| StoreError(format!("cannot start the store thread: {error}")))?;
        Ok(StoreHandle { jobs, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
        reply: impl FnOnce(Result<T, StoreError>) + Send + 'static,
    ) -> Result<(), StoreError> {
        let job: Job = Box::new(move |store| {
            // A panic in one call must not take the store away from every other caller.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(store)))
                .unwrap_or_else(|_| Err(StoreError("a store call panicked".to_string())));
            reply(result);
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError("the store thread has stopped".to_string()))
    }

    /// Runs `work` on the store's thread and waits for its answer without blocking the
    /// caller's thread.
    pub async fn call<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(work, move |result| {
            let _ = tx.send(result);
        })?;
        rx.await
            .unwrap_or_else(|_| Err(StoreError("the store thread has stopped".to_string())))
    }

    /// Runs `work` on the store's thread and blocks the caller until it answers: for code off
    /// the async runtime (or inside `block_in_place`) only.
    pub fn call_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.send(work, move |result| {
            let _ = tx.send(result);
        })?;
        rx.recv()
            .unwrap_or_else(|_| Err(StoreError("the store thread has stopped".to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Alert, Phase};
    use crate::slo::{TierKind, WindowPair};
    use std::time::Duration;

    #[test]
    fn alerts_survive_reopening_and_newer_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let saved = vec![SavedAlert {
            slo_id: "orders-availability".to_string(),
            labels: vec![("route".to_string(), "POST \"/orders\"".to_string())],
            tier: TierKind::Page,
            alert: Alert {
                phase: Phase::Firing {
                    since: 1_700_000_000_000,
                    last_sent: 1_700_000_060_000,
                    false_since: Some(1_700_000_120_000),
                    absent_since: Some(1_700_000_180_000),
                },
                announced: true,
                insufficient: false,
            },
            tripped: Some(
                WindowPair::new(Duration::from_secs(3600), Duration::from_secs(300), 14.4).unwrap(),
            ),
        }];
        {
            let mut store = Store::open(dir.path()).unwrap();
            store.save_alerts(&saved).unwrap();
            store.set_meta("last_evaluation", "1700000120000").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_alerts().unwrap(), saved);
        assert_eq!(
            store.meta("last_evaluation").unwrap().as_deref(),
            Some("1700000120000")
        );
        drop(store);
        let connection = Connection::open(dir.path().join("burnwatch.db")).unwrap();
        connection
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(connection);
        let error = Store::open(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains(&format!("newer than this burnwatch's {SCHEMA_VERSION}")),
            "{error}"
        );
    }

    #[test]
    fn a_checkpoint_is_written_in_chunks_kept_whole_and_read_as_a_stream() {
        let dir = tempfile::tempdir().expect("dir");
        let mut store = Store::open(dir.path()).expect("store");
        store.save_checkpoint("a", 1, b"old").expect("save");
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let rowid = store.begin_checkpoint("a", 2, data.len()).expect("begin");
        // Being written: the kept one is still the old one.
        assert_eq!(
            store.checkpoint_times().expect("times"),
            [("a".to_string(), 1)]
        );
        for (index, chunk) in data.chunks(65_536).enumerate() {
            store
                .write_checkpoint_at(rowid, index * 65_536, chunk)
                .expect("write");
        }
        store.commit_checkpoint("a", rowid).expect("commit");
        assert_eq!(
            store.checkpoint_times().expect("times"),
            [("a".to_string(), 2)]
        );
        let read = store
            .read_checkpoint("a", |reader| {
                let mut bytes = Vec::new();
                reader.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
                Ok(bytes)
            })
            .expect("read")
            .expect("present")
            .expect("decoded");
        assert_eq!(read, data);
        assert!(
            store
                .read_checkpoint("b", |_| Ok(()))
                .expect("read")
                .is_none()
        );
        // A staged checkpoint a crash left behind is forgotten, the kept one stays.
        store.begin_checkpoint("a", 3, 10).expect("begin");
        store.retain_checkpoints(&["a"]).expect("retain");
        assert_eq!(
            store.checkpoint_times().expect("times"),
            [("a".to_string(), 2)]
        );
        assert_eq!(store.load_checkpoints().expect("load").len(), 1);
        // Only the kept one is left: the one it replaced and the half-written one are gone.
        let rows: i64 = store
            .connection()
            .query_row("SELECT count(*) FROM checkpoints", [], |row| row.get(0))
            .expect("count");
        assert_eq!(rows, 1);
        store.retain_checkpoints(&[]).expect("retain");
        assert!(store.checkpoint_times().expect("times").is_empty());
    }

    #[tokio::test]
    async fn the_handle_runs_calls_in_order_on_its_own_thread_and_survives_a_panic() {
        let handle = StoreHandle::spawn(Store::in_memory().expect("store")).expect("spawn");
        let caller = std::thread::current().id();
        let on = handle
            .call(move |_| Ok(std::thread::current().id()))
            .await
            .expect("call");
        assert_ne!(on, caller);
        let (first, second) = (handle.clone(), handle.clone());
        let a = first.call(|store| store.set_meta("k", "1"));
        let b = second.call(|store| store.meta("k"));
        let (a, b) = tokio::join!(a, b);
        a.expect("set");
        assert_eq!(b.expect("get").as_deref(), Some("1"));
        let panicked = handle
            .call(|_| -> Result<(), StoreError> { panic!("boom") })
            .await;
        assert!(panicked.is_err());
        assert_eq!(
            handle
                .call(|store| store.meta("k"))
                .await
                .expect("after")
                .as_deref(),
            Some("1")
        );
    }
}
