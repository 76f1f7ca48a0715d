//! The outbox as a queue, the delivery workers' side of it: the rows due (the heads of their
//! orders), in-flight marks, outcomes, Slack roots and their channels, silences, depth and
//! pruning. The rows are planned by `outbox.rs` and written by `apply.rs` in the cycle's
//! transaction.

use serde_json::{Value, json};

use crate::config::notify::Silence;
use crate::notify::matcher::Matcher;
use crate::notify::outbox::{KEEP_DELIVERED, Kind, Row, Sink, SinkFamily};
use crate::slo::Millis;
use crate::store::{Dialect, Sql, Store, StoreError, params};

/// A text column read with `parse` (a sink or a row kind).
fn column<T>(
    row: &crate::store::Row,
    index: usize,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, StoreError> {
    let text: String = row.get(index)?;
    parse(&text).ok_or_else(|| StoreError::new(format!("column {index}: unknown value {text:?}")))
}

/// A JSON text column (a payload); unreadable JSON reads as null.
fn json_column(row: &crate::store::Row, index: usize) -> Result<Value, StoreError> {
    let text: String = row.get(index)?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Marks a row delivered (`?2` the time, `?3` what the receiver answered: a Slack `ts`) and
/// lets its claim go, only while it is pending and its claim is still this replica's (`?4`):
/// a row whose claim ran out and was taken by another replica is that replica's to mark.
const MARK_DELIVERED: &str =
    "UPDATE outbox SET state = 'delivered', delivered_at = ?2, result = ?3,
    in_flight_since = NULL, last_error = NULL, attempts = attempts + 1,
    claimed_by = NULL, claimed_until = NULL
    WHERE id = ?1 AND state = 'pending' AND claimed_by = ?4";

/// A row whose claim (`claimed_by`, `claimed_until`) lets `?4` (this replica) take it at `?2`:
/// unclaimed, its own, or run out.
const CLAIMABLE: &str = "(o.claimed_by IS NULL OR o.claimed_by = ?4 OR o.claimed_until <= ?2)";

/// The columns of a [`Row`], of the outbox as `o`.
const ROW_COLUMNS: &str = "o.id, o.sink, o.kind, o.payload, o.incident_id, o.attempts, \
     o.created_at, o.in_flight_since";

/// A row read with [`ROW_COLUMNS`].
fn outbox_row(row: &crate::store::Row) -> Result<Row, StoreError> {
    Ok(Row {
        id: row.get(0)?,
        sink: column(row, 1, Sink::parse)?,
        kind: column(row, 2, Kind::parse)?,
        payload: json_column(row, 3)?,
        incident_id: row.get(4)?,
        attempts: row.get(5)?,
        created_at: row.get(6)?,
        in_flight_since: row.get(7)?,
    })
}

impl Store {
    /// The time claims are judged by: PostgreSQL's clock when replicas share it (their own
    /// clocks may disagree), else `now`.
    fn claim_clock(&self, now: Millis) -> Result<Millis, StoreError> {
        match self.db().dialect() {
            Dialect::Sqlite => Ok(now),
            Dialect::Postgres => self
                .db()
                .query_one(
                    "read the database clock",
                    "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                    params![],
                )?
                .get(0),
        }
    }

    /// Rows of `family` (`webhook`: every `webhook:<name>`) that are due at `now`, first in
    /// their order and not claimed by another replica, oldest first. A worker still claims
    /// each ([`Store::claim`]) before attempting it.
    pub fn due(
        &self,
        family: SinkFamily,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        let clock = self.claim_clock(now)?;
        self.db()
            .query(
                "select due",
                &format!(
                    "SELECT {ROW_COLUMNS}
                 FROM outbox AS o
                 JOIN (SELECT MIN(id) AS head FROM outbox
                       WHERE state = 'pending' AND (sink = ?1 OR sink LIKE ?1 || ':%')
                       GROUP BY order_key) AS heads ON o.id = heads.head
                 WHERE o.next_attempt_at <= ?5 AND {CLAIMABLE}
                 ORDER BY o.id LIMIT ?3"
                ),
                params![family.as_str(), clock, limit, self.replica(), now],
            )?
            .iter()
            .map(outbox_row)
            .collect()
    }

    /// When the next pending row of `family` falls due after `now`, if any: its next attempt,
    /// or when another replica's claim on it runs out.
    pub fn next_due(&self, family: SinkFamily, now: Millis) -> Result<Option<Millis>, StoreError> {
        let clock = self.claim_clock(now)?;
        // A claim's end is on the claim clock; moved onto `now`'s clock.
        self.db()
            .query_one(
                "next due",
                "SELECT MIN(CASE
                            WHEN claimed_by IS NOT NULL AND claimed_by <> ?3
                                 AND claimed_until - ?4 + ?2 > next_attempt_at
                            THEN claimed_until - ?4 + ?2
                            ELSE next_attempt_at END)
                 FROM outbox
                 WHERE state = 'pending' AND (sink = ?1 OR sink LIKE ?1 || ':%')
                   AND (next_attempt_at > ?2 OR (claimed_by IS NOT NULL AND claimed_by <> ?3
                                                 AND claimed_until > ?4))",
                params![family.as_str(), now, self.replica(), clock],
            )?
            .get(0)
    }

    /// Claims row `id` for this replica for `hold`, unless it is no longer pending, not due
    /// at `now`, or another replica's claim on it holds. On PostgreSQL the row is taken `FOR
    /// UPDATE SKIP LOCKED`: a row another replica is claiming at this moment is passed over,
    /// never waited for. Returns the row as it is once claimed (another replica may have
    /// attempted it since it was read: its in-flight mark and attempts are what count).
    pub fn claim(&mut self, id: i64, now: Millis, hold: Millis) -> Result<Option<Row>, StoreError> {
        let clock = self.claim_clock(now)?;
        let sql = match self.db().dialect() {
            Dialect::Sqlite => {
                "UPDATE outbox SET claimed_by = ?4, claimed_until = CAST(?2 AS BIGINT) + CAST(?3 AS BIGINT)
                 WHERE id = ?1 AND state = 'pending' AND next_attempt_at <= ?5
                   AND (claimed_by IS NULL OR claimed_by = ?4 OR claimed_until <= ?2)"
            }
            Dialect::Postgres => {
                "UPDATE outbox SET claimed_by = ?4, claimed_until = CAST(?2 AS BIGINT) + CAST(?3 AS BIGINT)
                 WHERE id = (SELECT o.id FROM outbox AS o
                             WHERE o.id = ?1 AND o.state = 'pending' AND o.next_attempt_at <= ?5
                               AND (o.claimed_by IS NULL OR o.claimed_by = ?4
                                    OR o.claimed_until <= ?2)
                             FOR UPDATE SKIP LOCKED)"
            }
        };
        let replica = self.replica().to_string();
        if self.db().execute(
            "claim",
            sql,
            params![id, clock, hold, replica.as_str(), now],
        )? != 1
        {
            return Ok(None);
        }
        self.db()
            .query_opt(
                "read the claimed row",
                &format!(
                    "SELECT {ROW_COLUMNS} FROM outbox AS o WHERE o.id = ?1 AND o.claimed_by = ?2"
                ),
                params![id, replica.as_str()],
            )?
            .as_ref()
            .map(outbox_row)
            .transpose()
    }

    /// Marks a row as on its way (committed before the request goes out), renewing this
    /// replica's claim for `hold`; keeps an earlier mark, so an ambiguous earlier attempt is
    /// still looked up. The mark is on the claim clock (PostgreSQL's, with replicas). `false`,
    /// with nothing written, when the claim is not ours any more: the request must not go out.
    pub fn mark_in_flight(
        &mut self,
        id: i64,
        now: Millis,
        hold: Millis,
    ) -> Result<bool, StoreError> {
        let clock = self.claim_clock(now)?;
        let marked = self.db().execute(
            "mark in flight",
            "UPDATE outbox SET in_flight_since = COALESCE(in_flight_since, ?2),
                claimed_until = CAST(?2 AS BIGINT) + CAST(?3 AS BIGINT)
             WHERE id = ?1 AND state = 'pending' AND claimed_by = ?4 AND claimed_until > ?2",
            params![id, clock, hold, self.replica()],
        )?;
        Ok(marked == 1)
    }

    /// Lets this replica's claim on row `id` go, with nothing attempted.
    pub fn release_claim(&mut self, id: i64) -> Result<(), StoreError> {
        let replica = self.replica().to_string();
        self.db()
            .execute(
                "release claim",
                "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL
                 WHERE id = ?1 AND claimed_by = ?2",
                params![id, replica],
            )
            .map(|_| ())
    }

    /// Records a delivery, only for a pending row under this replica's claim (every attempt
    /// claims first). `false`, with nothing written, otherwise: another replica's claim took
    /// the row over, and its outcome is that replica's to record.
    pub fn mark_delivered(
        &mut self,
        id: i64,
        now: Millis,
        result: Option<&str>,
    ) -> Result<bool, StoreError> {
        let replica = self.replica().to_string();
        self.db()
            .execute(
                "mark delivered",
                MARK_DELIVERED,
                params![id, now, result, replica],
            )
            .map(|changed| changed == 1)
    }

    /// A failed attempt: try again at `retry_at`, or give up (`None`). `ambiguous`: the
    /// receiver may have acted on it, so the row stays marked in flight. The claim is let go
    /// (any replica may retry). `false`, with nothing written, when another replica's claim
    /// has taken the row over.
    pub fn mark_failed(
        &mut self,
        id: i64,
        error: &str,
        retry_at: Option<Millis>,
        ambiguous: bool,
    ) -> Result<bool, StoreError> {
        let replica = self.replica().to_string();
        let db = self.db();
        let result = match retry_at {
            Some(at) => db.execute(
                "mark failed",
                "UPDATE outbox SET next_attempt_at = ?2, last_error = ?3, attempts = attempts + 1,
                    in_flight_since = CASE WHEN ?4 THEN in_flight_since ELSE NULL END,
                    claimed_by = NULL, claimed_until = NULL
                 WHERE id = ?1 AND state = 'pending' AND claimed_by = ?5",
                params![id, at, error, ambiguous, replica],
            ),
            None => db.execute(
                "mark failed",
                "UPDATE outbox SET state = 'failed', last_error = ?2, in_flight_since = NULL,
                    attempts = attempts + 1, claimed_by = NULL, claimed_until = NULL
                 WHERE id = ?1 AND state = 'pending' AND claimed_by = ?3",
                params![id, error, replica],
            ),
        };
        result.map(|changed| changed == 1)
    }

    /// Clears the in-flight mark after a lookup found no trace of an earlier attempt (if the
    /// row's claim is still this replica's).
    pub fn clear_in_flight(&mut self, id: i64) -> Result<bool, StoreError> {
        let replica = self.replica().to_string();
        self.db()
            .execute(
                "clear in flight",
                "UPDATE outbox SET in_flight_since = NULL
                 WHERE id = ?1 AND state = 'pending' AND claimed_by = ?2",
                params![id, replica],
            )
            .map(|changed| changed == 1)
    }

    /// The Slack channel id and root `ts` of an incident, once its root is posted.
    pub fn incident_root(&self, id: i64) -> Result<(Option<String>, Option<String>), StoreError> {
        self.db()
            .query_opt(
                "read incident root",
                "SELECT channel_id, root_ts FROM incidents WHERE id = ?1",
                params![id],
            )?
            .map_or(Ok((None, None)), |row| Ok((row.get(0)?, row.get(1)?)))
    }

    /// Records the root message of an incident and marks its row delivered, atomically.
    pub fn root_posted(
        &mut self,
        row: i64,
        incident: i64,
        channel_id: &str,
        ts: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let replica = self.replica().to_string();
        self.transaction(|tx| {
            if tx.execute(
                "mark delivered",
                MARK_DELIVERED,
                params![row, now, ts, replica],
            )? == 0
            {
                // Another replica's claim took the row over: the root is its to record.
                return Ok(false);
            }
            tx.execute(
                "record root",
                "UPDATE incidents SET channel_id = ?2, root_ts = ?3 WHERE id = ?1",
                params![incident, channel_id, ts],
            )?;
            Ok(true)
        })
    }

    /// The SLOs with an open Slack incident.
    pub fn open_incident_slos(&self) -> Result<Vec<String>, StoreError> {
        self.db()
            .query(
                "read incidents",
                "SELECT DISTINCT slo_id FROM incidents
                 WHERE closed_at IS NULL AND slo_id != 'burnwatch' ORDER BY slo_id",
                params![],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    /// The last notification sent (or queued) to Alertmanager and to each webhook for every
    /// alert, the meta alert's aside: what they were last told.
    pub fn last_told(&self) -> Result<Vec<crate::notify::outbox::Told>, StoreError> {
        let sql = match self.db().dialect() {
            // With MAX(), SQLite takes the bare columns from the newest row.
            Dialect::Sqlite => {
                "SELECT sink, order_key, payload, MAX(id) FROM outbox
                 WHERE sink = 'alertmanager' OR sink LIKE 'webhook:%' GROUP BY order_key"
            }
            Dialect::Postgres => {
                "SELECT DISTINCT ON (order_key) sink, order_key, payload FROM outbox
                 WHERE sink = 'alertmanager' OR sink LIKE 'webhook:%' ORDER BY order_key, id DESC"
            }
        };
        let mut told = Vec::new();
        for row in self
            .db()
            .query("read what sinks were told", sql, params![])?
        {
            let sink = column(&row, 0, Sink::parse)?;
            let told_one = crate::notify::outbox::Told {
                sink,
                order_key: row.get(1)?,
                payload: json_column(&row, 2)?,
            };
            if told_one.slo_id() != Some(crate::notify::outbox::META_SLO_ID) {
                told.push(told_one);
            }
        }
        Ok(told)
    }

    /// A channel id Slack gave for a channel name before, if any.
    pub fn known_channel_id(&self, target: &str) -> Result<Option<String>, StoreError> {
        self.db()
            .query_opt(
                "read channel id",
                "SELECT channel_id FROM incidents WHERE target = ?1 AND channel_id IS NOT NULL
                 ORDER BY id DESC LIMIT 1",
                params![target],
            )?
            .map(|row| row.get(0))
            .transpose()
    }

    /// Pending rows by sink (`webhook:<name>` counted under its own name).
    pub fn depth(&self) -> Result<Vec<(Sink, i64)>, StoreError> {
        self.db()
            .query(
                "select depth",
                "SELECT sink, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY sink
                 ORDER BY sink",
                params![],
            )?
            .iter()
            .map(|row| Ok((column(row, 0, Sink::parse)?, row.get(1)?)))
            .collect()
    }

    /// Rows queued after row `after`, oldest first: (id, sink, kind, payload).
    pub fn queued_after(&self, after: i64) -> Result<Vec<(i64, Sink, Kind, Value)>, StoreError> {
        self.db()
            .query(
                "select queued",
                "SELECT id, sink, kind, payload FROM outbox WHERE id > ?1 ORDER BY id",
                params![after],
            )?
            .iter()
            .map(|row| {
                Ok((
                    row.get(0)?,
                    column(row, 1, Sink::parse)?,
                    column(row, 2, Kind::parse)?,
                    json_column(row, 3)?,
                ))
            })
            .collect()
    }

    /// The newest 1,000 rows, oldest first: (id, sink, kind, state, attempts, result, last_error).
    pub fn outbox_rows(&self) -> Result<Vec<Value>, StoreError> {
        self.db()
            .query(
                "select rows",
                "SELECT * FROM (SELECT id, sink, kind, state, attempts, result, last_error, created_at,
                    delivered_at, order_key FROM outbox ORDER BY id DESC LIMIT 1000) AS newest
                 ORDER BY id",
                params![],
            )?
            .iter()
            .map(|row| {
                Ok(json!({
                    "id": row.get::<i64>(0)?,
                    "sink": row.get::<String>(1)?,
                    "kind": row.get::<String>(2)?,
                    "state": row.get::<String>(3)?,
                    "attempts": row.get::<i64>(4)?,
                    "result": row.get::<Option<String>>(5)?,
                    "last_error": row.get::<Option<String>>(6)?,
                    "created_at": row.get::<i64>(7)?,
                    "delivered_at": row.get::<Option<i64>>(8)?,
                    "order_key": row.get::<String>(9)?,
                }))
            })
            .collect()
    }

    /// Drops delivered and failed rows older than [`KEEP_DELIVERED`], and closed incidents
    /// without rows. The newest Alertmanager row of an alert is kept while it says the alert
    /// fires: it is what Alertmanager was last told ([`Store::alertmanager_told_firing`]), and
    /// an alert firing for longer than a week must not lose it.
    pub fn prune_outbox(&mut self, now: Millis) -> Result<(), StoreError> {
        let db = self.db();
        let told_firing = match db.dialect() {
            Dialect::Sqlite => {
                "SELECT id FROM (
                     SELECT MAX(id) AS id, json_extract(payload, '$.endsAt') IS NULL AS firing
                     FROM outbox WHERE sink = ?2 GROUP BY order_key)
                 WHERE firing"
            }
            Dialect::Postgres => {
                "SELECT id FROM (
                     SELECT DISTINCT ON (order_key) id, (payload::jsonb ->> 'endsAt') IS NULL AS firing
                     FROM outbox WHERE sink = ?2 ORDER BY order_key, id DESC) AS newest
                 WHERE firing"
            }
        };
        db.execute(
            "prune outbox",
            &format!(
                "DELETE FROM outbox WHERE state != 'pending' AND created_at < ?1
                   AND id NOT IN ({told_firing})"
            ),
            params![now - KEEP_DELIVERED, Sink::Alertmanager.as_str()],
        )?;
        db.execute(
            "prune incidents",
            "DELETE FROM incidents WHERE closed_at IS NOT NULL AND closed_at < ?1
               AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.incident_id = incidents.id)",
            params![now - KEEP_DELIVERED],
        )?;
        db.execute(
            "prune silences",
            "DELETE FROM silences WHERE ends_at < ?1",
            params![now - KEEP_DELIVERED],
        )?;
        Ok(())
    }

    /// Adds or replaces an API silence. Not a leader's write: an operator's silence is taken
    /// by whichever replica the request reaches, and the leader reads it when it plans.
    pub fn save_silence(&mut self, silence: &Silence) -> Result<(), StoreError> {
        self.transaction(|tx| write_silence(tx, silence))
            .map(|_| ())
    }

    /// Adds a new API silence unless `most` are active at `now` already: `Ok(false)` then.
    pub fn add_silence(
        &mut self,
        silence: &Silence,
        now: Millis,
        most: usize,
    ) -> Result<bool, StoreError> {
        self.transaction(|tx| {
            let active = count_silences(tx, now)?;
            if active >= most as i64 {
                return Ok(false);
            }
            write_silence(tx, silence)?;
            Ok(true)
        })
    }

    /// API silences that have not ended by `now`.
    pub fn count_silences(&self, now: Millis) -> Result<i64, StoreError> {
        count_silences(self.db(), now)
    }

    /// The order keys of the alerts Alertmanager has been told fire: their newest
    /// Alertmanager notification that was delivered is a firing one (no `endsAt`); rows still
    /// pending or given up were not told. A silence that begins later must not let them lapse
    /// there: it mutes, it does not end the burn.
    pub fn alertmanager_told_firing(
        &self,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let sql = match self.db().dialect() {
            // One pass: with MAX(), SQLite takes the bare columns from the newest row.
            Dialect::Sqlite => {
                "SELECT order_key, json_extract(payload, '$.endsAt') IS NULL, MAX(id)
                 FROM outbox WHERE sink = ?1 AND state = 'delivered' GROUP BY order_key"
            }
            Dialect::Postgres => {
                "SELECT DISTINCT ON (order_key) order_key, (payload::jsonb ->> 'endsAt') IS NULL
                 FROM outbox WHERE sink = ?1 AND state = 'delivered' ORDER BY order_key, id DESC"
            }
        };
        let mut firing = std::collections::HashSet::new();
        for row in self.db().query(
            "read alertmanager alerts",
            sql,
            params![Sink::Alertmanager.as_str()],
        )? {
            if row.get::<bool>(1)? {
                firing.insert(row.get(0)?);
            }
        }
        Ok(firing)
    }

    /// Silences added through the API that have not ended by `now`, in the order they
    /// start. Their matchers are compiled once per silence and kept ([`SilenceCache`]).
    pub fn silences(&self, now: Millis) -> Result<Vec<Silence>, StoreError> {
        self.silences_page(now, None, usize::MAX)
    }

    /// At most `limit` of [`Store::silences`], those after the silence `after` (a cursor: the
    /// last id of the page before) when given.
    pub fn silences_page(
        &self,
        now: Millis,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Silence>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = match after {
            None => self.db().query(
                "select silences",
                &format!("{SILENCE_COLUMNS} WHERE ends_at > ?1 ORDER BY starts_at, id LIMIT ?2"),
                params![now, limit],
            )?,
            Some(after) => self.db().query(
                "select silences",
                &format!(
                    "{SILENCE_COLUMNS} WHERE ends_at > ?1 AND (starts_at, id) > \
                     (SELECT starts_at, id FROM silences WHERE id = ?2) \
                     ORDER BY starts_at, id LIMIT ?3"
                ),
                params![now, after, limit],
            )?,
        };
        let mut cache = self.silence_cache();
        let mut silences = Vec::with_capacity(rows.len());
        for row in rows {
            if let Some(silence) = cache.read(&row)? {
                silences.push(silence);
            }
        }
        if after.is_none() && limit == i64::MAX {
            cache.keep_only(&silences);
        }
        Ok(silences)
    }

    /// One API silence by id, if it has not ended by `now`.
    pub fn silence(&self, id: &str, now: Millis) -> Result<Option<Silence>, StoreError> {
        let row = self.db().query_opt(
            "select silence",
            &format!("{SILENCE_COLUMNS} WHERE id = ?1 AND ends_at > ?2"),
            params![id, now],
        )?;
        match row {
            Some(row) => self.silence_cache().read(&row),
            None => Ok(None),
        }
    }
}

