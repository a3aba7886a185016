//! Label selectors on list and watch: `?label_selector=k=v,k2!=v2,k3 in (a,b)`.
//!
//! A selector is a comma-separated list of label constraints (commas inside
//! parentheses belong to the constraint), all of which must match. Each
//! constraint uses Krake's label constraint language, so a label missing from
//! an object never matches.

use krake_data::LabelConstraint;
use krake_data::metadata::Labels;

/// A parsed label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    constraints: Vec<LabelConstraint>,
}

impl LabelSelector {
    /// Parses a selector; the error names the constraint that failed.
    pub fn parse(text: &str) -> Result<Self, String> {
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
}
