#![allow(clippy::unwrap_used)]
//! Table tests and property tests of the label and metric constraint languages.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use indexmap::IndexMap;
use krake_data::constraints::{
    ConstraintError, ConstraintLanguage, LabelConstraint, LabelOperator, MetricConstraint,
    MetricOperator,
};
use krake_data::metadata::{Labels, validate_label_key, validate_label_value};
use proptest::prelude::*;
use proptest::sample::{Index, select};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn eq(value: &str) -> LabelOperator {
    LabelOperator::Equal(value.to_owned())
}

fn ne(value: &str) -> LabelOperator {
    LabelOperator::NotEqual(value.to_owned())
}

fn is_in(values: &[&str]) -> LabelOperator {
    LabelOperator::In(strings(values))
}

fn not_in(values: &[&str]) -> LabelOperator {
    LabelOperator::NotIn(strings(values))
}

fn hash_of<T: Hash>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Serialization returns the text, and the JSON string parses back to an
/// equal constraint with the same text.
fn assert_label_round_trip(constraint: &LabelConstraint, text: &str) {
    assert_eq!(constraint.as_str(), text);
    assert_eq!(constraint.to_string(), text);
    let json = serde_json::to_string(constraint).unwrap();
    assert_eq!(json, serde_json::to_string(text).unwrap());
    let back: LabelConstraint = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, constraint);
    assert_eq!(back.as_str(), text);
    let reparsed: LabelConstraint = text.parse().unwrap();
    assert_eq!(&reparsed, constraint);
    assert_eq!(hash_of(&reparsed), hash_of(constraint));
}

fn assert_metric_round_trip(constraint: &MetricConstraint, text: &str) {
    assert_eq!(constraint.as_str(), text);
    assert_eq!(constraint.to_string(), text);
    let json = serde_json::to_string(constraint).unwrap();
    assert_eq!(json, serde_json::to_string(text).unwrap());
    let back: MetricConstraint = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, constraint);
    assert_eq!(back.as_str(), text);
    let reparsed: MetricConstraint = text.parse().unwrap();
    assert_eq!(&reparsed, constraint);
}

// ---------------------------------------------------------------------------
// Label constraints: every operator spelling
// ---------------------------------------------------------------------------

struct LabelCase {
    text: &'static str,
    key: &'static str,
    operator: LabelOperator,
    /// Values of the key that match.
    matching: &'static [&'static str],
    /// Values of the key that do not match.
    failing: &'static [&'static str],
}

fn label_cases() -> Vec<LabelCase> {
    let case = |text, key, operator, matching, failing| LabelCase {
        text,
        key,
        operator,
        matching,
        failing,
    };
    vec![
        // Equal
        case(
            "location is DE",
            "location",
            eq("DE"),
            &["DE"],
            &["UK", "de", "DE1"],
        ),
        case("location = DE", "location", eq("DE"), &["DE"], &["UK"]),
        case("location == DE", "location", eq("DE"), &["DE"], &["UK"]),
        case("location=DE", "location", eq("DE"), &["DE"], &["UK"]),
        case("location==DE", "location", eq("DE"), &["DE"], &["UK"]),
        case("location\t=\tDE", "location", eq("DE"), &["DE"], &["UK"]),
        case("location   is DE", "location", eq("DE"), &["DE"], &["UK"]),
        case(
            "  location is DE\t ",
            "location",
            eq("DE"),
            &["DE"],
            &["UK"],
        ),
        case(
            "example.com/zone is a.b-c_d",
            "example.com/zone",
            eq("a.b-c_d"),
            &["a.b-c_d"],
            &["a.b-c"],
        ),
        // NotEqual
        case(
            "location is not DE",
            "location",
            ne("DE"),
            &["UK", "de"],
            &["DE"],
        ),
        case(
            "location is\tnot   DE",
            "location",
            ne("DE"),
            &["UK"],
            &["DE"],
        ),
        case("location != DE", "location", ne("DE"), &["UK"], &["DE"]),
        case("location!=DE", "location", ne("DE"), &["UK"], &["DE"]),
        // In
        case(
            "location in (DE, AT)",
            "location",
            is_in(&["DE", "AT"]),
            &["DE", "AT"],
            &["UK"],
        ),
        case(
            "location in (DE)",
            "location",
            is_in(&["DE"]),
            &["DE"],
            &["AT"],
        ),
        case(
            "location in (DE,)",
            "location",
            is_in(&["DE"]),
            &["DE"],
            &["AT"],
        ),
        case(
            "location in (DE,,)",
            "location",
            is_in(&["DE"]),
            &["DE"],
            &["AT"],
        ),
        case(
            "location in (a, b,,)",
            "location",
            is_in(&["a", "b"]),
            &["a", "b"],
            &["c"],
        ),
        case(
            "location in(DE,AT,,,)",
            "location",
            is_in(&["DE", "AT"]),
            &["AT"],
            &["UK"],
        ),
        case(
            "location in ( DE , AT )",
            "location",
            is_in(&["DE", "AT"]),
            &["DE"],
            &["UK"],
        ),
        case(
            "location in (DE , , )",
            "location",
            is_in(&["DE"]),
            &["DE"],
            &["UK"],
        ),
        case(
            "\tlocation\tin\t(DE)\t",
            "location",
            is_in(&["DE"]),
            &["DE"],
            &["UK"],
        ),
        // NotIn
        case(
            "location not in (DE, AT)",
            "location",
            not_in(&["DE", "AT"]),
            &["UK"],
            &["DE", "AT"],
        ),
        case(
            "location not in (DE,)",
            "location",
            not_in(&["DE"]),
            &["UK"],
            &["DE"],
        ),
        case(
            "location not\t in(DE)",
            "location",
            not_in(&["DE"]),
            &["UK"],
            &["DE"],
        ),
        case(
            "location not in (DE,,,)",
            "location",
            not_in(&["DE"]),
            &["UK"],
            &["DE"],
        ),
        // Keywords are keywords only in operator position.
        case("x is not", "x", eq("not"), &["not"], &["x", "is"]),
        case("x = in", "x", eq("in"), &["in"], &["x"]),
        case("x == not", "x", eq("not"), &["not"], &["x"]),
        case("x is in", "x", eq("in"), &["in"], &["x"]),
        case("x is is", "x", eq("is"), &["is"], &["x"]),
        case("x is not not", "x", ne("not"), &["x"], &["not"]),
        case("x != not", "x", ne("not"), &["x"], &["not"]),
        case(
            "x in (in, not, is)",
            "x",
            is_in(&["in", "not", "is"]),
            &["not"],
            &["x"],
        ),
        case("in in (in)", "in", is_in(&["in"]), &["in"], &["x"]),
        case("not not in (x)", "not", not_in(&["x"]), &["y"], &["x"]),
        case("is is not x", "is", ne("x"), &["y"], &["x"]),
        case("is is x", "is", eq("x"), &["x"], &["y"]),
    ]
}

