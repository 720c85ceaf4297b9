//! The gateway's side of ordered routes: each event an ordered route takes
//! gets one more message, published with the event's own in the same
//! confirmed group, straight to the route's partition queue its key picks.
//!
//! Why here and not in the worker: once events sit in the shared work queue
//! and several workers take them concurrently, no later stage can tell the
//! order the gateway accepted them in. A partition queue, fed in acceptance
//! order (a request's messages on one channel in the request's order; a
//! request answered 200 before the next is accepted), keeps it. Which routes
//! take an event is the rule the worker uses ([`sluice_shared::routing`]),
//! over the same `[[routes]]`: the gateway and the workers must share them.
//!
//! The key is read from the event's data (parsed again, only for events an
//! ordered route takes); an event whose data holds none is ordered by its
//! own id, so it waits for nothing (docs/architecture.md, "Ordered routes").
//! The key never leaves the event's data: the message carries its digest.

use sluice_shared::config::RouteConfig;
use sluice_shared::message::{MessageHeaders, copy_properties};
use sluice_shared::ordering::KeySource;
use sluice_shared::routing;
use sluice_shared::topology::Topology;

use crate::extract::{EventData, EventId};
use crate::publisher::Outgoing;

/// One partition copy: its message, and for the metrics its route and
/// whether its key came from the data.
pub struct OrderedCopy {
    pub message: Outgoing,
    pub route: String,
    pub key: KeySource,
}

/// The routes of the config, for matching, when one of them is ordered.
#[derive(Debug, Clone, Default)]
pub struct OrderedRoutes {
    /// Every route (an earlier `exclusive` one can end the search before an
    /// ordered one); empty when none is ordered, so nothing is matched.
    routes: Vec<RouteConfig>,
}

impl OrderedRoutes {
    pub fn new(routes: &[RouteConfig]) -> Self {
        let any = routes.iter().any(|route| route.ordered.is_some());
        Self {
            routes: if any { routes.to_vec() } else { Vec::new() },
        }
    }

    /// Whether some route is ordered (else no event gets a copy).
    pub fn is_active(&self) -> bool {
        !self.routes.is_empty()
    }

