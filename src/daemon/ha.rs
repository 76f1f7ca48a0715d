//! The daemon's side of high availability: replicas sharing one PostgreSQL state, one of them
//! the leader at a time.
//!
//! A [`LeaseTask`] takes or renews the lease (`ha::lease`) every third of its duration and
//! publishes what it learnt. The loop turns that into this replica's role at each change and
//! each tick ([`super::lifecycle::Daemon::sync_role`]):
//!
//! - **Leader**: the store's fencing carries the lease's epoch, so every alert-state save,
//!   notification plan, checkpoint, history and silence is refused once a newer leader
//!   exists. On taking the lease the leader reloads the alert state the last leader saved
//!   (and the evaluation-stale mark), so it goes on from there: nothing re-pages, nothing
//!   resolves early.
//! - **Follower**: evaluates every cycle as the leader does (its source state stays warm, its
//!   status page current) and writes nothing; its alert changes are dropped. A write refused
//!   by the fence (a paused leader waking after a takeover) steps the replica down at once;
//!   it leads again only with a new epoch.
//!
//! Delivery is the same on every replica: workers claim outbox rows, so each row is sent by
//! one of them (`notify::queue`).

use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ha::{Fence, Leadership, Leases};
use crate::replay::format_time;

/// The lease the replicas of one database contend for.
pub(super) const LEASE_NAME: &str = "burnwatch";

/// This replica's name in the lease and in delivery claims: the host (a pod's name in
/// Kubernetes), the process id and a random nonce, so a restarted process never passes for the
/// one before it.
pub(super) fn replica_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|host| host.trim().to_string())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "burnwatch".to_string());
    format!(
        "{host}/{}/{:06x}",
        std::process::id(),
        fastrand::u32(..0x100_0000)
    )
}

/// What this replica knows of the lease: the last answer, and the last failure since.
#[derive(Debug, Clone, Default)]
pub(super) struct LeaseView {
    pub(super) leadership: Option<Leadership>,
    pub(super) error: Option<String>,
    /// Until when this replica may count on leading, on its monotonic clock: the lease's
    /// duration from the start of the call that granted it (None: it does not lead). A
    /// process paused past it (SIGSTOP, a long stall) wakes knowing it no longer leads.
    pub(super) valid_until: Option<Instant>,
}

impl LeaseView {
    /// The fence this replica may lead with: it holds the lease per the last answer, and no
    /// call has failed since (a leader that cannot renew stops acting as one).
    pub(super) fn fence(&self) -> Option<Fence> {
        if self.error.is_some() {
            return None;
        }
        self.leadership.as_ref()?.fence(LEASE_NAME)
    }

    /// Whether this replica leads at this moment, by its own clock.
    pub(super) fn leads_now(&self) -> bool {
        self.fence().is_some() && self.valid_until.is_some_and(|until| Instant::now() < until)
    }
}

/// Waits for the lease task to learn something new (never, without one: SQLite); None once
/// the task has ended.
pub(super) async fn changed(view: &mut Option<watch::Receiver<LeaseView>>) -> Option<()> {
    match view {
        Some(view) => view.changed().await.ok(),
        None => std::future::pending().await,
    }
}

