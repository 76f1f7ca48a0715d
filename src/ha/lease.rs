//! The leader lease: which replica leads, with an epoch as fencing token.
//!
//! # Design
//!
//! One row per lease in the `leases` table (`name` primary key, `holder`, `epoch`,
//! `acquired_at`, `renewed_at`, `expires_at`). Every replica calls
//! [`Leases::acquire_or_renew`] periodically (well within the lease duration); it runs one
//! transaction:
//!
//! 1. make sure the row exists (`INSERT … ON CONFLICT DO NOTHING`, epoch 0, no holder);
//! 2. take it `FOR UPDATE`, so contenders queue behind one another;
//! 3. if we hold it: renew (`expires_at = now() + duration`), same epoch;
//!    if nobody holds it, it has expired, or its holder's signal is gone (below): take it,
//!    `epoch + 1`;
//!    else: we follow, and learn who leads, since when and at which epoch.
//!
//! Times are the database's (`now()`), never a replica's clock: replicas whose clocks
//! disagree still agree on who leads.
//!
//! # Fencing
//!
//! A leader can be paused (GC, SIGSTOP, a lost network) past its lease while another replica
//! takes over; when it wakes it still believes it leads. So every write of a leader's runs in
//! a transaction that first calls [`Fence::check`] (or [`fenced`]): `SELECT … FOR SHARE` on
//! the lease row, refused unless the row still names us, at our epoch, unexpired. The share
//! lock holds the row until the write commits, so a takeover (which needs `FOR UPDATE`) waits
//! for the write, and a write after a takeover sees the new epoch and is refused: the old
//! leader's writes cannot interleave with the new leader's.
//!
//! # The faster signal
//!
//! Besides the row, the leader holds a session-level advisory lock for the lease
//! (`pg_try_advisory_lock(class, hashtext(name))`) on a dedicated connection of its own. A
//! contender tries that lock before each call: while the leader's session lives it cannot get
//! it; once the leader's process dies, PostgreSQL ends its session and frees the lock, so the
//! contender that gets it takes the lease at once (`epoch + 1`) instead of waiting for the
//! expiry. That only when the row says the holder had the lock (`signalled`, written at each
//! renewal): a new leader that took over by expiry while the paused old one still held the
//! lock cannot be pre-empted that way before it gets the lock itself. A lock held since an
//! earlier call by a replica that is not the holder any more (a paused old leader waking up)
//! takes nothing: that replica follows and lets go. A leader that is merely paused (SIGSTOP, a long GC) keeps its session and its lock,
//! so its lease runs to expiry as usual. The lock is only a signal: a contender holding it
//! still takes the lease through the row, and the epoch fences whatever the old leader (were
//! it still alive, its signal session lost) would write. A replica that ends up a follower
//! lets the lock go at once. Any failure of the signal session is taken as "no signal".
//!
//! A lost connection makes a call fail with an error; the next call connects again (and
//! runs the migrations, which are idempotent).

use std::time::Duration;

use tokio_postgres::{Client, Transaction};

use super::HaError;
use crate::slo::Millis;

/// Who leads a lease, as one replica learnt it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// Whether the asking replica leads.
    pub leader: bool,
    /// The replica that leads (None: nobody ever held the lease).
    pub holder: Option<String>,
    /// The fencing token: +1 at every change of holder.
    pub epoch: i64,
    /// When the holder took the lease (ms since the epoch, the database's clock).
    pub since: Option<Millis>,
    /// When the lease runs out unless renewed (ms since the epoch, the database's clock).
    pub expires_at: Option<Millis>,
}

impl Leadership {
    /// The fence for this replica's writes, if it leads.
    pub fn fence(&self, name: &str) -> Option<Fence> {
        match (&self.holder, self.leader) {
            (Some(holder), true) => Some(Fence {
                name: name.to_string(),
                holder: holder.clone(),
                epoch: self.epoch,
            }),
            _ => None,
        }
    }
}

/// What a leader's write carries: the lease, the holder and the epoch it was granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
}

