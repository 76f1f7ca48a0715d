//! One SQL surface over the two state backends: SQLite (rusqlite, the embedded default for one
//! replica) and PostgreSQL (tokio-postgres, for replicas that share their state).
//!
//! Statements are written once, with SQLite's numbered placeholders (`?1`, `?2`, ...), which
//! become PostgreSQL's (`$1`, `$2`, ...) on the way there; the few statements the two
//! dialects spell differently ask [`Sql::dialect`]. Values cross as [`Value`]s, so a store
//! method reads the same on both: `db.query("select due", SQL, params![family, now])`.
//!
//! PostgreSQL is reached from the store's own thread (see [`super::StoreHandle`]): a
//! current-thread tokio runtime owned by the connection drives the client and its connection
//! task during each call, and each call is bounded by [`PG_CALL_TIMEOUT`].

use std::time::Duration;

use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use super::StoreError;

/// How long one statement (or transaction step) on PostgreSQL may take before it fails.
pub const PG_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A value bound to a statement or read from a row, alike for both backends.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
    Bool(bool),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Real(_) => "a real",
            Value::Text(_) => "text",
            Value::Blob(_) => "a blob",
            Value::Bool(_) => "a boolean",
        }
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Value {
        Value::Int(value)
    }
}

impl From<usize> for Value {
    fn from(value: usize) -> Value {
        Value::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Value {
        Value::Real(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Value {
        Value::Bool(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Value {
        Value::Text(value.to_string())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Value {
        Value::Text(value)
    }
}

impl From<&String> for Value {
    fn from(value: &String) -> Value {
        Value::Text(value.clone())
    }
}

impl From<std::borrow::Cow<'_, str>> for Value {
    fn from(value: std::borrow::Cow<'_, str>) -> Value {
        Value::Text(value.into_owned())
    }
}

impl From<&[u8]> for Value {
    fn from(value: &[u8]) -> Value {
        Value::Blob(value.to_vec())
    }
}

impl From<Vec<u8>> for Value {
    fn from(value: Vec<u8>) -> Value {
        Value::Blob(value)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Into::into)
    }
}

/// The parameters of a statement: `params![a, b]` is `&[Value::from(a), Value::from(b)]`.
macro_rules! params {
    () => {
        &[] as &[$crate::store::sql::Value]
    };
    ($($value:expr),+ $(,)?) => {
        &[$($crate::store::sql::Value::from($value)),+][..]
    };
}
pub(crate) use params;

/// A Rust type a column reads into.
pub trait FromValue: Sized {
    const EXPECTED: &'static str;
    fn from_value(value: &Value) -> Option<Self>;
}

impl FromValue for i64 {
    const EXPECTED: &'static str = "an integer";
    fn from_value(value: &Value) -> Option<i64> {
        match value {
            Value::Int(value) => Some(*value),
            _ => None,
        }
    }
}

impl FromValue for f64 {
    const EXPECTED: &'static str = "a number";
    fn from_value(value: &Value) -> Option<f64> {
        match value {
            Value::Real(value) => Some(*value),
            Value::Int(value) => Some(*value as f64),
            _ => None,
        }
    }
}

/// SQLite has no boolean type: its truth values are integers.
impl FromValue for bool {
    const EXPECTED: &'static str = "a boolean";
    fn from_value(value: &Value) -> Option<bool> {
        match value {
            Value::Bool(value) => Some(*value),
            Value::Int(value) => Some(*value != 0),
            _ => None,
        }
    }
}

impl FromValue for String {
    const EXPECTED: &'static str = "text";
    fn from_value(value: &Value) -> Option<String> {
        match value {
            Value::Text(value) => Some(value.clone()),
            _ => None,
        }
    }
}

impl FromValue for Vec<u8> {
    const EXPECTED: &'static str = "a blob";
    fn from_value(value: &Value) -> Option<Vec<u8>> {
        match value {
            Value::Blob(value) => Some(value.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    const EXPECTED: &'static str = T::EXPECTED;
    fn from_value(value: &Value) -> Option<Option<T>> {
        match value {
            Value::Null => Some(None),
            value => T::from_value(value).map(Some),
        }
    }
}

/// One row of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(Vec<Value>);

impl Row {
    /// Column `index` as a `T`; a missing column or one of another type is an error.
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T, StoreError> {
        let value = self
            .0
            .get(index)
            .ok_or_else(|| StoreError::new(format!("no column {index} in the answer")))?;
        T::from_value(value).ok_or_else(|| {
            StoreError::new(format!(
                "column {index}: expected {}, found {}",
                T::EXPECTED,
                value.kind()
            ))
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Statements against either backend, autocommitted or inside a transaction. `what` names
/// the step in the error ("select due: ...").
pub trait Sql {
    fn dialect(&self) -> Dialect;

    /// Runs a statement; the rows it changed.
    fn execute(&self, what: &str, sql: &str, params: &[Value]) -> Result<u64, StoreError>;

    /// Runs `sql` (several statements, no parameters).
    fn batch(&self, what: &str, sql: &str) -> Result<(), StoreError>;

    /// Every row of the answer.
    fn query(&self, what: &str, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError>;

    /// The first row of the answer, if any.
    fn query_opt(
        &self,
        what: &str,
        sql: &str,
        params: &[Value],
    ) -> Result<Option<Row>, StoreError> {
        Ok(self.query(what, sql, params)?.into_iter().next())
    }

    /// The first row of the answer; none is an error.
    fn query_one(&self, what: &str, sql: &str, params: &[Value]) -> Result<Row, StoreError> {
        self.query_opt(what, sql, params)?
            .ok_or_else(|| StoreError::new(format!("{what}: no row")))
    }
}

// ---- SQLite ----

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(value) => ValueRef::Integer(*value),
            Value::Real(value) => ValueRef::Real(*value),
            Value::Text(value) => ValueRef::Text(value.as_bytes()),
            Value::Blob(value) => ValueRef::Blob(value),
            Value::Bool(value) => ValueRef::Integer(i64::from(*value)),
        }))
    }
}

fn sqlite_failed(what: &str, error: rusqlite::Error) -> StoreError {
    StoreError::new(format!("{what}: {error}"))
}

fn sqlite_row(row: &rusqlite::Row, columns: usize) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let mut values = Vec::with_capacity(columns);
    for index in 0..columns {
        values.push(match row.get_ref(index)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(value) => Value::Int(value),
            ValueRef::Real(value) => Value::Real(value),
            ValueRef::Text(text) => Value::Text(String::from_utf8_lossy(text).into_owned()),
            ValueRef::Blob(blob) => Value::Blob(blob.to_vec()),
        });
    }
    Ok(Row(values))
}

/// Statements on a SQLite connection (a transaction is one through `Deref`).
pub(crate) fn sqlite_execute(
    connection: &rusqlite::Connection,
    what: &str,
    sql: &str,
    params: &[Value],
) -> Result<u64, StoreError> {
    let mut statement = connection
        .prepare_cached(sql)
        .map_err(|error| sqlite_failed(what, error))?;
    statement
        .execute(rusqlite::params_from_iter(params))
        .map(|changed| changed as u64)
        .map_err(|error| sqlite_failed(what, error))
}

pub(crate) fn sqlite_query(
    connection: &rusqlite::Connection,
    what: &str,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Row>, StoreError> {
    let mut statement = connection
        .prepare_cached(sql)
        .map_err(|error| sqlite_failed(what, error))?;
    let columns = statement.column_count();
    let rows = statement
        .query_map(rusqlite::params_from_iter(params), |row| {
            sqlite_row(row, columns)
        })
        .map_err(|error| sqlite_failed(what, error))?;
    rows.collect::<Result<_, _>>()
        .map_err(|error| sqlite_failed(what, error))
}

impl Sql for rusqlite::Connection {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn execute(&self, what: &str, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        sqlite_execute(self, what, sql, params)
    }

    fn batch(&self, what: &str, sql: &str) -> Result<(), StoreError> {
        self.execute_batch(sql)
            .map_err(|error| sqlite_failed(what, error))
    }

    fn query(&self, what: &str, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        sqlite_query(self, what, sql, params)
    }
}

// ---- PostgreSQL ----

/// `?N` placeholders as PostgreSQL's `$N`, outside quoted strings and identifiers.
pub fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    for c in sql.chars() {
        match quote {
            Some(open) => {
                if c == open {
                    quote = None;
                }
                out.push(c);
            }
            None => match c {
                '\'' | '"' => {
                    quote = Some(c);
                    out.push(c);
                }
                '?' => out.push('$'),
                c => out.push(c),
            },
        }
    }
    out
}

/// A value for the type PostgreSQL inferred for its placeholder: integers fit any integer
/// or float column they fit in, booleans an integer one (as SQLite keeps them).
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(value) => match *ty {
                Type::INT2 => i16::try_from(*value)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*value)?.to_sql(ty, out),
                Type::FLOAT8 => (*value as f64).to_sql(ty, out),
                Type::BOOL => (*value != 0).to_sql(ty, out),
                _ => value.to_sql(ty, out),
            },
            Value::Real(value) => value.to_sql(ty, out),
            Value::Text(value) => value.as_str().to_sql(ty, out),
            Value::Blob(value) => value.as_slice().to_sql(ty, out),
            Value::Bool(value) => match *ty {
                Type::INT8 => i64::from(*value).to_sql(ty, out),
                Type::INT4 => i32::from(*value).to_sql(ty, out),
                _ => value.to_sql(ty, out),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn postgres_row(row: &tokio_postgres::Row) -> Result<Row, tokio_postgres::Error> {
    let mut values = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let value = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(index)?.map(Value::Int),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(index)?
                .map(|value| Value::Int(value.into())),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(index)?
                .map(|value| Value::Int(value.into())),
            Type::FLOAT8 => row.try_get::<_, Option<f64>>(index)?.map(Value::Real),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(index)?
                .map(|value| Value::Real(value.into())),
            Type::BOOL => row.try_get::<_, Option<bool>>(index)?.map(Value::Bool),
            Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(index)?.map(Value::Blob),
            // Text, and any other type PostgreSQL can give as text (the query casts it).
            _ => row.try_get::<_, Option<String>>(index)?.map(Value::Text),
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

/// A connection to PostgreSQL with the runtime that drives it.
pub struct Pg {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    /// Statements prepared on this connection, by their PostgreSQL text: each is prepared
    /// once, so a statement run again costs one round trip instead of two.
    statements: Statements,
    /// To connect again after the connection broke (it holds the credentials: never shown).
    config: crate::ha::Database,
}

type Statements = std::cell::RefCell<std::collections::HashMap<String, tokio_postgres::Statement>>;

impl Pg {
    /// Connects to the database at `url` and migrates its schema. Errors never repeat the URL.
    pub fn connect(url: &str, idle_limit: Option<std::time::Duration>) -> Result<Pg, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| StoreError::new(format!("cannot start a runtime: {error}")))?;
        let mut config =
            crate::ha::parse_url(url).map_err(|error| StoreError::new(error.to_string()))?;
        if let Some(limit) = idle_limit {
            crate::ha::limit_idle_transactions(&mut config, limit);
        }
        let client = runtime.block_on(async {
            let mut client = crate::ha::connect(&config).await?;
            crate::ha::migrate(&mut client).await?;
            Ok::<_, crate::ha::HaError>(client)
        });
        let client = client.map_err(|error| StoreError::new(error.to_string()))?;
        Ok(Pg {
            runtime,
            client,
            statements: Statements::default(),
            config,
        })
    }

    /// Connects again if the connection broke (PostgreSQL restarted, a network cut): the
    /// calls made while it was down failed, the next ones work once it is back.
    pub fn heal(&mut self) -> Result<(), StoreError> {
        // The connection's task runs only while this thread drives the runtime: give it a
        // turn to read what the server sent while no call was made (a restart's "terminating
        // connection", or the socket's end), so a dead connection is seen before the call,
        // not by it.
        if !self.client.is_closed() {
            self.runtime.block_on(async {
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
            });
        }
        if !self.client.is_closed() {
            return Ok(());
        }
        let client = self
            .runtime
            .block_on(crate::ha::connect(&self.config))
            .map_err(|error| StoreError::new(error.to_string()))?;
        self.client = client;
        self.statements.borrow_mut().clear();
        Ok(())
    }

    /// Begins a transaction.
    pub fn transaction(&mut self) -> Result<PgTransaction<'_>, StoreError> {
        let transaction = run(&self.runtime, "begin", self.client.transaction())?;
        Ok(PgTransaction {
            runtime: &self.runtime,
            statements: &self.statements,
            transaction,
        })
    }
}

/// Runs `future` on `runtime`, bounded by [`PG_CALL_TIMEOUT`].
fn run<T>(
    runtime: &tokio::runtime::Runtime,
    what: &str,
    future: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, StoreError> {
    // The timer is made inside the runtime: it needs the runtime's clock.
    match runtime.block_on(async { tokio::time::timeout(PG_CALL_TIMEOUT, future).await }) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(StoreError::new(format!("{what}: {}", describe(&error)))),
        Err(_) => Err(StoreError::new(format!(
            "{what}: PostgreSQL did not answer within {PG_CALL_TIMEOUT:?}"
        ))),
    }
}

/// The server's message where there is one (tokio-postgres's `Display` says only "db error").
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    }
}

fn pg_params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params
        .iter()
        .map(|value| value as &(dyn ToSql + Sync))
        .collect()
}

