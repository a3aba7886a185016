//! Timestamps as Krake writes them: ISO 8601 in UTC with an explicit offset.
//!
//! Krake's server is written in Python and serializes `datetime` values with
//! `isoformat()`: `2023-02-24T10:00:00.123456+00:00`, and without the fraction
//! when the microseconds are zero (`2023-02-24T10:00:00+00:00`). [`Timestamp`]
//! writes exactly that, keeps microsecond precision, and reads any RFC 3339 or
//! ISO 8601 date-time with an offset (a `Z` suffix included).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, SubsecRound, Timelike, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time with microsecond precision, always in UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

/// The text could not be read as a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid datetime: {input:?}")]
pub struct TimestampError {
    input: String,
}

impl Timestamp {
    /// The current time, truncated to microseconds (the precision Krake keeps).
    pub fn now() -> Self {
        Self::from_datetime(Utc::now())
    }

    /// Wraps a chrono date-time, truncating it to microseconds.
    pub fn from_datetime(datetime: DateTime<Utc>) -> Self {
        Timestamp(datetime.trunc_subsecs(6))
    }

    /// The time as seconds since the Unix epoch (with a fraction).
    pub fn as_unix_seconds(&self) -> f64 {
        self.0.timestamp() as f64 + f64::from(self.0.timestamp_subsec_micros()) / 1e6
    }

    /// The wrapped chrono date-time.
    pub fn as_datetime(&self) -> &DateTime<Utc> {
        &self.0
    }
}

impl std::ops::Add<chrono::TimeDelta> for Timestamp {
    type Output = Timestamp;

    /// The time `duration` later; unchanged if that is beyond the
    /// representable range.
    fn add(self, duration: chrono::TimeDelta) -> Timestamp {
        Timestamp(self.0.checked_add_signed(duration).unwrap_or(self.0))
    }
}

impl std::ops::Sub for Timestamp {
    type Output = chrono::TimeDelta;

    /// The time between two timestamps.
    fn sub(self, earlier: Timestamp) -> chrono::TimeDelta {
        self.0.signed_duration_since(earlier.0)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(value: DateTime<Utc>) -> Self {
        Self::from_datetime(value)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.nanosecond() / 1_000;
        if micros == 0 {
            write!(f, "{}+00:00", self.0.format("%Y-%m-%dT%H:%M:%S"))
        } else {
            write!(
                f,
                "{}.{:06}+00:00",
                self.0.format("%Y-%m-%dT%H:%M:%S"),
                micros
            )
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = || TimestampError {
            input: input.to_owned(),
        };
        if let Ok(datetime) = DateTime::parse_from_rfc3339(input) {
            return Ok(Self::from_datetime(datetime.with_timezone(&Utc)));
        }
        // Python's isoformat() may use a space instead of "T".
        if let Ok(datetime) = DateTime::parse_from_str(input, "%Y-%m-%d %H:%M:%S%.f%:z") {
            return Ok(Self::from_datetime(datetime.with_timezone(&Utc)));
        }
        // A naive value (no offset) is taken as UTC, as Krake does for its own values.
        NaiveDateTime::parse_from_str(input, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|naive| Self::from_datetime(naive.and_utc()))
            .map_err(|_| err())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "format": "date-time",
            "description": "ISO 8601 date and time in UTC, e.g. 2023-02-24T10:00:00.123456+00:00",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_python_isoformat() {
        let t: Timestamp = "2026-11-23T00:15:54.741882+00:00".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-23T00:15:54.741882+00:00");
        let whole: Timestamp = "2026-11-23T00:15:54+00:00".parse().unwrap();
        assert_eq!(whole.to_string(), "2026-11-23T00:15:54+00:00");
        let small: Timestamp = "2026-11-23T00:15:54.000100+00:00".parse().unwrap();
        assert_eq!(small.to_string(), "2026-11-23T00:15:54.000100+00:00");
    }

    #[test]
    fn reads_other_offsets_and_z() {
        let t: Timestamp = "2026-11-23T02:15:54.5+02:00".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-23T00:15:54.500000+00:00");
        let z: Timestamp = "2026-11-23T00:15:54Z".parse().unwrap();
        assert_eq!(z.to_string(), "2026-11-23T00:15:54+00:00");
        let nanos: Timestamp = "2026-11-23T00:15:54.123456789Z".parse().unwrap();
        assert_eq!(nanos.to_string(), "2026-11-23T00:15:54.123456+00:00");
    }

    #[test]
    fn rejects_garbage() {
        let err = "yesterday".parse::<Timestamp>().unwrap_err();
        assert_eq!(err.to_string(), "not a valid datetime: \"yesterday\"");
        assert!(serde_json::from_str::<Timestamp>("12").is_err());
    }

    #[test]
    fn arithmetic() {
        let t: Timestamp = "2026-11-23T00:00:00+00:00".parse().unwrap();
        let later = t + chrono::TimeDelta::seconds(90);
        assert_eq!(later.to_string(), "2026-11-23T00:01:30+00:00");
        assert_eq!(later - t, chrono::TimeDelta::seconds(90));
        assert!(later > t);
        assert_eq!(t.as_unix_seconds(), 1_795_392_000.0);
    }

    #[test]
    fn serde_round_trip() {
        let t = Timestamp::now();
        let json = serde_json::to_string(&t).unwrap();
        let back: Timestamp = serde_json::from_str(&json).unwrap();
        assert_eq!(t, back);
    }
}
