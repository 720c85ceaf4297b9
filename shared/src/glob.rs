//! The route patterns: globs over `<source>.<type>`.
//!
//! `*` matches any run of characters, dots included (so `whatsapp.*` takes
//! `whatsapp.message.text` as well as `whatsapp.status.read`), and `?` matches
//! exactly one character. Everything else matches itself; there is no escape,
//! since source names and event types never contain `*` or `?` worth matching
//! literally. Matching is iterative with one backtrack point, so a pattern with
//! many stars costs O(pattern × subject) at worst, never exponential time.

/// A compiled glob pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    chars: Vec<char>,
}

impl Glob {
    /// Any text is a valid pattern.
    pub fn new(pattern: &str) -> Self {
        Self {
            text: pattern.to_owned(),
            chars: pattern.chars().collect(),
        }
    }

    /// Whether the whole of `subject` matches the pattern.
    pub fn matches(&self, subject: &str) -> bool {
        let subject: Vec<char> = subject.chars().collect();
        let pattern = &self.chars;
        let (mut p, mut s) = (0, 0);
        // The last star seen, and the subject position it is currently made to end at.
        let mut backtrack: Option<(usize, usize)> = None;
        while s < subject.len() {
            match pattern.get(p) {
                Some('*') => {
                    backtrack = Some((p, s));
                    p += 1;
                }
                Some(&c) if c == '?' || Some(&c) == subject.get(s) => {
                    p += 1;
                    s += 1;
                }
                _ => match backtrack {
                    // Let the last star swallow one more character and try again.
                    Some((star, end)) => {
                        backtrack = Some((star, end + 1));
                        p = star + 1;
                        s = end + 1;
                    }
                    None => return false,
                },
            }
        }
        pattern[p..].iter().all(|&c| c == '*')
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn matches(pattern: &str, subject: &str) -> bool {
        Glob::new(pattern).matches(subject)
    }

    #[test]
    fn a_lone_star_matches_everything_including_nothing() {
        assert!(matches("*", "whatsapp.message.text"));
        assert!(matches("*", ""));
    }

    #[test]
    fn a_star_runs_across_dots() {
        assert!(matches("whatsapp.*", "whatsapp.message.text"));
        assert!(matches("whatsapp.message.*", "whatsapp.message.text"));
        assert!(!matches("whatsapp.message.*", "whatsapp.status.read"));
    }

    #[test]
    fn a_star_may_sit_in_the_middle_or_repeat() {
        assert!(matches("*.status.*", "whatsapp.status.read"));
        assert!(matches("w*p.*.re*d", "whatsapp.status.read"));
        assert!(matches("**", "abc"));
        assert!(!matches("*.status.*", "whatsapp.message.text"));
    }

    #[test]
    fn a_question_mark_is_exactly_one_character() {
        assert!(matches("s?.x", "s1.x"));
        assert!(!matches("s?.x", "s.x"));
        assert!(!matches("s?.x", "s12.x"));
        assert!(matches("caf?", "café"));
    }

    #[test]
    fn without_wildcards_the_whole_subject_must_be_equal() {
        assert!(matches("demo.thing", "demo.thing"));
        assert!(!matches("demo.thing", "demo.things"));
        assert!(!matches("demo.thing", "demo.thin"));
        assert!(!matches("", "x"));
        assert!(matches("", ""));
    }

    #[test]
    fn backtracking_finds_the_later_match() {
        assert!(matches("*ab", "aab"));
        assert!(matches("a*b*c", "abxbyc"));
        assert!(!matches("a*b*c", "abxbyd"));
    }

    #[test]
    fn a_pathological_pattern_stays_fast() {
        let subject = "a".repeat(5_000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!matches(&pattern, &subject));
    }
}
