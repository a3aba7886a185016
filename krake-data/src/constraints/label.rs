//! Label constraints: `location is DE`, `location in (DE, AT)`, ...

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::lexer::{Cursor, TokenKind, value_after};
use super::{ConstraintError, ConstraintLanguage};
use crate::metadata::{Labels, validate_label_key, validate_label_value};

const LANGUAGE: ConstraintLanguage = ConstraintLanguage::Label;

const EXPECTED_OPERATOR: &str = "an operator ('is', '=', '==', 'is not', '!=', 'in' or 'not in')";

/// What a [`LabelConstraint`] requires of the value of its label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LabelOperator {
    /// The label has this value: `key is value`, `key = value`, `key == value`.
    Equal(String),
    /// The label has another value: `key is not value`, `key != value`.
    NotEqual(String),
    /// The label has one of these values: `key in (v1, v2, ...)`.
    In(Vec<String>),
    /// The label has none of these values: `key not in (v1, v2, ...)`.
    NotIn(Vec<String>),
}

impl LabelOperator {
    /// The values the operator compares with (one for `Equal` and `NotEqual`).
    pub fn values(&self) -> &[String] {
        match self {
            LabelOperator::Equal(value) | LabelOperator::NotEqual(value) => {
                std::slice::from_ref(value)
            }
            LabelOperator::In(values) | LabelOperator::NotIn(values) => values,
        }
    }

    /// True if a label with this value satisfies the operator. (A missing
    /// label never does; see [`LabelConstraint::matches_with`].)
    pub fn matches_value(&self, value: &str) -> bool {
        match self {
            LabelOperator::Equal(expected) => value == expected,
            LabelOperator::NotEqual(unwanted) => value != unwanted,
            LabelOperator::In(values) => values.iter().any(|v| v == value),
            LabelOperator::NotIn(values) => values.iter().all(|v| v != value),
        }
    }
}

/// A label constraint: a test on one label of an object.
///
/// The grammar (whitespace between tokens is ignored):
///
/// | expression                     | operator                    |
/// |--------------------------------|-----------------------------|
/// | `key is value`                 | [`LabelOperator::Equal`]    |
/// | `key = value`, `key == value`  | [`LabelOperator::Equal`]    |
/// | `key is not value`             | [`LabelOperator::NotEqual`] |
/// | `key != value`                 | [`LabelOperator::NotEqual`] |
/// | `key in (v1, v2, ...)`         | [`LabelOperator::In`]       |
/// | `key not in (v1, v2, ...)`     | [`LabelOperator::NotIn`]    |
///
/// Lists hold at least one value and may end with commas (`(DE,)`). The key
/// must be a valid label key and every value a valid label value.
///
/// The constraint keeps its text: [`as_str`](Self::as_str), `Display` and
/// serialization return it unchanged. Equality and hashing compare the key
/// and the operator with its values (in order), not the text.
///
/// ```
/// use krake_data::constraints::{LabelConstraint, LabelOperator};
///
/// let constraint = LabelConstraint::parse("location is not  UK").unwrap();
/// assert_eq!(constraint.key(), "location");
/// assert_eq!(constraint.operator(), &LabelOperator::NotEqual("UK".into()));
/// assert_eq!(constraint.as_str(), "location is not  UK");
/// assert_eq!(constraint, LabelConstraint::parse("location != UK").unwrap());
/// ```
#[derive(Debug, Clone)]
pub struct LabelConstraint {
    key: String,
    operator: LabelOperator,
    text: String,
}

impl LabelConstraint {
    /// Parses a label constraint expression.
    pub fn parse(text: &str) -> Result<Self, ConstraintError> {
        let mut cursor = Cursor::new(text, LANGUAGE)?;
        let key = cursor.expect_word("a label key")?;
        let found = cursor.peek();
        let operator = match found {
            Some(token) if token.kind == TokenKind::Operator => match token.text {
                "=" | "==" => {
                    cursor.skip(1);
                    LabelOperator::Equal(value(&mut cursor, token.text)?)
                }
                "!=" => {
                    cursor.skip(1);
                    LabelOperator::NotEqual(value(&mut cursor, token.text)?)
                }
                _ => return Err(cursor.unexpected(found, EXPECTED_OPERATOR)),
            },
            Some(token) if token.is_keyword("is") => {
                // `key is not` compares with the value `not`.
                if cursor.at_keywords(&["is", "not"]) && cursor.peek_nth(2).is_some() {
                    cursor.skip(2);
                    LabelOperator::NotEqual(value(&mut cursor, "is not")?)
                } else {
                    cursor.skip(1);
                    LabelOperator::Equal(value(&mut cursor, "is")?)
                }
            }
            Some(token) if token.is_keyword("in") => {
                cursor.skip(1);
                LabelOperator::In(list(&mut cursor, "in")?)
            }
            Some(token) if token.is_keyword("not") => {
                cursor.skip(1);
                if !cursor.at_keywords(&["in"]) {
                    return Err(cursor.unexpected(cursor.peek(), "'in' after 'not'"));
                }
                cursor.skip(1);
                LabelOperator::NotIn(list(&mut cursor, "not in")?)
            }
            _ => return Err(cursor.unexpected(found, EXPECTED_OPERATOR)),
        };
        cursor.expect_end()?;

        validate_label_key(key).map_err(|message| ConstraintError::InvalidKey {
            language: LANGUAGE,
            key: key.to_owned(),
            message,
        })?;
        for value in operator.values() {
            validate_label_value(value).map_err(|message| ConstraintError::InvalidValue {
                language: LANGUAGE,
                value: value.clone(),
                message,
            })?;
        }
        Ok(LabelConstraint {
            key: key.to_owned(),
            operator,
            text: text.to_owned(),
        })
    }