/// `sql` (with `?N` placeholders) prepared on `client`'s connection, from `statements` if it
/// was before.
fn pg_statement<C: tokio_postgres::GenericClient>(
    runtime: &tokio::runtime::Runtime,
    client: &C,
    statements: &Statements,
    what: &str,
    sql: &str,
) -> Result<tokio_postgres::Statement, StoreError> {
    let sql = to_postgres(sql);
    if let Some(statement) = statements.borrow().get(&sql) {
        return Ok(statement.clone());
    }
    let statement = run(runtime, what, client.prepare(&sql))?;
    statements.borrow_mut().insert(sql, statement.clone());
    Ok(statement)
}

fn pg_execute<C: tokio_postgres::GenericClient>(
    runtime: &tokio::runtime::Runtime,
    client: &C,
    statements: &Statements,
    (what, sql, params): (&str, &str, &[Value]),
) -> Result<u64, StoreError> {
    let statement = pg_statement(runtime, client, statements, what, sql)?;
    run(
        runtime,
        what,
        client.execute(&statement, &pg_params(params)),
    )
}

fn pg_query<C: tokio_postgres::GenericClient>(
    runtime: &tokio::runtime::Runtime,
    client: &C,
    statements: &Statements,
    (what, sql, params): (&str, &str, &[Value]),
) -> Result<Vec<Row>, StoreError> {
    let statement = pg_statement(runtime, client, statements, what, sql)?;
    let rows = run(runtime, what, client.query(&statement, &pg_params(params)))?;
    rows.iter()
        .map(postgres_row)
        .collect::<Result<_, _>>()
        .map_err(|error| StoreError::new(format!("{what}: {}", describe(&error))))
}

