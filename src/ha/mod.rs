//! High availability on PostgreSQL: N replicas against one database, exactly one of them the
//! leader at a time.
//!
//! Here: the connection to PostgreSQL ([`connect`]: tokio-postgres, TLS by rustls as libpq's
//! `sslmode` says, [`tls`]), the versioned schema ([`migrate`], the `pg`
//! migration list: the lease, the state store's tables, delivery claims), the leader lease
//! with its fencing token ([`lease`]) and the idle-transaction limit of a replica's sessions
//! ([`limit_idle_transactions`]). The state store on PostgreSQL is `store::Store::open_postgres`;
//! the daemon's side (the lease task, taking over, stepping down) is `daemon/ha.rs`.
//!
//! The PostgreSQL URL holds credentials: it is read from `state.url_file`, never logged, and
//! no error here repeats it.

use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

pub mod lease;
pub mod tls;

pub use lease::{Fence, Leadership, Leases};

/// Why a call to PostgreSQL failed. Never holds the URL.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error(
        "the PostgreSQL URL is not a valid connection URL (postgres://user:password@host:port/database)"
    )]
    BadUrl,
    #[error("PostgreSQL: {context}: {}", with_causes(.source))]
    Database {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "the PostgreSQL database has burnwatch schema version {found}, newer than this burnwatch's {supported}"
    )]
    NewerSchema { found: i64, supported: i64 },
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
    #[error("PostgreSQL TLS: {0}")]
    Tls(String),
    /// A fenced write found that the lease is no longer ours: a newer leader exists (or the
    /// lease expired). The write's transaction must be rolled back.
    #[error(
        "fenced: lease {name:?} is at epoch {current} held by {holder:?}, this write carries epoch {ours}"
    )]
    Fenced {
        name: String,
        ours: i64,
        current: i64,
        holder: Option<String>,
    },
}

/// An error and what caused it ("error performing TLS handshake: invalid peer certificate:
/// UnknownIssuer"); tokio-postgres's own message stops at the first.
fn with_causes(error: &tokio_postgres::Error) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = inner.source();
    }
    text
}

impl HaError {
    pub(crate) fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> HaError {
        move |source| HaError::Database { context, source }
    }
}

/// How long a connection attempt may take before it fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a replica's connections go: tokio-postgres's config and the TLS to use (libpq's
/// `sslmode`, see [`tls`]).
#[derive(Clone)]
pub struct Database {
    pub config: Config,
    tls: Option<MakeRustlsConnect>,
}

/// Parses a `postgres://` URL (or key=value connection string) without echoing it on error;
/// `sslmode` and `sslrootcert` as libpq reads them ([`tls`]).
pub fn parse_url(url: &str) -> Result<Database, HaError> {
    let (rest, settings) = tls::split(url)?;
    let mut config: Config = rest.parse().map_err(|_| HaError::BadUrl)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.ssl_mode(settings.mode.ssl_mode());
    let tls = tls::client_config(&settings)?.map(MakeRustlsConnect::new);
    Ok(Database { config, tls })
}

/// Makes PostgreSQL end any session of this replica that sits inside a transaction for longer
/// than `limit` (`idle_in_transaction_session_timeout`, sent as a startup option): a replica
/// paused mid-transaction (SIGSTOP, a stall) would otherwise hold the lease row's lock, and a
/// follower could not take over until it woke. Ended sessions are made again by the next call.
pub fn limit_idle_transactions(database: &mut Database, limit: Duration) {
    let config = &mut database.config;
    let option = format!(
        "-c idle_in_transaction_session_timeout={}",
        limit.as_millis().max(1)
    );
    let options = match config.get_options() {
        Some(given) if !given.trim().is_empty() => format!("{given} {option}"),
        _ => option,
    };
    config.options(options);
}

/// Connects and spawns the connection's task on the current tokio runtime: plain TCP with
/// `sslmode=disable`, else TLS as [`tls`] says (with `prefer`, plain TCP to a server without
/// TLS).
pub async fn connect(database: &Database) -> Result<Client, HaError> {
    match &database.tls {
        None => connect_with(&database.config, NoTls).await,
        Some(tls) => connect_with(&database.config, tls.clone()).await,
    }
}

async fn connect_with<T>(config: &Config, tls: T) -> Result<Client, HaError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await.map_err(HaError::db("connect"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!("PostgreSQL connection ended: {error}");
        }
    });
    Ok(client)
}

/// The PostgreSQL schema this build writes.
pub const PG_SCHEMA_VERSION: i64 = PG_MIGRATIONS.len() as i64;

