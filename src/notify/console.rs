//! The console sink: every alert change as a log line and its rendered message on stdout.
//! (Slack, Alertmanager and webhooks are the delivery sinks that come with the outbox.)

use crate::alert::Change;
use crate::engine::Event;
use crate::notify::outbox::StaleSlo;
use crate::notify::render;
use crate::replay::{format_labels, format_time};
use crate::slo::Slo;

pub fn emit(slo: &Slo, event: &Event) {
    let message = render::render(slo, event);
    tracing::info!(
        slo = %event.slo_id,
        labels = %format_labels(&event.labels),
        tier = event.tier.as_str(),
        change = event.change.as_str(),
        "{}",
        message.title
    );
    if matches!(
        event.change,
        Change::Firing | Change::Reminder | Change::Resolved
    ) {
        println!(
            "[{}] {}\n{}\n",
            format_time(event.at),
            event.change.as_str(),
            message.plain
        );
    }
}

/// The "evaluation stale" meta alert: raised when Prometheus has not answered for an SLO for
/// `stale_after`, naming those SLOs; resolved when every SLO answers again. `since`: when
/// Prometheus last answered for the SLO silent the longest.
pub fn emit_meta(firing: bool, since: i64, now: i64, stale: &[StaleSlo]) {
    if firing {
        let ids: Vec<&str> = stale.iter().map(|slo| slo.id.as_str()).collect();
        tracing::error!(last_answered = %format_time(since), slos = ?ids, "evaluation stale: Prometheus has not answered; alerts are held");
        println!(
            "[{}] firing\nCRITICAL: burnwatch evaluation stale: Prometheus last answered at {} ({}): alerts are held, not resolved\n",
            format_time(now),
            format_time(since),
            ids.join(", ")
        );
    } else {
        tracing::info!(since = %format_time(since), "evaluation recovered");
        println!(
            "[{}] resolved\nRESOLVED: burnwatch evaluation recovered (stale since {})\n",
            format_time(now),
            format_time(since)
        );
    }
}