#[test]
fn label_operators_parse_and_match() {
    for case in label_cases() {
        let constraint = LabelConstraint::parse(case.text)
            .unwrap_or_else(|e| panic!("{:?} should parse: {e}", case.text));
        assert_eq!(constraint.key(), case.key, "{:?}", case.text);
        assert_eq!(constraint.operator(), &case.operator, "{:?}", case.text);
        assert_label_round_trip(&constraint, case.text);
        for value in case.matching {
            let labels = labels(&[("other", "x"), (case.key, value)]);
            assert!(
                constraint.matches(&labels),
                "{:?} should match {value:?}",
                case.text
            );
            assert!(
                constraint.matches_with(|key| labels.get(key).map(String::as_str)),
                "{:?}",
                case.text
            );
            assert!(constraint.operator().matches_value(value));
        }
        for value in case.failing {
            let labels = labels(&[(case.key, value)]);
            assert!(
                !constraint.matches(&labels),
                "{:?} should not match {value:?}",
                case.text
            );
            assert!(!constraint.operator().matches_value(value));
        }
    }
}

#[test]
fn label_missing_key_never_matches() {
    for case in label_cases() {
        let constraint = LabelConstraint::parse(case.text).unwrap();
        assert!(!constraint.matches(&Labels::new()), "{:?}", case.text);
        let others = labels(&[("other", "DE"), ("location2", "UK"), ("LOCATION", "DE")]);
        assert!(!constraint.matches(&others), "{:?}", case.text);
        assert!(!constraint.matches_with(|_| None), "{:?}", case.text);
    }
    // The rule also holds for the negative operators with any value.
    for text in [
        "location != DE",
        "location is not DE",
        "location not in (DE, AT)",
    ] {
        let constraint = LabelConstraint::parse(text).unwrap();
        assert!(!constraint.matches(&labels(&[("zone", "UK")])), "{text:?}");
    }
}

#[test]
fn label_values_accessor() {
    let constraint = LabelConstraint::parse("a in (x, y,)").unwrap();
    assert_eq!(constraint.operator().values(), ["x", "y"]);
    let constraint = LabelConstraint::parse("a != x").unwrap();
    assert_eq!(constraint.operator().values(), ["x"]);
}

#[test]
fn label_equality_is_by_meaning() {
    let same = [
        [
            "location is DE",
            "location = DE",
            "location==DE",
            " location  is\tDE ",
        ],
        [
            "location is not DE",
            "location != DE",
            "location is  not DE",
            "location!=DE",
        ],
        [
            "location in (DE, AT)",
            "location in (DE,AT,)",
            "location in(DE , AT,,)",
            "location  in (DE, AT)",
        ],
        [
            "location not in (DE)",
            "location not in (DE,)",
            "location not in(DE)",
            "location\tnot in (DE)",
        ],
    ];
    let mut set = HashSet::new();
    for group in &same {
        let first = LabelConstraint::parse(group[0]).unwrap();
        for text in group {
            let other = LabelConstraint::parse(text).unwrap();
            assert_eq!(first, other, "{:?} == {text:?}", group[0]);
            assert_eq!(hash_of(&first), hash_of(&other));
            assert_eq!(other.as_str(), *text);
            set.insert(other);
        }
    }
    assert_eq!(set.len(), same.len());

    for (a, b) in [
        ("location is DE", "location is not DE"),
        ("location is DE", "location in (DE)"),
        ("location in (DE)", "location not in (DE)"),
        ("location in (DE, AT)", "location in (AT, DE)"),
        ("location is DE", "zone is DE"),
        ("location is DE", "location is de"),
    ] {
        assert_ne!(
            LabelConstraint::parse(a).unwrap(),
            LabelConstraint::parse(b).unwrap(),
            "{a:?} != {b:?}"
        );
    }
}

