//! Metric constraints: `load < 5`, `load gte 0.5`, ...

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;

use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::lexer::{Cursor, TokenKind, value_after};
use super::{ConstraintError, ConstraintLanguage};
use crate::metadata::{validate_label_key, validate_label_value};

const LANGUAGE: ConstraintLanguage = ConstraintLanguage::Metric;

const EXPECTED_OPERATOR: &str = "an operator ('==', '=', 'is', '!=', 'is not', \
     '>', 'gt', 'greater than', '>=', '=>', 'gte', 'greater than or equal', \
     '<', 'lt', 'lesser than', '<=', '=<', 'lte' or 'lesser than or equal')";

/// How a [`MetricConstraint`] compares the metric with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricOperator {
    /// `==`, `=` or `is`.
    Equal,
    /// `!=` or `is not`.
    NotEqual,
    /// `>`, `gt` or `greater than`.
    GreaterThan,
    /// `>=`, `=>`, `gte` or `greater than or equal`.
    GreaterThanOrEqual,
    /// `<`, `lt` or `lesser than`.
    LessThan,
    /// `<=`, `=<`, `lte` or `lesser than or equal`.
    LessThanOrEqual,
}

impl MetricOperator {
    /// Compares a metric's value with the constraint's value, as floats
    /// (`Equal` uses `==`).
    pub fn compare(self, metric: f64, value: f64) -> bool {
        match self {
            MetricOperator::Equal => metric == value,
            MetricOperator::NotEqual => metric != value,
            MetricOperator::GreaterThan => metric > value,
            MetricOperator::GreaterThanOrEqual => metric >= value,
            MetricOperator::LessThan => metric < value,
            MetricOperator::LessThanOrEqual => metric <= value,
        }
    }

    /// The symbol of the operator: `==`, `!=`, `>`, `>=`, `<` or `<=`.
    pub fn symbol(self) -> &'static str {
        match self {
            MetricOperator::Equal => "==",
            MetricOperator::NotEqual => "!=",
            MetricOperator::GreaterThan => ">",
            MetricOperator::GreaterThanOrEqual => ">=",
            MetricOperator::LessThan => "<",
            MetricOperator::LessThanOrEqual => "<=",
        }
    }
}

impl fmt::Display for MetricOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// A collection of metric values by metric name, for
/// [`MetricConstraint::matches`].
pub trait MetricValues {
    /// The value of the metric `name`, or `None` if there is none.
    fn metric_value(&self, name: &str) -> Option<f64>;
}

impl<S: BuildHasher> MetricValues for IndexMap<String, f64, S> {
    fn metric_value(&self, name: &str) -> Option<f64> {
        self.get(name).copied()
    }
}

impl<S: BuildHasher> MetricValues for HashMap<String, f64, S> {
    fn metric_value(&self, name: &str) -> Option<f64> {
        self.get(name).copied()
    }
}

impl MetricValues for BTreeMap<String, f64> {
    fn metric_value(&self, name: &str) -> Option<f64> {
        self.get(name).copied()
    }
}

impl<T: MetricValues + ?Sized> MetricValues for &T {
    fn metric_value(&self, name: &str) -> Option<f64> {
        (**self).metric_value(name)
    }
}

/// A metric constraint: a comparison of one metric with a number.
///
/// The grammar is a metric name, an operator and a value (whitespace between
/// tokens is ignored):
///
/// | operator                                       | [`MetricOperator`]   |
/// |------------------------------------------------|----------------------|
/// | `==`, `=`, `is`                                | `Equal`              |
/// | `!=`, `is not`                                 | `NotEqual`           |
/// | `>`, `gt`, `greater than`                      | `GreaterThan`        |
/// | `>=`, `=>`, `gte`, `greater than or equal`     | `GreaterThanOrEqual` |
/// | `<`, `lt`, `lesser than`                       | `LessThan`           |
/// | `<=`, `=<`, `lte`, `lesser than or equal`      | `LessThanOrEqual`    |
///
/// As in Krake, `is greater than` and `less than` are not operators. The name
/// must be a valid label key and the value a valid label value (so negative
/// numbers are rejected) that is a finite number.
///
/// The constraint keeps its text: [`as_str`](Self::as_str), `Display` and
/// serialization return it unchanged. Equality compares the metric name, the
/// operator and the value as a number (`load > 5` equals `load gt 5.0`).
///
/// ```
/// use krake_data::constraints::{MetricConstraint, MetricOperator};
/// use std::collections::HashMap;
///
/// let constraint = MetricConstraint::parse("load greater than or equal 0.5").unwrap();
/// assert_eq!(constraint.metric(), "load");
/// assert_eq!(constraint.operator(), MetricOperator::GreaterThanOrEqual);
/// assert_eq!(constraint.value(), 0.5);
///
/// let metrics = HashMap::from([("load".to_string(), 0.75)]);
/// assert!(constraint.matches(&metrics));
/// ```
#[derive(Debug, Clone)]
pub struct MetricConstraint {
    metric: String,
    operator: MetricOperator,
    value: f64,
    text: String,
}

