//! Decoding one JSON record into an [`Event`] or a [`DeadLetterReason`].
//!
//! Checks run in this order and the first failure names the reason: `too_large` (before
//! any parsing), `invalid_json` (not UTF-8, not JSON, trailing data, or not an object),
//! `missing_field` (any of `user_id`, `page`, `timestamp` absent or null), `invalid_field`
//! (`user_id` or `page` not a non-empty string), `invalid_timestamp`. Unknown fields are
//! skipped; when a key repeats, its last value counts (as in most JSON readers). Strings
//! without escapes are borrowed from the input, so a valid record costs no allocation
//! beyond the inline strings of the event.

use std::borrow::Cow;
use std::fmt;

use compact_str::CompactString;
use serde::Deserializer as _;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

use crate::{DeadLetterReason, Event, parse_iso8601, timestamp::MAX_EVENT_TIME};

/// The default largest record, in bytes, that is decoded (64 KiB).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;

/// Decodes one record.
pub fn decode_event(record: &[u8], max_event_bytes: usize) -> Result<Event, DeadLetterReason> {
    if record.len() > max_event_bytes {
        return Err(DeadLetterReason::TooLarge);
    }
    // Validated up front: values that are skipped unread must be UTF-8 too.
    let text = std::str::from_utf8(record).map_err(|_| DeadLetterReason::InvalidJson)?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let fields = deserializer
        .deserialize_map(FieldsVisitor)
        .and_then(|fields| deserializer.end().map(|()| fields))
        .map_err(|_| DeadLetterReason::InvalidJson)?;
    fields.into_event()
}

/// A field value, classified just enough to validate it.
enum Value<'de> {
    Absent,
    Null,
    Text(Cow<'de, str>),
    Integer(i128),
    Other,
}

struct RawFields<'de> {
    user_id: Value<'de>,
    page: Value<'de>,
    timestamp: Value<'de>,
}

impl RawFields<'_> {
    fn into_event(self) -> Result<Event, DeadLetterReason> {
        let present = |value: &Value<'_>| !matches!(value, Value::Absent | Value::Null);
        if !(present(&self.user_id) && present(&self.page) && present(&self.timestamp)) {
            return Err(DeadLetterReason::MissingField);
        }
        let user_id = non_empty_text(self.user_id)?;
        let page = non_empty_text(self.page)?;
        let time = match self.timestamp {
            Value::Text(text) => parse_iso8601(&text),
            Value::Integer(ms) => u64::try_from(ms).ok().filter(|&ms| ms <= MAX_EVENT_TIME),
            _ => None,
        }
        .ok_or(DeadLetterReason::InvalidTimestamp)?;
        Ok(Event {
            user_id,
            page,
            time,
        })
    }
}

fn non_empty_text(value: Value<'_>) -> Result<CompactString, DeadLetterReason> {
    match value {
        Value::Text(text) if !text.is_empty() => Ok(CompactString::from(text)),
        _ => Err(DeadLetterReason::InvalidField),
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = RawFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = RawFields {
            user_id: Value::Absent,
            page: Value::Absent,
            timestamp: Value::Absent,
        };
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let slot = match key.as_ref() {
                "user_id" => &mut fields.user_id,
                "page" => &mut fields.page,
                "timestamp" => &mut fields.timestamp,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = map.next_value_seed(ValueSeed)?;
        }
        Ok(fields)
    }
}

struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value<'de>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Value::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Value::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Value::Text(Cow::Owned(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Value::Integer(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Value::Integer(v.into()))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Value::Other)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Value::Other)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Value::Other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeadLetterReason::*;

    fn decode(text: &str) -> Result<Event, DeadLetterReason> {
        decode_event(text.as_bytes(), DEFAULT_MAX_EVENT_BYTES)
    }

    #[test]
    fn decodes_a_reference_record_and_ignores_unknown_fields() {
        let event = decode(
            r#"{"event_id":"e1","user_id":"u1","page":"/cart","timestamp":"2026-11-24T12:00:00.123456",
                "event_type":null,"referrer":{"nested":[1,2,{"a":null}]},"user_agent":"x"}"#,
        )
        .unwrap();
        assert_eq!(
            event,
            Event {
                user_id: "u1".into(),
                page: "/cart".into(),
                time: 1_795_521_600_123
            }
        );
    }

    #[test]
    fn integer_timestamps_are_epoch_millis() {
        assert_eq!(
            decode(r#"{"user_id":"u","page":"p","timestamp":1795521600123}"#)
                .unwrap()
                .time,
            1_795_521_600_123
        );
        assert_eq!(
            decode(r#"{"user_id":"u","page":"p","timestamp":0}"#)
                .unwrap()
                .time,
            0
        );
    }

    #[test]
    fn escapes_are_decoded_and_last_duplicate_wins() {
        let event =
            decode(r#"{"user_id":"a","user_\u0069d":"b\"c","page":"/caf\u00e9","timestamp":5}"#)
                .unwrap();
        assert_eq!(event.user_id, "b\"c");
        assert_eq!(event.page, "/café");
    }

    #[test]
    fn every_dead_letter_reason_is_recognised() {
        let cases = [
            ("", InvalidJson),
            ("   ", InvalidJson),
            ("not json", InvalidJson),
            (r#"["user_id","page"]"#, InvalidJson),
            (r#""just a string""#, InvalidJson),
            (
                r#"{"user_id":"u","page":"p","timestamp":5} trailing"#,
                InvalidJson,
            ),
            (r#"{"user_id":"u","page":"p","timestamp":5"#, InvalidJson),
            (r#"{"page":"p","timestamp":5}"#, MissingField),
            (r#"{"user_id":null,"page":"p","timestamp":5}"#, MissingField),
            (r#"{"user_id":"u","timestamp":5}"#, MissingField),
            (r#"{"user_id":"u","page":"p"}"#, MissingField),
            (
                r#"{"user_id":"u","page":"p","timestamp":null}"#,
                MissingField,
            ),
            (r#"{"user_id":7,"page":"p","timestamp":5}"#, InvalidField),
            (r#"{"user_id":"","page":"p","timestamp":5}"#, InvalidField),
            (
                r#"{"user_id":"u","page":["p"],"timestamp":5}"#,
                InvalidField,
            ),
            (r#"{"user_id":"u","page":"","timestamp":5}"#, InvalidField),
            (
                r#"{"user_id":"u","page":"p","timestamp":"yesterday"}"#,
                InvalidTimestamp,
            ),
            (
                r#"{"user_id":"u","page":"p","timestamp":-1}"#,
                InvalidTimestamp,
            ),
            (
                r#"{"user_id":"u","page":"p","timestamp":1.5}"#,
                InvalidTimestamp,
            ),
            (
                r#"{"user_id":"u","page":"p","timestamp":true}"#,
                InvalidTimestamp,
            ),
            (
                r#"{"user_id":"u","page":"p","timestamp":253402300800000}"#,
                InvalidTimestamp,
            ),
            (
                r#"{"user_id":"u","page":"p","timestamp":99999999999999999999999}"#,
                InvalidTimestamp,
            ),
        ];
        for (text, reason) in cases {
            assert_eq!(decode(text), Err(reason), "{text:?}");
        }
        assert_eq!(
            decode_event(
                b"{\"user_id\":\"\xff\",\"page\":\"p\",\"timestamp\":5}",
                1024
            ),
            Err(InvalidJson)
        );
        let skipped = b"{\"user_id\":\"u\",\"page\":\"p\",\"timestamp\":5,\"x\":[\"\xc3\"]}";
        assert_eq!(
            decode_event(skipped, 1024),
            Err(InvalidJson),
            "bytes in values that are skipped must be UTF-8 too"
        );
    }

    #[test]
    fn missing_wins_over_invalid_and_size_is_checked_first() {
        assert_eq!(
            decode(r#"{"user_id":7,"timestamp":"bad"}"#),
            Err(MissingField)
        );
        assert_eq!(
            decode(r#"{"user_id":"","page":"p","timestamp":"bad"}"#),
            Err(InvalidField)
        );
        let record = r#"{"user_id":"u","page":"p","timestamp":5}"#;
        assert!(decode_event(record.as_bytes(), record.len()).is_ok());
        assert_eq!(
            decode_event(record.as_bytes(), record.len() - 1),
            Err(TooLarge)
        );
        assert_eq!(decode_event(b"not json at all", 3), Err(TooLarge));
    }
}