#[test]
fn label_serde() {
    // Odd spacing survives serialization.
    let constraint = LabelConstraint::parse("location   is DE").unwrap();
    assert_eq!(
        serde_json::to_value(&constraint).unwrap(),
        serde_json::json!("location   is DE")
    );

    // A list of constraints, as in an application's spec.
    let json = serde_json::json!(["location is DE", "zone not in (a,b,)"]);
    let list: Vec<LabelConstraint> = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(list[1].operator(), &not_in(&["a", "b"]));
    assert_eq!(serde_json::to_value(&list).unwrap(), json);

    // The error is exactly the constraint error's message.
    let error = serde_json::from_value::<LabelConstraint>(serde_json::json!("location is"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        LabelConstraint::parse("location is")
            .unwrap_err()
            .to_string()
    );
    assert_eq!(
        error,
        "Invalid label constraint: expected a value after 'is' at position 11"
    );
    // serde_json::from_str appends the location to the same message.
    let error = serde_json::from_str::<LabelConstraint>("\"a in ()\"")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("Invalid label constraint: unexpected character ')' at position 6"),
        "{error}"
    );

    let error = serde_json::from_value::<LabelConstraint>(serde_json::json!(5))
        .unwrap_err()
        .to_string();
    assert!(error.contains("a label constraint expression"), "{error}");
}

#[test]
fn label_schema() {
    let schema = serde_json::to_value(schemars::schema_for!(LabelConstraint)).unwrap();
    assert_eq!(schema["type"], "string");
    assert_eq!(schema["title"], "LabelConstraint");
    let description = schema["description"].as_str().unwrap();
    for operator in ["is", "=", "==", "is not", "!=", "in (", "not in ("] {
        assert!(
            description.contains(operator),
            "{operator:?} in {description}"
        );
    }
}

// ---------------------------------------------------------------------------
// Label constraints: rejections
// ---------------------------------------------------------------------------

#[test]
fn label_rejections() {
    let cases: &[(&str, &str)] = &[
        ("", "empty expression"),
        ("   \t ", "empty expression"),
        ("location", "expected an operator"),
        ("location is", "expected a value after 'is' at position 11"),
        ("location =", "expected a value after '=' at position 10"),
        ("location ==", "expected a value after '==' at position 11"),
        ("location !=", "expected a value after '!=' at position 11"),
        ("location is not (", "expected a value after 'is not'"),
        ("location in", "expected '(' after 'in' at position 11"),
        (
            "location in DE",
            "unexpected word 'DE' at position 12, expected '(' after 'in'",
        ),
        (
            "location in ()",
            "unexpected character ')' at position 13, expected a value",
        ),
        (
            "location in (,)",
            "unexpected character ',' at position 13, expected a value",
        ),
        ("location in (,DE)", "unexpected character ','"),
        ("location in (DE", "expected ',' or ')' at position 15"),
        ("location in (DE,", "expected a value or ')' at position 16"),
        ("location in (DE AT)", "unexpected word 'AT' at position 16"),
        (
            "location in (DE,,AT)",
            "unexpected word 'AT' at position 17, expected ',' or ')'",
        ),
        (
            "location in (DE))",
            "unexpected character ')' at position 16, expected the end",
        ),
        ("location in ((DE))", "unexpected character '('"),
        ("location not (DE)", "expected 'in' after 'not'"),
        ("location not", "expected 'in' after 'not' at position 12"),
        ("location not in", "expected '(' after 'not in'"),
        ("location not in ()", "expected a value"),
        (
            "a b c",
            "unexpected word 'b' at position 2, expected an operator",
        ),
        ("loc(DE)", "unexpected character '(' at position 3"),
        (
            "loc is DE UK",
            "unexpected word 'UK' at position 10, expected the end of the expression",
        ),
        (
            "(loc) is DE",
            "unexpected character '(' at position 0, expected a label key",
        ),
        (
            "= DE",
            "unexpected operator '=' at position 0, expected a label key",
        ),
        (
            "loc === DE",
            "unexpected operator '=' at position 6, expected a value after '=='",
        ),
        (
            "loc > DE",
            "unexpected operator '>' at position 4, expected an operator",
        ),
        ("loc gt DE", "unexpected word 'gt' at position 4"),
        ("loc ! DE", "unexpected character '!' at position 4"),
        ("loc is\nDE", "unexpected character '\\n' at position 6"),
        ("loc is DE\n", "unexpected character '\\n' at position 9"),
        ("loc\r\nis DE", "unexpected character '\\r' at position 3"),
        (
            "lö\u{a0}is DE",
            "unexpected character '\u{a0}' at position 2",
        ),
        ("loc is -1", "Label value '-1' does not match the regex"),
        ("loc is DE-", "Label value 'DE-' does not match the regex"),
        (
            "loc in (DE, -AT)",
            "Label value '-AT' does not match the regex",
        ),
        (
            "loc not in (DE, ü)",
            "Label value 'ü' does not match the regex",
        ),
        ("$$ is a", "Label key '$$' does not match the regex"),
        ("a/b/c is a", "Label key 'a/b/c' does not match the regex"),
        ("größe is 1", "Label key 'größe' does not match the regex"),
        ("loc is x<y", "unexpected operator '<' at position 8"),
        // Positions count characters, not bytes.
        ("größe is", "expected a value after 'is' at position 8"),
        ("ü€ in (a", "expected ',' or ')' at position 8"),
        ("€€ = (", "unexpected character '(' at position 5"),
    ];
    for (text, expected) in cases {
        let error = LabelConstraint::parse(text)
            .map(|c| panic!("{text:?} should not parse, got {c:?}"))
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("Invalid label constraint: "),
            "{text:?}: {message}"
        );
        assert!(
            message.contains(expected),
            "{text:?}: {message:?} lacks {expected:?}"
        );
        assert_eq!(error.language(), ConstraintLanguage::Label);
    }
}

