//! An independent, deliberately simple ISO-8601 parser and formatter for the reference.
//!
//! The accepted grammar is exactly the one the project decided on:
//! `YYYY-MM-DD` then `T`, `t` or a space, then `HH:MM`, optionally `:SS`, optionally
//! (after the seconds) `.` and 1 to 9 digits (truncated to milliseconds), then an optional
//! offset `Z`, `z`, `±HH:MM`, `±HHMM` or `±HH` (no offset means UTC). The result must lie in
//! `0..=MAX_TIMESTAMP_MS`. Calendar arithmetic walks year by year and month by month, so
//! it is slow but obviously right; it shares no code with the crate under test.

/// The largest valid event time: `9999-12-31T23:59:59.999Z` in epoch milliseconds.
pub const MAX_TIMESTAMP_MS: u64 = 253_402_300_799_999;

const MS_PER_DAY: i64 = 86_400_000;

/// Whether `year` is a leap year of the proleptic Gregorian calendar.
pub fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// The number of days in `month` (1-based) of `year`.
pub fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_in_year(year: i64) -> i64 {
    if is_leap(year) { 366 } else { 365 }
}

/// Days from 1970-01-01 to `year-month-day` (negative before 1970), by walking the calendar.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let mut days: i64 = if year >= 1970 {
        (1970..year).map(days_in_year).sum()
    } else {
        -(year..1970).map(days_in_year).sum::<i64>()
    };
    days += (1..month).map(|m| days_in_month(year, m)).sum::<i64>();
    days + day - 1
}

/// The calendar date `(year, month, day)` of a day number counted from 1970-01-01.
pub fn civil_from_days(mut days: i64) -> (i64, i64, i64) {
    let mut year = 1970;
    while days < 0 {
        year -= 1;
        days += days_in_year(year);
    }
    while days >= days_in_year(year) {
        days -= days_in_year(year);
        year += 1;
    }
    let mut month = 1;
    while days >= days_in_month(year, month) {
        days -= days_in_month(year, month);
        month += 1;
    }
    (year, month, days + 1)
}

/// A byte cursor over the timestamp text.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn eat(&mut self, allowed: &[u8]) -> Option<u8> {
        let byte = self.peek().filter(|b| allowed.contains(b))?;
        self.pos += 1;
        Some(byte)
    }

    /// Exactly `count` ASCII digits, as a number.
    fn digits(&mut self, count: usize) -> Option<i64> {
        let slice = self.bytes.get(self.pos..self.pos + count)?;
        if !slice.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.pos += count;
        Some(slice.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    }

    /// One or more ASCII digits.
    fn digit_run(&mut self) -> &[u8] {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        &self.bytes[start..self.pos]
    }
}

/// Parses an ISO-8601 timestamp string into epoch milliseconds, or `None` if it is not
/// accepted (bad syntax, bad calendar or clock field, bad offset, or out of range).
pub fn parse_iso(text: &str) -> Option<u64> {
    let mut c = Cursor {
        bytes: text.as_bytes(),
        pos: 0,
    };
    let year = c.digits(4)?;
    c.eat(b"-")?;
    let month = c.digits(2)?;
    c.eat(b"-")?;
    let day = c.digits(2)?;
    c.eat(b"Tt ")?;
    let hour = c.digits(2)?;
    c.eat(b":")?;
    let minute = c.digits(2)?;
    let (mut second, mut millis) = (0, 0);
    if c.eat(b":").is_some() {
        second = c.digits(2)?;
        if c.eat(b".").is_some() {
            let fraction = c.digit_run();
            if fraction.is_empty() || fraction.len() > 9 {
                return None;
            }
            millis = (0..3).fold(0, |n, i| {
                n * 10 + fraction.get(i).map_or(0, |d| i64::from(d - b'0'))
            });
        }
    }
    let offset_minutes = match c.eat(b"Zz+-") {
        None | Some(b'Z' | b'z') => 0,
        Some(sign) => {
            let hours = c.digits(2)?;
            // `±HH:MM`, `±HHMM` or `±HH`.
            let minutes = if c.eat(b":").is_some() || c.peek().is_some() {
                c.digits(2)?
            } else {
                0
            };
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = hours * 60 + minutes;
            if sign == b'-' { -magnitude } else { magnitude }
        }
    };
    if c.pos != text.len() {
        return None;
    }
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let local = days_from_civil(year, month, day) * MS_PER_DAY
        + ((hour * 60 + minute) * 60 + second) * 1000
        + millis;
    let utc = local - offset_minutes * 60_000;
    u64::try_from(utc).ok().filter(|t| *t <= MAX_TIMESTAMP_MS)
}