/// The task that holds this replica's place in the lease.
pub(super) struct LeaseTask {
    pub(super) view: watch::Receiver<LeaseView>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl LeaseTask {
    /// Starts contending for the lease as `replica`, renewing every third of `duration`.
    pub(super) fn start(
        leases: Leases,
        replica: String,
        duration: Duration,
        errors: Counter,
    ) -> LeaseTask {
        let (sender, view) = watch::channel(LeaseView::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(hold_lease(
            leases,
            (replica, duration),
            sender,
            errors,
            stop.clone(),
        ));
        LeaseTask { view, stop, task }
    }

    /// Stops renewing and gives the lease up if held, so a follower takes over at once.
    pub(super) async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

async fn hold_lease(
    mut leases: Leases,
    (replica, duration): (String, Duration),
    sender: watch::Sender<LeaseView>,
    errors: Counter,
    stop: CancellationToken,
) {
    let every = duration / 3;
    loop {
        let started = Instant::now();
        match leases
            .acquire_or_renew(LEASE_NAME, &replica, duration)
            .await
        {
            Ok(leadership) => {
                let valid_until = leadership.leader.then(|| started + duration);
                sender.send_if_modified(|view| {
                    let changed =
                        view.leadership.as_ref() != Some(&leadership) || view.error.is_some();
                    *view = LeaseView {
                        leadership: Some(leadership),
                        error: None,
                        valid_until,
                    };
                    changed
                });
            }
            Err(error) => {
                errors.inc();
                tracing::warn!(%error, "cannot reach the lease; acting as a follower until it answers");
                sender.send_modify(|view| view.error = Some(error.to_string()));
            }
        }
        let wait = every.saturating_sub(started.elapsed());
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if sender.borrow().fence().is_some() {
        // Not the leader from here on, whatever the release's outcome: a follower may take
        // over at once, and nothing of this replica's may go out as the leader's.
        sender.send_modify(|view| {
            view.leadership = None;
            view.valid_until = None;
        });
        match tokio::time::timeout(duration, leases.release(LEASE_NAME, &replica)).await {
            Ok(Ok(true)) => tracing::info!("gave the lease up for a follower to take over"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "could not give the lease up; it runs out"),
            Err(_) => tracing::warn!("giving the lease up timed out; it runs out"),
        }
    }
}

/// A replica's standing among those sharing its PostgreSQL state.
pub(super) struct Ha {
    pub(super) replica: String,
    pub(super) lease: LeaseTask,
    /// The fence this replica leads with; None while it follows.
    pub(super) leading: Option<Fence>,
    /// An epoch at which the fence refused this replica's write: it does not lead at that
    /// epoch again (only with a newer one, after taking the lease anew).
    pub(super) refused_epoch: Option<i64>,
    pub(super) metrics: crate::metrics::HaMetrics,
}

impl Ha {
    /// The fence this replica should lead with now, per the lease task: none once the lease
    /// has run out by this replica's own clock (a process paused past it wakes a follower,
    /// before its lease task has asked again).
    pub(super) fn wanted(&self) -> Option<Fence> {
        let view = self.lease.view.borrow();
        view.fence()
            .filter(|fence| view.leads_now() && Some(fence.epoch) != self.refused_epoch)
    }

    /// What the HTTP face and `/metrics` show, as of now.
    pub(super) fn status(&self) -> HaStatus {
        let role = if self.leading.is_some() {
            Role::Leader
        } else {
            Role::Follower
        };
        let status = HaStatus::new(&self.replica, role, &self.lease.view.borrow());
        self.metrics.leader.set(i64::from(role == Role::Leader));
        self.metrics.epoch.set(status.epoch);
        self.metrics
            .leader_since
            .set(status.since_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
        status
    }
}

/// This replica's part, as the loop acts on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Leader,
    Follower,
}

/// What `/-/ready`, `/metrics` and `/api/v1/status` say of leadership.
#[derive(Debug, Clone, Serialize)]
pub struct HaStatus {
    /// The state backend replicas share (`postgres`).
    pub backend: &'static str,
    /// This replica's name in the lease.
    pub replica: String,
    /// What this replica does now.
    pub role: Role,
    /// Who holds the lease, as last learnt (None: nobody ever did, or not learnt yet).
    pub leader: Option<String>,
    /// The lease's fencing token: +1 at every change of leader.
    pub epoch: i64,
    /// When the leader took the lease (RFC 3339, the database's clock).
    pub since: Option<String>,
    /// When the lease runs out unless renewed.
    pub expires_at: Option<String>,
    /// Why the lease could not be reached, while it cannot.
    pub error: Option<String>,
    /// Milliseconds since the epoch of `since`, for `/metrics`.
    #[serde(skip)]
    pub since_ms: Option<crate::slo::Millis>,
}

impl HaStatus {
    pub(super) fn new(replica: &str, role: Role, view: &LeaseView) -> HaStatus {
        let leadership = view.leadership.as_ref();
        HaStatus {
            backend: "postgres",
            replica: replica.to_string(),
            role,
            leader: leadership.and_then(|known| known.holder.clone()),
            epoch: leadership.map_or(0, |known| known.epoch),
            since: leadership.and_then(|known| known.since).map(format_time),
            expires_at: leadership
                .and_then(|known| known.expires_at)
                .map(format_time),
            error: view.error.clone(),
            since_ms: leadership.and_then(|known| known.since),
        }
    }

    /// One line for `/-/ready`.
    pub fn describe(&self) -> String {
        let leader = self.leader.as_deref().unwrap_or("nobody yet");
        let role = match self.role {
            Role::Leader => "this replica is the leader",
            Role::Follower => "this replica is a follower",
        };
        let since = self
            .since
            .as_deref()
            .map(|since| format!(", since {since}"))
            .unwrap_or_default();
        format!(
            "{role} ({}); leader: {leader}, epoch {}{since}",
            self.replica, self.epoch
        )
    }
}