#[test]
fn label_error_messages_in_full() {
    let message = |text: &str| LabelConstraint::parse(text).unwrap_err().to_string();
    assert_eq!(message(""), "Invalid label constraint: empty expression");
    assert_eq!(
        message("$$ is a"),
        format!(
            "Invalid label constraint: {}",
            validate_label_key("$$").unwrap_err()
        )
    );
    assert_eq!(
        message("loc is -1"),
        format!(
            "Invalid label constraint: {}",
            validate_label_value("-1").unwrap_err()
        )
    );
    assert_eq!(
        LabelConstraint::parse("loc(DE)").unwrap_err(),
        ConstraintError::UnexpectedToken {
            language: ConstraintLanguage::Label,
            found: "(".into(),
            expected: "an operator ('is', '=', '==', 'is not', '!=', 'in' or 'not in')".into(),
            position: 3,
        }
    );
}

// ---------------------------------------------------------------------------
// Metric constraints: every operator spelling
// ---------------------------------------------------------------------------

struct MetricCase {
    text: &'static str,
    metric: &'static str,
    operator: MetricOperator,
    value: f64,
    matching: &'static [f64],
    failing: &'static [f64],
}

fn metric_cases() -> Vec<MetricCase> {
    use MetricOperator::*;
    let case = |text, operator, matching, failing| MetricCase {
        text,
        metric: "load",
        operator,
        value: 5.0,
        matching,
        failing,
    };
    const EQ: (&[f64], &[f64]) = (&[5.0], &[4.999, 5.001, 0.0, -5.0]);
    const NE: (&[f64], &[f64]) = (&[4.999, 5.001, 0.0, -5.0], &[5.0]);
    const GT: (&[f64], &[f64]) = (&[5.001, 1e9], &[5.0, 4.0, -6.0]);
    const GE: (&[f64], &[f64]) = (&[5.0, 5.001, 1e9], &[4.999, 0.0]);
    const LT: (&[f64], &[f64]) = (&[4.999, 0.0, -6.0], &[5.0, 5.001]);
    const LE: (&[f64], &[f64]) = (&[5.0, 4.999, -6.0], &[5.001, 1e9]);
    let mut cases = Vec::new();
    for (texts, operator, (matching, failing)) in [
        (
            &[
                "load == 5",
                "load = 5",
                "load is 5",
                "load==5",
                "load=5",
                "load is 5.0",
            ][..],
            Equal,
            EQ,
        ),
        (
            &["load != 5", "load is not 5", "load!=5", "load is \t not 5"][..],
            NotEqual,
            NE,
        ),
        (
            &[
                "load > 5",
                "load gt 5",
                "load greater than 5",
                "load>5",
                "load greater\tthan 5e0",
            ][..],
            GreaterThan,
            GT,
        ),
        (
            &[
                "load >= 5",
                "load => 5",
                "load gte 5",
                "load greater than or equal 5",
                "load>=5",
                "load=>5",
                "load greater  than or\tequal 5",
            ][..],
            GreaterThanOrEqual,
            GE,
        ),
        (
            &[
                "load < 5",
                "load lt 5",
                "load lesser than 5",
                "load<5",
                "load lesser than 05",
            ][..],
            LessThan,
            LT,
        ),
        (
            &[
                "load <= 5",
                "load =< 5",
                "load lte 5",
                "load lesser than or equal 5",
                "load<=5",
                "load=<5",
                " load\tlte  5 ",
            ][..],
            LessThanOrEqual,
            LE,
        ),
    ] {
        for text in texts {
            cases.push(case(text, operator, matching, failing));
        }
    }
    cases.push(MetricCase {
        text: "heat_demand_zone_1 gte 0.5",
        metric: "heat_demand_zone_1",
        operator: GreaterThanOrEqual,
        value: 0.5,
        matching: &[0.5, 1.0],
        failing: &[0.49],
    });
    cases.push(MetricCase {
        text: "example.com/latency lt 1e-3",
        metric: "example.com/latency",
        operator: LessThan,
        value: 0.001,
        matching: &[0.0005],
        failing: &[0.001, 0.002],
    });
    cases.push(MetricCase {
        text: "m is 1E3",
        metric: "m",
        operator: Equal,
        value: 1000.0,
        matching: &[1000.0],
        failing: &[1.0],
    });
    cases
}