impl Sql for Pg {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, what: &str, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        pg_execute(
            &self.runtime,
            &self.client,
            &self.statements,
            (what, sql, params),
        )
    }

    fn batch(&self, what: &str, sql: &str) -> Result<(), StoreError> {
        run(&self.runtime, what, self.client.batch_execute(sql))
    }

    fn query(&self, what: &str, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        pg_query(
            &self.runtime,
            &self.client,
            &self.statements,
            (what, sql, params),
        )
    }
}

/// A transaction on PostgreSQL; rolled back when dropped without [`PgTransaction::commit`].
pub struct PgTransaction<'a> {
    runtime: &'a tokio::runtime::Runtime,
    statements: &'a Statements,
    transaction: tokio_postgres::Transaction<'a>,
}

impl PgTransaction<'_> {
    pub fn commit(self) -> Result<(), StoreError> {
        run(self.runtime, "commit", self.transaction.commit())
    }
}

impl Sql for PgTransaction<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn execute(&self, what: &str, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        pg_execute(
            self.runtime,
            &self.transaction,
            self.statements,
            (what, sql, params),
        )
    }

    fn batch(&self, what: &str, sql: &str) -> Result<(), StoreError> {
        run(self.runtime, what, self.transaction.batch_execute(sql))
    }

    fn query(&self, what: &str, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        pg_query(
            self.runtime,
            &self.transaction,
            self.statements,
            (what, sql, params),
        )
    }
}