/// The `pg` migration list, as `store/mod.rs` versions SQLite's: each entry moves the version by
/// one, in one transaction; a database from a newer burnwatch is refused rather than misread.
/// The version lives in `burnwatch_schema`.
const PG_MIGRATIONS: [&str; 3] = [
    "
    CREATE TABLE leases (
        name        text PRIMARY KEY,
        holder      text,                 -- replica id; NULL: never held
        epoch       bigint NOT NULL,      -- fencing token: +1 at every change of holder
        acquired_at timestamptz,          -- when the holder took it (the database's clock)
        renewed_at  timestamptz,
        expires_at  timestamptz,
        signalled   boolean NOT NULL DEFAULT false  -- the holder has its advisory lock
    );
",
    // The state store's tables, as SQLite's (store/mod.rs, notify/outbox.rs) with PostgreSQL's
    // types; times are milliseconds since the epoch. A checkpoint is a row and its 1 MiB
    // chunks, so it is written and read as a stream.
    "
    CREATE TABLE alerts (
        slo_id text NOT NULL,
        labels text NOT NULL,
        tier   text NOT NULL,
        state  text NOT NULL,
        PRIMARY KEY (slo_id, labels, tier)
    );
    CREATE TABLE meta (
        key   text PRIMARY KEY,
        value text NOT NULL
    );
    CREATE TABLE checkpoints (
        id       bigserial PRIMARY KEY,
        slo_id   text NOT NULL,
        saved_at bigint NOT NULL,
        size     bigint NOT NULL
    );
    CREATE TABLE checkpoint_chunks (
        checkpoint_id bigint NOT NULL REFERENCES checkpoints (id) ON DELETE CASCADE,
        byte_offset   bigint NOT NULL,
        data          bytea NOT NULL,
        PRIMARY KEY (checkpoint_id, byte_offset)
    );
    CREATE TABLE checkpoint_heads (
        slo_id   text PRIMARY KEY,
        data_row bigint NOT NULL
    );
    CREATE TABLE histories (
        slo_id   text PRIMARY KEY,
        saved_at bigint NOT NULL,
        data     bytea NOT NULL
    );
    CREATE TABLE incidents (
        id          bigserial PRIMARY KEY,
        sink        text NOT NULL,
        target      text NOT NULL,
        slo_id      text NOT NULL,
        labels      text NOT NULL,
        opened_at   bigint NOT NULL,
        closed_at   bigint,
        tiers       text NOT NULL,
        channel_id  text,
        root_ts     text
    );
    CREATE UNIQUE INDEX incidents_open ON incidents (sink, target, slo_id, labels)
        WHERE closed_at IS NULL;
    CREATE TABLE outbox (
        id              bigserial PRIMARY KEY,
        natural_key     text NOT NULL UNIQUE,
        sink            text NOT NULL,
        order_key       text NOT NULL,
        incident_id     bigint REFERENCES incidents (id),
        kind            text NOT NULL,
        payload         text NOT NULL,
        created_at      bigint NOT NULL,
        state           text NOT NULL,
        attempts        bigint NOT NULL DEFAULT 0,
        next_attempt_at bigint NOT NULL,
        in_flight_since bigint,
        last_error      text,
        delivered_at    bigint,
        result          text
    );
    CREATE INDEX outbox_pending ON outbox (state, sink, order_key, id);
    CREATE INDEX outbox_order ON outbox (order_key, state, id);
    CREATE TABLE silences (
        id         text PRIMARY KEY,
        matchers   text NOT NULL,
        starts_at  bigint NOT NULL,
        ends_at    bigint NOT NULL,
        comment    text NOT NULL,
        created_by text NOT NULL
    );
",
    // Delivery claims (see `notify::outbox::CLAIMS`).
    "
    ALTER TABLE outbox ADD COLUMN claimed_by text;
    ALTER TABLE outbox ADD COLUMN claimed_until bigint;
",
];

/// Any constant: replicas starting together take turns migrating (a transaction-scoped
/// advisory lock), so no migration runs twice.
const MIGRATION_LOCK: i64 = 0x6275_726e_7761_7463; // "burnwatc"

/// Brings the database's schema up to [`PG_SCHEMA_VERSION`].
pub async fn migrate(client: &mut Client) -> Result<(), HaError> {
    let transaction = client
        .transaction()
        .await
        .map_err(HaError::db("begin migration"))?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(HaError::db("lock for migration"))?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS burnwatch_schema (version bigint NOT NULL);
             INSERT INTO burnwatch_schema (version)
                 SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM burnwatch_schema);",
        )
        .await
        .map_err(HaError::db("create schema version"))?;
    let version: i64 = transaction
        .query_one("SELECT version FROM burnwatch_schema", &[])
        .await
        .map_err(HaError::db("read schema version"))?
        .get(0);
    if version > PG_SCHEMA_VERSION {
        return Err(HaError::NewerSchema {
            found: version,
            supported: PG_SCHEMA_VERSION,
        });
    }
    for (index, migration) in PG_MIGRATIONS.iter().enumerate().skip(version as usize) {
        transaction
            .batch_execute(migration)
            .await
            .map_err(HaError::db("migrate"))?;
        transaction
            .execute(
                "UPDATE burnwatch_schema SET version = $1",
                &[&(index as i64 + 1)],
            )
            .await
            .map_err(HaError::db("write schema version"))?;
    }
    transaction
        .commit()
        .await
        .map_err(HaError::db("commit migration"))
}