/// How the fractional seconds of a formatted timestamp are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fraction {
    /// No fraction; only exact when the milliseconds are zero.
    None,
    /// As few digits as represent the milliseconds exactly (1 to 3).
    Shortest,
    /// The three millisecond digits followed by this many extra digits (0 to 6), which
    /// the parser truncates away.
    Padded(u8),
}

/// How the offset of a formatted timestamp is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offset {
    /// No offset (UTC).
    None,
    /// `Z`, or `z` when the flag is set.
    Zulu(bool),
    /// `±HH:MM`, with this many minutes east of UTC.
    Colon(i64),
    /// `±HHMM`, with this many minutes east of UTC.
    Compact(i64),
    /// `±HH`, with this many hours east of UTC.
    Hours(i64),
}

impl Offset {
    fn minutes(self) -> i64 {
        match self {
            Offset::None | Offset::Zulu(_) => 0,
            Offset::Colon(m) | Offset::Compact(m) => m,
            Offset::Hours(h) => h * 60,
        }
    }

    fn render(self) -> String {
        let m = self.minutes();
        let sign = if m < 0 { '-' } else { '+' };
        let (h, mm) = (m.abs() / 60, m.abs() % 60);
        match self {
            Offset::None => String::new(),
            Offset::Zulu(lower) => if lower { "z" } else { "Z" }.to_owned(),
            Offset::Colon(_) => format!("{sign}{h:02}:{mm:02}"),
            Offset::Compact(_) => format!("{sign}{h:02}{mm:02}"),
            Offset::Hours(_) => format!("{sign}{h:02}"),
        }
    }
}

/// The shape of a formatted timestamp.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsoFormat {
    /// The date/time separator: `T`, `t` or a space.
    pub separator: char,
    /// Whether to write `:SS` (the formatter writes it anyway when it is needed).
    pub seconds: bool,
    /// How to write fractional seconds.
    pub fraction: Fraction,
    /// How to write the offset.
    pub offset: Offset,
}