impl Fence {
    /// See [`fenced`].
    pub async fn check(&self, transaction: &Transaction<'_>) -> Result<(), HaError> {
        fenced(transaction, &self.name, &self.holder, self.epoch).await
    }

    /// The query [`fenced`] runs in the writing transaction (`$1`: the lease's name): the
    /// lease row's epoch, holder and whether it is unexpired, locked `FOR SHARE`.
    pub const QUERY: &'static str =
        "SELECT epoch, holder, expires_at > now() FROM leases WHERE name = $1 FOR SHARE";

    /// Whether the lease row [`Fence::QUERY`] read (`None`: no row) still lets this fence
    /// write: held by our holder, at our epoch, unexpired.
    pub fn admits(&self, row: Option<(i64, Option<String>, bool)>) -> Result<(), HaError> {
        let (current, holder, live) = row.unwrap_or((0, None, false));
        if current == self.epoch && holder.as_deref() == Some(self.holder.as_str()) && live {
            Ok(())
        } else {
            Err(HaError::Fenced {
                name: self.name.clone(),
                ours: self.epoch,
                current,
                holder,
            })
        }
    }
}

/// In `transaction`, before a leader's write: locks the lease row `FOR SHARE` and refuses
/// ([`HaError::Fenced`]) unless it is still held by `holder` at `epoch` and unexpired. On
/// refusal the caller must roll back (dropping the transaction does).
pub async fn fenced(
    transaction: &Transaction<'_>,
    name: &str,
    holder: &str,
    epoch: i64,
) -> Result<(), HaError> {
    let row = transaction
        .query_opt(Fence::QUERY, &[&name])
        .await
        .map_err(HaError::db("check the lease"))?;
    let fence = Fence {
        name: name.to_string(),
        holder: holder.to_string(),
        epoch,
    };
    fence.admits(row.map(|row| {
        (
            row.get::<_, i64>(0),
            row.get::<_, Option<String>>(1),
            row.get::<_, Option<bool>>(2).unwrap_or(false),
        )
    }))
}

/// One replica's view of the leases: a connection (made again after it breaks) and the
/// schema migrated.
pub struct Leases {
    config: super::Database,
    client: Option<Client>,
    /// The dedicated session of the leader's advisory lock (see the module docs).
    signal: Option<Client>,
    /// The lease whose advisory lock `signal` holds.
    signalled: Option<String>,
}

/// Where this replica stands with a lease's advisory lock at the start of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// Not held (someone else's session holds it, or the signal session failed).
    No,
    /// Held since an earlier call.
    Held,
    /// Free until this call took it.
    Taken,
}

/// The advisory locks' first key (their second is `hashtext(lease name)`); the two-key space
/// is apart from the one-key space of the migration lock.
const SIGNAL_CLASS: i32 = 0x6277; // "bw"

impl Leases {
    /// Parses `url` (not echoed on error); connects on the first call.
    pub fn new(url: &str) -> Result<Leases, HaError> {
        Ok(Leases {
            config: super::parse_url(url)?,
            client: None,
            signal: None,
            signalled: None,
        })
    }

    /// The connection, made (and the schema migrated) if there is none or it broke.
    pub async fn client(&mut self) -> Result<&mut Client, HaError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let mut client = super::connect(&self.config).await?;
            super::migrate(&mut client).await?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Takes, renews or observes lease `name` for `holder` (see the module docs), in one
    /// transaction, within `duration` ([`HaError::Timeout`] otherwise). An error (the
    /// database unreachable, a connection lost) changes nothing; the caller must then act as
    /// a follower until a call succeeds again.
    ///
    /// A leader may count on its lease until `duration` after the moment it *started* this
    /// call (the database took `now()` later than that), and never longer without a renewal;
    /// its writes are fenced in any case.
    pub async fn acquire_or_renew(
        &mut self,
        name: &str,
        holder: &str,
        duration: Duration,
    ) -> Result<Leadership, HaError> {
        // A call that outlasts the lease is worthless (a leader's renewal that late may already
        // have lost it): give up, and drop the connection, whose state is unknown (the server
        // rolls the transaction back).
        let result =
            match tokio::time::timeout(duration, self.try_acquire_or_renew(name, holder, duration))
                .await
            {
                Ok(result) => result,
                Err(_) => {
                    // The signal session too: a leader that cannot renew in time lets its
                    // advisory lock go, so a follower takes over at once.
                    self.client = None;
                    self.signal = None;
                    self.signalled = None;
                    Err(HaError::Timeout(duration))
                }
            };
        self.forget_broken();
        result
    }

