//! Which dead events a command applies to: `--source`, `--type` (glob),
//! `--route`, `--reason`, `--status`, `--since`, `--until`, `--id`.
//!
//! Each flag takes several values (repeated, or comma-separated); an event
//! matches when it matches every flag given, and one of each flag's values.
//! Times are RFC 3339 (`2024-05-01T10:00:00Z`) or relative to now (`90m`,
//! `1h`, `2d` mean that long ago) and are compared with the event's last
//! failure (else when it was received); an event with no time matches no
//! time filter. Statuses are numbers, classes (`5xx`) or `none` (no answer:
//! a timeout or a connection error).

use std::time::Duration;

use serde::Deserialize;

use sluice_shared::message::{DeadReason, UnknownReason};

use super::event::{DeadEvent, rfc3339_millis};
use sluice_shared::glob::Glob;

/// The filter flags as written, shared by the CLI and the HTTP API.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(default)]
pub struct FilterArgs {
    /// Only events from these sources (repeat, or comma-separate).
    #[arg(long, value_delimiter = ',')]
    #[serde(deserialize_with = "list")]
    pub source: Vec<String>,
    /// Only events whose type matches one of these globs (`message.*`).
    #[arg(long = "type", value_delimiter = ',')]
    #[serde(rename = "type", deserialize_with = "list")]
    pub event_type: Vec<String>,
    /// Only events that died on these routes (a fanned-out event has one
    /// dead record per route that gave up on it; a replay goes back to its
    /// route alone).
    #[arg(long, value_delimiter = ',')]
    #[serde(deserialize_with = "list")]
    pub route: Vec<String>,
    /// Only events dead for these reasons.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(DeadReason::NAMES))]
    #[serde(deserialize_with = "list")]
    pub reason: Vec<String>,
    /// Only events whose last HTTP status is one of these (`503`, `5xx`, `none`).
    #[arg(long, value_delimiter = ',')]
    #[serde(deserialize_with = "list")]
    pub status: Vec<String>,
    /// Only events that last failed at or after this time (RFC 3339, or `1h` for an hour ago).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events that last failed before this time (RFC 3339, or `10m` for ten minutes ago).
    #[arg(long)]
    pub until: Option<String>,
    /// Only events with these ids.
    #[arg(long, value_delimiter = ',')]
    #[serde(deserialize_with = "list")]
    pub id: Vec<String>,
}

impl FilterArgs {
    /// The filter as written, in one form: values trimmed, sorted and without
    /// repeats, so `source=a,b` and `{"source": ["b", "a"]}` read the same.
    /// Relative times stay as written (`1h`): this names a filter, it does
    /// not evaluate it.
    pub fn canonical(&self) -> String {
        let list = |values: &[String]| {
            let mut values = cleaned(values);
            values.sort();
            values.dedup();
            values
        };
        let time = |text: &Option<String>| {
            text.as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        };
        let mut canonical = serde_json::json!({
            "source": list(&self.source),
            "type": list(&self.event_type),
            "reason": list(&self.reason),
            "status": list(&self.status),
            "since": time(&self.since),
            "until": time(&self.until),
            "id": list(&self.id),
        });
        // Only when given: a filter without routes reads as it did before.
        let routes = list(&self.route);
        if !routes.is_empty()
            && let Some(map) = canonical.as_object_mut()
        {
            map.insert("route".into(), routes.into());
        }
        canonical.to_string()
    }
}

/// A filter flag that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error(
        "--{flag} {value:?}: write an RFC 3339 time (2024-05-01T10:00:00Z) or a duration ago (90m, 1h, 2d)"
    )]
    Time { flag: &'static str, value: String },
    #[error("--status {0:?}: write an HTTP status (503), a class (5xx) or `none`")]
    Status(String),
    #[error("--since is not before --until: no event could match")]
    EmptyRange,
    #[error("--reason {0}")]
    Reason(#[from] UnknownReason),
}

/// A last-status condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusMatch {
    Exact(i64),
    /// `5xx`: the hundreds digit.
    Class(i64),
    /// No status: downstream never answered.
    NoAnswer,
}

/// Parsed filters; [`Filter::matches`] is pure.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    sources: Vec<String>,
    types: Vec<Glob>,
    routes: Vec<String>,
    reasons: Vec<DeadReason>,
    statuses: Vec<StatusMatch>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    ids: Vec<String>,
}

