//! A route's consumer through its breaker's states, for one session.
//!
//! - **closed**: consume the route's queue (the lane's loop in
//!   [`crate::consumer`]), until the breaker leaves `closed`; then the
//!   consumer is cancelled and what it had taken ahead goes back to the
//!   queue unattempted.
//! - **open**: no consumer, so the route's events wait in its queue, their
//!   attempts untouched; in-flight deliveries finish (a failure among them
//!   is held too, [`crate::route_gate`]). When the probe is due: half-open.
//! - **half-open**: one message by `basic.get`, delivered as the probe (on
//!   this loop, not in a task, so exactly one is in flight); it closes the
//!   breaker or opens it again for longer. An empty queue has nothing to
//!   probe with: the lane looks again every [`EMPTY_QUEUE_POLL`].

use std::time::Duration;

use lapin::Channel;
use tokio::sync::watch;

use crate::breaker::BreakerState;
use crate::consumer::{Lane, LoopEnd, SessionContext, guard_panics, report};
use crate::dispatch::AttemptKind;
use crate::route_gate::RouteGate;
use crate::settle::requeue_delay;

/// How often a half-open route with an empty queue looks for a probe.
const EMPTY_QUEUE_POLL: Duration = Duration::from_secs(1);

/// Runs `lane` for `gate`'s route until the session stops or breaks.
pub async fn run(
    lane: &mut Lane,
    gate: &RouteGate,
    ctx: &SessionContext<'_>,
    channel: &Channel,
) -> crate::consumer::SessionEnd {
    use crate::consumer::SessionEnd;
    let mut states = gate.watch();
    loop {
        let state = *states.borrow_and_update();
        match state {
            BreakerState::Closed => {
                let left_closed = left_closed(states.clone());
                match lane.consume(ctx, channel, left_closed).await {
                    LoopEnd::Paused => {}
                    LoopEnd::Session(end) => return end,
                }
            }
            BreakerState::Open => {
                if !wait_for_probe(lane, gate, ctx, &mut states).await {
                    return SessionEnd::Stopped;
                }
            }
            BreakerState::HalfOpen => match probe(lane, gate, ctx, channel).await {
                Ok(true) => {}
                Ok(false) => {
                    if !pause(lane, ctx, EMPTY_QUEUE_POLL).await {
                        return SessionEnd::Stopped;
                    }
                }
                Err(reason) => return SessionEnd::Lost(reason),
            },
        }
        if ctx.stop.is_cancelled() {
            return SessionEnd::Stopped;
        }
    }
}

/// Resolves when the breaker is no longer closed.
async fn left_closed(mut states: watch::Receiver<BreakerState>) {
    // An error means the gate is gone: nothing will change any more.
    if states
        .wait_for(|state| *state != BreakerState::Closed)
        .await
        .is_err()
    {
        std::future::pending::<()>().await;
    }
}

/// While open: reaps finished tasks until the probe is due (then turns the
/// breaker half-open) or the state changes; false if the session stopped.
async fn wait_for_probe(
    lane: &mut Lane,
    gate: &RouteGate,
    ctx: &SessionContext<'_>,
    states: &mut watch::Receiver<BreakerState>,
) -> bool {
    loop {
        let Some(due) = gate.probe_at() else {
            return true;
        };
        tokio::select! {
            biased;
            () = ctx.stop.cancelled() => return false,
            changed = states.changed() => {
                if changed.is_err() {
                    return false;
                }
                return true;
            }
            Some(joined) = lane.tasks.join_next() => report(joined),
            () = tokio::time::sleep_until(due) => {
                gate.start_probe();
                return true;
            }
        }
    }
}

/// Sleeps `period` reaping finished tasks; false if the session stopped.
async fn pause(lane: &mut Lane, ctx: &SessionContext<'_>, period: Duration) -> bool {
    let until = tokio::time::Instant::now() + period;
    loop {
        tokio::select! {
            biased;
            () = ctx.stop.cancelled() => return false,
            Some(joined) = lane.tasks.join_next() => report(joined),
            () = tokio::time::sleep_until(until) => return true,
        }
    }
}

/// Takes one message and delivers it as the probe; `Ok(false)` if the
/// queue was empty, `Err` if the session broke.
async fn probe(
    lane: &Lane,
    gate: &RouteGate,
    ctx: &SessionContext<'_>,
    channel: &Channel,
) -> Result<bool, String> {
    let session = ctx.session;
    let delivery = match session.get_one(channel, &lane.queue).await {
        Ok(Some(delivery)) => delivery,
        Ok(None) => return Ok(false),
        Err(e) => return Err(e.to_string()),
    };
    tracing::info!(route = %gate.route(), "probing the route with one delivery");
    let settler = session.settler();
    let acker = delivery.acker.clone();
    let wait = requeue_delay(&delivery.properties);
    let _in_flight = ctx.dispatcher.metrics().in_flight();
    let probed = ctx
        .dispatcher
        .deliver(settler, gate, delivery, AttemptKind::Probe);
    tokio::select! {
        biased;
        // Abandoned at shutdown: unacked, it goes back when the channel closes.
        () = ctx.stop.cancelled() => {}
        panicked = guard_panics(probed, settler, &acker, wait) => {
            if panicked {
                ctx.dispatcher.metrics().record_panic();
            }
        }
    }
    Ok(true)
}