/// Formats `t` so that [`parse_iso`] gives back exactly `t`. Parts of `format` that would
/// lose information (no seconds when they are non-zero, no fraction when the milliseconds
/// are non-zero, a local time outside years 0000-9999) are replaced by the full form.
pub fn format_iso(t: u64, format: IsoFormat) -> String {
    let t = i64::try_from(t).unwrap_or(i64::MAX);
    let mut offset = format.offset;
    let mut local = t + offset.minutes() * 60_000;
    let max_local = days_from_civil(10_000, 1, 1) * MS_PER_DAY;
    if !(days_from_civil(0, 1, 1) * MS_PER_DAY..max_local).contains(&local) {
        offset = Offset::Zulu(false);
        local = t;
    }
    let (year, month, day) = civil_from_days(local.div_euclid(MS_PER_DAY));
    let in_day = local.rem_euclid(MS_PER_DAY);
    let (hour, minute) = (in_day / 3_600_000, in_day / 60_000 % 60);
    let (second, millis) = (in_day / 1000 % 60, in_day % 1000);
    let mut text = format!(
        "{year:04}-{month:02}-{day:02}{}{hour:02}:{minute:02}",
        format.separator
    );
    let fraction = match format.fraction {
        Fraction::None if millis != 0 => Fraction::Shortest,
        other => other,
    };
    if format.seconds || second != 0 || fraction != Fraction::None {
        text.push_str(&format!(":{second:02}"));
    }
    match fraction {
        Fraction::None => {}
        Fraction::Shortest => {
            let digits = format!("{millis:03}");
            let trimmed = digits.trim_end_matches('0');
            text.push('.');
            text.push_str(if trimmed.is_empty() { "0" } else { trimmed });
        }
        Fraction::Padded(extra) => {
            text.push_str(&format!(".{millis:03}"));
            // Extra digits vary with the time so that truncation (not rounding) is tested.
            text.extend((0..extra).map(|i| char::from(b'0' + ((t as u8) ^ (i * 7)) % 10)));
        }
    }
    text + &offset.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-24T12:00:00Z, computed by hand: 56 years with 14 leap days give 20454 days
    /// to 2026-01-01, plus 327 days to November 24, plus half a day.
    const NOV_24_NOON: u64 = (20_454 + 327) * 86_400_000 + 43_200_000;

    #[test]
    fn calendar_walk_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 1, 1), 20_454);
        assert_eq!(civil_from_days(20_781), (2026, 11, 24));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(NOV_24_NOON, 1_795_521_600_000);
    }

    #[test]
    fn accepts_every_documented_shape() {
        let noon = NOV_24_NOON;
        for (text, expected) in [
            ("2026-11-24T12:00:00Z", noon),
            ("2026-11-24t12:00:00z", noon),
            ("2026-11-24 12:00", noon),
            ("2026-11-24T12:00:00.123456", noon + 123),
            ("2026-11-24T12:00:00.999999999Z", noon + 999),
            ("2026-11-24T12:00:00.5", noon + 500),
            ("2026-11-24T12:00:00.05", noon + 50),
            ("2026-11-24T13:00:00+01:00", noon),
            ("2026-11-24T13:30:00+0130", noon),
            ("2026-11-24T10:00:00-02", noon),
            ("2026-11-25T11:59:00+23:59", noon),
            ("1970-01-01T00:00:00Z", 0),
            ("1969-12-31T23:30:00-01:00", 1_800_000),
            ("9999-12-31T23:59:59.999Z", MAX_TIMESTAMP_MS),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
        ] {
            assert_eq!(parse_iso(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn rejects_malformed_and_out_of_range() {
        for text in [
            "",
            "1795521600000",
            "2026-11-24",
            "2026-11-24T12",
            "2026-11-24X12:00:00Z",
            "2026-11-24T12:00:00.",
            "2026-11-24T12:00:00.1234567890",
            "2026-11-24T12:00.5",
            "2026-11-24T12:00:00,5",
            "2026-13-01T00:00:00Z",
            "2026-00-10T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T12:60:00Z",
            "2026-11-24T12:00:60Z",
            "2026-11-24T12:00:00+24:00",
            "2026-11-24T12:00:00+12:60",
            "2026-11-24T12:00:00+1",
            "2026-11-24T12:00:00+123",
            "2026-11-24T12:00:00+05:",
            "2026-11-24T12:00:00ZZ",
            "2026-11-24T12:00:00Z ",
            " 2026-11-24T12:00:00Z",
            "2026-11-24T12:00:00 Z",
            "2026-1-24T12:00:00Z",
            "+2026-11-24T12:00:00Z",
            "10000-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999Z",
            "1970-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59.999-00:01",
            "2026-11-24T12:00:00\u{2212}01:00",
        ] {
            assert_eq!(parse_iso(text), None, "{text:?}");
        }
    }

    #[test]
    fn format_round_trips() {
        let shapes = [
            (Fraction::None, Offset::None),
            (Fraction::Shortest, Offset::Zulu(true)),
            (Fraction::Padded(6), Offset::Colon(-(23 * 60 + 59))),
            (Fraction::Padded(0), Offset::Compact(330)),
            (Fraction::None, Offset::Hours(-23)),
        ];
        for t in [0, 1, 59_999, 60_000, NOV_24_NOON + 1234, MAX_TIMESTAMP_MS] {
            for (separator, seconds) in [('T', false), ('t', true), (' ', false)] {
                for (fraction, offset) in shapes {
                    let format = IsoFormat {
                        separator,
                        seconds,
                        fraction,
                        offset,
                    };
                    let text = format_iso(t, format);
                    assert_eq!(parse_iso(&text), Some(t), "{text} from {format:?}");
                }
            }
        }
        let plain = IsoFormat {
            separator: 'T',
            seconds: false,
            fraction: Fraction::None,
            offset: Offset::None,
        };
        assert_eq!(format_iso(NOV_24_NOON, plain), "2026-11-24T12:00");
    }
}
