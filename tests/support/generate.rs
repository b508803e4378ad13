//! Proptest strategies for `clickflow batch` inputs that aim at the edge cases: few users
//! and pages (keys collide), times on window boundaries and in millisecond steps, gaps of
//! exactly the session gap and one more, events at the retention and max-future limits,
//! duplicates, whole funnel journeys (with ties, arriving out of order) and stray funnel
//! visits, every timestamp format, and every kind of malformed record. Event lines are described symbolically ([`LineSpec`]) and
//! turned into bytes against the configuration, so shrinking works on both.

use std::fmt;

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::Value;

use super::Config;
use super::run::preview;
use super::timestamp::{Fraction, IsoFormat, MAX_TIMESTAMP_MS, Offset, format_iso};

/// 2026-11-24T12:00:00Z: aligned to every default window, the gap and the hour.
pub const T0: u64 = 1_795_521_600_000;

/// User ids; one non-ASCII to exercise ordering.
pub const USERS: [&str; 4] = ["u1", "u2", "u3", "ü"];

/// Pages: the four funnel pages first, then near misses (case, trailing slash) and others.
pub const PAGES: [&str; 8] = [
    "/products",
    "/cart",
    "/checkout",
    "/confirmation",
    "/",
    "/products/",
    "/Cart",
    "/é",
];

/// Whole lines that are never valid events.
pub const FIXED_LINES: &[&str] = &[
    "",
    " ",
    "\t \t",
    "not json",
    "{",
    "}",
    r#"{"user_id":"u1""#,
    "[]",
    r#"[{"user_id":"u1","page":"/","timestamp":0}]"#,
    r#""a string""#,
    "42",
    "null",
    "true",
    "{}",
    "{} {}",
    "{'user_id':'u1'}",
    r#"{"user_id":"u1",}"#,
    "\u{0}",
    "\u{feff}{}",
    r#""{\"user_id\":\"u1\",\"page\":\"/\",\"timestamp\":0}""#,
    r#"{"user_id":"u1","page":"/","timestamp":1795521600000}}"#,
];

/// Raw JSON values put in place of `user_id` or `page`: mostly wrong, a few odd but valid.
pub const NAME_REPLACEMENTS: &[&str] = &[
    r#""""#,
    "0",
    "1.5",
    "true",
    "[]",
    "{}",
    r#"["u1"]"#,
    r#"{"id":"u1"}"#,
    r#"" ""#,
    r#""\u0000""#,
    r#""u\"1""#,
];

