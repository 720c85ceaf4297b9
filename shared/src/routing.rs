//! Which routes take an event: one rule, used by the gateway (to find the
//! ordered routes it feeds itself) and by the worker (to deliver), so the
//! two can never disagree on a match.
//!
//! Routes are tried in config order over `<source>.<type>`; every route one
//! of whose globs matches takes the event, and a matching route marked
//! `exclusive` ends the search there (matching routes before it keep their
//! copy). Marking every route `exclusive` gives first-match-wins.

use crate::config::RouteConfig;
use crate::glob::Glob;

/// What the matching rule needs to know of a route.
pub trait Selector {
    /// The route's globs over `<source>.<type>`.
    fn globs(&self) -> &[Glob];
    /// Whether a match ends the search.
    fn exclusive(&self) -> bool;
}

impl Selector for RouteConfig {
    fn globs(&self) -> &[Glob] {
        &self.patterns
    }

    fn exclusive(&self) -> bool {
        self.exclusive
    }
}

/// Every route of `routes` that takes an event of `subject`, in order: each
/// whose globs match, up to and including the first matching `exclusive` one.
pub fn matching<'a, R: Selector>(routes: &'a [R], subject: &str) -> Vec<&'a R> {
    let mut taken = Vec::new();
    for route in routes {
        if !route.globs().iter().any(|glob| glob.matches(subject)) {
            continue;
        }
        taken.push(route);
        if route.exclusive() {
            break;
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn names(toml: &str, subject: &str) -> Vec<String> {
        let config = Config::from_toml(toml).expect("loads");
        matching(&config.routes, subject)
            .into_iter()
            .map(|route| route.name.clone())
            .collect()
    }

    const ROUTES: &str = r#"
        [[routes]]
        name = "audit"
        match = ["*"]
        handler = "log"

        [[routes]]
        name = "payments"
        match = ["stripe.*"]
        handler = "log"
        exclusive = true

        [[routes]]
        name = "rest"
        match = ["*"]
        handler = "log"
    "#;

    #[test]
    fn every_match_in_order_up_to_the_first_exclusive_one() {
        assert_eq!(
            names(ROUTES, "stripe.charge.succeeded"),
            ["audit", "payments"]
        );
        assert_eq!(names(ROUTES, "whatsapp.message.text"), ["audit", "rest"]);
    }

    #[test]
    fn nothing_matches_an_empty_table() {
        assert!(names("", "a.b").is_empty());
    }
}