#[test]
fn metric_operators_parse_and_match() {
    for case in metric_cases() {
        let constraint = MetricConstraint::parse(case.text)
            .unwrap_or_else(|e| panic!("{:?} should parse: {e}", case.text));
        assert_eq!(constraint.metric(), case.metric, "{:?}", case.text);
        assert_eq!(constraint.operator(), case.operator, "{:?}", case.text);
        assert_eq!(constraint.value(), case.value, "{:?}", case.text);
        assert_metric_round_trip(&constraint, case.text);
        for &value in case.matching {
            let get = |name: &str| (name == case.metric).then_some(value);
            assert!(
                constraint.matches_with(get),
                "{:?} should match {value}",
                case.text
            );
            let hash_map = HashMap::from([(case.metric.to_owned(), value)]);
            let index_map: IndexMap<String, f64> =
                IndexMap::from([("other".to_owned(), -1.0), (case.metric.to_owned(), value)]);
            let btree_map = BTreeMap::from([(case.metric.to_owned(), value)]);
            assert!(constraint.matches(&hash_map));
            assert!(constraint.matches(&index_map));
            assert!(constraint.matches(&btree_map));
            assert!(case.operator.compare(value, case.value));
        }
        for &value in case.failing {
            let get = |name: &str| (name == case.metric).then_some(value);
            assert!(
                !constraint.matches_with(get),
                "{:?} should not match {value}",
                case.text
            );
            let hash_map = HashMap::from([(case.metric.to_owned(), value)]);
            assert!(!constraint.matches(&hash_map));
        }
    }
}

#[test]
fn metric_missing_never_matches() {
    for case in metric_cases() {
        let constraint = MetricConstraint::parse(case.text).unwrap();
        assert!(!constraint.matches_with(|_| None), "{:?}", case.text);
        assert!(
            !constraint.matches(&HashMap::<String, f64>::new()),
            "{:?}",
            case.text
        );
        let others = IndexMap::from([("other".to_owned(), 5.0), ("LOAD".to_owned(), 5.0)]);
        assert!(!constraint.matches(&others), "{:?}", case.text);
    }
}

#[test]
fn metric_operator_symbols() {
    use MetricOperator::*;
    for (operator, symbol) in [
        (Equal, "=="),
        (NotEqual, "!="),
        (GreaterThan, ">"),
        (GreaterThanOrEqual, ">="),
        (LessThan, "<"),
        (LessThanOrEqual, "<="),
    ] {
        assert_eq!(operator.to_string(), symbol);
        // The symbol is a valid spelling of the operator.
        let constraint = MetricConstraint::parse(&format!("m {symbol} 1")).unwrap();
        assert_eq!(constraint.operator(), operator);
    }
}

#[test]
fn metric_equality_is_by_meaning() {
    let groups = [
        &[
            "load > 5",
            "load gt 5",
            "load greater than 5",
            "load>5.0",
            "load > 5e0",
        ][..],
        &[
            "load lte 0.5",
            "load <= 0.50",
            "load =< 5e-1",
            "load lesser than or equal 0.5",
        ][..],
        &["load is not 1", "load != 1"][..],
    ];
    for group in groups {
        let first = MetricConstraint::parse(group[0]).unwrap();
        for text in group {
            let other = MetricConstraint::parse(text).unwrap();
            assert_eq!(first, other, "{:?} == {text:?}", group[0]);
            assert_eq!(other.as_str(), *text);
        }
    }
    for (a, b) in [
        ("load > 5", "load >= 5"),
        ("load > 5", "load > 6"),
        ("load > 5", "heat > 5"),
        ("load == 5", "load != 5"),
        ("load lt 5", "load lte 5"),
    ] {
        assert_ne!(
            MetricConstraint::parse(a).unwrap(),
            MetricConstraint::parse(b).unwrap(),
            "{a:?} != {b:?}"
        );
    }
}

#[test]
fn metric_serde_and_schema() {
    let constraint = MetricConstraint::parse("load   gte\t5").unwrap();
    assert_eq!(
        serde_json::to_value(&constraint).unwrap(),
        serde_json::json!("load   gte\t5")
    );
    let error = serde_json::from_value::<MetricConstraint>(serde_json::json!("load > abc"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "Invalid metric constraint: value 'abc' is not a number"
    );

    let schema = serde_json::to_value(schemars::schema_for!(MetricConstraint)).unwrap();
    assert_eq!(schema["type"], "string");
    assert_eq!(schema["title"], "MetricConstraint");
    let description = schema["description"].as_str().unwrap();
    for operator in ["gte", "=>", "lesser than or equal", "is not"] {
        assert!(
            description.contains(operator),
            "{operator:?} in {description}"
        );
    }
}

// ---------------------------------------------------------------------------
// Metric constraints: rejections
// ---------------------------------------------------------------------------

#[test]
fn metric_rejections() {
    let cases: &[(&str, &str)] = &[
        ("", "empty expression"),
        ("load", "expected an operator"),
        ("load >", "expected a value after '>' at position 6"),
        (
            "load greater than",
            "expected a value after 'greater than' at position 17",
        ),
        (
            "load greater than or equal",
            "expected a value after 'greater than or equal'",
        ),
        (
            "load greater 5",
            "unexpected word '5' at position 13, expected 'than' after 'greater'",
        ),
        (
            "load lesser",
            "expected 'than' after 'lesser' at position 11",
        ),
        ("load is greater than 5", "'is greater than'"),
        ("load is lesser than 5", "'is lesser than'"),
        (
            "load less than 5",
            "unexpected word 'less' at position 5, expected an operator",
        ),
        ("load equals 5", "unexpected word 'equals'"),
        ("load > abc", "value 'abc' is not a number"),
        ("load > nan", "value 'nan' is not a finite number"),
        ("load > NaN", "value 'NaN' is not a finite number"),
        ("load > inf", "value 'inf' is not a finite number"),
        ("load > infinity", "value 'infinity' is not a finite number"),
        ("load > 1e999", "value '1e999' is not a finite number"),
        ("load > 1_000", "value '1_000' is not a number"),
        ("load > 0x10", "value '0x10' is not a number"),
        ("load is not", "value 'not' is not a number"),
        ("load > -1", "Label value '-1' does not match the regex"),
        ("load > .5", "Label value '.5' does not match the regex"),
        ("load > 5.", "Label value '5.' does not match the regex"),
        ("$$ > 1", "Label key '$$' does not match the regex"),
        (
            "load > 5 6",
            "unexpected word '6' at position 9, expected the end",
        ),
        (
            "load >> 5",
            "unexpected operator '>' at position 6, expected a value after '>'",
        ),
        ("load in (5)", "unexpected word 'in'"),
        ("load ! 5", "unexpected character '!' at position 5"),
        ("load\n> 5", "unexpected character '\\n' at position 4"),
        ("load > 5\n", "unexpected character '\\n' at position 8"),
        (
            "(load) > 5",
            "unexpected character '(' at position 0, expected a metric name",
        ),
        ("lo,ad > 5", "unexpected character ',' at position 2"),
        ("Ⅻ > 5", "Label key 'Ⅻ' does not match the regex"),
    ];
    for (text, expected) in cases {
        let error = MetricConstraint::parse(text)
            .map(|c| panic!("{text:?} should not parse, got {c:?}"))
            .unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("Invalid metric constraint: "),
            "{text:?}: {message}"
        );
        assert!(
            message.contains(expected),
            "{text:?}: {message:?} lacks {expected:?}"
        );
        assert_eq!(error.language(), ConstraintLanguage::Metric);
    }
}

