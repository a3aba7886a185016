//! Watch events: one line of a watch stream.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What happened to the object of a [`WatchEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WatchEventType {
    /// The object was created.
    Added,
    /// The object was changed.
    Modified,
    /// The object was removed from the store; the event carries its last state.
    Deleted,
}

/// One line of a watch stream: `{"type": "ADDED", "object": {...}}`.
///
/// `T` is the object's type; the default, [`serde_json::Value`], reads any kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WatchEvent<T = serde_json::Value> {
    /// What happened.
    #[serde(rename = "type")]
    pub event_type: WatchEventType,
    /// The object as it is after the change (before it, for `DELETED`).
    pub object: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_krake_watch_lines() {
        let line = r#"{"type": "MODIFIED", "object": {"kind": "Application"}}"#;
        let event: WatchEvent = serde_json::from_str(line).unwrap();
        assert_eq!(event.event_type, WatchEventType::Modified);
        assert_eq!(event.object["kind"], "Application");
        assert!(
            serde_json::from_str::<WatchEvent>(r#"{"type": "UPDATED", "object": {}}"#).is_err()
        );
    }
}
