//! The worker's consumers, one [`Lane`] each: the router on the work queue,
//! and one per route on the route's queue. A lane's consume loop takes a
//! message, waits for a permit, hands both to a task.
//!
//! Concurrency is bounded per lane, twice: the broker pushes at most the
//! lane's `prefetch` unacked messages, and at most its `concurrency` tasks
//! run (one permit each). Lanes share nothing else, so a route whose
//! receiver is slow fills its own permits and no other route's: the
//! worker's deliveries in flight are at most the sum of the routes'
//! `concurrency`: a route's slots are shared by its lane and the router's
//! direct attempts ([`crate::dispatch`]'s router), and the router's other
//! tasks route (a confirmed publish, never a delivery). Permits and tasks
//! belong to the lane, not to a session: a task may outlive its connection.
//!
//! A loop ends when the session's token is cancelled (the broker is told to
//! stop sending; tasks in flight carry on and are drained by the caller),
//! when the session breaks (the consumer stream fails or ends, or the
//! publish connection is found closed; tasks on it just fail to settle and
//! the broker redelivers their messages), or, for a route, when its breaker
//! leaves `closed` ([`crate::route_lane`]).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::{Acker, Channel, Consumer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::broker::{Session, unique_name};
use crate::dispatch::{AttemptKind, Dispatcher};
use crate::readiness::BrokerStatus;
use crate::route_gate::RouteGate;
use crate::route_lane;
use crate::settle::{Settler, requeue_delay};

/// How a session's consume loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The token was cancelled; the consumer is cancelled, the session open.
    Stopped,
    /// The session broke, for this reason.
    Lost(String),
}

/// How one consume loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoopEnd {
    Session(SessionEnd),
    /// `pause` fired: the consumer is cancelled and what it had taken
    /// ahead was put back.
    Paused,
}

/// What a lane's messages are for.
#[derive(Clone)]
pub enum LaneWork {
    /// The work queue: put each event in its routes' queues.
    Router,
    /// A route's queue: deliver through the route's gate.
    Route(Arc<RouteGate>),
}

/// One consumer and what outlives its sessions: permits and tasks.
pub struct Lane {
    pub work: LaneWork,
    pub queue: String,
    pub prefetch: u16,
    pub permits: Arc<Semaphore>,
    pub tasks: JoinSet<()>,
}

/// What every lane of a session shares.
pub struct SessionContext<'a> {
    pub session: &'a Arc<Session>,
    pub dispatcher: &'a Arc<Dispatcher>,
    pub status: &'a BrokerStatus,
    /// Cancelled at shutdown, or when another lane lost the session.
    pub stop: &'a CancellationToken,
}

impl Lane {
    /// The router's lane: `prefetch` messages pushed ahead, a task for each
    /// (half of them may be direct attempts, the others route).
    pub fn router(queue: String, prefetch: u16) -> Self {
        Self {
            work: LaneWork::Router,
            queue,
            prefetch,
            permits: Arc::new(Semaphore::new(usize::from(prefetch))),
            tasks: JoinSet::new(),
        }
    }

    /// A route's lane: as many tasks at once as the gate has slots (the
    /// router's direct attempts take from the same slots), `prefetch` pushed ahead.
    pub fn route(gate: &Arc<RouteGate>, queue: String, prefetch: u16) -> Self {
        Self {
            work: LaneWork::Route(Arc::clone(gate)),
            queue,
            prefetch,
            permits: gate.slots(),
            tasks: JoinSet::new(),
        }
    }

    /// Consumes for one session, until stopped or broken.
    pub async fn run(&mut self, ctx: &SessionContext<'_>) -> SessionEnd {
        let channel = match ctx.session.open_channel().await {
            Ok(channel) => channel,
            Err(e) => return SessionEnd::Lost(e.to_string()),
        };
        match self.work.clone() {
            LaneWork::Router => {
                match self
                    .consume(ctx, &channel, std::future::pending::<()>())
                    .await
                {
                    LoopEnd::Session(end) => end,
                    LoopEnd::Paused => SessionEnd::Lost("the router paused".into()),
                }
            }
            LaneWork::Route(gate) => route_lane::run(self, &gate, ctx, &channel).await,
        }
    }