const SILENCE_COLUMNS: &str =
    "SELECT id, matchers, starts_at, ends_at, comment, created_by FROM silences";

fn count_silences(db: &impl Sql, now: Millis) -> Result<i64, StoreError> {
    db.query_opt(
        "count silences",
        "SELECT COUNT(*) FROM silences WHERE ends_at > ?1",
        params![now],
    )?
    .map_or(Ok(0), |row| row.get(0))
}

fn write_silence(tx: &impl Sql, silence: &Silence) -> Result<u64, StoreError> {
    let matchers: Vec<String> = silence.matchers.iter().map(Matcher::to_string).collect();
    tx.execute(
        "save silence",
        "INSERT INTO silences (id, matchers, starts_at, ends_at, comment, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(id) DO UPDATE SET matchers = excluded.matchers,
            starts_at = excluded.starts_at, ends_at = excluded.ends_at,
            comment = excluded.comment, created_by = excluded.created_by",
        params![
            &silence.id,
            serde_json::to_string(&matchers).unwrap_or_default(),
            silence.starts_at,
            silence.ends_at,
            &silence.comment,
            &silence.created_by
        ],
    )
}

/// Compiled matchers of the API silences, by id and the matchers' stored text: a silence's
/// regexes are compiled once, not at every read (each cycle with alert changes, each
/// Alertmanager re-send, each request of the API).
#[derive(Debug, Default)]
pub struct SilenceCache {
    compiled: std::collections::HashMap<String, (String, Vec<Matcher>)>,
}