    /// The label the constraint tests.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What the constraint requires of the label's value.
    pub fn operator(&self) -> &LabelOperator {
        &self.operator
    }

    /// The text the constraint was parsed from, unchanged.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True if `labels` satisfy the constraint. A missing label never does,
    /// whatever the operator.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_with(|key| labels.get(key).map(String::as_str))
    }

    /// True if the labels that `get` looks up satisfy the constraint: `get`
    /// returns the value of a label, or `None` if the label is missing (which
    /// never matches).
    pub fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        get(&self.key).is_some_and(|value| self.operator.matches_value(value))
    }
}

/// Consumes the value after `operator`.
fn value(cursor: &mut Cursor<'_>, operator: &str) -> Result<String, ConstraintError> {
    Ok(cursor.expect_word(&value_after(operator))?.to_owned())
}

/// Consumes `(v1, v2, ...)`: at least one value, commas between values and
/// any number of commas before the `)`.
fn list(cursor: &mut Cursor<'_>, operator: &str) -> Result<Vec<String>, ConstraintError> {
    cursor.expect(TokenKind::OpenParen, &format!("'(' after '{operator}'"))?;
    let mut values = vec![cursor.expect_word("a value")?.to_owned()];
    loop {
        let found = cursor.peek();
        match found.map(|token| token.kind) {
            Some(TokenKind::CloseParen) => {
                cursor.skip(1);
                return Ok(values);
            }
            Some(TokenKind::Comma) => {
                cursor.skip(1);
                let found = cursor.peek();
                match found.map(|token| token.kind) {
                    Some(TokenKind::Word) => {
                        values.push(cursor.expect_word("a value")?.to_owned());
                    }
                    Some(TokenKind::CloseParen) => {
                        cursor.skip(1);
                        return Ok(values);
                    }
                    Some(TokenKind::Comma) => {
                        // Trailing commas only: after two, the list must end.
                        while cursor.peek().is_some_and(|t| t.kind == TokenKind::Comma) {
                            cursor.skip(1);
                        }
                        cursor.expect(TokenKind::CloseParen, "',' or ')'")?;
                        return Ok(values);
                    }
                    _ => return Err(cursor.unexpected(found, "a value or ')'")),
                }
            }
            _ => return Err(cursor.unexpected(found, "',' or ')'")),
        }
    }
}

impl PartialEq for LabelConstraint {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.operator == other.operator
    }
}

impl Eq for LabelConstraint {}

impl Hash for LabelConstraint {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
        self.operator.hash(state);
    }
}

impl FromStr for LabelConstraint {
    type Err = ConstraintError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        LabelConstraint::parse(text)
    }
}

impl fmt::Display for LabelConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for LabelConstraint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for LabelConstraint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl de::Visitor<'_> for Visitor {
            type Value = LabelConstraint;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a label constraint expression")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                LabelConstraint::parse(text).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(Visitor)
    }
}

impl JsonSchema for LabelConstraint {
    fn schema_name() -> Cow<'static, str> {
        "LabelConstraint".into()
    }

    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A label constraint: `<key> is <value>`, `<key> = <value>`, \
                `<key> == <value>`, `<key> is not <value>`, `<key> != <value>`, \
                `<key> in (<value>, ...)` or `<key> not in (<value>, ...)`. \
                A missing label never matches.",
            "examples": ["location is DE", "location not in (UK, US)"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(text: &str) -> LabelOperator {
        LabelConstraint::parse(text).unwrap().operator
    }

    fn error(text: &str) -> String {
        LabelConstraint::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn operators() {
        assert_eq!(op("a is b"), LabelOperator::Equal("b".into()));
        assert_eq!(op("a=b"), LabelOperator::Equal("b".into()));
        assert_eq!(op("a==b"), LabelOperator::Equal("b".into()));
        assert_eq!(op("a is not b"), LabelOperator::NotEqual("b".into()));
        assert_eq!(op("a is not"), LabelOperator::Equal("not".into()));
        assert_eq!(op("a!=b"), LabelOperator::NotEqual("b".into()));
        assert_eq!(op("a in(b)"), LabelOperator::In(vec!["b".into()]));
        assert_eq!(
            op("a in (b,c,,)"),
            LabelOperator::In(vec!["b".into(), "c".into()])
        );
        assert_eq!(op("a not\tin (b,)"), LabelOperator::NotIn(vec!["b".into()]));
        assert_eq!(op("a = in"), LabelOperator::Equal("in".into()));
    }

    #[test]
    fn errors() {
        assert_eq!(
            error("location is"),
            "Invalid label constraint: expected a value after 'is' at position 11"
        );
        assert!(
            error("loc(DE)")
                .starts_with("Invalid label constraint: unexpected character '(' at position 3")
        );
        assert_eq!(
            error("a in (b,,c)"),
            "Invalid label constraint: unexpected word 'c' at position 9, expected ',' or ')'"
        );
        assert_eq!(
            error("a not (b)"),
            "Invalid label constraint: unexpected character '(' at position 6, \
             expected 'in' after 'not'"
        );
        assert_eq!(
            error("a > b"),
            format!(
                "Invalid label constraint: unexpected operator '>' at position 2, \
                 expected {EXPECTED_OPERATOR}"
            )
        );
    }
}
