//! Label selectors on list and watch: `?label_selector=k=v,k2!=v2,k3 in (a,b)`.
//!
//! A selector is a comma-separated list of label constraints (commas inside
//! parentheses belong to the constraint), all of which must match. Each
//! constraint uses Krake's label constraint language, so a label missing from
//! an object never matches.

use krake_data::LabelConstraint;
use krake_data::metadata::Labels;

/// The longest selector accepted, in bytes (a selector is matched against
/// every object of a list and every event of a watch).
pub const MAX_SELECTOR_BYTES: usize = 16 * 1024;

/// The most constraints a selector may hold.
pub const MAX_CONSTRAINTS: usize = 256;

/// A parsed label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    constraints: Vec<LabelConstraint>,
}

impl LabelSelector {
    /// Parses a selector; the error names the constraint that failed.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_SELECTOR_BYTES {
            return Err(format!(
                "Invalid label selector: {} bytes long, at most {MAX_SELECTOR_BYTES} are accepted",
                text.len()
            ));
        }
        let mut constraints = Vec::new();
        let mut depth = 0usize;
        let mut start = 0usize;
        let mut parts = Vec::new();
        for (index, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    parts.push(&text[start..index]);
                    start = index + 1;
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        if parts.len() > MAX_CONSTRAINTS {
            return Err(format!(
                "Invalid label selector: {} constraints, at most {MAX_CONSTRAINTS} are accepted",
                parts.len()
            ));
        }
        for part in parts {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let constraint = LabelConstraint::parse(part)
                .map_err(|err| format!("Invalid label selector {part:?}: {err}"))?;
            constraints.push(constraint);
        }
        Ok(LabelSelector { constraints })
    }

    /// True if every constraint matches `labels`.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.constraints.iter().all(|c| c.matches(labels))
    }

    /// True if the selector selects everything.
    pub fn is_empty(&self) -> bool {
        self.constraints.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn splits_on_top_level_commas() {
        let selector = LabelSelector::parse("env=prod, tier!=db,zone in (a, b,)").unwrap();
        assert!(selector.matches(&labels(&[("env", "prod"), ("tier", "web"), ("zone", "b")])));
        assert!(!selector.matches(&labels(&[("env", "prod"), ("tier", "db"), ("zone", "b")])));
        assert!(!selector.matches(&labels(&[("env", "prod"), ("zone", "b")])));
        assert!(LabelSelector::parse("").unwrap().is_empty());
        let err = LabelSelector::parse("env=prod,zone in (").unwrap_err();
        assert!(
            err.starts_with("Invalid label selector \"zone in (\""),
            "{err}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 2_000,
            failure_persistence: None,
            ..Default::default()
        })]

        /// Any text parses or fails with a message; nothing panics.
        #[test]
        fn any_text_parses_or_fails_cleanly(
            text in "[a-z=!,() <>in]{0,40}|\\PC{0,40}",
            key in "[a-z]{1,2}",
            value in "[a-z]{0,2}",
        ) {
            match LabelSelector::parse(&text) {
                Ok(selector) => {
                    let _ = selector.matches(&labels(&[(&key, &value)]));
                }
                Err(message) => proptest::prop_assert!(message.starts_with("Invalid label selector")),
            }
        }
    }

    #[test]
    fn huge_selectors_are_refused() {
        let many = vec!["a=b"; MAX_CONSTRAINTS + 1].join(",");
        let err = LabelSelector::parse(&many).unwrap_err();
        assert!(err.contains("constraints"), "{err}");
        assert!(LabelSelector::parse(&vec!["a=b"; MAX_CONSTRAINTS].join(",")).is_ok());
        let long = format!("a in ({})", "b,".repeat(MAX_SELECTOR_BYTES));
        let err = LabelSelector::parse(&long).unwrap_err();
        assert!(err.contains("bytes"), "{err}");
    }
}
