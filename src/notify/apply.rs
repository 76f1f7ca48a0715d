//! The planner's I/O: reads the open Slack incidents a plan needs from the caller's
//! transaction and writes what the pure planner (`outbox.rs`) decided, in that same
//! transaction, so a notification is committed with the alert state that caused it.

use serde_json::{Map, Value};

use crate::engine::Event;
use crate::notify::outbox::{
    self, Incident, IncidentChange, IncidentRef, Order, Outcome, Plan, Planned, Planner,
};
use crate::slo::{Millis, Slo};
use crate::store::{Sql, StoreError, params};

/// The open Slack incidents of `slo_ids`, oldest first.
pub fn open_incidents<'a>(
    tx: &dyn Sql,
    slo_ids: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<Incident>, StoreError> {
    let mut ids: Vec<&str> = slo_ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut open = Vec::new();
    for slo_id in ids {
        for row in tx.query(
            "read incidents",
            "SELECT id, target, slo_id, labels, tiers FROM incidents
             WHERE sink = 'slack' AND slo_id = ?1 AND closed_at IS NULL
             ORDER BY id",
            params![slo_id],
        )? {
            let tiers: String = row.get(4)?;
            open.push(Incident {
                id: IncidentRef::Stored(row.get(0)?),
                target: row.get(1)?,
                slo_id: row.get(2)?,
                labels: row.get(3)?,
                tiers: serde_json::from_str(&tiers).unwrap_or_default(),
            });
        }
    }
    open.sort_by_key(|incident| match incident.id {
        IncidentRef::Stored(id) => id,
        IncidentRef::New(_) => i64::MAX,
    });
    Ok(open)
}

fn tiers_json(tiers: &Map<String, Value>) -> String {
    Value::Object(tiers.clone()).to_string()
}

/// Writes a plan inside `tx`: its incident changes in order, then its rows. A row whose
/// natural key is already queued is not queued again.
pub fn apply(tx: &dyn Sql, outcome: &Outcome, now: Millis) -> Result<Planned, StoreError> {
    let mut opened: Vec<i64> = Vec::new();
    let resolve = |opened: &[i64], incident: IncidentRef| -> Result<i64, StoreError> {
        match incident {
            IncidentRef::Stored(id) => Ok(id),
            IncidentRef::New(index) => opened
                .get(index)
                .copied()
                .ok_or_else(|| StoreError::new(format!("plan names unknown incident {index}"))),
        }
    };
    for change in &outcome.incidents {
        match change {
            IncidentChange::Open {
                target,
                slo_id,
                labels,
                tiers,
            } => {
                let id: i64 = tx
                    .query_one(
                        "open incident",
                        "INSERT INTO incidents (sink, target, slo_id, labels, opened_at, tiers)
                         VALUES ('slack', ?1, ?2, ?3, ?4, ?5) RETURNING id",
                        params![target, slo_id, labels, now, tiers_json(tiers)],
                    )?
                    .get(0)?;
                opened.push(id);
            }
            IncidentChange::Tiers { incident, tiers } => {
                tx.execute(
                    "update incident",
                    "UPDATE incidents SET tiers = ?1 WHERE id = ?2",
                    params![tiers_json(tiers), resolve(&opened, *incident)?],
                )?;
            }
            IncidentChange::Close { incident } => {
                tx.execute(
                    "close incident",
                    "UPDATE incidents SET closed_at = ?1, tiers = '{}' WHERE id = ?2",
                    params![now, resolve(&opened, *incident)?],
                )?;
            }
        }
    }
    let mut planned = Planned {
        queued: 0,
        silenced: outcome.silenced,
    };
    for row in &outcome.rows {
        let incident = match &row.order {
            Order::Incident(incident) => Some(resolve(&opened, *incident)?),
            Order::Key(_) => None,
        };
        // A row whose natural key is already queued is not queued again.
        let inserted = tx.execute(
            "queue a notification",
            "INSERT INTO outbox
                (natural_key, sink, order_key, incident_id, kind, payload, created_at, state, next_attempt_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?7)
             ON CONFLICT (natural_key) DO NOTHING",
            params![
                row.natural_key(incident),
                row.sink.as_str(),
                row.order_key(incident),
                incident,
                row.kind.as_str(),
                row.payload.to_string(),
                now
            ],
        )?;
        planned.queued += inserted as usize;
    }
    Ok(planned)
}

/// Plans and queues the notifications of `events` inside `tx` (the planner over the open
/// incidents of their SLOs, then [`apply`]).
pub fn queue_events(
    tx: &dyn Sql,
    plan: &Plan,
    events: &[(&Slo, &Event)],
    now: Millis,
) -> Result<Planned, StoreError> {
    let open = open_incidents(tx, events.iter().map(|(slo, _)| slo.id.as_str()))?;
    let mut planner = Planner::new(plan, open, now);
    planner.events(events);
    apply(tx, &planner.finish(), now)
}

/// Closes the open Slack incidents of SLOs a reload removed, inside `tx`; returns the rows
/// queued.
pub fn queue_removed(
    tx: &dyn Sql,
    slo_ids: &[String],
    told: Vec<outbox::Told>,
    now: Millis,
) -> Result<usize, StoreError> {
    let open = open_incidents(tx, slo_ids.iter().map(String::as_str))?;
    let mut outcome = outbox::plan_removed(open, slo_ids, now);
    outcome.rows.extend(outbox::plan_removed_told(told, now));
    Ok(apply(tx, &outcome, now)?.queued)
}
