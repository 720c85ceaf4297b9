//! Routes: which handlers deliver an event, chosen by its source and type.
//!
//! Each route is a list of globs over `<source>.<type>`. An event goes to
//! every route that matches it ([`RouteTable::matching`]), by the rule of
//! [`sluice_shared::routing`], which the gateway uses too: `config.routes`
//! are tried in order, and a matching route marked `exclusive` takes the
//! event and ends the search, so routes after it never see it (matching
//! routes before it still get their copy). Marking every route `exclusive`
//! gives the old first-match-wins behaviour. An ordered route
//! (`ordered_by`) is fed by the gateway through its partition queues, so
//! the work queue's consumer leaves it out ([`crate::ordered`]).
//!
//! Built once at start-up from the routes the config
//! loader checked (an `http` route's URL comes parsed), when every `http`
//! route's secret is read and decoded: a route that cannot deliver stops the
//! worker before it takes a single message, with the config key at fault in
//! the error.

use reqwest::Client;
use sluice_shared::config::{ConfigError, RouteConfig, RouteHandler};
use sluice_shared::glob::Glob;
use sluice_shared::ordering::OrderedBy;
use sluice_shared::routing::{self, Selector};

use crate::delivery_error::DeliveryError;
use crate::http_target::HttpTarget;
use crate::message::SluiceEvent;

/// What delivering means for a route.
#[derive(Debug, Clone)]
pub enum Handler {
    /// POST the envelope, signed.
    Http(HttpTarget),
    /// Log the event's id digest, source and type (never its data), then succeed.
    Log,
}

/// One configured route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The route's name: a log field and a metric label.
    pub name: String,
    patterns: Vec<Glob>,
    /// A match ends the search (see the module's docs).
    pub exclusive: bool,
    /// `ordered_by`: delivered from the route's partition queues, in order per key.
    pub ordered: Option<OrderedBy>,
    /// Limit on one attempt.
    pub timeout: std::time::Duration,
    pub handler: Handler,
}

impl Selector for Route {
    fn globs(&self) -> &[Glob] {
        &self.patterns
    }

    fn exclusive(&self) -> bool {
        self.exclusive
    }
}

/// The routes in config order.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Builds every route, resolving secrets from the environment or files;
    /// an error names the route's key (`routes[0] (crm).secret`).
    pub fn from_config(configs: &[RouteConfig]) -> Result<Self, ConfigError> {
        let routes = configs
            .iter()
            .map(Route::from_config)
            .collect::<Result<_, _>>()?;
        Ok(Self { routes })
    }

    /// Every route that takes an event of `subject` (`<source>.<type>`), in
    /// config order: each route whose globs match, up to and including the
    /// first matching `exclusive` route.
    pub fn matching(&self, subject: &str) -> Vec<&Route> {
        routing::matching(&self.routes, subject)
    }

    /// The ordered routes, in config order.
    pub fn ordered(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().filter(|route| route.ordered.is_some())
    }

    /// The route named `name` (a route copy's `x-sluice-route`).
    pub fn named(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.name == name)
    }

    /// Every route, in config order.
    pub fn all(&self) -> &[Route] {
        &self.routes
    }

    /// Route names in order, for pre-registering metric series.
    pub fn names(&self) -> impl Iterator<Item = &str> + Clone {
        self.routes.iter().map(|route| route.name.as_str())
    }
}

impl Route {
    fn from_config(config: &RouteConfig) -> Result<Self, ConfigError> {
        let handler = match &config.handler {
            RouteHandler::Log => Handler::Log,
            RouteHandler::Http(http) => Handler::Http(HttpTarget::new(
                http.url.clone(),
                http.secret.signing_key()?,
                config.timeout,
            )),
        };
        Ok(Self {
            name: config.name.clone(),
            patterns: config.patterns.clone(),
            exclusive: config.exclusive,
            ordered: config.ordered.clone(),
            timeout: config.timeout,
            handler,
        })
    }