impl Filter {
    /// Parses the flags; relative times count back from `now_ms`.
    pub fn parse(args: &FilterArgs, now_ms: i64) -> Result<Self, FilterError> {
        let since_ms = time_flag("since", args.since.as_deref(), now_ms)?;
        let until_ms = time_flag("until", args.until.as_deref(), now_ms)?;
        if let (Some(since), Some(until)) = (since_ms, until_ms)
            && since >= until
        {
            return Err(FilterError::EmptyRange);
        }
        Ok(Self {
            sources: cleaned(&args.source),
            types: cleaned(&args.event_type)
                .iter()
                .map(|t| Glob::new(t))
                .collect(),
            routes: cleaned(&args.route),
            reasons: cleaned(&args.reason)
                .iter()
                .map(|r| r.parse())
                .collect::<Result<_, _>>()?,
            statuses: cleaned(&args.status)
                .iter()
                .map(|s| status_match(s))
                .collect::<Result<_, _>>()?,
            since_ms,
            until_ms,
            ids: cleaned(&args.id),
        })
    }

    /// Whether the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
            && self.types.is_empty()
            && self.routes.is_empty()
            && self.reasons.is_empty()
            && self.statuses.is_empty()
            && self.since_ms.is_none()
            && self.until_ms.is_none()
            && self.ids.is_empty()
    }

    /// Whether `event` passes every flag.
    pub fn matches(&self, event: &DeadEvent) -> bool {
        one_of(&self.sources, event.source.as_deref())
            && (self.types.is_empty()
                || event
                    .event_type
                    .as_deref()
                    .is_some_and(|t| self.types.iter().any(|g| g.matches(t))))
            && one_of(&self.routes, event.route.as_deref())
            && (self.reasons.is_empty() || self.reasons.contains(&event.reason))
            && (self.statuses.is_empty()
                || self.statuses.iter().any(|s| s.matches(event.last_status)))
            && one_of(&self.ids, event.id.as_deref())
            && self.in_time_range(event.failed_at_ms())
    }

    fn in_time_range(&self, at_ms: Option<i64>) -> bool {
        if self.since_ms.is_none() && self.until_ms.is_none() {
            return true;
        }
        let Some(at) = at_ms else { return false };
        self.since_ms.is_none_or(|since| at >= since)
            && self.until_ms.is_none_or(|until| at < until)
    }
}

impl StatusMatch {
    fn matches(self, status: Option<i64>) -> bool {
        match (self, status) {
            (Self::NoAnswer, None) => true,
            (Self::Exact(want), Some(got)) => want == got,
            (Self::Class(hundreds), Some(got)) => got / 100 == hundreds,
            _ => false,
        }
    }
}

/// A list written `"a,b"` (a query string) or `["a", "b"]` (JSON).
fn list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(text) => text.split(',').map(str::to_owned).collect(),
        OneOrMany::Many(items) => items,
    })
}

