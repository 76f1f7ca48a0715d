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

/// Marks a row delivered; `result` is what the receiver answered (a Slack `ts`).
const MARK_DELIVERED: &str =
    "UPDATE outbox SET state = 'delivered', delivered_at = ?2, result = ?3,
    in_flight_since = NULL, last_error = NULL, attempts = attempts + 1 WHERE id = ?1";

impl Store {
    /// Rows of `family` (`webhook`: every `webhook:<name>`) that are due at `now` and first in
    /// their order, oldest first.
    pub fn due(
        &self,
        family: SinkFamily,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<Row>, StoreError> {
        self.db()
            .query(
                "select due",
                "SELECT o.id, o.sink, o.kind, o.payload, o.incident_id, o.attempts, o.created_at,
                        o.in_flight_since
                 FROM outbox AS o
                 JOIN (SELECT MIN(id) AS head FROM outbox
                       WHERE state = 'pending' AND (sink = ?1 OR sink LIKE ?1 || ':%')
                       GROUP BY order_key) AS heads ON o.id = heads.head
                 WHERE o.next_attempt_at <= ?2
                 ORDER BY o.id LIMIT ?3",
                params![family.as_str(), now, limit],
            )?
            .iter()
            .map(|row| {
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
            })
            .collect()
    }

    /// When the next pending row of `family` falls due after `now`, if any.
    pub fn next_due(&self, family: SinkFamily, now: Millis) -> Result<Option<Millis>, StoreError> {
        self.db()
            .query_one(
                "next due",
                "SELECT MIN(next_attempt_at) FROM outbox
                 WHERE state = 'pending' AND (sink = ?1 OR sink LIKE ?1 || ':%')
                   AND next_attempt_at > ?2",
                params![family.as_str(), now],
            )?
            .get(0)
    }

    /// Marks a row as on its way (committed before the request goes out); keeps an earlier
    /// mark, so an ambiguous earlier attempt is still looked up.
    pub fn mark_in_flight(&mut self, id: i64, now: Millis) -> Result<(), StoreError> {
        self.db()
            .execute(
                "mark in flight",
                "UPDATE outbox SET in_flight_since = COALESCE(in_flight_since, ?2) WHERE id = ?1",
                params![id, now],
            )
            .map(|_| ())
    }

    pub fn mark_delivered(
        &mut self,
        id: i64,
        now: Millis,
        result: Option<&str>,
    ) -> Result<(), StoreError> {
        self.db()
            .execute("mark delivered", MARK_DELIVERED, params![id, now, result])
            .map(|_| ())
    }

    /// A failed attempt: try again at `retry_at`, or give up (`None`). `ambiguous`: the
    /// receiver may have acted on it, so the row stays marked in flight.
    pub fn mark_failed(
        &mut self,
        id: i64,
        error: &str,
        retry_at: Option<Millis>,
        ambiguous: bool,
    ) -> Result<(), StoreError> {
        let db = self.db();
        let result = match retry_at {
            Some(at) => db.execute(
                "mark failed",
                "UPDATE outbox SET next_attempt_at = ?2, last_error = ?3, attempts = attempts + 1,
                    in_flight_since = CASE WHEN ?4 THEN in_flight_since ELSE NULL END
                 WHERE id = ?1",
                params![id, at, error, ambiguous],
            ),
            None => db.execute(
                "mark failed",
                "UPDATE outbox SET state = 'failed', last_error = ?2, in_flight_since = NULL,
                    attempts = attempts + 1 WHERE id = ?1",
                params![id, error],
            ),
        };
        result.map(|_| ())
    }

    /// Clears the in-flight mark after a lookup found no trace of an earlier attempt.
    pub fn clear_in_flight(&mut self, id: i64) -> Result<(), StoreError> {
        self.db()
            .execute(
                "clear in flight",
                "UPDATE outbox SET in_flight_since = NULL WHERE id = ?1",
                params![id],
            )
            .map(|_| ())
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
    ) -> Result<(), StoreError> {
        self.transaction(|tx| {
            tx.execute(
                "record root",
                "UPDATE incidents SET channel_id = ?2, root_ts = ?3 WHERE id = ?1",
                params![incident, channel_id, ts],
            )?;
            tx.execute("mark delivered", MARK_DELIVERED, params![row, now, ts])?;
            Ok(())
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

    pub fn save_silence(&mut self, silence: &Silence) -> Result<(), StoreError> {
        let matchers: Vec<String> = silence.matchers.iter().map(Matcher::to_string).collect();
        self.leader_transaction(|tx| {
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
        })
        .map(|_| ())
    }

    /// The order keys of the alerts Alertmanager has been told fire: their newest
    /// Alertmanager notification is a firing one (no `endsAt`). A silence that begins later
    /// must not let them lapse there: it mutes, it does not end the burn.
    pub fn alertmanager_told_firing(
        &self,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let sql = match self.db().dialect() {
            // One pass: with MAX(), SQLite takes the bare columns from the newest row.
            Dialect::Sqlite => {
                "SELECT order_key, json_extract(payload, '$.endsAt') IS NULL, MAX(id)
                 FROM outbox WHERE sink = ?1 GROUP BY order_key"
            }
            Dialect::Postgres => {
                "SELECT DISTINCT ON (order_key) order_key, (payload::jsonb ->> 'endsAt') IS NULL
                 FROM outbox WHERE sink = ?1 ORDER BY order_key, id DESC"
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

    /// Silences added through the API that have not ended by `now`.
    pub fn silences(&self, now: Millis) -> Result<Vec<Silence>, StoreError> {
        let rows = self.db().query(
            "select silences",
            "SELECT id, matchers, starts_at, ends_at, comment, created_by FROM silences
             WHERE ends_at > ?1 ORDER BY starts_at, id",
            params![now],
        )?;
        let mut silences = Vec::new();
        for row in rows {
            let (id, matchers): (String, String) = (row.get(0)?, row.get(1)?);
            let texts: Vec<String> = serde_json::from_str(&matchers).unwrap_or_default();
            let Ok(matchers) = texts.iter().map(|text| Matcher::parse(text)).collect() else {
                tracing::warn!(%id, "skipping a silence with unreadable matchers");
                continue;
            };
            silences.push(Silence {
                id,
                matchers,
                starts_at: row.get(2)?,
                ends_at: row.get(3)?,
                comment: row.get(4)?,
                created_by: row.get(5)?,
            });
        }
        Ok(silences)
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
            store.mark_delivered(id, now, None).unwrap();
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
            deliver_all(&mut store, t);
            let key = alertmanager_order_key(&slo.id, &firing.labels, TierKind::Page);
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