/// Raw JSON values put in place of `timestamp`: every shape of bad one, and valid ones at
/// the edges of the grammar and the range.
pub const TIMESTAMP_REPLACEMENTS: &[&str] = &[
    "1.5",
    "1795521600000.0",
    "1.7955216e12",
    "1e3",
    "true",
    "false",
    "[]",
    "[1795521600000]",
    "{}",
    r#""""#,
    r#""1795521600000""#,
    "-1",
    "253402300800000",
    "18446744073709551616",
    "99999999999999999999999",
    r#""2026-13-01T00:00:00Z""#,
    r#""2026-00-10T00:00:00Z""#,
    r#""2026-02-29T00:00:00Z""#,
    r#""2026-04-31T00:00:00Z""#,
    r#""2026-11-24T24:00:00Z""#,
    r#""2026-11-24T12:60:00Z""#,
    r#""2026-11-24T12:00:60Z""#,
    r#""2026-11-24""#,
    r#""2026-11-24T12""#,
    r#""2026-11-24T12:00:00.""#,
    r#""2026-11-24T12:00:00.1234567890""#,
    r#""2026-11-24T12:00:00+24:00""#,
    r#""2026-11-24T12:00:00+12:60""#,
    r#""2026-11-24T12:00:00+1""#,
    r#""2026-11-24T12:00:00+123""#,
    r#""2026-11-24T12:00:00+05:""#,
    r#""2026-11-24T12:00:00Z ""#,
    r#"" 2026-11-24T12:00:00Z""#,
    r#""2026-11-24X12:00:00Z""#,
    r#""2026-11-24T12:00:00ZZ""#,
    r#""2026-11-24T12:00:00 Z""#,
    r#""2026/11/24T12:00:00Z""#,
    r#""2026-1-24T12:00:00Z""#,
    r#""2026-11-24T12:00.5Z""#,
    r#""2026-11-24T12:00:00,5Z""#,
    "\"2026-11-24T12:00:00\u{2212}01:00\"",
    "\"\u{ff12}026-11-24T12:00:00Z\"",
    r#""10000-01-01T00:00:00Z""#,
    r#""1969-12-31T23:59:59.999Z""#,
    r#""1970-01-01T00:00:00+00:01""#,
    r#""9999-12-31T23:59:59.999-00:01""#,
    r#""Tuesday""#,
    // Valid:
    r#""2026-11-24T12:00:00.000000001Z""#,
    r#""2026-11-24T12:00:00.999999999+00:00""#,
    r#""2026-11-24T12:00:59.999999999""#,
    r#""2026-11-24T12:00:00\u002e5Z""#,
    r#""2024-02-29T12:00:00Z""#,
    r#""1969-12-31T23:30:00-01:00""#,
    r#""1970-01-01T00:00:00Z""#,
    "0",
    "253402300799999",
    r#""9999-12-31T23:59:59.999Z""#,
];

/// Text appended after an otherwise valid event.
pub const TRAILERS: &[&str] = &["x", "}", ",", "{}", " 1", "\u{0}", " \t", "\u{a0}", "\r"];

/// Byte sequences that are not UTF-8.
pub const NON_UTF8: &[&[u8]] = &[
    b"\xff",
    b"\xc3",
    b"\x80",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xc0\xaf",
];

/// The window size that a [`TimeSpec::Boundary`] is aligned to.
#[derive(Clone, Copy, Debug)]
pub enum Unit {
    /// `--window-ms`.
    Window,
    /// `--funnel-window-ms`.
    Funnel,
    /// `--session-gap-ms`.
    Gap,
}

/// Where in a window a [`TimeSpec::Boundary`] time falls.
#[derive(Clone, Copy, Debug)]
pub enum Near {
    /// This many ms from the boundary (-1, 0 or 1).
    Edge(i64),
    /// Anywhere inside the window (taken modulo its size).
    Inside(u64),
}

/// A time difference, some of them relative to the configuration.
#[derive(Clone, Copy, Debug)]
pub enum Delta {
    /// Plain milliseconds.
    Ms(i64),
    /// `gap + e` later.
    Gap(i64),
    /// `gap + e` earlier.
    BackGap(i64),
    /// `retention - e` earlier: the too-late limit is at `e = 0`.
    BackRetention(i64),
    /// `max_future + e` later: the future limit is at `e = 0`.
    Future(i64),
}

/// How an event's time is chosen.
#[derive(Clone, Copy, Debug)]
pub enum TimeSpec {
    /// The `k`-th window boundary of `unit` after [`T0`], shifted by `near`.
    Boundary {
        /// The window size.
        unit: Unit,
        /// Which boundary.
        k: u64,
        /// Where relative to it.
        near: Near,
    },
    /// Relative to the previous event of the same user (else to the largest time so far).
    AfterUser(Delta),
    /// Relative to the largest time generated so far (about the watermark).
    AfterMax(Delta),
    /// Exactly this time.
    At(u64),
}

/// How the timestamp is written.
#[derive(Clone, Copy, Debug)]
pub enum TsStyle {
    /// A JSON integer of epoch milliseconds.
    Integer,
    /// An ISO-8601 string.
    Iso(IsoFormat),
}