impl SilenceCache {
    fn read(&mut self, row: &crate::store::Row) -> Result<Option<Silence>, StoreError> {
        let (id, text): (String, String) = (row.get(0)?, row.get(1)?);
        let matchers = match self.compiled.get(&id) {
            Some((stored, matchers)) if *stored == text => matchers.clone(),
            _ => {
                let texts: Vec<String> = serde_json::from_str(&text).unwrap_or_default();
                let Ok(matchers) = texts
                    .iter()
                    .map(|text| Matcher::parse(text))
                    .collect::<Result<Vec<_>, _>>()
                else {
                    tracing::warn!(%id, "skipping a silence with unreadable matchers");
                    return Ok(None);
                };
                self.compiled.insert(id.clone(), (text, matchers.clone()));
                matchers
            }
        };
        Ok(Some(Silence {
            id,
            matchers,
            starts_at: row.get(2)?,
            ends_at: row.get(3)?,
            comment: row.get(4)?,
            created_by: row.get(5)?,
        }))
    }

    /// Forgets silences that are no longer active.
    fn keep_only(&mut self, active: &[Silence]) {
        let ids: std::collections::HashSet<&str> =
            active.iter().map(|silence| silence.id.as_str()).collect();
        self.compiled.retain(|id, _| ids.contains(id.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::alert::Change;
    use crate::config::notify::{AlertmanagerConfig, NotifyConfig};
    use crate::engine::Event;
    use crate::notify::apply;
    use crate::notify::fixtures;
    use crate::notify::outbox::{KEEP_DELIVERED, Plan, SlackKind, alertmanager_order_key};
    use crate::slo::{Millis, Slo, TierKind};
    use crate::store::Store;

    fn queue(store: &mut Store, slo: &Slo, event: &Event, now: Millis) {
        let notify = NotifyConfig {
            alertmanager: Some(AlertmanagerConfig {
                url: "http://am:9093".to_string(),
                resend_interval: Duration::from_secs(60),
                timeout: Duration::from_secs(5),
            }),
            ..NotifyConfig::default()
        };
        let plan = Plan {
            notify: &notify,
            silences: &[],
            slack: Some(SlackKind::WebApi),
            external_url: "http://burnwatch:9099",
        };
        store
            .save_cycle(&[], |tx| {
                apply::queue_events(tx, &plan, &[(slo, event)], now)
            })
            .unwrap();
    }

    fn deliver_all(store: &mut Store, now: Millis) {
        let ids: Vec<i64> = store
            .outbox_rows()
            .unwrap()
            .iter()
            .filter(|row| row["state"] == "pending")
            .map(|row| row["id"].as_i64().unwrap())
            .collect();
        for id in ids {
            assert!(
                store.claim(id, now, 60_000).unwrap().is_some(),
                "claim {id}"
            );
            assert!(store.mark_delivered(id, now, None).unwrap(), "deliver {id}");
        }
    }

    /// Two replicas on one outbox (on SQLite, two connections to one file): a row one has
    /// claimed is not due to the other, cannot be claimed or marked in flight by it, and only
    /// the claimant records its outcome, until the claim runs out and the other takes over,
    /// after which the first can neither send nor record.
    #[test]
    fn a_claimed_row_is_one_replicas_until_its_claim_runs_out() {
        use crate::notify::outbox::SinkFamily;
        use crate::store::Sql as _;
        for (backend, mut a) in crate::store::testing::stores() {
            let mut b = backend.reopen();
            a.set_replica("replica-a");
            b.set_replica("replica-b");
            let slo = fixtures::slo("order-service", "https://runbooks.example.com/orders");
            let t = 1_700_000_000_000;
            let firing = fixtures::event(
                &slo.id,
                "POST /orders",
                TierKind::Page,
                Change::Firing,
                t,
                t,
            );
            queue(&mut a, &slo, &firing, t);
            // PostgreSQL judges claims by its own clock: claims here are made to last.
            let (now, hold) = (crate::notify::deliver::wall_clock(), 600_000);
            let ids = |store: &Store| -> Vec<i64> {
                store
                    .due(SinkFamily::Alertmanager, now, 10)
                    .unwrap()
                    .iter()
                    .map(|row| row.id)
                    .collect()
            };
            let row = ids(&a)[0];
            assert_eq!(ids(&b), [row], "due to both before any claim");
            assert!(a.claim(row, now, hold).unwrap().is_some(), "a claims it");
            assert!(ids(&b).is_empty(), "claimed by a: not due to b");
            assert!(
                b.claim(row, now, hold).unwrap().is_none(),
                "b cannot claim it"
            );
            assert!(!b.mark_in_flight(row, now, hold).unwrap(), "nor send it");
            assert!(!b.mark_delivered(row, now, None).unwrap(), "nor record it");
            assert!(b.next_due(SinkFamily::Alertmanager, now).unwrap().is_some());
            assert!(a.mark_in_flight(row, now, hold).unwrap(), "a sends it");
            // a's claim runs out (a died, or paused past it): b takes the row over.
            a.db()
                .execute(
                    "expire the claim",
                    "UPDATE outbox SET claimed_until = 0 WHERE id = ?1",
                    crate::store::params![row],
                )
                .unwrap();
            assert_eq!(ids(&b), [row], "due to b once a's claim ran out");
            let taken = b.claim(row, now, hold).unwrap().expect("b takes it over");
            assert!(
                taken.in_flight_since.is_some(),
                "b sees a's attempt, to look it up"
            );
            assert!(
                !a.mark_in_flight(row, now, hold).unwrap(),
                "a cannot send any more"
            );
            assert!(!a.mark_failed(row, "timeout", Some(now), true).unwrap());
            assert!(!a.mark_delivered(row, now, None).unwrap(), "nor record");
            assert!(b.mark_in_flight(row, now, hold).unwrap());
            assert!(b.mark_delivered(row, now, Some("ok")).unwrap());
            assert!(ids(&a).is_empty() && ids(&b).is_empty(), "delivered once");
            // A late outcome of a's (its claim long gone) changes nothing.
            assert!(!a.mark_failed(row, "timeout", None, false).unwrap());
            let rows = a.outbox_rows().unwrap();
            let delivered = rows.iter().find(|known| known["id"] == row).unwrap();
            assert_eq!(
                delivered["state"], "delivered",
                "{}: {rows:?}",
                backend.name
            );

            // a reads the next row; b attempts it meanwhile (ambiguously: it may have gone
            // out) and schedules a retry. a's claim waits for the retry, and gives a the row
            // as b left it, in flight, to be looked up rather than sent again.
            let resolved = fixtures::event(
                &slo.id,
                "POST /orders",
                TierKind::Page,
                Change::Resolved,
                t + 1,
                t,
            );
            queue(&mut a, &slo, &resolved, t + 1);
            let next = ids(&a)[0];
            assert_ne!(next, row);
            assert!(b.claim(next, now, hold).unwrap().is_some());
            assert!(b.mark_in_flight(next, now, hold).unwrap());
            assert!(
                b.mark_failed(next, "timeout", Some(now + 60_000), true)
                    .unwrap()
            );
            assert!(
                a.claim(next, now, hold).unwrap().is_none(),
                "not due before its retry"
            );
            let fresh = a
                .claim(next, now + 60_000, hold)
                .unwrap()
                .expect("due at its retry");
            assert!(
                fresh.in_flight_since.is_some() && fresh.attempts == 1,
                "{}: the claimed row is as b left it: {fresh:?}",
                backend.name
            );
            drop(b);
        }
    }

    #[test]
    fn pruning_keeps_what_alertmanager_was_last_told_of_a_long_burn() {
        for (_backend, mut store) in crate::store::testing::stores() {
            let slo = fixtures::slo("order-service", "https://runbooks.example.com/orders");
            let t = 1_700_000_000_000;
            let firing = fixtures::event(
                &slo.id,
                "POST /orders",
                TierKind::Page,
                Change::Firing,
                t,
                t,
            );
            queue(&mut store, &slo, &firing, t);
            let key = alertmanager_order_key(&slo.id, &firing.labels, TierKind::Page);
            // Regression (hardening): a row still pending counted as told.
            assert!(
                !store.alertmanager_told_firing().unwrap().contains(&key),
                "a pending row is not told"
            );
            deliver_all(&mut store, t);
            assert!(store.alertmanager_told_firing().unwrap().contains(&key));
            // Eight days later, still firing: the Slack root goes, the Alertmanager alert stays.
            store.prune_outbox(t + KEEP_DELIVERED + 86_400_000).unwrap();
            let left: Vec<String> = store
                .outbox_rows()
                .unwrap()
                .iter()
                .map(|row| row["sink"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(left, ["alertmanager"]);
            assert!(
                store.alertmanager_told_firing().unwrap().contains(&key),
                "a silence now must not let Alertmanager end the alert"
            );
            // Resolved and pruned in turn: nothing is left to say it fires.
            let later = t + 9 * 86_400_000;
            let resolved = fixtures::event(
                &slo.id,
                "POST /orders",
                TierKind::Page,
                Change::Resolved,
                later,
                t,
            );
            queue(&mut store, &slo, &resolved, later);
            deliver_all(&mut store, later);
            store.prune_outbox(later + KEEP_DELIVERED + 1).unwrap();
            assert!(store.outbox_rows().unwrap().is_empty());
            assert!(store.alertmanager_told_firing().unwrap().is_empty());
        }
    }
}