// ---------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------

/// Checks everything that must hold for any input: no panic, and either a
/// constraint that keeps the text and survives a round trip, or an error in
/// the right language.
fn check_any_input(text: &str) {
    match LabelConstraint::parse(text) {
        Ok(constraint) => {
            assert_label_round_trip(&constraint, text);
            assert!(validate_label_key(constraint.key()).is_ok());
            assert!(!constraint.operator().values().is_empty());
            for value in constraint.operator().values() {
                assert!(validate_label_value(value).is_ok());
            }
        }
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.starts_with("Invalid label constraint: "),
                "{text:?}: {message}"
            );
        }
    }
    match MetricConstraint::parse(text) {
        Ok(constraint) => {
            assert_metric_round_trip(&constraint, text);
            assert!(constraint.value().is_finite());
            assert!(validate_label_key(constraint.metric()).is_ok());
        }
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.starts_with("Invalid metric constraint: "),
                "{text:?}: {message}"
            );
        }
    }
}

/// Pieces of near-valid constraints.
fn token_alphabet() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec![
            " ", " ", "\t", "(", ")", ",", "=", "==", "!=", "!", ">", ">=", "=>", "<", "<=",
            "=<", "is", "not", "in", "gt", "gte", "lt", "lte", "greater", "lesser", "than",
            "or", "equal", "location", "DE", "a.b", "x/y", "5", "0.5", "1e3", "-1", "nan",
            "inf", "ä", "€", "\n", "\r", "$$", "_",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z0-9_.-]{1,4}",
        1 => any::<char>().prop_map(String::from),
    ]
}

fn near_valid() -> impl Strategy<Value = String> {
    prop::collection::vec(token_alphabet(), 0..12).prop_map(|pieces| pieces.concat())
}

fn key() -> impl Strategy<Value = String> {
    (
        prop::option::weighted(0.2, "[a-z0-9]([a-z0-9.-]{0,8}[a-z0-9])?"),
        "[a-zA-Z0-9_]([a-zA-Z0-9_.-]{0,10}[a-zA-Z0-9_])?",
    )
        .prop_map(|(prefix, name)| match prefix {
            Some(prefix) => format!("{prefix}/{name}"),
            None => name,
        })
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(vec!["DE", "AT", "UK", "not", "in", "is", "a.b", "x_1", "0"])
            .prop_map(str::to_owned),
        1 => "[a-zA-Z0-9_]([a-zA-Z0-9_.-]{0,8}[a-zA-Z0-9_])?",
    ]
}