/// Optional extra members of the event object.
#[derive(Clone, Copy, Debug)]
pub enum Extra {
    /// Nothing else.
    None,
    /// The optional fields, null or set.
    Optional,
    /// Unknown fields with nested values.
    Unknown,
    /// An earlier, overridden `user_id`.
    DuplicateUser,
    /// An earlier, overridden invalid `timestamp`.
    DuplicateTimestamp,
    /// An earlier, overridden null `page`.
    DuplicatePage,
}

/// How an event's page is chosen.
#[derive(Clone, Copy, Debug)]
pub enum PageChoice {
    /// This index into [`PAGES`].
    Index(usize),
    /// The funnel step after the user's previous page (`/products` if there is none), so
    /// that whole journeys through the funnel occur.
    NextStep,
}

/// A valid event, symbolically.
#[derive(Clone, Copy, Debug)]
pub struct EventSpec {
    /// Index into [`USERS`].
    pub user: usize,
    /// Its page.
    pub page: PageChoice,
    /// Its event time.
    pub time: TimeSpec,
    /// How the timestamp is written.
    pub style: TsStyle,
    /// Which permutation of the three required fields.
    pub order: usize,
    /// JSON whitespace around every token.
    pub spaced: bool,
    /// Extra members.
    pub extra: Extra,
}

/// One of the required fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `user_id`.
    UserId,
    /// `page`.
    Page,
    /// `timestamp`.
    Timestamp,
}

impl Field {
    fn key(self) -> &'static str {
        match self {
            Field::UserId => "user_id",
            Field::Page => "page",
            Field::Timestamp => "timestamp",
        }
    }
}

