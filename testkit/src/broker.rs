//! Looking into RabbitMQ from a test: queue depths, draining a queue to read
//! its messages and headers, and deleting a test's topology afterwards.

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use sluice_shared::message::MessageHeaders;
use sluice_shared::topology::Topology;

pub struct Broker {
    connection: Connection,
    channel: Channel,
}

/// A message taken off a queue.
#[derive(Debug)]
pub struct Taken {
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

impl Taken {
    /// The message's headers, read by the one decoder Sluice uses.
    pub fn headers(&self) -> MessageHeaders {
        MessageHeaders::of(&self.properties)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the message body is JSON")
    }
}

impl Broker {
    pub async fn connect(url: &str) -> Self {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("the test reaches RabbitMQ");
        let channel = connection.create_channel().await.expect("a channel");
        Self {
            connection,
            channel,
        }
    }

    /// Ready messages in a queue that exists.
    pub async fn count(&self, queue: &str) -> u32 {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        self.channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .expect("the queue exists")
            .message_count()
    }

    /// Whether `queue` exists (asked on a channel of its own: a passive
    /// declare of a missing queue closes its channel).
    pub async fn exists(&self, queue: &str) -> bool {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let channel = self.connection.create_channel().await.expect("a channel");
        let declared = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await;
        declared.is_ok()
    }

    /// Sum of ready messages over every queue of a topology.
    pub async fn total(&self, topology: &Topology) -> u32 {
        let mut total = 0;
        for queue in topology.all_queues() {
            total += self.count(&queue).await;
        }
        total
    }

    /// Takes every ready message off `queue` (acknowledged: gone).
    pub async fn drain(&self, queue: &str) -> Vec<Taken> {
        let mut taken = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            let delivery = message.delivery;
            taken.push(Taken {
                routing_key: delivery.routing_key.to_string(),
                properties: delivery.properties,
                body: delivery.data,
            });
        }
        taken
    }

    /// Deletes one queue, messages included (as an operator might by hand).
    pub async fn delete_queue(&self, queue: &str) {
        self.channel
            .queue_delete(queue.into(), Default::default())
            .await
            .expect("queue.delete");
    }

    /// Deletes the binding of the work queue to the events exchange, as an
    /// operator might by hand: nothing routes events to the work queue.
    pub async fn unbind_work_queue(&self, topology: &Topology) {
        self.channel
            .queue_unbind(
                topology.work_queue().as_str().into(),
                topology.events_exchange().as_str().into(),
                "#".into(),
                FieldTable::default(),
            )
            .await
            .expect("the binding is deleted");
    }

    /// The channel, for tests that publish or consume by hand.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Removes a test's queues and exchanges.
    pub async fn delete(&self, topology: &Topology) {
        // Best effort: a test that failed half-way may have left only part of it.
        let _ = topology.delete(&self.channel).await;
    }
}
