//! A bounded `type` label: event types are provider strings, so each source
//! may name at most [`MAX_TYPES_PER_SOURCE`] distinct types in metrics; later
//! ones are counted as `other`. The first types seen keep their own series
//! for the life of the process (a restart starts over), which is what an
//! operator wants: the handful of types a provider really sends.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Distinct `type` label values per source before `other`.
pub const MAX_TYPES_PER_SOURCE: usize = 32;

/// The label used once a source's cap is reached.
pub const OTHER: &str = "other";

/// Which types each source has been given a series for.
#[derive(Debug, Default)]
pub struct TypeLabels {
    seen: Mutex<HashMap<String, HashSet<String>>>,
}

impl TypeLabels {
    /// The label for `event_type` of `source`: itself while the source has
    /// room (or already has it), else `other`.
    pub fn label<'a>(&self, source: &str, event_type: &'a str) -> &'a str {
        let mut seen = match self.seen.lock() {
            Ok(seen) => seen,
            Err(poisoned) => poisoned.into_inner(),
        };
        let types = seen.entry(source.to_owned()).or_default();
        if types.contains(event_type) {
            return event_type;
        }
        if types.len() < MAX_TYPES_PER_SOURCE {
            types.insert(event_type.to_owned());
            return event_type;
        }
        OTHER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_past_the_cap_become_other_and_known_ones_stay() {
        let labels = TypeLabels::default();
        let names: Vec<String> = (0..MAX_TYPES_PER_SOURCE + 5)
            .map(|i| format!("t{i}"))
            .collect();
        for name in &names[..MAX_TYPES_PER_SOURCE] {
            assert_eq!(labels.label("a", name), name);
        }
        assert_eq!(labels.label("a", &names[MAX_TYPES_PER_SOURCE]), OTHER);
        assert_eq!(
            labels.label("a", "t0"),
            "t0",
            "a known type keeps its series"
        );
        assert_eq!(
            labels.label("b", &names[MAX_TYPES_PER_SOURCE]),
            names[MAX_TYPES_PER_SOURCE],
            "each source has its own cap"
        );
    }
}