// ---- either ----

/// The connection a store owns.
pub enum Db {
    Sqlite(rusqlite::Connection),
    Postgres(Box<Pg>),
}

/// A transaction on either backend; rolled back when dropped without [`Tx::commit`].
pub enum Tx<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(PgTransaction<'a>),
}

impl Db {
    pub fn transaction(&mut self) -> Result<Tx<'_>, StoreError> {
        match self {
            Db::Sqlite(connection) => connection
                .transaction()
                .map(Tx::Sqlite)
                .map_err(|error| sqlite_failed("begin", error)),
            Db::Postgres(pg) => pg.transaction().map(Tx::Postgres),
        }
    }

    fn backend(&self) -> &dyn Sql {
        match self {
            Db::Sqlite(connection) => connection,
            Db::Postgres(pg) => &**pg,
        }
    }
}

impl Tx<'_> {
    pub fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(transaction) => transaction
                .commit()
                .map_err(|error| sqlite_failed("commit", error)),
            Tx::Postgres(transaction) => transaction.commit(),
        }
    }

    fn backend(&self) -> &dyn Sql {
        match self {
            Tx::Sqlite(transaction) => &**transaction,
            Tx::Postgres(transaction) => transaction,
        }
    }
}

/// What runs its statements on another [`Sql`]: [`Db`] and [`Tx`] pass them on to the
/// backend's connection or transaction.
trait Delegate {
    fn sql(&self) -> &dyn Sql;
}