    /// Gives up lease `name` if `holder` holds it (it expires now; the epoch stays, so the
    /// next holder's is higher). For a clean shutdown: a follower takes over at once.
    pub async fn release(&mut self, name: &str, holder: &str) -> Result<bool, HaError> {
        let result = async {
            let client = self.client().await?;
            let released = client
                .execute(
                    "UPDATE leases SET expires_at = now() WHERE name = $1 AND holder = $2 \
                     AND expires_at > now()",
                    &[&name, &holder],
                )
                .await
                .map_err(HaError::db("release the lease"))?;
            Ok(released == 1)
        }
        .await;
        self.drop_signal(name).await;
        self.forget_broken();
        result
    }

    /// See [`super::limit_idle_transactions`]; for the connections made from now on.
    pub fn limit_idle_transactions(&mut self, limit: Duration) {
        super::limit_idle_transactions(&mut self.config, limit);
    }

    fn forget_broken(&mut self) {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            self.client = None;
        }
        if self.signal.as_ref().is_some_and(Client::is_closed) {
            self.signal = None;
            self.signalled = None;
        }
    }

    /// Whether this replica holds lease `name`'s advisory lock on its signal session, taking
    /// it if it is free. Best effort: any failure is `Signal::No` (the row decides anyway).
    async fn try_signal(&mut self, name: &str) -> Signal {
        if self.signalled.as_deref() == Some(name) {
            return Signal::Held;
        }
        if self.signalled.is_some() {
            // Holding another lease's lock: one lease per replica is all this builds for.
            return Signal::No;
        }
        if self.signal.as_ref().is_none_or(Client::is_closed) {
            self.signal = super::connect(&self.config).await.ok();
        }
        let Some(signal) = &self.signal else {
            return Signal::No;
        };
        let taken = signal
            .query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&SIGNAL_CLASS, &name],
            )
            .await
            .map(|row| row.get::<_, bool>(0))
            .unwrap_or(false);
        if taken {
            self.signalled = Some(name.to_string());
            Signal::Taken
        } else {
            Signal::No
        }
    }

    /// Lets go of lease `name`'s advisory lock, if held (best effort: a broken session has
    /// let go already).
    async fn drop_signal(&mut self, name: &str) {
        if self.signalled.as_deref() != Some(name) {
            return;
        }
        self.signalled = None;
        if let Some(signal) = &self.signal {
            let unlocked = signal
                .query_one(
                    "SELECT pg_advisory_unlock($1, hashtext($2))",
                    &[&SIGNAL_CLASS, &name],
                )
                .await;
            if unlocked.is_err() {
                self.signal = None;
            }
        }
    }

    async fn try_acquire_or_renew(
        &mut self,
        name: &str,
        holder: &str,
        duration: Duration,
    ) -> Result<Leadership, HaError> {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        let signal = self.try_signal(name).await;
        let outcome = self.lease_transaction(name, holder, millis, signal).await;
        if !matches!(outcome, Ok(Leadership { leader: true, .. })) {
            self.drop_signal(name).await;
        }
        outcome
    }

    async fn lease_transaction(
        &mut self,
        name: &str,
        holder: &str,
        millis: i64,
        signal: Signal,
    ) -> Result<Leadership, HaError> {
        let client = self.client().await?;
        let transaction = client
            .transaction()
            .await
            .map_err(HaError::db("begin lease transaction"))?;
        transaction
            .execute(
                "INSERT INTO leases (name, holder, epoch) VALUES ($1, NULL, 0) \
                 ON CONFLICT (name) DO NOTHING",
                &[&name],
            )
            .await
            .map_err(HaError::db("create the lease"))?;
        let row = transaction
            .query_one(
                "SELECT holder, epoch, expires_at IS NULL OR expires_at <= now(), signalled \
                 FROM leases WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .await
            .map_err(HaError::db("lock the lease"))?;
        let current: Option<String> = row.get(0);
        let epoch: i64 = row.get(1);
        let expired: bool = row.get(2);
        // The holder had its advisory lock, and we just took it: its session is gone.
        let holder_gone = signal == Signal::Taken && row.get::<_, bool>(3);
        let signalled = signal != Signal::No;
        const RETURNING: &str = "RETURNING holder, epoch, \
             (extract(epoch FROM acquired_at) * 1000)::bigint, \
             (extract(epoch FROM expires_at) * 1000)::bigint";
        // Renewed only while unexpired: a lease that lapsed is taken anew with the next epoch,
        // even by its last holder, so a paused process with the same name is fenced.
        let (leader, row) = if current.as_deref() == Some(holder) && !expired {
            let row = transaction
                .query_one(
                    &format!(
                        "UPDATE leases SET renewed_at = now(), signalled = $3, \
                         expires_at = now() + $2::bigint * interval '1 millisecond' \
                         WHERE name = $1 {RETURNING}"
                    ),
                    &[&name, &millis, &signalled],
                )
                .await
                .map_err(HaError::db("renew the lease"))?;
            (true, row)
        } else if current.is_none() || expired || holder_gone {
            let row = transaction
                .query_one(
                    &format!(
                        "UPDATE leases SET holder = $3, epoch = epoch + 1, acquired_at = now(), \
                         renewed_at = now(), signalled = $4, \
                         expires_at = now() + $2::bigint * interval '1 millisecond' \
                         WHERE name = $1 {RETURNING}"
                    ),
                    &[&name, &millis, &holder, &signalled],
                )
                .await
                .map_err(HaError::db("take the lease"))?;
            (true, row)
        } else {
            let row = transaction
                .query_one(
                    "SELECT holder, epoch, \
                     (extract(epoch FROM acquired_at) * 1000)::bigint, \
                     (extract(epoch FROM expires_at) * 1000)::bigint \
                     FROM leases WHERE name = $1",
                    &[&name],
                )
                .await
                .map_err(HaError::db("read the lease"))?;
            (false, row)
        };
        let leadership = Leadership {
            leader,
            holder: row.get(0),
            epoch: row.get(1),
            since: row.get(2),
            expires_at: row.get(3),
        };
        transaction
            .commit()
            .await
            .map_err(HaError::db("commit the lease"))?;
        debug_assert!(!leader || leadership.epoch >= epoch);
        Ok(leadership)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leadership(leader: bool) -> Leadership {
        Leadership {
            leader,
            holder: Some("replica-a".to_string()),
            epoch: 7,
            since: Some(1_000),
            expires_at: Some(16_000),
        }
    }

    #[test]
    fn lease_fence_only_for_the_leader_with_its_epoch() {
        assert_eq!(
            leadership(true).fence("leader"),
            Some(Fence {
                name: "leader".to_string(),
                holder: "replica-a".to_string(),
                epoch: 7,
            })
        );
        assert_eq!(leadership(false).fence("leader"), None);
    }

    #[test]
    fn lease_bad_url_is_refused_without_echoing_it() {
        let url = "postgres://burnwatch:s3cret@db:notaport/burnwatch";
        let error = match Leases::new(url) {
            Ok(_) => panic!("{url:?} was accepted"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("not a valid connection URL"), "{error}");
        assert!(!error.contains("s3cret"), "{error}");
        assert!(Leases::new("postgres://burnwatch:s3cret@db:5432/burnwatch").is_ok());
    }
}
