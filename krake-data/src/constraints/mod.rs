//! Krake's two constraint languages: label constraints and metric constraints.
//!
//! Applications and clusters restrict where they may be scheduled with small
//! textual expressions:
//!
//! - a [`LabelConstraint`] tests one label of an object, e.g.
//!   `location is DE`, `location != UK`, `location in (DE, AT)` or
//!   `location not in (UK,)`;
//! - a [`MetricConstraint`] compares one metric with a number, e.g.
//!   `load < 5`, `load gte 0.5` or `heat_demand lesser than or equal 10`.
//!
//! Both follow Krake 1.0.1: whitespace (spaces and tabs only) between tokens
//! is ignored, the key must be a valid label key and every value a valid label
//! value (see [`validate_label_key`](crate::metadata::validate_label_key) and
//! [`validate_label_value`](crate::metadata::validate_label_value)). Keywords
//! (`is`, `not`, `in`, `gt`, ...) are keywords only where an operator is
//! expected, so `zone = in` compares with the value `in`.
//!
//! A parsed constraint keeps the text it was parsed from: [`Display`](std::fmt::Display)
//! and serialization return exactly that text, while equality compares the
//! meaning (`a = b` equals `a is b`). With serde, a constraint is a JSON string.
//!
//! A missing label or metric never matches, whatever the operator: the
//! constraint `location != UK` does not match an object without a `location`
//! label.
//!
//! # Example
//!
//! ```
//! use krake_data::constraints::{LabelConstraint, MetricConstraint};
//! use krake_data::metadata::Labels;
//!
//! let constraint: LabelConstraint = "location in (DE, AT,)".parse().unwrap();
//! let mut labels = Labels::new();
//! labels.insert("location".into(), "AT".into());
//! assert!(constraint.matches(&labels));
//! assert_eq!(constraint.to_string(), "location in (DE, AT,)");
//!
//! let load = MetricConstraint::parse("load lesser than 0.5").unwrap();
//! assert!(load.matches_with(|name| (name == "load").then_some(0.25)));
//! assert!(!load.matches_with(|_| None));
//!
//! let error = LabelConstraint::parse("location is").unwrap_err();
//! assert_eq!(
//!     error.to_string(),
//!     "Invalid label constraint: expected a value after 'is' at position 11"
//! );
//! ```

mod custom_resource;
mod label;
mod lexer;
mod metric;

use std::fmt;

pub use custom_resource::{custom_resources_match, validate_custom_resource};
pub use label::{LabelConstraint, LabelOperator};
pub use metric::{MetricConstraint, MetricOperator, MetricValues};

use crate::validation::python_str_repr;

/// Which of the two constraint languages an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConstraintLanguage {
    /// The label constraint language ([`LabelConstraint`]).
    Label,
    /// The metric constraint language ([`MetricConstraint`]).
    Metric,
}

impl fmt::Display for ConstraintLanguage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConstraintLanguage::Label => "label",
            ConstraintLanguage::Metric => "metric",
        })
    }
}