impl Delegate for Db {
    fn sql(&self) -> &dyn Sql {
        self.backend()
    }
}

impl Delegate for Tx<'_> {
    fn sql(&self) -> &dyn Sql {
        self.backend()
    }
}

impl<T: Delegate> Sql for T {
    fn dialect(&self) -> Dialect {
        self.sql().dialect()
    }

    fn execute(&self, what: &str, sql: &str, params: &[Value]) -> Result<u64, StoreError> {
        self.sql().execute(what, sql, params)
    }

    fn batch(&self, what: &str, sql: &str) -> Result<(), StoreError> {
        self.sql().batch(what, sql)
    }

    fn query(&self, what: &str, sql: &str, params: &[Value]) -> Result<Vec<Row>, StoreError> {
        self.sql().query(what, sql, params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_postgres_ones_outside_quotes() {
        assert_eq!(
            to_postgres("SELECT a FROM t WHERE b = ?1 AND c LIKE ?1 || ':%' AND d = '?2' LIMIT ?3"),
            "SELECT a FROM t WHERE b = $1 AND c LIKE $1 || ':%' AND d = '?2' LIMIT $3"
        );
        assert_eq!(
            to_postgres(r#"SELECT "odd?1" FROM t WHERE x = ?10"#),
            r#"SELECT "odd?1" FROM t WHERE x = $10"#
        );
    }

    #[test]
    fn values_round_trip_through_sqlite_and_read_as_their_types() {
        let connection = Db::Sqlite(rusqlite::Connection::open_in_memory().unwrap());
        connection
            .batch(
                "create",
                "CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, f INTEGER, n TEXT)",
            )
            .unwrap();
        let changed = connection
            .execute(
                "insert",
                "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![7i64, 0.5, "x'y", vec![0u8, 1, 2], true, None::<String>],
            )
            .unwrap();
        assert_eq!(changed, 1);
        let row = connection
            .query_one("select", "SELECT i, r, s, b, f, n FROM t", params![])
            .unwrap();
        assert_eq!(row.get::<i64>(0).unwrap(), 7);
        assert_eq!(row.get::<f64>(1).unwrap(), 0.5);
        assert_eq!(row.get::<String>(2).unwrap(), "x'y");
        assert_eq!(row.get::<Vec<u8>>(3).unwrap(), [0, 1, 2]);
        assert!(row.get::<bool>(4).unwrap());
        assert_eq!(row.get::<Option<String>>(5).unwrap(), None);
        let error = row.get::<i64>(2).unwrap_err().to_string();
        assert!(
            error.contains("column 2: expected an integer, found text"),
            "{error}"
        );
        assert!(row.get::<i64>(9).is_err());
        let error = connection
            .query("bad select", "SELECT nope FROM t", params![])
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("state store: bad select: "), "{error}");
    }
}