    /// Consumes until the session stops or breaks, or `pause` fires.
    pub async fn consume(
        &mut self,
        ctx: &SessionContext<'_>,
        channel: &Channel,
        pause: impl Future<Output = ()>,
    ) -> LoopEnd {
        let tag = unique_name();
        let session = ctx.session;
        let started = session
            .start_consuming(channel, &self.queue, self.prefetch, &tag)
            .await;
        let mut consumer = match started {
            Ok(consumer) => consumer,
            Err(e) => return LoopEnd::Session(SessionEnd::Lost(e.to_string())),
        };
        if matches!(self.work, LaneWork::Router) {
            ctx.status.set_consuming();
        }
        tracing::info!(queue = %self.queue, consumer_tag = %tag, "consuming");
        let lost = session.settler().lost();
        tokio::pin!(pause);
        // A message taken, waiting for a permit. Taken first, so the lane
        // never holds a permit while its queue is empty: a route's permits
        // are its slots, which the router's direct attempts wait for too.
        let mut waiting: Option<Delivery> = None;
        let end = loop {
            tokio::select! {
                biased;
                () = ctx.stop.cancelled() => break LoopEnd::Session(SessionEnd::Stopped),
                () = lost.cancelled() => break LoopEnd::Session(SessionEnd::Lost("the publish channel closed".into())),
                () = &mut pause => break LoopEnd::Paused,
                Some(joined) = self.tasks.join_next() => report(joined),
                permit = Arc::clone(&self.permits).acquire_owned(), if waiting.is_some() => {
                    match (permit, waiting.take()) {
                        (Ok(permit), Some(delivery)) => self.spawn(ctx, delivery, permit),
                        _ => break LoopEnd::Session(SessionEnd::Lost("the concurrency limit was closed".into())),
                    }
                }
                next = consumer.next(), if waiting.is_none() => match next {
                    Some(Ok(delivery)) => waiting = Some(delivery),
                    Some(Err(error)) => break LoopEnd::Session(SessionEnd::Lost(error.to_string())),
                    None => break LoopEnd::Session(SessionEnd::Lost("the broker cancelled the consumer".into())),
                },
            }
        };
        match end {
            LoopEnd::Session(SessionEnd::Stopped) => {
                // Unacked, `waiting` goes back when the channel closes.
                session.cancel(channel, &tag).await;
            }
            LoopEnd::Paused => {
                if !session.cancel(channel, &tag).await {
                    return LoopEnd::Session(SessionEnd::Lost("basic.cancel failed".into()));
                }
                self.put_back_taken(ctx, waiting, &mut consumer).await;
            }
            LoopEnd::Session(SessionEnd::Lost(_)) => {}
        }
        end
    }

    /// After a cancel: the message waiting for a permit, then those the
    /// broker pushed ahead, go back to the route's queue, unattempted.
    async fn put_back_taken(
        &self,
        ctx: &SessionContext<'_>,
        waiting: Option<Delivery>,
        consumer: &mut Consumer,
    ) {
        let LaneWork::Route(gate) = &self.work else {
            return;
        };
        if let Some(delivery) = waiting {
            let settler = ctx.session.settler();
            ctx.dispatcher
                .hold_delivery(settler, gate.route(), delivery)
                .await;
        }
        // The stream ends once the cancel is through; what it holds was
        // sent before the broker's cancel-ok, so it is all here already.
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_secs(5), consumer.next()).await
        {
            let settler = ctx.session.settler();
            ctx.dispatcher
                .hold_delivery(settler, gate.route(), delivery)
                .await;
        }
    }

    fn spawn(
        &mut self,
        ctx: &SessionContext<'_>,
        delivery: Delivery,
        permit: OwnedSemaphorePermit,
    ) {
        let session = Arc::clone(ctx.session);
        let dispatcher = Arc::clone(ctx.dispatcher);
        let work = self.work.clone();
        let in_flight = dispatcher.metrics().in_flight();
        self.tasks.spawn(async move {
            let _permit = permit;
            let _in_flight = in_flight;
            let settler = session.settler();
            let acker = delivery.acker.clone();
            let wait = requeue_delay(&delivery.properties);
            let handled = async {
                match &work {
                    LaneWork::Router => dispatcher.route(settler, delivery).await,
                    LaneWork::Route(gate) => {
                        let kind = AttemptKind::Ordinary;
                        dispatcher.deliver(settler, gate, delivery, kind).await;
                    }
                }
            };
            if guard_panics(handled, settler, &acker, wait).await {
                dispatcher.metrics().record_panic();
            }
        });
    }

    /// Waits until `deadline` for the lane's tasks; false if some are left.
    pub async fn drain_until(&mut self, deadline: tokio::time::Instant) -> bool {
        let all_done = async {
            while let Some(joined) = self.tasks.join_next().await {
                report(joined);
            }
        };
        tokio::time::timeout_at(deadline, all_done).await.is_ok()
    }
}

/// Runs a delivery's handling; if it panics, requeues its message after
/// `wait` instead of leaving it unacked until the channel closes (which,
/// with the channel otherwise healthy, is RabbitMQ's `consumer_timeout`:
/// 30 minutes). A message that panics every time reaches its queue's
/// `x-delivery-limit` and is dead-lettered. A message already settled when
/// the panic came is left alone: its acker was used. Returns whether it
/// panicked. The panic's message is not logged: it may quote the payload.
pub async fn guard_panics(
    handling: impl Future<Output = ()>,
    settler: &Settler,
    acker: &Acker,
    wait: Duration,
) -> bool {
    if AssertUnwindSafe(handling).catch_unwind().await.is_ok() {
        return false;
    }
    tracing::error!(
        requeue_in = %humantime::format_duration(wait),
        "a delivery task panicked; its message is requeued"
    );
    settler.requeue(acker, wait).await;
    true
}

/// Logs a task that did not end normally (aborted at the end of the
/// shutdown grace, or a panic outside [`guard_panics`]); its message stays
/// unacked until the channel closes, then the broker redelivers it.
pub fn report(joined: Result<(), JoinError>) {
    if let Err(error) = joined
        && error.is_panic()
    {
        tracing::error!("a delivery task panicked");
    }
}
