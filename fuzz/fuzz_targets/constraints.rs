//! Fuzzes the label and metric constraint parsers: any input must either
//! parse into a constraint that keeps its text and survives a JSON round
//! trip, or fail with an error in the right language. Nothing may panic.
//!
//! Run with `cargo +nightly fuzz run constraints` from the workspace root.

#![no_main]

use krake_data::constraints::{LabelConstraint, MetricConstraint};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    match LabelConstraint::parse(text) {
        Ok(constraint) => {
            assert_eq!(constraint.as_str(), text);
            let json = serde_json::to_string(&constraint).expect("serializes");
            let back: LabelConstraint = serde_json::from_str(&json).expect("parses again");
            assert_eq!(back, constraint);
            assert_eq!(back.as_str(), text);
        }
        Err(error) => {
            assert!(error.to_string().starts_with("Invalid label constraint: "));
        }
    }
    match MetricConstraint::parse(text) {
        Ok(constraint) => {
            assert_eq!(constraint.as_str(), text);
            assert!(constraint.value().is_finite());
            let json = serde_json::to_string(&constraint).expect("serializes");
            let back: MetricConstraint = serde_json::from_str(&json).expect("parses again");
            assert_eq!(back, constraint);
            assert_eq!(back.as_str(), text);
        }
        Err(error) => {
            assert!(error.to_string().starts_with("Invalid metric constraint: "));
        }
    }
});