/// Trimmed, non-empty values (a trailing comma is not a value).
fn cleaned(values: &[String]) -> Vec<String> {
    values
        .iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn one_of(wanted: &[String], value: Option<&str>) -> bool {
    wanted.is_empty() || value.is_some_and(|v| wanted.iter().any(|w| w == v))
}

fn status_match(text: &str) -> Result<StatusMatch, FilterError> {
    let lower = text.to_ascii_lowercase();
    let bad = || FilterError::Status(text.to_owned());
    if lower == "none" {
        return Ok(StatusMatch::NoAnswer);
    }
    if let Some(digit) = lower.strip_suffix("xx") {
        let hundreds: i64 = digit.parse().map_err(|_| bad())?;
        return (1..=5)
            .contains(&hundreds)
            .then_some(StatusMatch::Class(hundreds))
            .ok_or_else(bad);
    }
    let status: i64 = lower.parse().map_err(|_| bad())?;
    (100..=599)
        .contains(&status)
        .then_some(StatusMatch::Exact(status))
        .ok_or_else(bad)
}

/// An RFC 3339 time, or a duration before `now_ms`.
fn time_flag(
    flag: &'static str,
    text: Option<&str>,
    now_ms: i64,
) -> Result<Option<i64>, FilterError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if let Some(ms) = rfc3339_millis(text) {
        return Ok(Some(ms));
    }
    let ago: Duration = humantime::parse_duration(text).map_err(|_| FilterError::Time {
        flag,
        value: text.to_owned(),
    })?;
    let ago_ms = i64::try_from(ago.as_millis()).unwrap_or(i64::MAX);
    Ok(Some(now_ms.saturating_sub(ago_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::BasicProperties;

    const NOW: i64 = 1_700_000_000_000;

    fn event(source: &str, event_type: &str, status: Option<i64>, failed_ms: i64) -> DeadEvent {
        let mut event = DeadEvent::read(1, "k", BasicProperties::default(), Vec::new());
        event.id = Some(format!("{source}-{event_type}"));
        event.source = Some(source.into());
        event.event_type = Some(event_type.into());
        event.reason = DeadReason::AttemptsExhausted;
        event.last_status = status;
        event.last_failure_ms = Some(failed_ms);
        event
    }

    fn filter(args: FilterArgs) -> Filter {
        Filter::parse(&args, NOW).unwrap()
    }

    #[test]
    fn no_flags_match_everything_even_a_raw_message() {
        let raw = DeadEvent::read(1, "k", BasicProperties::default(), b"x".to_vec());
        assert!(filter(FilterArgs::default()).matches(&raw));
        assert!(filter(FilterArgs::default()).is_empty());
    }

    #[test]
    fn sources_and_type_globs_combine() {
        let f = filter(FilterArgs {
            source: vec!["a".into(), "b".into()],
            event_type: vec!["message.*".into()],
            ..FilterArgs::default()
        });
        assert!(f.matches(&event("a", "message.text", None, NOW)));
        assert!(f.matches(&event("b", "message.image", None, NOW)));
        assert!(!f.matches(&event("c", "message.text", None, NOW)));
        assert!(!f.matches(&event("a", "status.read", None, NOW)));
    }

    #[test]
    fn statuses_are_exact_classes_or_none() {
        let f = filter(FilterArgs {
            status: vec!["5xx".into(), "none".into()],
            ..FilterArgs::default()
        });
        assert!(f.matches(&event("a", "t", Some(503), NOW)));
        assert!(f.matches(&event("a", "t", None, NOW)));
        assert!(!f.matches(&event("a", "t", Some(400), NOW)));
        let exact = filter(FilterArgs {
            status: vec!["400".into()],
            ..FilterArgs::default()
        });
        assert!(exact.matches(&event("a", "t", Some(400), NOW)));
        assert!(!exact.matches(&event("a", "t", Some(404), NOW)));
    }

    #[test]
    fn a_bad_status_is_named() {
        for bad in ["6xx", "abc", "99", "1000"] {
            let args = FilterArgs {
                status: vec![bad.into()],
                ..FilterArgs::default()
            };
            assert_eq!(
                Filter::parse(&args, NOW).unwrap_err(),
                FilterError::Status(bad.into())
            );
        }
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let f = filter(FilterArgs {
            since: Some("1h".into()),
            until: Some("10m".into()),
            ..FilterArgs::default()
        });
        assert!(f.matches(&event("a", "t", None, NOW - 30 * 60_000)));
        assert!(!f.matches(&event("a", "t", None, NOW - 2 * 3_600_000)));
        assert!(!f.matches(&event("a", "t", None, NOW - 5 * 60_000)));
    }

    #[test]
    fn rfc3339_times_are_absolute_and_events_without_time_do_not_match() {
        let f = filter(FilterArgs {
            since: Some("2023-11-14T22:13:20Z".into()),
            ..FilterArgs::default()
        });
        assert!(f.matches(&event("a", "t", None, NOW)));
        assert!(!f.matches(&event("a", "t", None, NOW - 1)));
        let raw = DeadEvent::read(1, "k", BasicProperties::default(), b"x".to_vec());
        assert!(!f.matches(&raw));
    }

    #[test]
    fn a_bad_time_or_an_empty_range_is_refused() {
        let args = FilterArgs {
            since: Some("yesterday-ish".into()),
            ..FilterArgs::default()
        };
        assert!(matches!(
            Filter::parse(&args, NOW),
            Err(FilterError::Time { flag: "since", .. })
        ));
        let args = FilterArgs {
            since: Some("10m".into()),
            until: Some("1h".into()),
            ..FilterArgs::default()
        };
        assert_eq!(
            Filter::parse(&args, NOW).unwrap_err(),
            FilterError::EmptyRange
        );
    }

    #[test]
    fn http_filters_read_from_a_query_string_or_json() {
        let query: FilterArgs = serde_json::from_value(serde_json::json!({
            "source": "a,b", "type": ["x.*"], "status": "5xx"
        }))
        .unwrap();
        assert_eq!(query.source, ["a", "b"]);
        assert_eq!(query.event_type, ["x.*"]);
        assert_eq!(query.status, ["5xx"]);
        assert!(query.reason.is_empty());
    }

    #[test]
    fn the_same_filter_written_differently_reads_the_same() {
        let query = FilterArgs {
            source: vec!["b".into(), " a".into(), "b".into(), "".into()],
            since: Some(" 1h ".into()),
            ..FilterArgs::default()
        };
        let json: FilterArgs =
            serde_json::from_value(serde_json::json!({"source": ["a", "b"], "since": "1h"}))
                .unwrap();
        assert_eq!(query.canonical(), json.canonical());
        let other = FilterArgs {
            source: vec!["a".into()],
            since: Some("1h".into()),
            ..FilterArgs::default()
        };
        assert_ne!(query.canonical(), other.canonical());
        let moved = FilterArgs {
            id: vec!["a".into(), "b".into()],
            since: Some("1h".into()),
            ..FilterArgs::default()
        };
        assert_ne!(
            query.canonical(),
            moved.canonical(),
            "values stay under their flag"
        );
    }

    #[test]
    fn routes_match_exactly_and_an_event_without_one_matches_no_route_filter() {
        let f = filter(FilterArgs {
            route: vec!["crm".into(), " billing".into()],
            ..FilterArgs::default()
        });
        assert!(!f.is_empty());
        let mut on_crm = event("a", "t", None, NOW);
        on_crm.route = Some("crm".into());
        let mut on_billing = on_crm.clone();
        on_billing.route = Some("billing".into());
        let mut on_audit = on_crm.clone();
        on_audit.route = Some("audit".into());
        assert!(f.matches(&on_crm));
        assert!(f.matches(&on_billing));
        assert!(!f.matches(&on_audit));
        assert!(!f.matches(&event("a", "t", None, NOW)));
        assert!(filter(FilterArgs::default()).matches(&on_audit));
    }

    #[test]
    fn a_route_filter_is_named_in_the_canonical_form_only_when_given() {
        let none = FilterArgs::default().canonical();
        assert!(!none.contains("route"), "{none}");
        let some = FilterArgs {
            route: vec!["crm".into()],
            ..FilterArgs::default()
        };
        assert!(
            some.canonical().contains(r#""route":["crm"]"#),
            "{}",
            some.canonical()
        );
        let json: FilterArgs = serde_json::from_value(serde_json::json!({"route": "crm"})).unwrap();
        assert_eq!(json.canonical(), some.canonical());
    }

    #[test]
    fn ids_and_reasons_match_exactly() {
        let f = filter(FilterArgs {
            id: vec!["a-t".into()],
            reason: vec!["attempts_exhausted".into()],
            ..FilterArgs::default()
        });
        assert!(f.matches(&event("a", "t", None, NOW)));
        assert!(!f.matches(&event("a", "u", None, NOW)));
    }
}

#[cfg(test)]
mod reason_flag_tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        filter: FilterArgs,
    }

    #[test]
    fn a_misspelt_reason_is_refused_by_the_cli_with_the_valid_names() {
        let error = Flags::try_parse_from(["dlq", "--reason", "rejectd"])
            .err()
            .expect("--reason rejectd is refused");
        let text = error.to_string();
        assert!(text.contains("rejectd"), "{text}");
        assert!(text.contains("attempts_exhausted"), "{text}");
        let flags = Flags::try_parse_from(["dlq", "--reason", "rejected,delivery_limit"])
            .expect("valid reasons parse");
        assert_eq!(flags.filter.reason, ["rejected", "delivery_limit"]);
    }

    #[test]
    fn a_misspelt_reason_from_the_http_api_is_an_error_naming_the_valid_ones() {
        let args: FilterArgs =
            serde_json::from_value(serde_json::json!({"reason": "rejectd"})).expect("JSON");
        let error = Filter::parse(&args, 0).expect_err("rejectd is no reason");
        let text = error.to_string();
        assert!(text.starts_with("--reason \"rejectd\""), "{text}");
        assert!(text.contains("no_route"), "{text}");
    }
}
