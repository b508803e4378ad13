//! Event-time parsing and formatting.
//!
//! Accepted strings are ISO-8601 date-times `YYYY-MM-DD(T|t| )HH:MM[:SS[.fraction]][offset]`
//! with a fraction of 1 to 9 digits (truncated to milliseconds) and an offset of `Z`, `z`,
//! `±HH:MM`, `±HHMM` or `±HH`; no offset means UTC. Valid event times lie between the epoch
//! and the end of year 9999; anything else is `invalid_timestamp`.

use crate::EventTime;

/// The last representable event time: 9999-12-31T23:59:59.999Z.
pub const MAX_EVENT_TIME: EventTime = 253_402_300_799_999;

const MS_PER_DAY: i64 = 86_400_000;

/// Parses an ISO-8601 date-time into epoch milliseconds, or `None` if it is malformed or
/// outside `0..=MAX_EVENT_TIME`.
pub fn parse_iso8601(text: &str) -> Option<EventTime> {
    let mut cursor = Cursor {
        bytes: text.as_bytes(),
        pos: 0,
    };
    let year = cursor.digits(4)? as i64;
    cursor.expect(b'-')?;
    let month = cursor.digits(2)?;
    cursor.expect(b'-')?;
    let day = cursor.digits(2)?;
    match cursor.next()? {
        b'T' | b't' | b' ' => {}
        _ => return None,
    }
    let hour = cursor.digits(2)?;
    cursor.expect(b':')?;
    let minute = cursor.digits(2)?;
    let mut second = 0;
    let mut millis = 0;
    if cursor.peek() == Some(b':') {
        cursor.pos += 1;
        second = cursor.digits(2)?;
        if cursor.peek() == Some(b'.') {
            cursor.pos += 1;
            millis = cursor.fraction_millis()?;
        }
    }
    let offset_minutes = cursor.offset()?;
    if cursor.pos != cursor.bytes.len() {
        return None;
    }
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let local_ms = days * MS_PER_DAY
        + i64::from(hour) * 3_600_000
        + i64::from(minute) * 60_000
        + i64::from(second) * 1000
        + i64::from(millis);
    let utc_ms = local_ms - offset_minutes * 60_000;
    u64::try_from(utc_ms)
        .ok()
        .filter(|&ms| ms <= MAX_EVENT_TIME)
}

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`, always with milliseconds (one
/// width for tables). A year after 9999 (the end of a window that holds the last event
/// time) is written in ISO-8601's expanded form, `+` and its digits.
///
/// The digits are written straight into the 24 bytes (the output topics format two of
/// these per record, so a formatting machinery per field showed in the writer's profile).
pub fn format_iso8601_utc(time: EventTime) -> String {
    let ms = time as i64;
    let (year, month, day) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    let in_day = ms.rem_euclid(MS_PER_DAY);
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut value: i64| {
        for digit in text[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, i64::from(month));
    put(8, 2, i64::from(day));
    put(11, 2, in_day / 3_600_000);
    put(14, 2, in_day / 60_000 % 60);
    put(17, 2, in_day / 1000 % 60);
    put(20, 3, in_day % 1000);
    let text = String::from_utf8(text.to_vec()).expect("ASCII digits and separators");
    if year > 9999 {
        format!("+{year}{}", &text[4..])
    } else {
        text
    }
}

/// Formats epoch milliseconds as Java's `Instant.toString()` does, and so as a Kafka
/// Streams job writes window bounds: [`format_iso8601_utc`] without the fraction when the
/// milliseconds are zero (`2026-11-24T12:00:00Z`, `2026-11-24T12:00:00.120Z`).
pub fn format_iso8601_instant(time: EventTime) -> String {
    let mut text = format_iso8601_utc(time);
    if time.is_multiple_of(1000) {
        let z = text.len() - 1;
        text.replace_range(z - 4..z, "");
    }
    text
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.pos += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn digits(&mut self, count: usize) -> Option<u32> {
        let mut value = 0;
        for _ in 0..count {
            let byte = self.next()?;
            if !byte.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(byte - b'0');
        }
        Some(value)
    }

    /// Reads 1 to 9 fraction digits and returns the whole milliseconds they hold.
    fn fraction_millis(&mut self) -> Option<u32> {
        let start = self.pos;
        let mut millis = 0;
        while let Some(byte) = self.peek().filter(u8::is_ascii_digit) {
            if self.pos - start < 3 {
                millis = millis * 10 + u32::from(byte - b'0');
            }
            self.pos += 1;
        }
        let count = self.pos - start;
        if count == 0 || count > 9 {
            return None;
        }
        for _ in count..3 {
            millis *= 10;
        }
        Some(millis)
    }

    /// Reads an optional UTC offset and returns it in minutes east of UTC.
    fn offset(&mut self) -> Option<i64> {
        let sign = match self.peek() {
            None => return Some(0),
            Some(b'Z' | b'z') => {
                self.pos += 1;
                return Some(0);
            }
            Some(b'+') => 1,
            Some(b'-') => -1,
            Some(_) => return None,
        };
        self.pos += 1;
        let hours = self.digits(2)?;
        let minutes = match self.peek() {
            None => 0,
            Some(b':') => {
                self.pos += 1;
                self.digits(2)?
            }
            Some(_) => self.digits(2)?,
        };
        (hours <= 23 && minutes <= 59).then_some(sign * i64::from(hours * 60 + minutes))
    }
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOON: EventTime = 1_795_521_600_000; // 2026-11-24T12:00:00Z

    #[test]
    fn accepts_every_documented_form() {
        assert_eq!(parse_iso8601("2026-11-24T12:00:00Z"), Some(NOON));
        assert_eq!(parse_iso8601("2026-11-24T12:00:00"), Some(NOON));
        assert_eq!(
            parse_iso8601("2026-11-24T12:00:00.123456"),
            Some(NOON + 123)
        );
        assert_eq!(
            parse_iso8601("2026-11-24T12:00:00.123456789Z"),
            Some(NOON + 123)
        );
        assert_eq!(parse_iso8601("2026-11-24T12:00:00.5"), Some(NOON + 500));
        assert_eq!(parse_iso8601("2026-11-24T13:00:00+01:00"), Some(NOON));
        assert_eq!(parse_iso8601("2026-11-24T07:30:00-0430"), Some(NOON));
        assert_eq!(parse_iso8601("2026-11-24T14:00:00+02"), Some(NOON));
        assert_eq!(parse_iso8601("2026-11-24 12:00:00z"), Some(NOON));
        assert_eq!(parse_iso8601("2026-11-24t12:00"), Some(NOON));
    }

    #[test]
    fn agrees_with_known_epochs() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso8601("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        assert_eq!(
            parse_iso8601("9999-12-31T23:59:59.999999Z"),
            Some(MAX_EVENT_TIME)
        );
    }

    #[test]
    fn rejects_malformed_and_out_of_range() {
        for bad in [
            "",
            "2026-11-24",
            "2026-11-24T12",
            "2026-13-01T00:00:00",
            "2026-02-29T00:00:00",
            "2026-04-31T00:00:00",
            "2026-11-24T24:00:00",
            "2026-11-24T12:60:00",
            "2026-11-24T12:00:60",
            "2026-11-24T12:00:00.",
            "2026-11-24T12:00:00.1234567890",
            "2026-11-24T12:00:00+24:00",
            "2026-11-24T12:00:00 ",
            "2026-11-24T12:00:00ZZ",
            "26-11-24T12:00:00",
            "1969-12-31T23:59:59.999Z",
            "1970-01-01T00:30:00+01:00",
            "1795521600000",
            "２026-11-24T12:00:00",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad:?} must be rejected");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for time in [0, NOON + 7, 951_782_400_000, MAX_EVENT_TIME] {
            let text = format_iso8601_utc(time);
            assert_eq!(parse_iso8601(&text), Some(time), "{text}");
        }
        assert_eq!(format_iso8601_utc(NOON + 7), "2026-11-24T12:00:00.007Z");
    }

    /// What `java.time.Instant.ofEpochMilli(time).toString()` prints on Java 17.
    #[test]
    fn instants_are_formatted_as_java_formats_them() {
        for (time, java) in [
            (0, "1970-01-01T00:00:00Z"),
            (7, "1970-01-01T00:00:00.007Z"),
            (120, "1970-01-01T00:00:00.120Z"),
            (60_000, "1970-01-01T00:01:00Z"),
            (1_795_521_600_000, "2026-11-24T12:00:00Z"),
            (MAX_EVENT_TIME, "9999-12-31T23:59:59.999Z"),
            (MAX_EVENT_TIME + 1, "+10000-01-01T00:00:00Z"),
            (MAX_EVENT_TIME + 300_001, "+10000-01-01T00:05:00Z"),
        ] {
            assert_eq!(format_iso8601_instant(time), java, "{time}");
        }
        assert_eq!(
            format_iso8601_utc(MAX_EVENT_TIME + 1),
            "+10000-01-01T00:00:00.000Z"
        );
    }

    proptest::proptest! {
        #[test]
        fn instants_parse_back_and_differ_from_the_fixed_width_form_only_in_whole_seconds(
            time in 0..=MAX_EVENT_TIME
        ) {
            let text = format_iso8601_instant(time);
            proptest::prop_assert_eq!(parse_iso8601(&text), Some(time));
            proptest::prop_assert_eq!(text == format_iso8601_utc(time), !time.is_multiple_of(1000));
        }

        #[test]
        fn formats_every_event_time_as_the_fixed_width_form_that_parses_back(
            time in 0..=MAX_EVENT_TIME
        ) {
            let text = format_iso8601_utc(time);
            let (year, month, day) = civil_from_days((time / 86_400_000) as i64);
            let in_day = time % 86_400_000;
            let expected = format!(
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
                in_day / 3_600_000,
                in_day / 60_000 % 60,
                in_day / 1000 % 60,
                in_day % 1000
            );
            proptest::prop_assert_eq!(&text, &expected);
            proptest::prop_assert_eq!(parse_iso8601(&text), Some(time));
        }
    }
}