    /// The names of the ordered routes, for pre-registering metric series.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let ordered = self.routes.iter().filter(|r| r.ordered.is_some());
        ordered.map(|route| route.name.as_str())
    }

    /// The partition copies of the event `id` (its data `data`, its
    /// message `message`): one per ordered route that takes it, each to the
    /// partition its key picks, naming its route and carrying its key's digest.
    pub fn copies(
        &self,
        topology: &Topology,
        id: &EventId,
        data: &EventData,
        message: &Outgoing,
    ) -> Vec<OrderedCopy> {
        // The message's routing key is the event's `<source>.<type>`.
        let subject = message.routing_key.as_str();
        let taking: Vec<&RouteConfig> = routing::matching(&self.routes, subject)
            .into_iter()
            .filter(|route| route.ordered.is_some())
            .collect();
        if taking.is_empty() {
            return Vec::new();
        }
        // Data that does not parse back has no key: each route then orders
        // the event by its id.
        let data = data.to_value().unwrap_or_default();
        let mut copies = Vec::with_capacity(taking.len());
        for route in taking {
            let Some(ordered) = &route.ordered else {
                continue;
            };
            let (key, source) = ordered.key_of(&data, id.as_str());
            let queue = topology.partition_queue(&route.name, key.partition(ordered.partitions));
            let mut headers = MessageHeaders::of(&message.properties);
            headers.route = Some(route.name.clone());
            headers.order_key = Some(key.as_str().to_owned());
            copies.push(OrderedCopy {
                message: Outgoing {
                    // The default exchange routes to the queue the key names.
                    exchange: "".into(),
                    routing_key: queue.into(),
                    body: message.body.clone(),
                    properties: copy_properties(&message.properties, headers),
                },
                route: route.name.clone(),
                key: source,
            });
        }
        copies
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::Config;
    use sluice_shared::message::headers;

    const ROUTES: &str = r#"
        [amqp]
        prefix = "t"
        [[routes]]
        name = "crm"
        match = ["whatsapp.*"]
        handler = "log"
        ordered_by = ["/value/messages/0/from", "/value/statuses/0/recipient_id"]
        partitions = 8

        [[routes]]
        name = "billing"
        match = ["stripe.*"]
        handler = "log"
        exclusive = true

        [[routes]]
        name = "late"
        match = ["*"]
        handler = "log"
        ordered_by = "/customer"
    "#;

    fn copies_of(
        ordered: &OrderedRoutes,
        topology: &Topology,
        subject: &str,
        data: serde_json::Value,
    ) -> Vec<OrderedCopy> {
        let mut message = message();
        message.routing_key = subject.into();
        let id = EventId::from_provider("evt-1");
        ordered.copies(topology, &id, &EventData::from_value(&data), &message)
    }

    fn message() -> Outgoing {
        let headers = MessageHeaders {
            attempt: Some(0),
            copy: Some("c-1".into()),
            ..MessageHeaders::default()
        };
        Outgoing {
            exchange: "t.events".into(),
            routing_key: "whatsapp.message.text".into(),
            body: b"{}".to_vec(),
            properties: lapin::BasicProperties::default()
                .with_message_id("evt-1".into())
                .with_headers(headers.encode()),
        }
    }

    fn setup() -> (OrderedRoutes, Topology) {
        let config = Config::from_toml(ROUTES).expect("loads");
        let topology = Topology::new(&config.amqp).with_routes(&config.routes);
        (OrderedRoutes::new(&config.routes), topology)
    }

    #[test]
    fn each_ordered_route_that_takes_the_event_gets_a_copy_to_the_partition_of_its_key() {
        let (ordered, topology) = setup();
        let data = serde_json::json!({"value": {"messages": [{"from": "5215500000001"}]}});
        let copies = copies_of(&ordered, &topology, "whatsapp.message.text", data);
        let routes: Vec<&str> = copies.iter().map(|c| c.route.as_str()).collect();
        assert_eq!(routes, ["crm", "late"]);
        let crm = &copies[0];
        assert_eq!(crm.key, KeySource::Data);
        assert_eq!(
            copies[1].key,
            KeySource::EventId,
            "late's pointer finds nothing"
        );
        assert_eq!(crm.message.exchange.as_str(), "");
        let queue = crm.message.routing_key.as_str();
        assert!(
            topology.partition_queues("crm").iter().any(|q| q == queue),
            "{queue}"
        );
        let headers = MessageHeaders::of(&crm.message.properties);
        assert_eq!(headers.route.as_deref(), Some("crm"));
        assert_eq!(
            headers.copy.as_deref(),
            Some("c-1"),
            "the event's own headers stay"
        );
        let key = headers.order_key.expect("a key digest");
        assert_eq!(key.len(), 32);
        let table = crm.message.properties.headers().clone().unwrap_or_default();
        let written = format!("{:?}", table.inner().get(headers::ORDER_KEY));
        assert!(!written.contains("5215500000001"), "never the key itself");
    }

    #[test]
    fn an_exclusive_route_before_an_ordered_one_ends_the_search_and_no_copy_is_made() {
        let (ordered, topology) = setup();
        let data = serde_json::json!({"customer": "cus_1"});
        let copies = copies_of(&ordered, &topology, "stripe.charge", data);
        assert!(copies.is_empty());
    }

    #[test]
    fn without_ordered_routes_nothing_is_matched() {
        let config =
            Config::from_toml("[[routes]]\nname = \"a\"\nmatch = [\"*\"]\nhandler = \"log\"")
                .expect("loads");
        let ordered = OrderedRoutes::new(&config.routes);
        let topology = Topology::new(&config.amqp);
        let copies = copies_of(&ordered, &topology, "a.b", serde_json::json!({}));
        assert!(copies.is_empty());
        assert_eq!(ordered.names().count(), 0);
        assert!(!ordered.is_active());
    }
}
