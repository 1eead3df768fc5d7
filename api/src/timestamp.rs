//! Timestamps as a JavaScript client reads them. The API's times are nanoseconds since the
//! epoch (`mtime_ns`), which a JSON number in JavaScript (a double) cannot hold to the
//! nanosecond past 2^53 (April 1970); beside each, the same instant as an ISO 8601 string in UTC
//! with all nine digits (`mtime`: `2026-03-04T05:06:07.123456789Z`), which `Date.parse` reads
//! (to the millisecond) and which sorts as the instants do.

use serde::{Serialize, Serializer};

use storage_tracker_proto::calendar::utc_fields;

/// Nanoseconds since the epoch, written as an ISO 8601 string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iso(pub i64);

const NS_PER_SECOND: i64 = 1_000_000_000;

impl std::fmt::Display for Iso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nanos = self.0.rem_euclid(NS_PER_SECOND);
        let (year, month, day, hour, minute, second) = utc_fields(self.0.div_euclid(NS_PER_SECOND));
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nanos:09}Z"
        )
    }
}

impl Serialize for Iso {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_read_as_utc_with_nine_digits_before_and_after_the_epoch() {
        assert_eq!(Iso(0).to_string(), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            Iso(1_772_600_767_123_456_789).to_string(),
            "2026-03-04T05:06:07.123456789Z"
        );
        assert_eq!(Iso(-1).to_string(), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(Iso(i64::MIN).to_string(), "1677-09-21T00:12:43.145224192Z");
        assert_eq!(Iso(i64::MAX).to_string(), "2262-04-11T23:47:16.854775807Z");
    }
}
