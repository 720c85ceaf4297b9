//! The consume loop of one session: take a permit, take a message, hand
//! both to a task.
//!
//! Concurrency is bounded twice: the broker pushes at most `prefetch`
//! unacked messages, and at most `concurrency` tasks run (one permit each).
//! The loop ends when the token is cancelled (the broker is told to stop
//! sending; tasks in flight carry on and are drained by the caller) or when
//! the session breaks: the consumer stream fails or ends, or the publish
//! channel is found closed. Tasks on a broken session just fail to settle
//! and the broker redelivers their messages.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::{Acker, Consumer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::broker::{Session, unique_name};
use crate::dispatch::Dispatcher;
use crate::readiness::BrokerStatus;
use crate::settle::{Settler, requeue_delay};

/// How a session's consume loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The token was cancelled; the consumer is cancelled, the session open.
    Stopped,
    /// The session broke, for this reason.
    Lost(String),
}

/// What the consume loop works with, beyond the session itself.
pub struct ConsumeContext<'a> {
    pub queue: &'a str,
    pub prefetch: u16,
    pub dispatcher: &'a Arc<Dispatcher>,
    pub permits: &'a Arc<Semaphore>,
    pub tasks: &'a mut JoinSet<()>,
    pub status: &'a BrokerStatus,
    pub shutdown: &'a CancellationToken,
}

enum Next {
    Delivery(Box<Delivery>, OwnedSemaphorePermit),
    Failed(lapin::Error),
    Ended(&'static str),
}

/// Consumes until stopped or broken.
pub async fn consume(session: &Arc<Session>, mut ctx: ConsumeContext<'_>) -> SessionEnd {
    let tag = unique_name();
    let mut consumer = match session.start_consuming(ctx.queue, ctx.prefetch, &tag).await {
        Ok(consumer) => consumer,
        Err(e) => return SessionEnd::Lost(e.to_string()),
    };
    ctx.status.set_consuming();
    tracing::info!(queue = ctx.queue, consumer_tag = %tag, "consuming");
    let lost = session.settler().lost();
    let end = loop {
        tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => break SessionEnd::Stopped,
            () = lost.cancelled() => break SessionEnd::Lost("the publish channel closed".into()),
            Some(joined) = ctx.tasks.join_next() => report(joined),
            next = next_with_permit(&mut consumer, ctx.permits) => match next {
                Next::Delivery(delivery, permit) => spawn(session, &mut ctx, *delivery, permit),
                Next::Failed(error) => break SessionEnd::Lost(error.to_string()),
                Next::Ended(reason) => break SessionEnd::Lost(reason.into()),
            },
        }
    };
    if end == SessionEnd::Stopped {
        session.cancel(&tag).await;
    }
    end
}

/// Waits for a free permit, then for the next message. Dropping this
/// future loses neither: the permit goes back, the message stays queued.
async fn next_with_permit(consumer: &mut Consumer, permits: &Arc<Semaphore>) -> Next {
    let Ok(permit) = permits.clone().acquire_owned().await else {
        return Next::Ended("the concurrency limit was closed");
    };
    match consumer.next().await {
        Some(Ok(delivery)) => Next::Delivery(Box::new(delivery), permit),
        Some(Err(error)) => Next::Failed(error),
        None => Next::Ended("the broker cancelled the consumer"),
    }
}

fn spawn(
    session: &Arc<Session>,
    ctx: &mut ConsumeContext<'_>,
    delivery: Delivery,
    permit: OwnedSemaphorePermit,
) {
    let session = Arc::clone(session);
    let dispatcher = Arc::clone(ctx.dispatcher);
    let in_flight = dispatcher.metrics().in_flight();
    ctx.tasks.spawn(async move {
        let _permit = permit;
        let _in_flight = in_flight;
        let settler = session.settler();
        let acker = delivery.acker.clone();
        let wait = requeue_delay(&delivery.properties);
        let handled = dispatcher.handle(settler, delivery);
        if guard_panics(handled, settler, &acker, wait).await {
            dispatcher.metrics().record_panic();
        }
    });
}

/// Runs a delivery's handling; if it panics, requeues its message after
/// `wait` instead of leaving it unacked until the channel closes (which,
/// with the channel otherwise healthy, is RabbitMQ's `consumer_timeout`:
/// 30 minutes). A message that panics every time reaches the work queue's
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