/// Why a constraint expression could not be parsed.
///
/// Every message starts with Krake's `Invalid label constraint` or
/// `Invalid metric constraint`, followed by `: ` and what is wrong. Positions
/// count characters (not bytes) from 0; a position equal to the length of the
/// text means "at the end".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConstraintError {
    /// The expression is empty or contains only whitespace.
    #[error("Invalid {language} constraint: empty expression")]
    Empty {
        /// The language that was parsed.
        language: ConstraintLanguage,
    },
    /// A character that cannot appear in an expression: a newline or another
    /// control or whitespace character other than space and tab, or a `!`
    /// that is not part of `!=`.
    #[error(
        "Invalid {language} constraint: unexpected character {} at position {position}",
        quote_char(*.character)
    )]
    UnexpectedCharacter {
        /// The language that was parsed.
        language: ConstraintLanguage,
        /// The offending character.
        character: char,
        /// Its position, in characters from 0.
        position: usize,
    },
    /// A token in a place where the grammar does not allow it.
    #[error(
        "Invalid {language} constraint: unexpected {} at position {position}, expected {expected}",
        describe_token(.found)
    )]
    UnexpectedToken {
        /// The language that was parsed.
        language: ConstraintLanguage,
        /// The text of the token that was found.
        found: String,
        /// What the grammar allows at this place.
        expected: String,
        /// The position of the token, in characters from 0.
        position: usize,
    },
    /// The expression ended where the grammar expects more.
    #[error("Invalid {language} constraint: expected {expected} at position {position}")]
    UnexpectedEnd {
        /// The language that was parsed.
        language: ConstraintLanguage,
        /// What the grammar expects.
        expected: String,
        /// The length of the expression, in characters.
        position: usize,
    },
    /// The key (label key or metric name) is not a valid label key.
    #[error("Invalid {language} constraint: {message}")]
    InvalidKey {
        /// The language that was parsed.
        language: ConstraintLanguage,
        /// The key.
        key: String,
        /// Krake's message, from
        /// [`validate_label_key`](crate::metadata::validate_label_key).
        message: String,
    },
    /// A value is not a valid label value.
    #[error("Invalid {language} constraint: {message}")]
    InvalidValue {
        /// The language that was parsed.
        language: ConstraintLanguage,
        /// The value.
        value: String,
        /// Krake's message, from
        /// [`validate_label_value`](crate::metadata::validate_label_value).
        message: String,
    },
    /// The value of a metric constraint is not a number.
    #[error("Invalid metric constraint: value {} is not a number", python_str_repr(.value))]
    NotANumber {
        /// The value.
        value: String,
    },
    /// The value of a metric constraint is a number but not a finite one
    /// (`nan`, `inf`, or too large for a 64-bit float).
    #[error(
        "Invalid metric constraint: value {} is not a finite number",
        python_str_repr(.value)
    )]
    NotFinite {
        /// The value.
        value: String,
    },
}

impl ConstraintError {
    /// The language the expression was parsed as.
    pub fn language(&self) -> ConstraintLanguage {
        match self {
            ConstraintError::Empty { language }
            | ConstraintError::UnexpectedCharacter { language, .. }
            | ConstraintError::UnexpectedToken { language, .. }
            | ConstraintError::UnexpectedEnd { language, .. }
            | ConstraintError::InvalidKey { language, .. }
            | ConstraintError::InvalidValue { language, .. } => *language,
            ConstraintError::NotANumber { .. } | ConstraintError::NotFinite { .. } => {
                ConstraintLanguage::Metric
            }
        }
    }
}

fn quote_char(character: char) -> String {
    python_str_repr(character.encode_utf8(&mut [0; 4]))
}

/// "character '('", "operator '!='" or "word 'abc'", from a token's text
/// (words never contain punctuation, so the first character tells).
fn describe_token(found: &str) -> String {
    match found.chars().next() {
        Some(c @ ('(' | ')' | ',')) => format!("character {}", quote_char(c)),
        Some(c) if lexer::is_punctuation(c) => format!("operator {}", python_str_repr(found)),
        _ => format!("word {}", python_str_repr(found)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_start_with_krakes_text() {
        let error = ConstraintError::UnexpectedToken {
            language: ConstraintLanguage::Label,
            found: "(".into(),
            expected: "an operator".into(),
            position: 3,
        };
        assert_eq!(
            error.to_string(),
            "Invalid label constraint: unexpected character '(' at position 3, expected an operator"
        );
        let error = ConstraintError::UnexpectedToken {
            language: ConstraintLanguage::Metric,
            found: "!=".into(),
            expected: "a value".into(),
            position: 5,
        };
        assert_eq!(
            error.to_string(),
            "Invalid metric constraint: unexpected operator '!=' at position 5, expected a value"
        );
        let error = ConstraintError::UnexpectedCharacter {
            language: ConstraintLanguage::Label,
            character: '\n',
            position: 2,
        };
        assert_eq!(
            error.to_string(),
            "Invalid label constraint: unexpected character '\\n' at position 2"
        );
        assert_eq!(
            ConstraintError::NotANumber {
                value: "abc".into()
            }
            .to_string(),
            "Invalid metric constraint: value 'abc' is not a number"
        );
        assert_eq!(
            ConstraintError::NotANumber {
                value: "abc".into()
            }
            .language(),
            ConstraintLanguage::Metric
        );
    }
}