/// Joins tokens with generated blanks, forcing one space between two words.
fn join(tokens: &[String], blanks: &[String], outer: (&str, &str)) -> String {
    let is_word = |t: &str| !t.starts_with(['(', ')', ',', '=', '!', '<', '>']);
    let mut text = outer.0.to_owned();
    for (i, token) in tokens.iter().enumerate() {
        if i > 0 {
            let blank = &blanks[i % blanks.len()];
            if blank.is_empty() && is_word(&tokens[i - 1]) && is_word(token) {
                text.push(' ');
            } else {
                text.push_str(blank);
            }
        }
        text.push_str(token);
    }
    text.push_str(outer.1);
    text
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LabelKind {
    Equal,
    NotEqual,
    In,
    NotIn,
}

/// A valid label constraint: its text, key and operator.
fn label_constraint() -> impl Strategy<Value = (String, String, LabelOperator)> {
    (
        key(),
        select(vec![
            LabelKind::Equal,
            LabelKind::NotEqual,
            LabelKind::In,
            LabelKind::NotIn,
        ]),
        any::<Index>(),
        prop::collection::vec(value(), 1..5),
        0..4usize,
        prop::collection::vec("[ \t]{0,3}", 8),
        ("[ \t]{0,2}", "[ \t]{0,2}"),
    )
        .prop_map(
            |(key, kind, spelling, values, trailing, blanks, (before, after))| {
                let mut tokens = vec![key.clone()];
                let spell = |options: &[&[&str]]| -> Vec<String> {
                    spelling
                        .get(options)
                        .iter()
                        .map(|t| (*t).to_owned())
                        .collect()
                };
                let operator = match kind {
                    LabelKind::Equal => {
                        tokens.extend(spell(&[&["is"], &["="], &["=="]]));
                        tokens.push(values[0].clone());
                        LabelOperator::Equal(values[0].clone())
                    }
                    LabelKind::NotEqual => {
                        tokens.extend(spell(&[&["is", "not"], &["!="]]));
                        tokens.push(values[0].clone());
                        LabelOperator::NotEqual(values[0].clone())
                    }
                    LabelKind::In | LabelKind::NotIn => {
                        if kind == LabelKind::NotIn {
                            tokens.push("not".into());
                        }
                        tokens.push("in".into());
                        tokens.push("(".into());
                        for (i, value) in values.iter().enumerate() {
                            if i > 0 {
                                tokens.push(",".into());
                            }
                            tokens.push(value.clone());
                        }
                        tokens.extend(std::iter::repeat_n(",".to_owned(), trailing));
                        tokens.push(")".into());
                        if kind == LabelKind::In {
                            LabelOperator::In(values)
                        } else {
                            LabelOperator::NotIn(values)
                        }
                    }
                };
                (join(&tokens, &blanks, (&before, &after)), key, operator)
            },
        )
}

/// Labels to evaluate a constraint against: the key is missing, has a random
/// value or has one of the constraint's values; other labels around it.
fn labels_for(key: &str, operator: &LabelOperator, mode: u8, pick: Index, random: &str) -> Labels {
    let mut labels = labels(&[("zz-other", "DE"), ("zz-more", "not")]);
    labels.shift_remove(key);
    match mode % 3 {
        0 => {}
        1 => {
            labels.insert(key.to_owned(), random.to_owned());
        }
        _ => {
            labels.insert(key.to_owned(), pick.get(operator.values()).clone());
        }
    }
    labels
}

/// The reference semantics, written independently of the implementation.
fn reference_label_match(operator: &LabelOperator, label: Option<&str>) -> bool {
    let Some(label) = label else { return false };
    match operator {
        LabelOperator::Equal(v) => label == v,
        LabelOperator::NotEqual(v) => label != v,
        LabelOperator::In(vs) => vs.iter().any(|v| v == label),
        LabelOperator::NotIn(vs) => !vs.iter().any(|v| v == label),
    }
}

/// Non-negative numbers, written as label values.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..1000).prop_map(|n| n.to_string()),
        (0.0f64..1000.0).prop_map(|x| format!("{x}")),
        (1u32..100, -5i32..6).prop_map(|(m, e)| format!("{m}e{e}")),
        (0u32..100, 1u32..100).prop_map(|(a, b)| format!("{a}.{b}")),
    ]
    .prop_filter("a valid label value", |text| {
        validate_label_value(text).is_ok()
    })
}

const METRIC_SPELLINGS: &[(&[&str], MetricOperator)] = &[
    (&["=="], MetricOperator::Equal),
    (&["="], MetricOperator::Equal),
    (&["is"], MetricOperator::Equal),
    (&["!="], MetricOperator::NotEqual),
    (&["is", "not"], MetricOperator::NotEqual),
    (&[">"], MetricOperator::GreaterThan),
    (&["gt"], MetricOperator::GreaterThan),
    (&["greater", "than"], MetricOperator::GreaterThan),
    (&[">="], MetricOperator::GreaterThanOrEqual),
    (&["=>"], MetricOperator::GreaterThanOrEqual),
    (&["gte"], MetricOperator::GreaterThanOrEqual),
    (
        &["greater", "than", "or", "equal"],
        MetricOperator::GreaterThanOrEqual,
    ),
    (&["<"], MetricOperator::LessThan),
    (&["lt"], MetricOperator::LessThan),
    (&["lesser", "than"], MetricOperator::LessThan),
    (&["<="], MetricOperator::LessThanOrEqual),
    (&["=<"], MetricOperator::LessThanOrEqual),
    (&["lte"], MetricOperator::LessThanOrEqual),
    (
        &["lesser", "than", "or", "equal"],
        MetricOperator::LessThanOrEqual,
    ),
];

/// A valid metric constraint: its text, metric name, operator and value.
fn metric_constraint() -> impl Strategy<Value = (String, String, MetricOperator, f64)> {
    (
        key(),
        select(METRIC_SPELLINGS),
        number(),
        prop::collection::vec("[ \t]{0,3}", 8),
        ("[ \t]{0,2}", "[ \t]{0,2}"),
    )
        .prop_map(
            |(metric, (spelling, operator), value, blanks, (before, after))| {
                let mut tokens = vec![metric.clone()];
                tokens.extend(spelling.iter().map(|t| (*t).to_owned()));
                tokens.push(value.clone());
                let number: f64 = value.parse().unwrap();
                (
                    join(&tokens, &blanks, (&before, &after)),
                    metric,
                    operator,
                    number,
                )
            },
        )
}

