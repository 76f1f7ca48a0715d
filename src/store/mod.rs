//! The state under `--state-dir` (SQLite, the embedded default) or in PostgreSQL
//! (`state.backend: postgres`, for replicas that share it): alert states survive a restart,
//! so a restart neither re-pages a firing alert nor forgets to resolve it.
//!
//! SQLite (rusqlite, bundled): one file, transactions, WAL, and a schema ops can inspect with
//! the `sqlite3` shell. The schema version lives in `PRAGMA user_version`; each migration moves
//! it by one, and a database from a newer burnwatch is refused rather than misread.
//! PostgreSQL keeps the same tables (its migrations are `ha::migrate`'s list). Statements are
//! written once over both ([`sql`]); checkpoints, hundreds of MiB at scale, are streamed as
//! SQLite blob I/O on one and as 1 MiB chunk rows on the other.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::engine::SavedAlert;
use crate::slo::Millis;

pub mod sql;
#[cfg(test)]
pub(crate) mod testing;

pub(crate) use sql::params;
pub use sql::{Db, Dialect, Row, Sql, Tx};

/// The schema this build writes.
pub const SCHEMA_VERSION: i64 = 5;

const MIGRATIONS: [&str; 5] = [
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
    crate::notify::outbox::CLAIMS,
];

#[derive(Debug)]
pub struct StoreError {
    message: String,
    fenced: bool,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "state store: {}", self.message)
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    pub fn new(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            fenced: false,
        }
    }

    /// A leader's write refused: this replica no longer leads (or never did).
    fn fenced(message: impl Into<String>) -> StoreError {
        StoreError {
            message: message.into(),
            fenced: true,
        }
    }

    /// Whether the write was refused by the fence: a newer leader exists, the lease expired,
    /// or this replica follows. Nothing was written; the replica must stop acting as leader.
    pub fn is_fenced(&self) -> bool {
        self.fenced
    }
}

pub(crate) fn failed(context: &str) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |error| StoreError::new(format!("{context}: {error}"))
}

pub struct Store {
    db: Db,
    path: PathBuf,
    /// The state dir's lock (`burnwatch.lock`, SQLite only), held while the store lives: two
    /// daemons on one state dir would race each other's migrations and double every page.
    _lock: Option<std::fs::File>,
    /// The API silences' compiled matchers (`notify::queue`).
    silences: std::cell::RefCell<crate::notify::queue::SilenceCache>,
    /// The alert rows as this store last committed them, so a save writes only the rows that
    /// changed; `None` when unknown (after opening, a failed save, a change of leadership):
    /// the next save then rewrites them all.
    saved_alerts: Option<AlertRows>,
    fencing: Fencing,
    /// Who this replica's delivery claims are made as (`notify::queue`).
    replica: String,
}

/// The claimant of a store with one replica.
pub const LOCAL_REPLICA: &str = "local";

/// Whether the leader's writes ([`Store::leader_transaction`]) are fenced. Replicas sharing a
/// PostgreSQL database write alert states, notifications, checkpoints and histories only while
/// they hold the lease: each such transaction first locks the lease row `FOR SHARE` and is
/// refused unless it still names this replica at its epoch, unexpired (`ha::lease`).
/// Delivery's writes (a row's outcome) are not leader writes: any replica delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fencing {
    /// One replica (SQLite, or PostgreSQL without replicas): every write goes through.
    Off,
    /// Writes carry this fence.
    Leader(crate::ha::Fence),
    /// This replica does not lead: leader writes are refused.
    Follower,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// How a PostgreSQL store is named in messages (never by its URL, which holds credentials).
pub const POSTGRES_NAME: &str = "PostgreSQL";

/// Chunk rows of a checkpoint in PostgreSQL are read this many at a time.
const PG_CHUNKS_PER_READ: i64 = 4;

/// Takes the exclusive lock on `dir/burnwatch.lock` (an advisory `flock`, released by the
/// kernel when the process ends, however it ends), or says which state dir is in use.
fn lock_state_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("burnwatch.lock");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|error| StoreError::new(format!("cannot open {}: {error}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::new(format!(
            "the state dir {} is in use by another burnwatch (it holds {}); run one daemon \
             per state dir, or give this one its own --state-dir (replicas share state \
             through PostgreSQL, not a directory)",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(error)) => Err(StoreError::new(format!(
            "cannot lock {}: {error}",
            path.display()
        ))),
    }
}

