//! Why an object is in a failed or degraded state: [`Reason`] and [`ReasonCode`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A machine-readable cause, serialized by name (`"NO_SUITABLE_RESOURCE"`).
///
/// The numbers are Krake's (`ReasonCode` is an `IntEnum` in Krake); they are
/// available through [`ReasonCode::number`] but never written to the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum ReasonCode {
    InternalError,
    InvalidResource,
    UnsupportedResource,
    InvalidCustomResource,
    InvalidToscaManifest,
    ClusterNotReachable,
    NoSuitableResource,
    KubernetesError,
    CreateFailed,
    ReconcileFailed,
    ReconfigureFailed,
    DeleteFailed,
    RetrieveFailed,
    NotFound,
    OpenstackError,
    InvalidClusterTemplate,
    InvalidMetric,
    UnreachableMetricsProvider,
    UnknownMetric,
    UnknownMetricsProvider,
}

impl ReasonCode {
    /// Krake's numeric value of the code.
    pub fn number(self) -> u16 {
        use ReasonCode::*;
        match self {
            InternalError => 1,
            InvalidResource => 10,
            UnsupportedResource => 11,
            InvalidCustomResource => 12,
            InvalidToscaManifest => 13,
            ClusterNotReachable => 20,
            NoSuitableResource => 50,
            KubernetesError => 60,
            CreateFailed => 70,
            ReconcileFailed => 71,
            ReconfigureFailed => 72,
            DeleteFailed => 73,
            RetrieveFailed => 74,
            NotFound => 75,
            OpenstackError => 80,
            InvalidClusterTemplate => 81,
            InvalidMetric => 91,
            UnreachableMetricsProvider => 92,
            UnknownMetric => 93,
            UnknownMetricsProvider => 94,
        }
    }
}

/// A code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Reason {
    /// The machine-readable cause.
    pub code: ReasonCode,
    /// What happened, for people.
    pub message: String,
}

impl Reason {
    /// A reason from its code and message.
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Reason {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_by_name() {
        let reason = Reason::new(ReasonCode::NoSuitableResource, "none");
        assert_eq!(
            serde_json::to_value(&reason).unwrap(),
            serde_json::json!({"code": "NO_SUITABLE_RESOURCE", "message": "none"})
        );
        assert_eq!(ReasonCode::NoSuitableResource.number(), 50);
        let code: ReasonCode = serde_json::from_str("\"UNREACHABLE_METRICS_PROVIDER\"").unwrap();
        assert_eq!(code.number(), 92);
        assert!(serde_json::from_str::<ReasonCode>("50").is_err());
    }
}