/// A change that (usually) breaks an event.
#[derive(Clone, Copy, Debug)]
pub enum Mutation {
    /// Remove the field.
    Drop(Field),
    /// Set it to null.
    Null(Field),
    /// Set it to this raw JSON.
    Replace(Field, &'static str),
    /// Cut the line to `n / 256` of its length.
    Truncate(u8),
    /// Append this text.
    Trailing(&'static str),
    /// Insert these bytes at this position (modulo the length).
    NonUtf8(&'static [u8], u16),
    /// Prefix a UTF-8 byte order mark.
    Bom,
}

/// One input line, symbolically.
#[derive(Clone, Copy, Debug)]
pub enum LineSpec {
    /// A valid event.
    Event(EventSpec),
    /// An exact copy of the line this many lines back (minus one).
    Repeat(usize),
    /// One of [`FIXED_LINES`].
    Fixed(&'static str),
    /// An event with a mutation applied.
    Mutated(EventSpec, Mutation),
    /// An event padded with an extra field to `max_event_bytes + e` bytes (if it is shorter).
    Padded(EventSpec, i64),
    /// Four lines: the event's user visits the funnel pages in order, at its time and then
    /// after steps of 0, 1, 999 or 60000 ms (indices), arriving rotated left by `rotate`.
    Journey {
        /// User, first time and format.
        event: EventSpec,
        /// The time steps between the visits.
        steps: [usize; 3],
        /// How far the arrival order is rotated.
        rotate: usize,
    },
}

/// A generated test case: flags and the input file.
#[derive(Clone)]
pub struct Case {
    /// The flags.
    pub cfg: Config,
    /// The whole input file.
    pub input: Vec<u8>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "clickflow batch {}", self.cfg.args().join(" "))?;
        for (index, line) in self.input.split_inclusive(|b| *b == b'\n').enumerate() {
            writeln!(f, "{:>4}: {}", index + 1, preview(line))?;
        }
        Ok(())
    }
}

fn json_string(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

fn render(fields: &[(&str, String)], spaced: bool) -> Vec<u8> {
    let (open, colon, comma, close) = if spaced {
        (" { ", " : ", " ,\t", " }\t")
    } else {
        ("{", ":", ",", "}")
    };
    let members: Vec<String> = fields
        .iter()
        .map(|(key, value)| format!("{}{colon}{value}", json_string(key)))
        .collect();
    format!("{open}{}{close}", members.join(comma)).into_bytes()
}

/// Turns [`LineSpec`]s into bytes, tracking times per user and the largest time.
struct Builder<'a> {
    cfg: &'a Config,
    last_of_user: [Option<(u64, usize)>; USERS.len()],
    max: Option<u64>,
    lines: Vec<Vec<u8>>,
}

impl Builder<'_> {
    fn delta(&self, delta: Delta) -> i128 {
        let cfg = self.cfg;
        let (gap, retention) = (cfg.session_gap_ms(), cfg.retention_ms());
        i128::from(match delta {
            Delta::Ms(ms) => ms,
            Delta::Gap(e) => gap as i64 + e,
            Delta::BackGap(e) => -(gap as i64 + e),
            Delta::BackRetention(e) => -(retention as i64 - e),
            Delta::Future(e) => cfg.max_future_ms() as i64 + e,
        })
    }

    fn time(&self, spec: &EventSpec) -> u64 {
        let cfg = self.cfg;
        let base = |t: Option<u64>| i128::from(t.or(self.max).unwrap_or(T0));
        let t = match spec.time {
            TimeSpec::Boundary { unit, k, near } => {
                let size = match unit {
                    Unit::Window => cfg.window_ms(),
                    Unit::Funnel => cfg.funnel_window_ms(),
                    Unit::Gap => cfg.session_gap_ms(),
                };
                let boundary = i128::from((T0 / size + k) * size);
                boundary
                    + match near {
                        Near::Edge(e) => i128::from(e),
                        Near::Inside(x) => i128::from(x % size),
                    }
            }
            TimeSpec::AfterUser(d) => {
                base(self.last_of_user[spec.user].map(|(t, _)| t)) + self.delta(d)
            }
            TimeSpec::AfterMax(d) => base(self.max) + self.delta(d),
            TimeSpec::At(t) => i128::from(t),
        };
        t.clamp(0, i128::from(MAX_TIMESTAMP_MS)) as u64
    }

    fn page(&self, spec: &EventSpec) -> usize {
        match spec.page {
            PageChoice::Index(page) => page,
            PageChoice::NextStep => match self.last_of_user[spec.user] {
                Some((_, page)) if page < 3 => page + 1,
                _ => 0,
            },
        }
    }

    /// The members of the event object. Only valid, unmutated events are tracked (time
    /// and page per user, largest time), as only they can move the watermark.
    fn fields(&mut self, spec: &EventSpec, track: bool) -> Vec<(&'static str, String)> {
        let (time, page) = (self.time(spec), self.page(spec));
        if track {
            self.last_of_user[spec.user] = Some((time, page));
            self.max = Some(self.max.map_or(time, |m| m.max(time)));
        }
        let timestamp = match spec.style {
            TsStyle::Integer => time.to_string(),
            TsStyle::Iso(format) => json_string(&format_iso(time, format)),
        };
        let mut required = vec![
            ("user_id", json_string(USERS[spec.user])),
            ("page", json_string(PAGES[page])),
            ("timestamp", timestamp),
        ];
        let mut fields = Vec::new();
        match spec.extra {
            Extra::DuplicateUser => fields.push(("user_id", json_string("u9"))),
            Extra::DuplicateTimestamp => fields.push(("timestamp", json_string("soon"))),
            Extra::DuplicatePage => fields.push(("page", "null".to_owned())),
            _ => {}
        }
        for n in [spec.order % 3, spec.order / 3 % 2, 0] {
            fields.push(required.remove(n));
        }
        match spec.extra {
            Extra::Optional => fields.extend([
                ("event_id", "null".to_owned()),
                ("event_type", json_string("view")),
                ("referrer", "null".to_owned()),
                ("user_agent", json_string("Mozilla/5.0")),
            ]),
            Extra::Unknown => fields.extend([
                ("x", r#"[1,{"y":null},"z"]"#.to_owned()),
                ("user", json_string("u9")),
            ]),
            _ => {}
        }
        fields
    }

    fn event(&mut self, event: &EventSpec) -> Vec<u8> {
        let fields = self.fields(event, true);
        render(&fields, event.spaced)
    }

    /// The line (or, for a journey, lines) of `spec`.
    fn lines(&mut self, spec: LineSpec) -> Vec<Vec<u8>> {
        match spec {
            LineSpec::Event(event) => vec![self.event(&event)],
            LineSpec::Repeat(back) => vec![match self.lines.len() {
                0 => Vec::new(),
                n => self.lines[n - 1 - back % n].clone(),
            }],
            LineSpec::Fixed(text) => vec![text.as_bytes().to_vec()],
            LineSpec::Mutated(event, mutation) => vec![self.mutated(&event, mutation)],
            LineSpec::Padded(event, e) => vec![self.padded(&event, e)],
            LineSpec::Journey {
                event,
                steps,
                rotate,
            } => self.journey(&event, steps, rotate),
        }
    }

    fn padded(&mut self, event: &EventSpec, e: i64) -> Vec<u8> {
        let mut fields = self.fields(event, true);
        fields.push(("pad", json_string("")));
        let target = self.cfg.max_event_bytes() as i64 + e;
        let missing = (target - render(&fields, event.spaced).len() as i64).max(0) as usize;
        // Some two-byte characters, so that counting characters would be wrong.
        let padding = "é".repeat(missing / 4) + &"x".repeat(missing - missing / 4 * 2);
        if let Some((_, value)) = fields.last_mut() {
            *value = json_string(&padding);
        }
        render(&fields, event.spaced)
    }

    fn journey(&mut self, event: &EventSpec, steps: [usize; 3], rotate: usize) -> Vec<Vec<u8>> {
        let mut time = self.time(event);
        let mut visits = Vec::new();
        for (page, step) in [0].into_iter().chain(steps).enumerate() {
            time += [0, 1, 999, 60_000][step % 4];
            visits.push(EventSpec {
                page: PageChoice::Index(page),
                time: TimeSpec::At(time),
                ..*event
            });
        }
        let count = visits.len();
        visits.rotate_left(rotate % count);
        visits.iter().map(|visit| self.event(visit)).collect()
    }

    fn mutated(&mut self, event: &EventSpec, mutation: Mutation) -> Vec<u8> {
        let mut fields = self.fields(event, false);
        let set = |fields: &mut Vec<(&str, String)>, field: Field, value: &str| {
            for (key, old) in fields.iter_mut() {
                if *key == field.key() {
                    *old = value.to_owned();
                }
            }
        };
        match mutation {
            Mutation::Drop(field) => fields.retain(|(key, _)| *key != field.key()),
            Mutation::Null(field) => set(&mut fields, field, "null"),
            Mutation::Replace(field, value) => set(&mut fields, field, value),
            _ => {}
        }
        let mut bytes = render(&fields, event.spaced);
        match mutation {
            Mutation::Truncate(n) => bytes.truncate(bytes.len() * usize::from(n) / 256),
            Mutation::Trailing(text) => bytes.extend_from_slice(text.as_bytes()),
            Mutation::NonUtf8(bad, at) => {
                let at = usize::from(at) % (bytes.len() + 1);
                bytes.splice(at..at, bad.iter().copied());
            }
            Mutation::Bom => {
                bytes.splice(0..0, "\u{feff}".bytes());
            }
            _ => {}
        }
        bytes
    }
}

/// Builds the input file: each line followed by `\n` or `\r\n`, except that the last line
/// has no terminator unless `final_newline`.
pub fn materialize(cfg: &Config, lines: &[(LineSpec, bool)], final_newline: bool) -> Vec<u8> {
    let mut builder = Builder {
        cfg,
        last_of_user: [None; USERS.len()],
        max: None,
        lines: Vec::new(),
    };
    let mut terminators = Vec::new();
    for (spec, crlf) in lines {
        for line in builder.lines(*spec) {
            builder.lines.push(line);
            terminators.push(if *crlf { &b"\r\n"[..] } else { b"\n" });
        }
    }
    if !final_newline {
        terminators.pop();
        terminators.push(b"");
    }
    let mut input = Vec::new();
    for (line, terminator) in builder.lines.iter().zip(terminators) {
        input.extend_from_slice(line);
        input.extend_from_slice(terminator);
    }
    input
}

fn choose<T: Clone + fmt::Debug + 'static>(values: &'static [T]) -> impl Strategy<Value = T> {
    select(values)
}

/// Flags: each is sometimes left at its default, sometimes set to a value that makes its
/// edge reachable with the generated times.
pub fn config() -> BoxedStrategy<Config> {
    let option = |values: &'static [Option<u64>]| choose(values);
    (
        option(&[None, Some(1), Some(2), Some(4)]),
        option(&[None, None, None, Some(60_000), Some(1_000), Some(7)]),
        option(&[None, None, None, Some(300_000), Some(60_000), Some(1_000)]),
        option(&[None, None, None, Some(1_800_000), Some(60_000), Some(1)]),
        option(&[
            None,
            None,
            Some(60_000),
            Some(600_000),
            Some(1_800_000),
            Some(7_200_000),
        ]),
        option(&[None, None, Some(1), Some(60_000), Some(1_800_000)]),
        option(&[None, None, None, None, Some(70), Some(100), Some(160)]),
        option(&[None, Some(3), Some(3), Some(0), Some(1), Some(2)]),
        option(&[None, Some(1), Some(64), Some(300), Some(4096)]),
    )
        .prop_map(
            |(workers, window, funnel, gap, retention, future, bytes, threshold, chunk)| Config {
                workers,
                window_ms: window,
                funnel_window_ms: funnel,
                session_gap_ms: gap,
                retention_ms: retention,
                max_future_ms: future,
                max_event_bytes: bytes,
                high_traffic_threshold: threshold,
                chunk_bytes: chunk,
            },
        )
        .boxed()
}

fn delta() -> BoxedStrategy<Delta> {
    prop_oneof![
        3 => (-3i64..=3).prop_map(Delta::Ms),
        3 => (-120_000i64..=120_000).prop_map(Delta::Ms),
        2 => (-1i64..=1).prop_map(Delta::Gap),
        1 => (-1i64..=1).prop_map(Delta::BackGap),
        1 => (-1i64..=1).prop_map(Delta::BackRetention),
        1 => (-1i64..=1).prop_map(Delta::Future),
    ]
    .boxed()
}

fn time_spec() -> BoxedStrategy<TimeSpec> {
    let unit = prop_oneof![
        3 => Just(Unit::Window),
        2 => Just(Unit::Funnel),
        1 => Just(Unit::Gap),
    ];
    let near = prop_oneof![
        (-1i64..=1).prop_map(Near::Edge),
        any::<u64>().prop_map(Near::Inside),
    ];
    let k = prop_oneof![3 => 0u64..4, 1 => 4u64..12];
    prop_oneof![
        5 => (unit, k, near).prop_map(|(unit, k, near)| TimeSpec::Boundary { unit, k, near }),
        3 => delta().prop_map(TimeSpec::AfterUser),
        2 => delta().prop_map(TimeSpec::AfterMax),
    ]
    .boxed()
}

/// Every timestamp format of the grammar, with offsets up to ±23:59.
pub fn ts_style() -> BoxedStrategy<TsStyle> {
    let fraction = prop_oneof![
        Just(Fraction::None),
        Just(Fraction::Shortest),
        (0u8..=6).prop_map(Fraction::Padded),
    ];
    let offset = prop_oneof![
        Just(Offset::None),
        any::<bool>().prop_map(Offset::Zulu),
        (-1439i64..=1439).prop_map(Offset::Colon),
        (-1439i64..=1439).prop_map(Offset::Compact),
        (-23i64..=23).prop_map(Offset::Hours),
    ];
    let iso = (choose(&['T', 't', ' ']), any::<bool>(), fraction, offset).prop_map(
        |(separator, seconds, fraction, offset)| IsoFormat {
            separator,
            seconds,
            fraction,
            offset,
        },
    );
    prop_oneof![Just(TsStyle::Integer), iso.prop_map(TsStyle::Iso)].boxed()
}

fn extra() -> BoxedStrategy<Extra> {
    prop_oneof![
        12 => Just(Extra::None),
        1 => Just(Extra::Optional),
        1 => Just(Extra::Unknown),
        1 => Just(Extra::DuplicateUser),
        1 => Just(Extra::DuplicateTimestamp),
        1 => Just(Extra::DuplicatePage),
    ]
    .boxed()
}

fn event() -> BoxedStrategy<EventSpec> {
    let user = prop_oneof![6 => 0usize..3, 1 => Just(3usize)];
    let page = prop_oneof![
        6 => (0usize..4).prop_map(PageChoice::Index),
        2 => (4..PAGES.len()).prop_map(PageChoice::Index),
        3 => Just(PageChoice::NextStep),
    ];
    (
        user,
        page,
        time_spec(),
        ts_style(),
        0usize..6,
        prop::bool::weighted(0.1),
        extra(),
    )
        .prop_map(
            |(user, page, time, style, order, spaced, extra)| EventSpec {
                user,
                page,
                time,
                style,
                order,
                spaced,
                extra,
            },
        )
        .boxed()
}

fn mutation() -> BoxedStrategy<Mutation> {
    let field = prop_oneof![
        Just(Field::UserId),
        Just(Field::Page),
        Just(Field::Timestamp)
    ];
    let name = prop_oneof![Just(Field::UserId), Just(Field::Page)];
    prop_oneof![
        2 => field.clone().prop_map(Mutation::Drop),
        2 => field.prop_map(Mutation::Null),
        3 => (name, choose(NAME_REPLACEMENTS)).prop_map(|(f, v)| Mutation::Replace(f, v)),
        6 => choose(TIMESTAMP_REPLACEMENTS).prop_map(|v| Mutation::Replace(Field::Timestamp, v)),
        1 => any::<u8>().prop_map(Mutation::Truncate),
        1 => choose(TRAILERS).prop_map(Mutation::Trailing),
        2 => (choose(NON_UTF8), any::<u16>()).prop_map(|(b, at)| Mutation::NonUtf8(b, at)),
        1 => Just(Mutation::Bom),
    ]
    .boxed()
}

/// One symbolic input line.
pub fn line() -> BoxedStrategy<LineSpec> {
    prop_oneof![
        12 => event().prop_map(LineSpec::Event),
        2 => (0usize..8).prop_map(LineSpec::Repeat),
        2 => choose(FIXED_LINES).prop_map(LineSpec::Fixed),
        4 => (event(), mutation()).prop_map(|(e, m)| LineSpec::Mutated(e, m)),
        1 => (event(), -1i64..=1).prop_map(|(e, d)| LineSpec::Padded(e, d)),
        1 => (event(), [0usize..4, 0usize..4, 0usize..4], 0usize..4)
            .prop_map(|(event, steps, rotate)| LineSpec::Journey { event, steps, rotate }),
    ]
    .boxed()
}

/// A whole case: flags and up to `max_lines` lines, some with CRLF, sometimes without a
/// final newline.
pub fn case(max_lines: usize) -> impl Strategy<Value = Case> {
    (
        config(),
        prop::collection::vec((line(), prop::bool::weighted(0.15)), 0..=max_lines),
        prop::bool::weighted(0.85),
    )
        .prop_map(|(cfg, lines, final_newline)| {
            let input = materialize(&cfg, &lines, final_newline);
            Case { cfg, input }
        })
}