impl MetricConstraint {
    /// Parses a metric constraint expression.
    pub fn parse(text: &str) -> Result<Self, ConstraintError> {
        let mut cursor = Cursor::new(text, LANGUAGE)?;
        let metric = cursor.expect_word("a metric name")?;
        let (operator, spelling) = operator(&mut cursor)?;
        let value = cursor.expect_word(&value_after(&spelling))?;
        cursor.expect_end()?;

        validate_label_key(metric).map_err(|message| ConstraintError::InvalidKey {
            language: LANGUAGE,
            key: metric.to_owned(),
            message,
        })?;
        validate_label_value(value).map_err(|message| ConstraintError::InvalidValue {
            language: LANGUAGE,
            value: value.to_owned(),
            message,
        })?;
        let number: f64 = value.parse().map_err(|_| ConstraintError::NotANumber {
            value: value.to_owned(),
        })?;
        if !number.is_finite() {
            return Err(ConstraintError::NotFinite {
                value: value.to_owned(),
            });
        }
        Ok(MetricConstraint {
            metric: metric.to_owned(),
            operator,
            value: number,
            text: text.to_owned(),
        })
    }

    /// The name of the metric the constraint tests.
    pub fn metric(&self) -> &str {
        &self.metric
    }

    /// How the metric is compared with the value.
    pub fn operator(&self) -> MetricOperator {
        self.operator
    }

    /// The value the metric is compared with.
    pub fn value(&self) -> f64 {
        self.value
    }

    /// The text the constraint was parsed from, unchanged.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True if the metric that `get` looks up satisfies the constraint: `get`
    /// returns the value of a metric, or `None` if it is missing (which never
    /// matches).
    pub fn matches_with(&self, get: impl Fn(&str) -> Option<f64>) -> bool {
        get(&self.metric).is_some_and(|metric| self.operator.compare(metric, self.value))
    }

    /// True if the metric in `metrics` satisfies the constraint; a missing
    /// metric never does. Works with `HashMap<String, f64>`,
    /// `IndexMap<String, f64>` and `BTreeMap<String, f64>`.
    pub fn matches<M: MetricValues + ?Sized>(&self, metrics: &M) -> bool {
        self.matches_with(|name| metrics.metric_value(name))
    }
}