    /// One delivery attempt of `event` (whose envelope is `body`).
    pub async fn deliver(
        &self,
        client: &Client,
        event: &SluiceEvent,
        body: &[u8],
    ) -> Result<(), DeliveryError> {
        match &self.handler {
            Handler::Http(target) => target.deliver(client, event, body).await,
            Handler::Log => {
                tracing::info!(
                    event_id_digest = %event.id.log_digest(),
                    source = %event.source,
                    "type" = %event.event_type,
                    route = %self.name,
                    "event received by the log handler"
                );
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_shared::config::Config;

    fn table(toml: &str) -> Result<RouteTable, ConfigError> {
        RouteTable::from_config(&Config::from_toml(toml).unwrap().routes)
    }

    const TWO_ROUTES: &str = r#"
        [[routes]]
        name = "messages"
        match = ["whatsapp.message.*", "whatzme.messages.*"]
        handler = "log"

        [[routes]]
        name = "everything"
        match = ["*"]
        handler = "log"
    "#;

    fn names<'a>(routes: &'a RouteTable, subject: &str) -> Vec<&'a str> {
        routes
            .matching(subject)
            .into_iter()
            .map(|r| r.name.as_str())
            .collect()
    }

    #[test]
    fn every_matching_route_takes_the_event_in_config_order() {
        let routes = table(TWO_ROUTES).unwrap();
        assert_eq!(
            names(&routes, "whatsapp.message.text"),
            ["messages", "everything"]
        );
        assert_eq!(
            names(&routes, "whatzme.messages.upsert"),
            ["messages", "everything"]
        );
        assert_eq!(names(&routes, "whatsapp.status.read"), ["everything"]);
        assert_eq!(
            routes.names().collect::<Vec<_>>(),
            ["messages", "everything"]
        );
    }

    #[test]
    fn every_route_exclusive_is_the_old_first_match_wins() {
        let routes =
            table(&TWO_ROUTES.replace("handler = \"log\"", "handler = \"log\"\nexclusive = true"))
                .unwrap();
        assert_eq!(names(&routes, "whatsapp.message.text"), ["messages"]);
        assert_eq!(names(&routes, "whatsapp.status.read"), ["everything"]);
    }

    #[test]
    fn an_event_no_pattern_matches_has_no_route() {
        let routes = table(&TWO_ROUTES.replace("[\"*\"]", "[\"demo.*\"]")).unwrap();
        assert!(routes.matching("other.thing").is_empty());
        assert!(RouteTable::default().matching("demo.thing").is_empty());
    }

    #[test]
    fn a_route_is_found_by_its_name_only() {
        let routes = table(TWO_ROUTES).unwrap();
        assert_eq!(
            routes.named("everything").map(|r| r.name.as_str()),
            Some("everything")
        );
        assert!(routes.named("Everything").is_none());
        assert!(routes.named("gone").is_none());
    }

    fn http_route(secret: &str, url: &str) -> String {
        format!(
            "[[routes]]\nname = \"crm\"\nmatch = [\"*\"]\nhandler = \"http\"\nurl = \"{url}\"\nsecret = \"{secret}\""
        )
    }

    #[test]
    fn a_missing_secret_variable_names_the_route_key() {
        let err = table(&http_route("env:SLUICE_WORKER_TEST_UNSET_9", "http://x/")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("routes[0] (crm).secret"), "{text}");
        assert!(text.contains("SLUICE_WORKER_TEST_UNSET_9"), "{text}");
    }

    #[test]
    fn a_secret_that_is_not_whsec_names_the_route_key() {
        let dir = std::env::temp_dir().join(format!("sluice-worker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("not-whsec");
        std::fs::write(&path, "hunter2\n").unwrap();
        let err = table(&http_route(
            &format!("file:{}", path.display()),
            "http://x/",
        ))
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ConfigError::BadSecret { .. }), "{text}");
        assert!(text.contains("routes[0] (crm).secret"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn an_http_route_with_a_good_secret_builds() {
        let dir = std::env::temp_dir().join(format!("sluice-worker-ok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("whsec");
        std::fs::write(&path, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n").unwrap();
        let routes = table(&http_route(
            &format!("file:{}", path.display()),
            "http://127.0.0.1:9/hook",
        ))
        .unwrap();
        let route = routes.matching("a.b")[0];
        assert!(matches!(route.handler, Handler::Http(_)));
    }
}