fn reference_metric_match(operator: MetricOperator, metric: Option<f64>, value: f64) -> bool {
    let Some(metric) = metric else { return false };
    match operator {
        MetricOperator::Equal => metric == value,
        MetricOperator::NotEqual => metric != value,
        MetricOperator::GreaterThan => metric > value,
        MetricOperator::GreaterThanOrEqual => metric >= value,
        MetricOperator::LessThan => metric < value,
        MetricOperator::LessThanOrEqual => metric <= value,
    }
}

/// Ways to damage a valid expression.
#[derive(Debug, Clone)]
enum Corruption {
    Truncate(Index),
    Delete(Index),
    Insert(Index, String),
    Replace(Index, String),
    Swap(Index, Index),
}

fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        any::<Index>().prop_map(Corruption::Truncate),
        any::<Index>().prop_map(Corruption::Delete),
        (any::<Index>(), token_alphabet()).prop_map(|(i, s)| Corruption::Insert(i, s)),
        (any::<Index>(), token_alphabet()).prop_map(|(i, s)| Corruption::Replace(i, s)),
        (any::<Index>(), any::<Index>()).prop_map(|(i, j)| Corruption::Swap(i, j)),
    ]
}

fn corrupt(text: &str, corruptions: &[Corruption]) -> String {
    let mut chars: Vec<String> = text.chars().map(String::from).collect();
    for corruption in corruptions {
        if chars.is_empty() {
            break;
        }
        match corruption {
            Corruption::Truncate(i) => chars.truncate(i.index(chars.len())),
            Corruption::Delete(i) => {
                chars.remove(i.index(chars.len()));
            }
            Corruption::Insert(i, s) => chars.insert(i.index(chars.len() + 1), s.clone()),
            Corruption::Replace(i, s) => {
                let i = i.index(chars.len());
                chars[i] = s.clone();
            }
            Corruption::Swap(i, j) => {
                let (i, j) = (i.index(chars.len()), j.index(chars.len()));
                chars.swap(i, j);
            }
        }
    }
    chars.concat()
}

proptest! {
    #[test]
    fn parse_never_panics_on_arbitrary_strings(text in any::<String>()) {
        check_any_input(&text);
    }

    #[test]
    fn parse_never_panics_on_printable_strings(text in "\\PC{0,40}") {
        check_any_input(&text);
    }

    #[test]
    fn parse_never_panics_on_near_valid_input(text in near_valid()) {
        check_any_input(&text);
    }

    #[test]
    fn valid_label_constraints_parse_and_evaluate(
        (text, key, operator) in label_constraint(),
        mode in any::<u8>(),
        pick in any::<Index>(),
        random in value(),
    ) {
        let constraint = LabelConstraint::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(constraint.key(), key.as_str());
        prop_assert_eq!(constraint.operator(), &operator);
        assert_label_round_trip(&constraint, &text);

        let labels = labels_for(&key, &operator, mode, pick, &random);
        let expected = reference_label_match(&operator, labels.get(&key).map(String::as_str));
        prop_assert_eq!(constraint.matches(&labels), expected, "{:?} on {:?}", text, labels);
        prop_assert_eq!(
            constraint.matches_with(|k| labels.get(k).map(String::as_str)),
            expected
        );
        // A missing key never matches.
        let mut without = labels.clone();
        without.shift_remove(&key);
        prop_assert!(!constraint.matches(&without));
    }

    #[test]
    fn valid_metric_constraints_parse_and_evaluate(
        (text, metric, operator, value) in metric_constraint(),
        mode in 0u8..5,
        random in 0.0f64..1000.0,
    ) {
        let constraint = MetricConstraint::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
        prop_assert_eq!(constraint.metric(), metric.as_str());
        prop_assert_eq!(constraint.operator(), operator);
        prop_assert_eq!(constraint.value(), value);
        assert_metric_round_trip(&constraint, &text);

        let actual = match mode {
            0 => None,
            1 => Some(random),
            2 => Some(value),
            3 => Some(value + 1.0),
            _ => Some(value - 1.0),
        };
        let mut metrics: IndexMap<String, f64> = IndexMap::from([("zz-other".to_owned(), value)]);
        metrics.shift_remove(&metric);
        if let Some(actual) = actual {
            metrics.insert(metric.clone(), actual);
        }
        let expected = reference_metric_match(operator, actual, value);
        prop_assert_eq!(constraint.matches(&metrics), expected, "{:?} on {:?}", text, metrics);
        prop_assert_eq!(
            constraint.matches_with(|name| metrics.get(name).copied()),
            expected
        );
        prop_assert!(!constraint.matches_with(|_| None));
    }

    #[test]
    fn corrupted_label_constraints_fail_cleanly(
        (text, _key, _operator) in label_constraint(),
        corruptions in prop::collection::vec(corruption(), 1..4),
    ) {
        check_any_input(&corrupt(&text, &corruptions));
    }

    #[test]
    fn corrupted_metric_constraints_fail_cleanly(
        (text, _metric, _operator, _value) in metric_constraint(),
        corruptions in prop::collection::vec(corruption(), 1..4),
    ) {
        check_any_input(&corrupt(&text, &corruptions));
    }
}