/// Consumes an operator; returns it with its spelling, for messages.
fn operator(cursor: &mut Cursor<'_>) -> Result<(MetricOperator, String), ConstraintError> {
    let found = cursor.peek();
    let Some(token) = found else {
        return Err(cursor.unexpected(found, EXPECTED_OPERATOR));
    };
    let single = match (token.kind, token.text) {
        (TokenKind::Operator, "=" | "==") => Some(MetricOperator::Equal),
        (TokenKind::Operator, "!=") => Some(MetricOperator::NotEqual),
        (TokenKind::Operator, ">") | (TokenKind::Word, "gt") => Some(MetricOperator::GreaterThan),
        (TokenKind::Operator, ">=" | "=>") | (TokenKind::Word, "gte") => {
            Some(MetricOperator::GreaterThanOrEqual)
        }
        (TokenKind::Operator, "<") | (TokenKind::Word, "lt") => Some(MetricOperator::LessThan),
        (TokenKind::Operator, "<=" | "=<") | (TokenKind::Word, "lte") => {
            Some(MetricOperator::LessThanOrEqual)
        }
        _ => None,
    };
    if let Some(operator) = single {
        cursor.skip(1);
        return Ok((operator, token.text.to_owned()));
    }
    if token.is_keyword("is") {
        // `load is not` compares with the value `not` (and then fails, since
        // `not` is no number).
        if cursor.at_keywords(&["is", "not"]) && cursor.peek_nth(2).is_some() {
            cursor.skip(2);
            return Ok((MetricOperator::NotEqual, "is not".to_owned()));
        }
        cursor.skip(1);
        let next = cursor.peek();
        if next.is_some_and(|t| t.is_keyword("greater") || t.is_keyword("lesser")) {
            return Err(cursor.unexpected(
                next,
                "a value after 'is' ('is greater than' and 'is lesser than' are not \
                 operators; write 'greater than' or 'lesser than')",
            ));
        }
        return Ok((MetricOperator::Equal, "is".to_owned()));
    }
    for (word, strict, or_equal) in [
        (
            "greater",
            MetricOperator::GreaterThan,
            MetricOperator::GreaterThanOrEqual,
        ),
        (
            "lesser",
            MetricOperator::LessThan,
            MetricOperator::LessThanOrEqual,
        ),
    ] {
        if token.is_keyword(word) {
            cursor.skip(1);
            if !cursor.at_keywords(&["than"]) {
                return Err(cursor.unexpected(cursor.peek(), &format!("'than' after '{word}'")));
            }
            cursor.skip(1);
            if cursor.at_keywords(&["or", "equal"]) {
                cursor.skip(2);
                return Ok((or_equal, format!("{word} than or equal")));
            }
            return Ok((strict, format!("{word} than")));
        }
    }
    Err(cursor.unexpected(found, EXPECTED_OPERATOR))
}

impl PartialEq for MetricConstraint {
    fn eq(&self, other: &Self) -> bool {
        self.metric == other.metric && self.operator == other.operator && self.value == other.value
    }
}

impl FromStr for MetricConstraint {
    type Err = ConstraintError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        MetricConstraint::parse(text)
    }
}

impl fmt::Display for MetricConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for MetricConstraint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for MetricConstraint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl de::Visitor<'_> for Visitor {
            type Value = MetricConstraint;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a metric constraint expression")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                MetricConstraint::parse(text).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(Visitor)
    }
}

impl JsonSchema for MetricConstraint {
    fn schema_name() -> Cow<'static, str> {
        "MetricConstraint".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A metric constraint: `<metric> <operator> <number>`, where the \
                operator is one of `==`, `=`, `is` (equal), `!=`, `is not` (not equal), \
                `>`, `gt`, `greater than`, `>=`, `=>`, `gte`, `greater than or equal`, \
                `<`, `lt`, `lesser than`, `<=`, `=<`, `lte`, `lesser than or equal`. \
                A missing metric never matches.",
            "examples": ["load < 5", "heat_demand gte 0.5"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> (MetricOperator, f64) {
        let constraint = MetricConstraint::parse(text).unwrap();
        (constraint.operator, constraint.value)
    }

    fn error(text: &str) -> String {
        MetricConstraint::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn operators() {
        use MetricOperator::*;
        assert_eq!(parsed("m is 1"), (Equal, 1.0));
        assert_eq!(parsed("m is not 1.5"), (NotEqual, 1.5));
        assert_eq!(parsed("m=>2"), (GreaterThanOrEqual, 2.0));
        assert_eq!(parsed("m=<2"), (LessThanOrEqual, 2.0));
        assert_eq!(
            parsed("m greater than or equal 3"),
            (GreaterThanOrEqual, 3.0)
        );
        assert_eq!(parsed("m lesser  than\t4e2"), (LessThan, 400.0));
    }

    #[test]
    fn errors() {
        assert_eq!(
            error("load > abc"),
            "Invalid metric constraint: value 'abc' is not a number"
        );
        assert_eq!(
            error("load > nan"),
            "Invalid metric constraint: value 'nan' is not a finite number"
        );
        assert!(error("load is greater than 5").contains("'is greater than'"));
        assert!(error("load less than 5").contains("unexpected word 'less' at position 5"));
        assert_eq!(
            error("load greater or equal 5"),
            "Invalid metric constraint: unexpected word 'or' at position 13, \
             expected 'than' after 'greater'"
        );
        assert_eq!(
            error("load gte"),
            "Invalid metric constraint: expected a value after 'gte' at position 8"
        );
    }
}