impl Store {
    /// Opens (creating if needed) `burnwatch.db` in `dir` and migrates it to [`SCHEMA_VERSION`].
    /// A state dir it creates is the owner's only (0700), and so is a database file it
    /// creates (0600; SQLite gives its WAL files the same mode): alert state, incidents and
    /// the outbox's messages are nobody else's to read.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_sqlite(dir, true)
    }

    /// A second store on a state dir a live store holds: the library's tests play two
    /// replicas on one SQLite database with it.
    #[cfg(test)]
    pub(crate) fn open_beside(dir: &Path) -> Result<Store, StoreError> {
        Store::open_sqlite(dir, false)
    }

    fn open_sqlite(dir: &Path, exclusive: bool) -> Result<Store, StoreError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|error| {
                StoreError::new(format!("cannot create {}: {error}", dir.display()))
            })?;
        let lock = if exclusive {
            Some(lock_state_dir(dir)?)
        } else {
            None
        };
        let path = dir.join("burnwatch.db");
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(StoreError::new(format!(
                    "cannot create {}: {error}",
                    path.display()
                )));
            }
        }
        let connection = Connection::open(&path).map_err(failed("open"))?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(failed("enable WAL"))?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(failed("set synchronous"))?;
        let mut store = Store {
            db: Db::Sqlite(connection),
            path,
            _lock: lock,
            silences: Default::default(),
            saved_alerts: None,
            fencing: Fencing::Off,
            replica: LOCAL_REPLICA.to_string(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Connects to the PostgreSQL database at `url` and migrates its schema. Errors never
    /// repeat the URL.
    pub fn open_postgres(url: &str) -> Result<Store, StoreError> {
        Store::open_postgres_replica(url, None)
    }

    /// [`Store::open_postgres`] for a replica among others: PostgreSQL ends its sessions that
    /// sit inside a transaction for longer than `idle_limit` (see
    /// `ha::limit_idle_transactions`), so a paused replica's locks do not outlive its lease.
    pub fn open_postgres_replica(
        url: &str,
        idle_limit: Option<std::time::Duration>,
    ) -> Result<Store, StoreError> {
        Ok(Store {
            db: Db::Postgres(Box::new(sql::Pg::connect(url, idle_limit)?)),
            path: PathBuf::from(POSTGRES_NAME),
            _lock: None,
            silences: Default::default(),
            saved_alerts: None,
            fencing: Fencing::Off,
            replica: LOCAL_REPLICA.to_string(),
        })
    }

    /// A database that lives in memory only (the demo's outbox).
    pub fn in_memory() -> Result<Store, StoreError> {
        let connection = Connection::open_in_memory().map_err(failed("open"))?;
        let mut store = Store {
            db: Db::Sqlite(connection),
            path: PathBuf::from(":memory:"),
            _lock: None,
            silences: Default::default(),
            saved_alerts: None,
            fencing: Fencing::Off,
            replica: LOCAL_REPLICA.to_string(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Where the state lives: the SQLite file, or [`POSTGRES_NAME`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connects to PostgreSQL again if the connection broke (nothing to do on SQLite). The
    /// store's thread does this before every call.
    pub fn heal(&mut self) -> Result<(), StoreError> {
        match &mut self.db {
            Db::Sqlite(_) => Ok(()),
            Db::Postgres(pg) => pg.heal(),
        }
    }

    /// Statements outside a transaction (each commits alone).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The API silences' compiled matchers, kept between reads.
    pub(crate) fn silence_cache(
        &self,
    ) -> std::cell::RefMut<'_, crate::notify::queue::SilenceCache> {
        self.silences.borrow_mut()
    }

    /// Runs `work` in one transaction: committed if it succeeds, rolled back if it fails.
    /// Not fenced: for delivery's writes, which any replica makes.
    pub fn transaction<T>(
        &mut self,
        work: impl FnOnce(&Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        run_transaction(&mut self.db, &Fencing::Off, work)
    }

    /// Names this replica in its delivery claims (replicas sharing PostgreSQL each need
    /// their own name; one replica keeps [`LOCAL_REPLICA`]).
    pub fn set_replica(&mut self, replica: &str) {
        self.replica = replica.to_string();
    }

    /// Who this replica's delivery claims are made as.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Sets how the leader's writes are fenced from now on. Fencing needs the lease table:
    /// PostgreSQL only.
    pub fn set_fencing(&mut self, fencing: Fencing) -> Result<(), StoreError> {
        if fencing != Fencing::Off && self.db.dialect() != Dialect::Postgres {
            return Err(StoreError::new(
                "fencing needs the PostgreSQL backend (the lease lives there)",
            ));
        }
        if self.fencing != fencing {
            self.saved_alerts = None;
        }
        self.fencing = fencing;
        Ok(())
    }

    /// Runs a leader's `work` in one transaction that checks the fence before it commits (see
    /// [`Fencing`]): refused, with nothing written, unless this replica still leads.
    pub fn leader_transaction<T>(
        &mut self,
        work: impl FnOnce(&Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        run_transaction(&mut self.db, &self.fencing, work)
    }

    /// A random id of this database, made once: it tells this burnwatch's notification keys
    /// from another's in a shared Slack channel.
    pub fn database_id(&mut self) -> Result<String, StoreError> {
        if let Some(id) = self.meta("database_id")? {
            return Ok(id);
        }
        let id = format!("bw{:016x}", fastrand::u64(..));
        // Replicas starting together agree on the first id written, whichever writes it
        // (not a leader's write: every replica's would be the same).
        self.transaction(|tx| {
            tx.execute(
                "write database id",
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING",
                params!["database_id", id],
            )
        })?;
        self.meta("database_id")?
            .ok_or_else(|| StoreError::new("the database id was not kept"))
    }

    /// Saves the alert states and, in the same transaction, whatever `also` writes (the
    /// notifications those states caused): both or neither survive a crash.
    pub fn save_cycle<T>(
        &mut self,
        alerts: &[SavedAlert],
        also: impl FnOnce(&Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let rows = alert_rows(alerts)?;
        let known = self.saved_alerts.take();
        let result = run_transaction(&mut self.db, &self.fencing, |tx| {
            write_alerts(tx, known.as_ref(), &rows)?;
            also(tx)
        });
        if result.is_ok() {
            self.saved_alerts = Some(rows);
        }
        result
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let Db::Sqlite(connection) = &mut self.db else {
            return Ok(());
        };
        let version: i64 = connection
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(failed("read schema version"))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::new(format!(
                "{} has schema version {version}, newer than this burnwatch's {SCHEMA_VERSION}",
                self.path.display()
            )));
        }
        for (index, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let transaction = connection
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

    /// Runs a leader's `work` in a transaction that leaves the alert states alone.
    pub fn save_cycle_notifications<T>(
        &mut self,
        work: impl FnOnce(&Tx) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.leader_transaction(work)
    }

    /// Replaces the saved alert states with `alerts`, atomically.
    pub fn save_alerts(&mut self, alerts: &[SavedAlert]) -> Result<(), StoreError> {
        self.save_cycle(alerts, |_| Ok(()))
    }

    /// The saved alert states; rows that cannot be read are skipped with a warning (a bad row
    /// must not keep the daemon from starting).
    pub fn load_alerts(&self) -> Result<Vec<SavedAlert>, StoreError> {
        let rows = self.db.query(
            "select alerts",
            "SELECT slo_id, labels, tier, state FROM alerts ORDER BY slo_id, labels, tier",
            params![],
        )?;
        let mut alerts = Vec::new();
        for row in rows {
            let (slo_id, labels, tier, state): (String, String, String, String) =
                (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
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
        self.leader_transaction(|tx| {
            tx.execute(
                "save history",
                "INSERT INTO histories (slo_id, saved_at, data) VALUES (?1, ?2, ?3)
                 ON CONFLICT(slo_id) DO UPDATE SET saved_at = excluded.saved_at, data = excluded.data",
                params![slo_id, saved_at, data],
            )
        })?;
        Ok(())
    }

    /// Every saved history: (SLO id, bytes).
    pub fn load_histories(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.db
            .query(
                "select histories",
                "SELECT slo_id, data FROM histories",
                params![],
            )?
            .iter()
            .map(|row| Ok((row.get(0)?, row.get(1)?)))
            .collect()
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
        let unkept = match self.db.dialect() {
            Dialect::Sqlite => {
                "DELETE FROM checkpoints WHERE rowid NOT IN (SELECT data_row FROM checkpoint_heads)"
            }
            // Their chunks go with them (ON DELETE CASCADE).
            Dialect::Postgres => {
                "DELETE FROM checkpoints WHERE id NOT IN (SELECT data_row FROM checkpoint_heads)"
            }
        };
        self.leader_transaction(|tx| {
            for id in saved {
                tx.execute(
                    "forget checkpoint",
                    "DELETE FROM checkpoint_heads WHERE slo_id = ?1",
                    params![id],
                )?;
            }
            tx.execute("delete checkpoints", unkept, params![])?;
            for row in tx.query(
                "select histories",
                "SELECT slo_id FROM histories",
                params![],
            )? {
                let id: String = row.get(0)?;
                if !keep.contains(&id.as_str()) {
                    tx.execute(
                        "delete history",
                        "DELETE FROM histories WHERE slo_id = ?1",
                        params![id],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// The rowid (SQLite) or id (PostgreSQL) of a checkpoint row.
    fn checkpoint_key(&self) -> &'static str {
        match self.db.dialect() {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => "id",
        }
    }

    /// Every checkpoint kept, bytes included (all in memory).
    #[cfg(test)]
    fn load_checkpoints(&self) -> Result<Vec<(String, Millis, Vec<u8>)>, StoreError> {
        let mut all = Vec::new();
        for (slo_id, saved_at) in self.checkpoint_times()? {
            let data = self
                .read_checkpoint(&slo_id, |reader| {
                    let mut bytes = Vec::new();
                    reader
                        .read_to_end(&mut bytes)
                        .map_err(|error| error.to_string())?;
                    Ok(bytes)
                })?
                .and_then(Result::ok)
                .unwrap_or_default();
            all.push((slo_id, saved_at, data));
        }
        Ok(all)
    }

    /// The checkpoints kept: (SLO id, when saved).
    pub fn checkpoint_times(&self) -> Result<Vec<(String, Millis)>, StoreError> {
        let sql = format!(
            "SELECT h.slo_id, c.saved_at FROM checkpoint_heads h
             JOIN checkpoints c ON c.{} = h.data_row ORDER BY h.slo_id",
            self.checkpoint_key()
        );
        self.db
            .query("select checkpoints", &sql, params![])?
            .iter()
            .map(|row| Ok((row.get(0)?, row.get(1)?)))
            .collect()
    }

    /// Decodes one SLO's checkpoint with `decode`, which reads the bytes as a stream (a
    /// checkpoint of 10,000 instances is hundreds of MiB: it is never held whole).
    pub fn read_checkpoint<T>(
        &self,
        slo_id: &str,
        decode: impl FnOnce(&mut dyn std::io::Read) -> Result<T, String>,
    ) -> Result<Option<Result<T, String>>, StoreError> {
        let Some(head) = self.db.query_opt(
            "find checkpoint",
            "SELECT data_row FROM checkpoint_heads WHERE slo_id = ?1",
            params![slo_id],
        )?
        else {
            return Ok(None);
        };
        let row: i64 = head.get(0)?;
        match &self.db {
            Db::Sqlite(connection) => {
                let blob = connection
                    .blob_open(rusqlite::MAIN_DB, "checkpoints", "data", row, true)
                    .map_err(failed("open checkpoint"))?;
                let mut reader = std::io::BufReader::with_capacity(1 << 20, blob);
                Ok(Some(decode(&mut reader)))
            }
            Db::Postgres(pg) => {
                let mut reader = PgChunks {
                    pg,
                    checkpoint: row,
                    next_offset: 0,
                    chunks: std::collections::VecDeque::new(),
                    current: std::io::Cursor::new(Vec::new()),
                };
                Ok(Some(decode(&mut reader)))
            }
        }
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
        let staged = format!("{slo_id}{STAGED}{saved_at}-{:016x}", fastrand::u64(..));
        let sql = match self.db.dialect() {
            Dialect::Sqlite => {
                "INSERT INTO checkpoints (slo_id, saved_at, data) VALUES (?1, ?2, zeroblob(?3))
                 RETURNING rowid"
            }
            Dialect::Postgres => {
                "INSERT INTO checkpoints (slo_id, saved_at, size) VALUES (?1, ?2, ?3) RETURNING id"
            }
        };
        self.db
            .query_one("stage checkpoint", sql, params![staged, saved_at, size])?
            .get(0)
    }

    /// Writes `bytes` at `offset` of a checkpoint being written.
    pub fn write_checkpoint_at(
        &mut self,
        row: i64,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        match &self.db {
            Db::Sqlite(connection) => {
                let mut blob = connection
                    .blob_open(rusqlite::MAIN_DB, "checkpoints", "data", row, false)
                    .map_err(failed("open staged checkpoint"))?;
                blob.write_all_at(bytes, offset)
                    .map_err(failed("write checkpoint"))
            }
            Db::Postgres(pg) => pg
                .execute(
                    "write checkpoint",
                    "INSERT INTO checkpoint_chunks (checkpoint_id, byte_offset, data)
                     VALUES (?1, ?2, ?3)",
                    params![row, offset, bytes],
                )
                .map(|_| ()),
        }
    }

    /// Keeps the checkpoint written to `row` as `slo_id`'s, in one transaction, and drops the
    /// one it replaces.
    pub fn commit_checkpoint(&mut self, slo_id: &str, row: i64) -> Result<(), StoreError> {
        let key = self.checkpoint_key();
        self.leader_transaction(|tx| {
            let previous: Option<i64> = tx
                .query_opt(
                    "find checkpoint",
                    "SELECT data_row FROM checkpoint_heads WHERE slo_id = ?1",
                    params![slo_id],
                )?
                .map(|found| found.get(0))
                .transpose()?;
            tx.execute(
                "keep checkpoint",
                "INSERT INTO checkpoint_heads (slo_id, data_row) VALUES (?1, ?2)
                 ON CONFLICT(slo_id) DO UPDATE SET data_row = excluded.data_row",
                params![slo_id, row],
            )?;
            if let Some(previous) = previous.filter(|previous| *previous != row) {
                tx.execute(
                    "drop the checkpoint replaced",
                    &format!("DELETE FROM checkpoints WHERE {key} = ?1"),
                    params![previous],
                )?;
            }
            Ok(())
        })
    }

    pub fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.leader_transaction(|tx| set_meta(tx, key, value))
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.db
            .query_opt(
                "read meta",
                "SELECT value FROM meta WHERE key = ?1",
                params![key],
            )?
            .map(|row| row.get(0))
            .transpose()
    }
}

/// Runs `work` in one transaction on `db`, first checking `fencing`: committed if it
/// succeeds, rolled back (dropped) if anything fails.
fn run_transaction<T>(
    db: &mut Db,
    fencing: &Fencing,
    work: impl FnOnce(&Tx) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    if *fencing == Fencing::Follower {
        return Err(StoreError::fenced(NOT_LEADING));
    }
    let transaction = db.transaction()?;
    let result = work(&transaction)?;
    // Last, just before the commit: the lease row is locked only from here to the commit, so
    // the leader's own renewal never waits for a long save (a save longer than the lease
    // made the renewal time out, and leadership flapped in the biggest incidents), and a
    // takeover still cannot slip between the check and the commit.
    check_fence(&transaction, fencing)?;
    transaction.commit()?;
    Ok(result)
}

/// Why a follower's write is refused (without asking the database).
const NOT_LEADING: &str = "this replica does not hold the lease: it does not write";

/// Refuses a leader's transaction unless `fencing` lets it write (see [`Fencing`]). The lease
/// row stays locked `FOR SHARE` until the transaction ends, so a takeover waits for it.
fn check_fence(tx: &Tx, fencing: &Fencing) -> Result<(), StoreError> {
    match fencing {
        Fencing::Off => Ok(()),
        Fencing::Follower => Err(StoreError::fenced(NOT_LEADING)),
        Fencing::Leader(fence) => {
            let row = tx
                .query_opt(
                    "check the lease",
                    crate::ha::Fence::QUERY,
                    params![fence.name.as_str()],
                )?
                .map(|row| -> Result<_, StoreError> {
                    Ok((
                        row.get::<i64>(0)?,
                        row.get::<Option<String>>(1)?,
                        row.get::<Option<bool>>(2)?.unwrap_or(false),
                    ))
                })
                .transpose()?;
            fence
                .admits(row)
                .map_err(|refused| StoreError::fenced(refused.to_string()))
        }
    }
}

/// Sets `key` in the meta table, through `db` (a transaction or not).
pub fn set_meta(db: &dyn Sql, key: &str, value: &str) -> Result<(), StoreError> {
    db.execute(
        "write meta",
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )
    .map(|_| ())
}

/// A checkpoint in PostgreSQL read as a stream, a few chunk rows at a time.
struct PgChunks<'a> {
    pg: &'a sql::Pg,
    checkpoint: i64,
    next_offset: i64,
    chunks: std::collections::VecDeque<Vec<u8>>,
    current: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for PgChunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let read = self.current.read(buf)?;
            if read > 0 || buf.is_empty() {
                return Ok(read);
            }
            if let Some(chunk) = self.chunks.pop_front() {
                self.current = std::io::Cursor::new(chunk);
                continue;
            }
            let rows = self
                .pg
                .query(
                    "read checkpoint",
                    "SELECT byte_offset, data FROM checkpoint_chunks
                     WHERE checkpoint_id = ?1 AND byte_offset >= ?2
                     ORDER BY byte_offset LIMIT ?3",
                    params![self.checkpoint, self.next_offset, PG_CHUNKS_PER_READ],
                )
                .map_err(std::io::Error::other)?;
            if rows.is_empty() {
                return Ok(0);
            }
            for row in rows {
                let (offset, data): (i64, Vec<u8>) = (
                    row.get(0).map_err(std::io::Error::other)?,
                    row.get(1).map_err(std::io::Error::other)?,
                );
                if offset != self.next_offset {
                    return Err(std::io::Error::other(format!(
                        "checkpoint {}: a chunk at byte {offset}, expected one at {}",
                        self.checkpoint, self.next_offset
                    )));
                }
                self.next_offset = offset + data.len() as i64;
                self.chunks.push_back(data);
            }
        }
    }
}

/// Replaces the saved alert states with `alerts` inside `transaction`.
/// Alert rows by (SLO id, labels as JSON, tier), their state as JSON.
type AlertRows = HashMap<(String, String, &'static str), String>;

fn alert_rows(alerts: &[SavedAlert]) -> Result<AlertRows, StoreError> {
    alerts
        .iter()
        .map(|alert| {
            let labels = serde_json::to_string(&alert.labels)
                .map_err(|error| StoreError::new(error.to_string()))?;
            let state = serde_json::to_string(&(alert.alert, alert.tripped))
                .map_err(|error| StoreError::new(error.to_string()))?;
            Ok(((alert.slo_id.clone(), labels, alert.tier.as_str()), state))
        })
        .collect()
}

/// Rows per multi-row statement (4 parameters each; both backends take far more).
const ROWS_PER_STATEMENT: usize = 250;

/// Makes the alerts table hold `rows`: where `known` says what it holds (this store's last
/// commit), only the rows that changed are written and those gone deleted; else everything
/// is rewritten. Either way in multi-row statements, not one round trip per row: at 10,000
/// firing instances a save is a few dozen statements.
fn write_alerts(tx: &Tx, known: Option<&AlertRows>, rows: &AlertRows) -> Result<(), StoreError> {
    let (gone, changed): (Vec<_>, Vec<_>) = match known {
        Some(known) => (
            known
                .keys()
                .filter(|key| !rows.contains_key(*key))
                .collect(),
            rows.iter()
                .filter(|(key, state)| known.get(*key) != Some(*state))
                .collect(),
        ),
        None => {
            tx.execute("clear alerts", "DELETE FROM alerts", params![])?;
            (Vec::new(), rows.iter().collect())
        }
    };
    for chunk in gone.chunks(ROWS_PER_STATEMENT) {
        let mut params = Vec::with_capacity(chunk.len() * 3);
        let mut tuples = Vec::with_capacity(chunk.len());
        for (slo_id, labels, tier) in chunk {
            let at = params.len();
            tuples.push(format!("(?{}, ?{}, ?{})", at + 1, at + 2, at + 3));
            params.extend([
                sql::Value::from(slo_id),
                sql::Value::from(labels),
                sql::Value::from(*tier),
            ]);
        }
        tx.execute(
            "delete alerts",
            &format!(
                "DELETE FROM alerts WHERE (slo_id, labels, tier) IN (VALUES {})",
                tuples.join(", ")
            ),
            &params,
        )?;
    }
    for chunk in changed.chunks(ROWS_PER_STATEMENT) {
        let mut params = Vec::with_capacity(chunk.len() * 4);
        let mut tuples = Vec::with_capacity(chunk.len());
        for ((slo_id, labels, tier), state) in chunk {
            let at = params.len();
            tuples.push(format!(
                "(?{}, ?{}, ?{}, ?{})",
                at + 1,
                at + 2,
                at + 3,
                at + 4
            ));
            params.extend([
                sql::Value::from(slo_id),
                sql::Value::from(labels),
                sql::Value::from(*tier),
                sql::Value::from(*state),
            ]);
        }
        tx.execute(
            "write alerts",
            &format!(
                "INSERT INTO alerts (slo_id, labels, tier, state) VALUES {}
                 ON CONFLICT (slo_id, labels, tier) DO UPDATE SET state = excluded.state",
                tuples.join(", ")
            ),
            &params,
        )?;
    }
    Ok(())
}

/// Separates an SLO id from the rest of a checkpoint row's key
/// (`<slo id>\x01<saved at>-<random>`).
const STAGED: &str = "\u{1}";

type Job = Box<dyn FnOnce(&mut Store) + Send>;

/// The one handle on the state store. A dedicated thread (`burnwatch-store`) owns the
/// connection (SQLite, or PostgreSQL with the runtime that drives it) and runs the work sent
/// to it one call at a time, in the order sent: no lock, and no database call ever runs on
/// the async runtime's threads. Clones share the thread, which ends when the last clone is
/// dropped.
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
                    // A broken PostgreSQL connection is made again here; if that fails too,
                    // the call fails on the closed one and says so.
                    if let Err(error) = store.heal() {
                        tracing::debug!("state store: cannot reconnect: {error}");
                    }
                    job(&mut store);
                }
            })
            .map_err(|error| StoreError::new(format!("cannot start the store thread: {error}")))?;
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
                .unwrap_or_else(|_| Err(StoreError::new("a store call panicked".to_string())));
            reply(result);
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::new("the store thread has stopped".to_string()))
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
            .unwrap_or_else(|_| Err(StoreError::new("the store thread has stopped".to_string())))
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
            .unwrap_or_else(|_| Err(StoreError::new("the store thread has stopped".to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{Alert, Phase};
    use crate::slo::{TierKind, WindowPair};
    use std::time::Duration;

    /// Regression: the state database was created 0644 in a 0755 directory.
    #[test]
    fn a_new_state_dir_and_database_are_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("state");
        let _store = Store::open(&dir).expect("opens");
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("burnwatch.db")), 0o600);
        for wal in ["burnwatch.db-wal", "burnwatch.db-shm"] {
            let path = dir.join(wal);
            if path.exists() {
                assert_eq!(mode(&path), 0o600, "{wal}");
            }
        }
    }

    /// Regression: two daemons on one SQLite state dir both ran (or the second died in a
    /// migration race); the second is refused, naming the dir, and the dir is free again once
    /// the first store is gone.
    #[test]
    fn a_state_dir_serves_one_store_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).expect("opens");
        let error = Store::open(dir.path()).expect_err("a second store on the same dir");
        let message = error.to_string();
        assert!(message.contains("in use by another burnwatch"), "{message}");
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        drop(first);
        Store::open(dir.path()).expect("free again");
    }

    /// Saves write only the alert rows that changed (and delete those gone), in multi-row
    /// statements; after a failed save, or from a store opened again, the next save still
    /// leaves the table exactly as the alerts say. On both backends, with more rows than one
    /// statement takes.
    #[test]
    fn saves_write_what_changed_and_the_table_always_equals_the_alerts() {
        let firing = |route: usize, since: i64| SavedAlert {
            slo_id: "orders-availability".to_string(),
            labels: vec![("route".to_string(), format!("/r/{route}"))],
            tier: if route.is_multiple_of(2) {
                TierKind::Page
            } else {
                TierKind::Ticket
            },
            alert: Alert {
                phase: Phase::Firing {
                    since,
                    last_sent: since,
                    false_since: None,
                    absent_since: None,
                },
                announced: true,
                insufficient: false,
            },
            tripped: None,
        };
        let sorted = |mut alerts: Vec<SavedAlert>| {
            alerts.sort_by(|a, b| {
                (&a.slo_id, &a.labels, a.tier.as_str()).cmp(&(
                    &b.slo_id,
                    &b.labels,
                    b.tier.as_str(),
                ))
            });
            alerts
        };
        for (backend, mut store) in crate::store::testing::stores() {
            let first: Vec<SavedAlert> = (0..600).map(|route| firing(route, 1_000)).collect();
            store.save_alerts(&first).unwrap();
            assert_eq!(
                store.load_alerts().unwrap(),
                sorted(first.clone()),
                "{}",
                backend.name
            );
            // 300 gone, 100 changed, 50 new.
            let mut second: Vec<SavedAlert> = (300..600)
                .map(|route| firing(route, if route < 400 { 2_000 } else { 1_000 }))
                .collect();
            second.extend((600..650).map(|route| firing(route, 3_000)));
            store.save_alerts(&second).unwrap();
            assert_eq!(
                store.load_alerts().unwrap(),
                sorted(second.clone()),
                "{}",
                backend.name
            );
            // A failed save writes nothing, and the next one is complete.
            let third: Vec<SavedAlert> = (0..10).map(|route| firing(route, 4_000)).collect();
            let failed = store.save_cycle(&third, |_| -> Result<(), StoreError> {
                Err(StoreError::new("the cycle's notifications failed"))
            });
            assert!(failed.is_err());
            assert_eq!(
                store.load_alerts().unwrap(),
                sorted(second.clone()),
                "{}",
                backend.name
            );
            store.save_alerts(&third).unwrap();
            assert_eq!(
                store.load_alerts().unwrap(),
                sorted(third.clone()),
                "{}",
                backend.name
            );
            // Another store on the same database (a restart) starts from a full rewrite.
            drop(store);
            let mut other = backend.reopen();
            other.save_alerts(&first[..5]).unwrap();
            assert_eq!(
                other.load_alerts().unwrap(),
                sorted(first[..5].to_vec()),
                "{}",
                backend.name
            );
        }
    }

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
    fn state_survives_reopening_on_both_backends() {
        for (backend, mut store) in testing::stores() {
            let saved = vec![SavedAlert {
                slo_id: "orders-availability".to_string(),
                labels: vec![("route".to_string(), "POST \"/orders\" ' ?1".to_string())],
                tier: TierKind::Ticket,
                alert: Alert {
                    phase: Phase::Pending {
                        since: 1_700_000_000_000,
                    },
                    announced: false,
                    insufficient: true,
                },
                tripped: None,
            }];
            store.save_alerts(&saved).unwrap();
            store.set_meta("k", "v1").unwrap();
            store.set_meta("k", "v2").unwrap();
            let id = store.database_id().unwrap();
            store.save_history("a", 5, &[1, 2, 3]).unwrap();
            store.save_history("a", 6, &[4]).unwrap();
            store.save_history("b", 6, &[]).unwrap();
            drop(store);
            let mut store = backend.reopen();
            assert_eq!(store.load_alerts().unwrap(), saved);
            assert_eq!(store.meta("k").unwrap().as_deref(), Some("v2"));
            assert_eq!(store.meta("absent").unwrap(), None);
            assert_eq!(store.database_id().unwrap(), id);
            let mut histories = store.load_histories().unwrap();
            histories.sort();
            assert_eq!(
                histories,
                [("a".to_string(), vec![4]), ("b".to_string(), vec![])]
            );
            store.retain_checkpoints(&["b"]).unwrap();
            assert_eq!(store.load_histories().unwrap(), [("b".to_string(), vec![])]);
            store.save_alerts(&[]).unwrap();
            assert!(store.load_alerts().unwrap().is_empty());
        }
    }

    #[test]
    fn the_postgres_store_connects_again_after_a_restart() {
        let (mut backend, store) = testing::stores().pop().expect("stores");
        assert_eq!(backend.name, "postgres");
        let handle = StoreHandle::spawn(store).expect("spawn");
        handle
            .call_blocking(|store| store.set_meta("k", "1"))
            .expect("write");
        backend.stop_server();
        let error = handle
            .call_blocking(|store| store.meta("k"))
            .expect_err("PostgreSQL is down")
            .to_string();
        assert!(
            error.starts_with("state store: read meta: ") && !error.contains("postgres://"),
            "{error}"
        );
        backend.start_server_again();
        assert_eq!(
            handle
                .call_blocking(|store| store.meta("k"))
                .expect("read after the restart")
                .as_deref(),
            Some("1")
        );
    }

    /// Regression (hardening): after a PostgreSQL restart that no call saw (nothing asked
    /// while it was down), the first call failed on the dead connection. The store notices
    /// the connection ended before it calls.
    #[test]
    fn the_first_call_after_an_unseen_postgres_restart_works() {
        let (mut backend, store) = testing::stores().pop().expect("stores");
        assert_eq!(backend.name, "postgres");
        let handle = StoreHandle::spawn(store).expect("spawn");
        handle
            .call_blocking(|store| store.set_meta("k", "1"))
            .expect("write");
        backend.stop_server();
        backend.start_server_again();
        assert_eq!(
            handle
                .call_blocking(|store| store.meta("k"))
                .expect("the first call after the restart")
                .as_deref(),
            Some("1")
        );
    }

    #[test]
    fn a_checkpoint_is_written_in_chunks_kept_whole_and_read_as_a_stream() {
        for (_backend, mut store) in crate::store::testing::stores() {
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
                .db()
                .query_one("count", "SELECT count(*) FROM checkpoints", params![])
                .and_then(|row| row.get(0))
                .expect("count");
            assert_eq!(rows, 1);
            store.retain_checkpoints(&[]).expect("retain");
            assert!(store.checkpoint_times().expect("times").is_empty());
        }
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
