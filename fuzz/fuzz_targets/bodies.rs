//! Fuzzes the body decoders of every kind: any bytes given to the create
//! fast path (`KindInfo::create_object`) and, when they are JSON, to
//! `KindInfo::parse` in both modes and to every request body's parser.
//! Nothing may panic, and whatever the fast path would store must read back
//! as a full object of its kind.
//!
//! Run with `cargo +nightly fuzz run bodies` from the workspace root (or
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run bodies` on stable). The same decoders
//! run under proptest in the test suite: `krake-data/tests/fuzz.rs`.

#![no_main]

use krake_data::Timestamp;
use krake_data::registry::{self, NewObject, ParseMode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let new = NewObject {
        namespace: Some("fuzz"),
        uid: "u",
        now: Timestamp::now(),
    };
    let value = serde_json::from_slice::<serde_json::Value>(bytes).ok();
    for kind in registry::ALL {
        if let Some(created) = (kind.create_object)(bytes, &new) {
            let stored: serde_json::Value =
                serde_json::from_slice(&created.bytes).expect("the fast path stores JSON");
            assert!(
                kind.parse(stored, ParseMode::Full).is_ok(),
                "{} stored what it cannot read",
                kind.kind
            );
        }
        if let Some(value) = &value {
            for mode in [ParseMode::Create, ParseMode::Full] {
                if let Ok(parsed) = kind.parse(value.clone(), mode) {
                    serde_json::to_vec(&parsed).expect("serializes");
                }
            }
        }
    }
    if let Some(value) = &value {
        for body in registry::BODIES {
            if let Ok(parsed) = (body.parse)(value.clone()) {
                serde_json::to_vec(&parsed).expect("serializes");
            }
        }
    }
});
