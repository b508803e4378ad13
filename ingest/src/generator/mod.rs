//! A deterministic, seeded generator of synthetic page-view records.
//!
//! The generator simulates users browsing in sessions and writes each page view as the
//! JSON record a producer would send, plus a controlled share of records that a consumer
//! must route to the dead letters. The same [`GeneratorConfig`] (seed included) yields the
//! same bytes on every machine: the pseudo-random numbers come from a built-in
//! xoshiro256** seeded by SplitMix64, and the only floating-point functions used are
//! correctly rounded IEEE operations (`ln` and `exp` are computed here from them, not by
//! the platform's math library).
//!
//! # The simulated traffic
//!
//! Line `i` of `n` has a clock `start_ms + duration_ms * i / n`. A line either continues
//! the open session whose next event is due earliest (if it is due by the clock) or starts
//! a new session at the clock, so event time advances roughly linearly through the file
//! and the in-order events are in non-decreasing event-time order. Users are drawn
//! uniformly and are not reused until more than 30 minutes after their previous session
//! ended (when a few draws find such a user), so sessions of one user are separated by
//! more than the reference 30-minute inactivity gap. Events of a session are 1 s to
//! 20 minutes apart (exponential, mean about 30 s). Pages are `/page/<rank>` with
//! Zipf-distributed ranks (rank 1 is the most popular); a [`GeneratorConfig::funnel`]
//! share of sessions browses a little and then walks the checkout funnel
//! [`FUNNEL_PAGES`] in order, continuing to each next step with probability
//! [`GeneratorConfig::funnel_continue`]. No other session visits the funnel pages.
//!
//! Each record's `timestamp` is, at random, Python's `datetime.utcnow().isoformat()`
//! (`2026-11-24T12:00:00.123456`, the most common), UTC with `Z`, local time with a UTC
//! offset, or integer epoch milliseconds. The optional fields `event_id`, `event_type`,
//! `referrer` and `user_agent` appear on some records; some records use Python's
//! `json.dumps` spacing.
//!
//! # What each record is for
//!
//! [`RecordKind`] says what a consumer that decodes with [`decode_event`] and admits with
//! an [`Admission`] configured as [`GeneratorConfig::admission`] (reading the records in
//! order, as one partition) must do with the record: count it, or route it to the dead
//! letters for [`RecordKind::expected_dead_letter`]. The generator tracks the watermark
//! such a consumer sees, so `too_late` and `future_timestamp` records are exact.
//!
//! [`decode_event`]: clickflow_events::decode_event
//! [`Admission`]: clickflow_events::Admission

mod due;

use clickflow_events::{
    AdmissionConfig, DEFAULT_MAX_EVENT_BYTES, DeadLetterReason, EventTime, MAX_EVENT_TIME,
    format_iso8601_utc,
};

use due::DueSessions;

/// The pages of the checkout funnel, in step order.
pub const FUNNEL_PAGES: [&str; 4] = ["/products", "/cart", "/checkout", "/confirmation"];

/// The most users a generator simulates (each costs 4 bytes of memory).
pub const MAX_USERS: u64 = 100_000_000;

/// The most pages a generator simulates (each costs 8 bytes of memory).
pub const MAX_PAGES: u32 = 10_000_000;

/// The smallest accepted `max_event_bytes`: every record that is not meant to be too large
/// is shorter.
pub const MIN_MAX_EVENT_BYTES: usize = 1024;

/// The largest accepted `max_event_bytes` (each `too_large` record is a little longer).
pub const MAX_MAX_EVENT_BYTES: usize = 16 << 20;

/// The largest accepted Zipf exponent.
pub const MAX_ZIPF_EXPONENT: f64 = 10.0;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;

/// Shortest time between two events of a session.
const MIN_THINK_MS: u64 = 1_000;
/// Mean of the exponential part of the time between two events of a session.
const MEAN_EXTRA_THINK_MS: f64 = 30_000.0;
/// Longest time between two events of a session: well inside the 30-minute session gap.
const MAX_THINK_MS: u64 = 20 * MINUTE_MS;
/// A user starts a new session only this long after the end of their previous one (when
/// a few draws find such a user): more than the 30-minute session gap.
const RETURN_GAP_S: u32 = 31 * 60;
/// How many users are drawn when looking for one that may start a session.
const USER_DRAWS: usize = 8;
/// Probability that a browsing session views one more page (mean length about 6.7).
const BROWSE_CONTINUE: f64 = 0.85;
/// Probability that a funnel session browses one more page before `/products`.
const FUNNEL_BROWSE_CONTINUE: f64 = 0.5;
/// Cap on the pages of a browsing session and on the browsing before a funnel.
const MAX_BROWSE_PAGES: u32 = 200;

/// An out-of-order event is this much (at least 1 ms) behind the watermark.
const MAX_OUT_OF_ORDER_MS: u64 = 5 * MINUTE_MS;
/// A late or future event is at least this much beyond its bound...
const BEYOND_BOUND_MS: u64 = MINUTE_MS;
/// ...plus up to this much more for late events...
const MAX_EXTRA_LATE_MS: u64 = 6 * HOUR_MS;
/// ...and up to this much more for future events.
const MAX_EXTRA_FUTURE_MS: u64 = 3 * HOUR_MS;

/// UTC offsets, in minutes east, of local-time timestamps.
const OFFSETS_MIN: [i16; 7] = [60, 120, 330, 540, -300, -480, -210];
const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "python-requests/2.32.3",
];
const EXTERNAL_REFERRERS: [&str; 3] = [
    "https://www.google.com/",
    "https://news.ycombinator.com/",
    "https://t.co/x1",
];
const BAD_TIMESTAMPS: [&str; 6] = [
    "yesterday",
    "2026-13-45T25:61:00",
    "24/11/2026 12:00:00",
    "",
    "1795521600000",
    "2026-11-24T12:00:00+25:00",
];

/// Parameters of a generated stream. Fractions of records (`out_of_order`, `late`,
/// `future`, `malformed`) are probabilities per record and must sum to at most 1.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorConfig {
    /// Seed of the pseudo-random numbers: equal configurations give identical records.
    pub seed: u64,
    /// Number of records to generate.
    pub events: u64,
    /// Number of distinct `/page/<rank>` pages (the funnel pages come on top).
    pub pages: u32,
    /// Number of distinct users, `u0` to `u<users - 1>`.
    pub users: u64,
    /// Event time of the first record, in epoch milliseconds.
    pub start_ms: EventTime,
    /// Event-time span of the stream: record `i` of `n` is generated at
    /// `start_ms + duration_ms * i / n`.
    pub duration_ms: u64,
    /// Share of records whose event time is 1 ms to 5 minutes behind the watermark (and
    /// never before `start_ms`): counted, but out of order.
    pub out_of_order: f64,
    /// Share of records older than the watermark minus the retention (`too_late`).
    pub late: f64,
    /// Share of records more than `max_future` ahead of the watermark (`future_timestamp`).
    pub future: f64,
    /// Share of records that cannot be decoded, spread evenly over [`MalformedKind::ALL`].
    pub malformed: f64,
    /// Share of sessions that walk the checkout funnel.
    pub funnel: f64,
    /// Probability that a funnel session goes on from one funnel step to the next.
    pub funnel_continue: f64,
    /// Exponent `s` of the Zipf law of page popularity: the page of rank `k` is viewed in
    /// proportion to `k^-s` (0 means uniform).
    pub zipf_exponent: f64,
    /// The retention and future bounds of the consumer, which late and future records
    /// overstep.
    pub admission: AdmissionConfig,
    /// The record size limit of the consumer, which `too_large` records overstep.
    pub max_event_bytes: usize,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            events: 1_000_000,
            pages: 10_000,
            users: 100_000,
            start_ms: 1_795_521_600_000, // 2026-11-24T12:00:00Z
            duration_ms: 2 * HOUR_MS,
            out_of_order: 0.01,
            late: 0.001,
            future: 0.0005,
            malformed: 0.001,
            funnel: 0.1,
            funnel_continue: 0.6,
            zipf_exponent: 1.0,
            admission: AdmissionConfig::default(),
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// Why a [`GeneratorConfig`] is refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A fraction is not a number in `0..=1`.
    #[error("{name} must be a fraction in 0..=1, got {value}")]
    Fraction {
        /// The field's name.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// The record fractions sum to more than 1.
    #[error("out_of_order + late + future + malformed must be at most 1, got {sum}")]
    FractionSum {
        /// The sum of the four fractions.
        sum: f64,
    },
    /// A count is outside its accepted range.
    #[error("{name} must be in {min}..={max}, got {value}")]
    Count {
        /// The field's name.
        name: &'static str,
        /// The value given.
        value: u64,
        /// The smallest accepted value.
        min: u64,
        /// The largest accepted value.
        max: u64,
    },
    /// The Zipf exponent is not a number in `0..=MAX_ZIPF_EXPONENT`.
    #[error("zipf_exponent must be in 0..={MAX_ZIPF_EXPONENT}, got {0}")]
    ZipfExponent(f64),
    /// Some records cannot be given the event times they are meant to have.
    #[error("cannot place the records in time: {0}")]
    Placement(&'static str),
}

impl GeneratorConfig {
    /// Checks that the configuration can be generated.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("out_of_order", self.out_of_order),
            ("late", self.late),
            ("future", self.future),
            ("malformed", self.malformed),
            ("funnel", self.funnel),
            ("funnel_continue", self.funnel_continue),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError::Fraction { name, value });
            }
        }
        let sum = self.out_of_order + self.late + self.future + self.malformed;
        if sum > 1.0 {
            return Err(ConfigError::FractionSum { sum });
        }
        for (name, value, min, max) in [
            ("pages", u64::from(self.pages), 1, u64::from(MAX_PAGES)),
            ("users", self.users, 1, MAX_USERS),
            (
                "max_event_bytes",
                self.max_event_bytes as u64,
                MIN_MAX_EVENT_BYTES as u64,
                MAX_MAX_EVENT_BYTES as u64,
            ),
        ] {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::Count {
                    name,
                    value,
                    min,
                    max,
                });
            }
        }
        if !(0.0..=MAX_ZIPF_EXPONENT).contains(&self.zipf_exponent) {
            return Err(ConfigError::ZipfExponent(self.zipf_exponent));
        }
        let AdmissionConfig {
            retention_ms,
            max_future_ms,
        } = self.admission;
        let latest = [
            self.duration_ms,
            max_future_ms,
            BEYOND_BOUND_MS + MAX_EXTRA_FUTURE_MS,
        ]
        .into_iter()
        .try_fold(self.start_ms, u64::checked_add);
        if latest.is_none_or(|latest| latest > MAX_EVENT_TIME) {
            return Err(ConfigError::Placement(
                "start_ms + duration_ms + max_future_ms + 4 h exceeds the largest event time",
            ));
        }
        let earliest_late = retention_ms.saturating_add(BEYOND_BOUND_MS + MAX_EXTRA_LATE_MS);
        if self.late > 0.0 && self.start_ms < earliest_late {
            return Err(ConfigError::Placement(
                "late records need start_ms >= retention_ms + 6 h 1 min",
            ));
        }
        if self.out_of_order > 0.0 && retention_ms < MAX_OUT_OF_ORDER_MS {
            return Err(ConfigError::Placement(
                "out-of-order records need retention_ms >= 5 minutes",
            ));
        }
        Ok(())
    }
}

/// A way in which a generated record cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MalformedKind {
    /// A Python `repr` of the event (single quotes): not JSON.
    NotJson,
    /// A valid record cut short.
    TruncatedJson,
    /// A JSON array of the values instead of an object.
    JsonArray,
    /// `user_id` or `page` holds a Latin-1 byte, so the record is not UTF-8.
    NotUtf8,
    /// `user_id`, `page` or `timestamp` is absent.
    MissingField,
    /// `user_id`, `page` or `timestamp` is `null`.
    NullField,
    /// `user_id` or `page` is the empty string.
    EmptyString,
    /// `user_id` is a number.
    NonStringUserId,
    /// `timestamp` is a string that is not an ISO-8601 date-time.
    UnparseableTimestamp,
    /// `timestamp` is a number with a fraction (Python's `time.time()`).
    FloatTimestamp,
    /// A valid record with a huge `referrer`, longer than `max_event_bytes`.
    TooLarge,
}

impl MalformedKind {
    /// Every kind, in declaration order.
    pub const ALL: [MalformedKind; 11] = [
        Self::NotJson,
        Self::TruncatedJson,
        Self::JsonArray,
        Self::NotUtf8,
        Self::MissingField,
        Self::NullField,
        Self::EmptyString,
        Self::NonStringUserId,
        Self::UnparseableTimestamp,
        Self::FloatTimestamp,
        Self::TooLarge,
    ];

    /// The dead-letter reason a decoder gives records of this kind.
    pub fn reason(self) -> DeadLetterReason {
        match self {
            Self::NotJson | Self::TruncatedJson | Self::JsonArray | Self::NotUtf8 => {
                DeadLetterReason::InvalidJson
            }
            Self::MissingField | Self::NullField => DeadLetterReason::MissingField,
            Self::EmptyString | Self::NonStringUserId => DeadLetterReason::InvalidField,
            Self::UnparseableTimestamp | Self::FloatTimestamp => DeadLetterReason::InvalidTimestamp,
            Self::TooLarge => DeadLetterReason::TooLarge,
        }
    }
}

/// What a generated record is, and so what a consumer must do with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    /// A valid event no older than any event before it.
    InOrder,
    /// A valid event behind the watermark but inside the retention.
    OutOfOrder,
    /// A valid record whose event time is older than the watermark minus the retention.
    TooLate,
    /// A valid record whose event time is beyond the watermark plus `max_future`.
    Future,
    /// A record that cannot be decoded.
    Malformed(MalformedKind),
}

impl RecordKind {
    /// The dead-letter reason of the record, or `None` if it is counted.
    pub fn expected_dead_letter(self) -> Option<DeadLetterReason> {
        match self {
            Self::InOrder | Self::OutOfOrder => None,
            Self::TooLate => Some(DeadLetterReason::TooLate),
            Self::Future => Some(DeadLetterReason::FutureTimestamp),
            Self::Malformed(kind) => Some(kind.reason()),
        }
    }
}

/// A generated record: its value (the JSON bytes, with no newline) and its key. Reuse one
/// `Record` across calls to [`Generator::next_record`] to avoid allocating per record.
#[derive(Clone, Debug, Default)]
pub struct Record {
    value: Vec<u8>,
    key: Vec<u8>,
}

impl Record {
    /// An empty record to generate into.
    pub fn new() -> Self {
        Self::default()
    }

    /// The record value. It never contains a newline byte.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The record key, the `user_id` as the reference producer sets it; `None` for
    /// malformed records.
    pub fn key(&self) -> Option<&[u8]> {
        (!self.key.is_empty()).then_some(self.key.as_slice())
    }
}

/// Generates the records of one [`GeneratorConfig`], one at a time.
#[derive(Clone, Debug)]
pub struct Generator {
    config: GeneratorConfig,
    rng: Rng,
    pages: Pages,
    users: Users,
    /// Open sessions, by when their next event is due.
    sessions: DueSessions,
    next_session_id: u64,
    /// The largest event time a consumer has admitted so far.
    watermark: Option<EventTime>,
    /// Index of the next record.
    line: u64,
    /// Cumulative thresholds that split a uniform draw into record kinds.
    malformed_below: f64,
    late_below: f64,
    future_below: f64,
    out_of_order_below: f64,
    dates: DateCache,
}

impl Generator {
    /// A generator of `config`'s records, or why `config` is invalid.
    pub fn new(config: GeneratorConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let malformed_below = config.malformed;
        let late_below = malformed_below + config.late;
        let future_below = late_below + config.future;
        let out_of_order_below = future_below + config.out_of_order;
        Ok(Self {
            rng: Rng::seeded(config.seed),
            pages: Pages {
                zipf: Zipf::new(config.pages, config.zipf_exponent),
                funnel_continue: config.funnel_continue,
            },
            users: Users::new(config.users, config.start_ms),
            sessions: DueSessions::default(),
            next_session_id: 0,
            watermark: None,
            line: 0,
            malformed_below,
            late_below,
            future_below,
            out_of_order_below,
            dates: DateCache::default(),
            config,
        })
    }

    /// The configuration being generated.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// Moves the event time of the first record to `start_ms` (never earlier than the
    /// configured start), for a generator that has not made a record yet: the start of
    /// a live stream, taken again at the moment the records begin to go out.
    pub fn start_later(&mut self, start_ms: EventTime) {
        assert_eq!(self.line, 0, "the generator has made records already");
        let start_ms = start_ms.max(self.config.start_ms);
        self.config.start_ms = start_ms;
        self.users.start_ms = start_ms;
    }

    /// Writes the next record into `record` and says what it is, or returns `None` (and
    /// leaves `record` as it was) once `config.events` records were generated.
    pub fn next_record(&mut self, record: &mut Record) -> Option<RecordKind> {
        if self.line >= self.config.events {
            return None;
        }
        let clock = self.config.start_ms
            + (u128::from(self.config.duration_ms) * u128::from(self.line)
                / u128::from(self.config.events)) as u64;
        self.line += 1;
        record.value.clear();
        record.key.clear();
        let draw = self.rng.unit();
        if draw < self.malformed_below {
            let kind = self.rng.pick(&MalformedKind::ALL);
            let event = EventFields {
                user: self.rng.below(self.config.users),
                page: Page::Ranked(self.pages.zipf.sample(&mut self.rng)),
                referrer: None,
                time: clock,
            };
            self.write_malformed(kind, &event, &mut record.value);
            return Some(RecordKind::Malformed(kind));
        }
        let mut event = self.next_session_event(clock);
        let kind = self.place_in_time(draw, &mut event.time);
        self.write_event(&event, Damage::None, &mut record.value);
        push_user_id(&mut record.key, event.user);
        Some(kind)
    }

    /// Continues the session due earliest if it is due by `clock`, or starts one at `clock`.
    fn next_session_event(&mut self, clock: EventTime) -> EventFields {
        let due = self.sessions.pop_due(clock);
        let mut session = due.unwrap_or_else(|| self.start_session(clock));
        let time = session.next_time;
        let (page, last) = self.pages.next(&mut self.rng, &mut session.plan);
        let referrer = session.last_page.replace(page);
        let event = EventFields {
            user: session.user,
            page,
            referrer,
            time,
        };
        if last {
            self.users.end_session(session.user, time);
        } else {
            let extra = -MEAN_EXTRA_THINK_MS * ln(1.0 - self.rng.unit());
            session.next_time = time + (MIN_THINK_MS + extra as u64).min(MAX_THINK_MS);
            self.sessions.push(session);
        }
        event
    }

    fn start_session(&mut self, clock: EventTime) -> Session {
        let plan = if self.rng.chance(self.config.funnel) {
            Plan::Funnel {
                browse: self.rng.geometric(FUNNEL_BROWSE_CONTINUE, MAX_BROWSE_PAGES) - 1,
                step: 0,
            }
        } else {
            Plan::Browse {
                remaining: self.rng.geometric(BROWSE_CONTINUE, MAX_BROWSE_PAGES),
            }
        };
        let id = self.next_session_id;
        self.next_session_id += 1;
        Session {
            next_time: clock,
            id,
            user: self.users.start_session(&mut self.rng, clock),
            plan,
            last_page: None,
        }
    }

    /// Decides, from the record's uniform `draw`, whether the session event at `time`
    /// keeps its time or is moved out of order, too late or into the future, and tracks
    /// the watermark.
    fn place_in_time(&mut self, draw: f64, time: &mut EventTime) -> RecordKind {
        let Some(watermark) = self.watermark else {
            // Before the first admitted event nothing is late, early or out of order.
            self.watermark = Some(*time);
            return RecordKind::InOrder;
        };
        let AdmissionConfig {
            retention_ms,
            max_future_ms,
        } = self.config.admission;
        if draw < self.late_below {
            let behind = retention_ms + BEYOND_BOUND_MS + self.rng.below(MAX_EXTRA_LATE_MS);
            *time = watermark.saturating_sub(behind);
            RecordKind::TooLate
        } else if draw < self.future_below {
            *time =
                watermark + max_future_ms + BEYOND_BOUND_MS + self.rng.below(MAX_EXTRA_FUTURE_MS);
            RecordKind::Future
        } else if draw < self.out_of_order_below {
            let behind = 1 + self.rng.below(MAX_OUT_OF_ORDER_MS);
            *time = watermark
                .min(*time)
                .saturating_sub(behind)
                .max(self.config.start_ms);
            RecordKind::OutOfOrder
        } else {
            self.watermark = Some(watermark.max(*time));
            RecordKind::InOrder
        }
    }

    fn write_malformed(&mut self, kind: MalformedKind, event: &EventFields, out: &mut Vec<u8>) {
        let damage = match kind {
            MalformedKind::JsonArray => {
                out.extend_from_slice(b"[\"");
                push_user_id(out, event.user);
                out.extend_from_slice(b"\", \"");
                event.page.push_path(out);
                out.extend_from_slice(b"\", ");
                self.write_timestamp(event.time, out);
                out.push(b']');
                return;
            }
            MalformedKind::NotJson | MalformedKind::TruncatedJson => Damage::None,
            MalformedKind::NotUtf8 => Damage::Replace(self.user_id_or_page(), Bad::Latin1),
            MalformedKind::MissingField => Damage::Omit(self.any_required()),
            MalformedKind::NullField => Damage::Replace(self.any_required(), Bad::Null),
            MalformedKind::EmptyString => Damage::Replace(self.user_id_or_page(), Bad::Empty),
            MalformedKind::NonStringUserId => Damage::Replace(Field::UserId, Bad::Number),
            MalformedKind::UnparseableTimestamp => {
                Damage::Replace(Field::Timestamp, Bad::Text(self.rng.pick(&BAD_TIMESTAMPS)))
            }
            MalformedKind::FloatTimestamp => Damage::Replace(Field::Timestamp, Bad::FloatSeconds),
            MalformedKind::TooLarge => {
                Damage::Pad(self.config.max_event_bytes + 1 + self.rng.below(4096) as usize)
            }
        };
        self.write_event(event, damage, out);
        match kind {
            MalformedKind::NotJson => {
                for byte in out.iter_mut().filter(|byte| **byte == b'"') {
                    *byte = b'\'';
                }
            }
            MalformedKind::TruncatedJson => {
                let keep = 1 + self.rng.below(out.len() as u64 - 1) as usize;
                out.truncate(keep);
            }
            _ => {}
        }
    }

    fn user_id_or_page(&mut self) -> Field {
        if self.rng.chance(0.5) {
            Field::UserId
        } else {
            Field::Page
        }
    }

    fn any_required(&mut self) -> Field {
        self.rng.pick(&Field::ALL)
    }

    /// Writes `event` as a JSON object, damaged as `damage` says.
    fn write_event(&mut self, event: &EventFields, damage: Damage, out: &mut Vec<u8>) {
        let mut object = ObjectWriter::begin(out, self.rng.chance(0.3));
        if self.rng.chance(0.5) {
            let (high, low) = (self.rng.next_u64(), self.rng.next_u64());
            let out = object.key("event_id");
            out.push(b'"');
            push_uuid(out, high, low);
            out.push(b'"');
        }
        for field in Field::ALL {
            let bad = match damage {
                Damage::Omit(omitted) if omitted == field => continue,
                Damage::Replace(replaced, bad) if replaced == field => Some(bad),
                _ => None,
            };
            let out = object.key(field.name());
            match (field, bad) {
                (Field::Timestamp, None) => self.write_timestamp(event.time, out),
                (_, None) => push_quoted(out, |out| event.push_text(field, out)),
                (_, Some(Bad::Null)) => out.extend_from_slice(b"null"),
                (_, Some(Bad::Empty)) => out.extend_from_slice(b"\"\""),
                (_, Some(Bad::Latin1)) => push_quoted(out, |out| {
                    event.push_text(field, out);
                    out.push(0xE9); // "é" in Latin-1: not UTF-8
                }),
                (_, Some(Bad::Number)) => push_u64(out, event.user),
                (_, Some(Bad::Text(text))) => {
                    push_quoted(out, |out| out.extend_from_slice(text.as_bytes()))
                }
                (_, Some(Bad::FloatSeconds)) => {
                    push_u64(out, event.time / 1000);
                    out.push(b'.');
                    push_padded(out, event.time % 1000 * 1000 + self.rng.below(1000), 6);
                }
            }
        }
        if self.rng.chance(0.5) {
            object
                .key("event_type")
                .extend_from_slice(if self.rng.chance(0.9) {
                    b"\"page_view\""
                } else {
                    b"null"
                });
        }
        if let Damage::Pad(length) = damage {
            push_quoted(object.key("referrer"), |out| {
                out.extend_from_slice(b"https://www.example.com/search?q=");
                out.resize(out.len() + length, b'a');
            });
        } else if self.rng.chance(0.3) {
            let out = object.key("referrer");
            match event.referrer {
                Some(page) => push_quoted(out, |out| page.push_path(out)),
                None if self.rng.chance(0.5) => out.extend_from_slice(b"null"),
                None => {
                    let referrer = self.rng.pick(&EXTERNAL_REFERRERS);
                    push_quoted(out, |out| out.extend_from_slice(referrer.as_bytes()));
                }
            }
        }
        if self.rng.chance(0.25) {
            let agent = self.rng.pick(&USER_AGENTS);
            push_quoted(object.key("user_agent"), |out| {
                out.extend_from_slice(agent.as_bytes())
            });
        }
        object.end();
    }

    /// Writes `time` as a JSON value in one of the timestamp formats, chosen at random.
    fn write_timestamp(&mut self, time: EventTime, out: &mut Vec<u8>) {
        let format = self.rng.below(100);
        if format < 10 {
            push_u64(out, time);
            return;
        }
        out.push(b'"');
        if format < 80 {
            // Python's utcnow().isoformat(): microseconds, no offset, no fraction when zero.
            let micros = time % 1000 * 1000 + self.rng.below(1000);
            self.dates.push_date_time(time, out);
            if micros != 0 {
                out.push(b'.');
                push_padded(out, micros, 6);
            }
        } else {
            // UTC with `Z`, or local time with its offset (unless it would precede the epoch).
            let offset_min = if format < 90 {
                0
            } else {
                self.rng.pick(&OFFSETS_MIN)
            };
            let (local, offset_min) = time
                .checked_add_signed(i64::from(offset_min) * MINUTE_MS as i64)
                .map_or((time, 0), |local| (local, offset_min));
            self.dates.push_date_time(local, out);
            out.push(b'.');
            push_padded(out, local % 1000, 3);
            if offset_min == 0 {
                out.push(b'Z');
            } else {
                out.push(if offset_min < 0 { b'-' } else { b'+' });
                push_padded(out, u64::from(offset_min.unsigned_abs() / 60), 2);
                out.push(b':');
                push_padded(out, u64::from(offset_min.unsigned_abs() % 60), 2);
            }
        }
        out.push(b'"');
    }
}

/// The values of one event before it is written.
struct EventFields {
    user: u64,
    page: Page,
    referrer: Option<Page>,
    time: EventTime,
}

impl EventFields {
    /// Writes the text of the `user_id` field, or else of the `page` field, unquoted.
    fn push_text(&self, field: Field, out: &mut Vec<u8>) {
        match field {
            Field::UserId => push_user_id(out, self.user),
            Field::Page | Field::Timestamp => self.page.push_path(out),
        }
    }
}

/// A required field of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    UserId,
    Page,
    Timestamp,
}

impl Field {
    const ALL: [Field; 3] = [Field::UserId, Field::Page, Field::Timestamp];

    fn name(self) -> &'static str {
        match self {
            Self::UserId => "user_id",
            Self::Page => "page",
            Self::Timestamp => "timestamp",
        }
    }
}

/// How a record is damaged on purpose.
#[derive(Clone, Copy, Debug)]
enum Damage {
    None,
    Omit(Field),
    Replace(Field, Bad),
    /// A `referrer` of this many bytes (plus a URL prefix).
    Pad(usize),
}

/// A bad value for a required field.
#[derive(Clone, Copy, Debug)]
enum Bad {
    Null,
    Empty,
    /// The field's text followed by a byte that is not UTF-8.
    Latin1,
    /// The user number instead of the `user_id` string.
    Number,
    Text(&'static str),
    /// Epoch seconds with a microsecond fraction.
    FloatSeconds,
}

/// Writes a JSON object key by key, compact or with Python's `json.dumps` spacing.
struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    spaced: bool,
    empty: bool,
}

impl<'a> ObjectWriter<'a> {
    fn begin(out: &'a mut Vec<u8>, spaced: bool) -> Self {
        out.push(b'{');
        Self {
            out,
            spaced,
            empty: true,
        }
    }

    /// Writes the separator and `name`, and returns the buffer to write the value into.
    fn key(&mut self, name: &str) -> &mut Vec<u8> {
        if !self.empty {
            self.out
                .extend_from_slice(if self.spaced { b", " } else { b"," });
        }
        self.empty = false;
        push_quoted(self.out, |out| out.extend_from_slice(name.as_bytes()));
        self.out
            .extend_from_slice(if self.spaced { b": " } else { b":" });
        self.out
    }

    fn end(self) {
        self.out.push(b'}');
    }
}

/// A page: a Zipf rank (0 is `/page/1`) or a funnel step (an index into [`FUNNEL_PAGES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Page {
    Ranked(u32),
    Funnel(u8),
}

impl Page {
    fn push_path(self, out: &mut Vec<u8>) {
        match self {
            Self::Ranked(rank) => {
                out.extend_from_slice(b"/page/");
                push_u64(out, u64::from(rank) + 1);
            }
            Self::Funnel(step) => out.extend_from_slice(FUNNEL_PAGES[usize::from(step)].as_bytes()),
        }
    }
}

/// What an open session does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Plan {
    /// View this many more Zipf-popular pages.
    Browse { remaining: u32 },
    /// View `browse` more Zipf-popular pages, then funnel steps from `step` on.
    Funnel { browse: u32, step: u8 },
}

/// An open session. The derived order is by `next_time`, then by the unique `id`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Session {
    next_time: EventTime,
    id: u64,
    user: u64,
    plan: Plan,
    last_page: Option<Page>,
}

/// Chooses the pages sessions view.
#[derive(Clone, Debug)]
struct Pages {
    zipf: Zipf,
    funnel_continue: f64,
}

impl Pages {
    /// The next page of a session with `plan`, and whether it is the session's last.
    fn next(&self, rng: &mut Rng, plan: &mut Plan) -> (Page, bool) {
        match plan {
            Plan::Browse { remaining } => {
                *remaining -= 1;
                (Page::Ranked(self.zipf.sample(rng)), *remaining == 0)
            }
            Plan::Funnel { browse, .. } if *browse > 0 => {
                *browse -= 1;
                (Page::Ranked(self.zipf.sample(rng)), false)
            }
            Plan::Funnel { step, .. } => {
                let page = Page::Funnel(*step);
                *step += 1;
                let last =
                    usize::from(*step) == FUNNEL_PAGES.len() || !rng.chance(self.funnel_continue);
                (page, last)
            }
        }
    }
}

/// When each user's last session ended, to keep a user's sessions apart.
#[derive(Clone, Debug)]
struct Users {
    /// Per user: [`Users::NEVER`], [`Users::ACTIVE`], or 1 + the end of the user's last
    /// session in whole seconds after `start_ms`.
    last_end: Vec<u32>,
    start_ms: EventTime,
}

impl Users {
    const NEVER: u32 = 0;
    const ACTIVE: u32 = u32::MAX;

    fn new(users: u64, start_ms: EventTime) -> Self {
        Self {
            last_end: vec![Self::NEVER; users as usize],
            start_ms,
        }
    }

    fn seconds(&self, time: EventTime) -> u32 {
        let seconds = time.saturating_sub(self.start_ms) / 1000 + 1;
        seconds.min(u64::from(Self::ACTIVE - 1)) as u32
    }

    /// Draws a user to start a session at `now`, preferring one that is not in a session
    /// and whose last session ended long enough ago.
    fn start_session(&mut self, rng: &mut Rng, now: EventTime) -> u64 {
        let now = self.seconds(now);
        let mut user = 0;
        for _ in 0..USER_DRAWS {
            user = rng.below(self.last_end.len() as u64);
            let last_end = self.last_end[user as usize];
            if last_end == Self::NEVER
                || (last_end != Self::ACTIVE && now.saturating_sub(last_end) >= RETURN_GAP_S)
            {
                break;
            }
        }
        self.last_end[user as usize] = Self::ACTIVE;
        user
    }

    fn end_session(&mut self, user: u64, time: EventTime) {
        self.last_end[user as usize] = self.seconds(time);
    }
}

/// Samples Zipf-distributed ranks `0..n` (rank `k` with weight `(k + 1)^-s`) by binary
/// search in the cumulative distribution.
#[derive(Clone, Debug)]
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: u32, exponent: f64) -> Self {
        let mut total = 0.0;
        let mut cdf: Vec<f64> = (1..=n)
            .map(|rank| {
                total += exp(-exponent * ln(f64::from(rank)));
                total
            })
            .collect();
        for cumulative in &mut cdf {
            *cumulative /= total;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> u32 {
        let draw = rng.unit();
        let rank = self.cdf.partition_point(|&cumulative| cumulative <= draw);
        rank.min(self.cdf.len() - 1) as u32
    }
}

/// xoshiro256** (Blackman and Vigna), seeded by SplitMix64.
#[derive(Clone, Debug)]
struct Rng {
    state: [u64; 4],
}

impl Rng {
    fn seeded(seed: u64) -> Self {
        let mut splitmix = seed;
        let mut next = || {
            splitmix = splitmix.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = splitmix;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            state: [next(), next(), next(), next()],
        }
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A number in `0..n` (with a bias below 2^-64 * n, irrelevant here); 0 when `n` is 0.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `[0, 1)` with 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// One of `items`, each equally likely.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, probability: f64) -> bool {
        self.unit() < probability
    }

    /// The number of trials up to and including the first failure, where each trial
    /// succeeds with `probability`, capped at `max`.
    fn geometric(&mut self, probability: f64, max: u32) -> u32 {
        let mut count = 1;
        while count < max && self.chance(probability) {
            count += 1;
        }
        count
    }
}

/// The natural logarithm of a finite, normal `x > 0`, from basic IEEE operations only so
/// that it is identical on every platform (`f64::ln` calls the system's math library).
fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7FF) as i64 - 1023;
    let mut mantissa = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | 0x3FF0_0000_0000_0000);
    if mantissa > std::f64::consts::SQRT_2 {
        mantissa /= 2.0;
        exponent += 1;
    }
    // ln(m) = 2 atanh(z) = 2 (z + z^3/3 + z^5/5 + ...) with |z| <= 0.172.
    let z = (mantissa - 1.0) / (mantissa + 1.0);
    let z2 = z * z;
    let mut power = z;
    let mut series = 0.0;
    for k in 0..14 {
        series += power / f64::from(2 * k + 1);
        power *= z2;
    }
    exponent as f64 * std::f64::consts::LN_2 + 2.0 * series
}

/// `e^y` for `-700 <= y <= 700`, from basic IEEE operations only (see [`ln`]).
fn exp(y: f64) -> f64 {
    let k = (y / std::f64::consts::LN_2).round();
    let r = y - k * std::f64::consts::LN_2;
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..=18 {
        term *= r / f64::from(i);
        sum += term;
    }
    sum * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

/// Formatted dates `YYYY-MM-DD` of recently used days, so that formatting a timestamp
/// allocates only when its day was not seen lately.
#[derive(Clone, Debug)]
struct DateCache {
    /// `(day since the epoch, its date)`, direct-mapped by day.
    entries: [(u64, [u8; 10]); 4],
}

impl Default for DateCache {
    fn default() -> Self {
        Self {
            entries: [(u64::MAX, [0; 10]); 4],
        }
    }
}

impl DateCache {
    /// Writes `time` as `YYYY-MM-DDTHH:MM:SS` (no fraction, no offset).
    fn push_date_time(&mut self, time: EventTime, out: &mut Vec<u8>) {
        let day = time / DAY_MS;
        let entry = &mut self.entries[(day % 4) as usize];
        if entry.0 != day {
            let text = format_iso8601_utc(day * DAY_MS);
            entry.1.copy_from_slice(&text.as_bytes()[..10]);
            entry.0 = day;
        }
        out.extend_from_slice(&entry.1);
        let in_day = time % DAY_MS;
        out.push(b'T');
        push_padded(out, in_day / HOUR_MS, 2);
        out.push(b':');
        push_padded(out, in_day / MINUTE_MS % 60, 2);
        out.push(b':');
        push_padded(out, in_day / 1000 % 60, 2);
    }
}

/// Writes `"`, whatever `body` writes, and `"`.
fn push_quoted(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'"');
    body(out);
    out.push(b'"');
}

fn push_user_id(out: &mut Vec<u8>, user: u64) {
    out.push(b'u');
    push_u64(out, user);
}

/// Writes `value` in decimal.
fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Writes the last `width` decimal digits of `value`, zero-padded.
fn push_padded(out: &mut Vec<u8>, mut value: u64, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for digit in out[start..].iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Writes 128 bits as a version-4 UUID, `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`.
fn push_uuid(out: &mut Vec<u8>, high: u64, low: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let high = (high & !0xF000) | 0x4000;
    let low = (low & !(0xC << 60)) | (0x8 << 60);
    let value = (u128::from(high) << 64) | u128::from(low);
    for nibble in 0..32 {
        if matches!(nibble, 8 | 12 | 16 | 20) {
            out.push(b'-');
        }
        out.push(HEX[((value >> (124 - 4 * nibble)) & 0xF) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use clickflow_events::{Admission, Event, decode_event, parse_iso8601};

    use super::*;

    /// Every record of `config`, with its key and kind.
    /// A generated record's value, key and kind.
    type Generated = (Vec<u8>, Option<Vec<u8>>, RecordKind);

    fn generate(config: GeneratorConfig) -> Vec<Generated> {
        records_of(Generator::new(config).expect("valid config"))
    }

    fn records_of(mut generator: Generator) -> Vec<Generated> {
        let mut record = Record::new();
        std::iter::from_fn(|| {
            let kind = generator.next_record(&mut record)?;
            Some((
                record.value().to_vec(),
                record.key().map(<[u8]>::to_vec),
                kind,
            ))
        })
        .collect()
    }

    fn config(events: u64) -> GeneratorConfig {
        GeneratorConfig {
            events,
            ..GeneratorConfig::default()
        }
    }

    fn bytes(records: &[Generated]) -> Vec<u8> {
        records
            .iter()
            .flat_map(|(value, _, _)| value.iter().copied().chain([b'\n']))
            .collect()
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let first = bytes(&generate(config(20_000)));
        assert_eq!(first, bytes(&generate(config(20_000))));
        let other = bytes(&generate(GeneratorConfig {
            seed: 43,
            ..config(20_000)
        }));
        assert_ne!(first, other);
        assert!(
            first.len() > 20_000 * 60,
            "records are realistic JSON, {} bytes",
            first.len()
        );
    }

    #[test]
    fn a_later_start_gives_the_records_of_a_generator_configured_to_start_then() {
        let configured = config(5_000);
        let later = GeneratorConfig {
            start_ms: configured.start_ms + 123_456,
            ..config(5_000)
        };
        let mut moved = Generator::new(configured.clone()).expect("valid config");
        moved.start_later(later.start_ms);
        assert_eq!(bytes(&records_of(moved)), bytes(&generate(later)));
        let mut not_moved = Generator::new(configured.clone()).expect("valid config");
        not_moved.start_later(configured.start_ms - 1);
        assert_eq!(bytes(&records_of(not_moved)), bytes(&generate(configured)));
    }

    #[test]
    fn pinned_output_catches_platform_or_accidental_changes() {
        // If this changes on purpose, update it; if it differs between machines,
        // determinism is broken.
        let records = generate(config(20_000));
        let text: Vec<String> = records[..3]
            .iter()
            .map(|(value, _, _)| String::from_utf8_lossy(value).into_owned())
            .collect();
        assert_eq!(
            text,
            [
                r#"{"user_id":"u99180","page":"/page/1050","timestamp":"2026-11-24T12:00:00.000682","event_type":"page_view"}"#,
                r#"{"event_id": "6faa904a-94c5-49bd-9a1d-a25458817417", "user_id": "u70754", "page": "/page/573", "timestamp": "2026-11-24T12:00:00.360489", "event_type": "page_view", "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15"}"#,
                r#"{"event_id":"77ffe08a-affc-49f2-b8da-e1deeb08090b","user_id":"u81420","page":"/page/841","timestamp":"2026-11-24T12:00:00.720700"}"#,
            ]
        );
        // FNV-1a of the whole stream.
        let hash = bytes(&records)
            .iter()
            .fold(0xCBF2_9CE4_8422_2325_u64, |hash, &byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3)
            });
        assert_eq!(hash, 5_038_083_020_445_184_662);
    }

    #[test]
    fn ln_and_exp_match_the_math_library() {
        for x in [
            1e-15,
            0.001,
            0.5,
            0.999_999,
            1.0,
            1.5,
            std::f64::consts::E,
            10.0,
            12_345.678,
            1e7,
        ] {
            let (ours, std) = (ln(x), x.ln());
            assert!(
                (ours - std).abs() <= 1e-14 * std.abs().max(1.0),
                "ln({x}) = {ours}, std {std}"
            );
        }
        for y in [-161.0, -20.5, -1.0, -1e-9, 0.0, 0.3, 1.0, 42.0, 700.0] {
            let (ours, std) = (exp(y), y.exp());
            assert!(
                (ours - std).abs() <= 1e-13 * std,
                "exp({y}) = {ours}, std {std}"
            );
        }
    }

    #[test]
    fn zipf_top_page_is_most_frequent_and_frequencies_fall_off() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = Rng::seeded(7);
        let mut counts = vec![0u32; 1000];
        for _ in 0..300_000 {
            counts[zipf.sample(&mut rng) as usize] += 1;
        }
        let top = counts
            .iter()
            .enumerate()
            .max_by_key(|(_, count)| **count)
            .map(|(rank, _)| rank);
        assert_eq!(top, Some(0));
        for (higher, lower) in [(0, 1), (1, 3), (3, 9), (9, 99), (99, 999)] {
            assert!(
                counts[higher] > counts[lower],
                "rank {higher}: {}, rank {lower}: {}",
                counts[higher],
                counts[lower]
            );
        }
        // With s = 1 rank 1 is viewed twice as often as rank 2 and ten times as often as rank 10.
        let ratio = |a: usize, b: usize| f64::from(counts[a]) / f64::from(counts[b]);
        assert!((1.8..2.2).contains(&ratio(0, 1)), "{}", ratio(0, 1));
        assert!((8.5..11.5).contains(&ratio(0, 9)), "{}", ratio(0, 9));

        let uniform = Zipf::new(4, 0.0);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[uniform.sample(&mut rng) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&count| (9_000..11_000).contains(&count)),
            "{counts:?}"
        );
    }

    #[test]
    fn every_malformed_kind_fails_decoding_with_its_reason() {
        let mut generator = Generator::new(config(1)).expect("valid config");
        let mut out = Vec::new();
        for kind in MalformedKind::ALL {
            for i in 0..200 {
                let event = EventFields {
                    user: i * 7919,
                    page: if i % 2 == 0 {
                        Page::Ranked(i as u32)
                    } else {
                        Page::Funnel((i % 4) as u8)
                    },
                    referrer: None,
                    time: 1_795_521_600_000 + i * 3_600_123,
                };
                out.clear();
                generator.write_malformed(kind, &event, &mut out);
                let decoded = decode_event(&out, DEFAULT_MAX_EVENT_BYTES);
                assert_eq!(
                    decoded,
                    Err(kind.reason()),
                    "{kind:?}: {}",
                    String::from_utf8_lossy(&out)
                );
                assert!(!out.contains(&b'\n'), "{kind:?} contains a newline");
                // Without the size limit, the oversized records are valid events.
                if kind == MalformedKind::TooLarge {
                    assert!(decode_event(&out, usize::MAX).is_ok());
                }
            }
        }
    }

    /// Decodes and admits every record like a consumer of one partition and checks that
    /// each record meets the fate its kind announces. Returns the admitted events in order.
    fn check_fates(config: &GeneratorConfig) -> Vec<(Event, RecordKind)> {
        let records = generate(config.clone());
        assert_eq!(records.len() as u64, config.events);
        let mut admission = Admission::new(config.admission);
        let mut admitted = Vec::new();
        for (line, (value, key, kind)) in records.into_iter().enumerate() {
            assert!(!value.contains(&b'\n'), "line {line} contains a newline");
            let fate = decode_event(&value, config.max_event_bytes).and_then(|event| {
                let watermark = admission.watermark();
                admission.admit(event.time)?;
                if kind == RecordKind::OutOfOrder {
                    assert!(
                        watermark.is_some_and(|w| event.time < w || event.time == config.start_ms),
                        "line {line}"
                    );
                }
                Ok(event)
            });
            let text = String::from_utf8_lossy(&value);
            assert_eq!(
                fate.as_ref().err().copied(),
                kind.expected_dead_letter(),
                "line {line} {kind:?}: {text}"
            );
            match (kind, fate) {
                (RecordKind::Malformed(_), _) => assert_eq!(key, None, "line {line}"),
                (_, Ok(event)) => {
                    assert_eq!(
                        key.as_deref(),
                        Some(event.user_id.as_bytes()),
                        "line {line}"
                    );
                    admitted.push((event, kind));
                }
                (_, Err(_)) => assert!(key.is_some(), "line {line}"),
            }
        }
        admitted
    }

    #[test]
    fn every_record_meets_its_announced_fate_and_times_lie_in_the_span() {
        let config = GeneratorConfig {
            out_of_order: 0.05,
            late: 0.02,
            future: 0.02,
            malformed: 0.05,
            users: 5_000,
            ..config(100_000)
        };
        let admitted = check_fates(&config);
        let end = config.start_ms + config.duration_ms;
        // The fates follow the consumer's bounds, whatever they are.
        check_fates(&GeneratorConfig {
            admission: AdmissionConfig {
                retention_ms: 2 * HOUR_MS,
                max_future_ms: 10 * MINUTE_MS,
            },
            max_event_bytes: MIN_MAX_EVENT_BYTES,
            ..config.clone()
        });
        let mut previous = config.start_ms;
        for (event, kind) in &admitted {
            assert!((config.start_ms..end).contains(&event.time), "{event:?}");
            if *kind == RecordKind::InOrder {
                assert!(
                    event.time >= previous,
                    "in-order events never go back in time: {event:?}"
                );
                previous = event.time;
            }
        }
        assert!(
            previous > end - config.duration_ms / 50,
            "event time reaches the end of the span: {previous}"
        );
    }

    #[test]
    fn shares_of_record_kinds_and_formats_match_the_config() {
        let config = GeneratorConfig {
            out_of_order: 0.1,
            late: 0.02,
            future: 0.03,
            malformed: 0.05,
            users: 20_000,
            ..config(200_000)
        };
        let records = generate(config.clone());
        let mut kinds: HashMap<RecordKind, f64> = HashMap::new();
        for (_, _, kind) in &records {
            *kinds.entry(*kind).or_default() += 1.0 / records.len() as f64;
        }
        let share = |kind| kinds.get(&kind).copied().unwrap_or(0.0);
        for (kind, expected) in [
            (RecordKind::OutOfOrder, config.out_of_order),
            (RecordKind::TooLate, config.late),
            (RecordKind::Future, config.future),
            (
                RecordKind::InOrder,
                1.0 - config.out_of_order - config.late - config.future - config.malformed,
            ),
        ] {
            assert!(
                (share(kind) / expected - 1.0).abs() < 0.1,
                "{kind:?}: {} vs {expected}",
                share(kind)
            );
        }
        for kind in MalformedKind::ALL {
            let expected = config.malformed / MalformedKind::ALL.len() as f64;
            let got = share(RecordKind::Malformed(kind));
            assert!(
                (got / expected - 1.0).abs() < 0.25,
                "{kind:?}: {got} vs {expected}"
            );
        }

        // Every timestamp format and optional field shows up, in plausible proportions.
        let text: Vec<String> = records
            .iter()
            .filter(|(_, _, kind)| kind.expected_dead_letter().is_none())
            .map(|(value, _, _)| String::from_utf8_lossy(value).into_owned())
            .collect();
        let mut formats: HashMap<&str, f64> = HashMap::new();
        for line in &text {
            *formats.entry(timestamp_format(line)).or_default() += 1.0 / text.len() as f64;
        }
        for (format, expected) in [
            ("python", 0.7),
            ("integer", 0.1),
            ("zulu", 0.1),
            ("offset", 0.1),
        ] {
            let got = formats.get(format).copied().unwrap_or(0.0);
            assert!(
                (got / expected - 1.0).abs() < 0.1,
                "{format}: {got} vs {expected}"
            );
        }
        for field in [
            "\"event_id\"",
            "\"event_type\":null",
            "\"referrer\"",
            "\"user_agent\"",
            "{\"user_id\": \"u",
        ] {
            let count = text.iter().filter(|line| line.contains(field)).count();
            assert!(count > 100, "{field} appears only {count} times");
        }
    }

    /// Classifies the `timestamp` of a valid record.
    fn timestamp_format(line: &str) -> &'static str {
        let value = line
            .split("\"timestamp\":")
            .nth(1)
            .unwrap_or_default()
            .trim_start();
        let Some(quoted) = value.strip_prefix('"') else {
            return "integer";
        };
        let text = &quoted[..quoted.find('"').unwrap_or_default()];
        assert!(parse_iso8601(text).is_some(), "{text}");
        if text.ends_with('Z') {
            "zulu"
        } else if text.len() > 6 && matches!(text.as_bytes()[text.len() - 6], b'+' | b'-') {
            "offset"
        } else {
            assert!(text.len() == 19 || text.len() == 26, "{text}");
            "python"
        }
    }

    /// Each user's events split into sessions with the reference 30-minute gap:
    /// `(user_id, pages)` per session.
    fn sessionize(admitted: Vec<(Event, RecordKind)>) -> Vec<(String, Vec<String>)> {
        let mut by_user: BTreeMap<String, Vec<(EventTime, String)>> = BTreeMap::new();
        for (event, _) in admitted {
            by_user
                .entry(event.user_id.to_string())
                .or_default()
                .push((event.time, event.page.to_string()));
        }
        let mut sessions = Vec::new();
        for (user, mut events) in by_user {
            events.sort_by_key(|(time, _)| *time);
            let mut last: Option<EventTime> = None;
            for (time, page) in events {
                if last.is_none_or(|last| time - last > 30 * MINUTE_MS) {
                    sessions.push((user.clone(), Vec::new()));
                }
                last = Some(time);
                sessions
                    .last_mut()
                    .expect("a session was just started")
                    .1
                    .push(page);
            }
        }
        sessions
    }

    #[test]
    fn funnel_sessions_visit_funnel_pages_in_order() {
        let config = GeneratorConfig {
            out_of_order: 0.0,
            late: 0.0,
            future: 0.0,
            malformed: 0.0,
            funnel: 0.3,
            users: 1_000_000,
            ..config(100_000)
        };
        let sessions = sessionize(check_fates(&config));
        let mut step_visits = [0usize; 4];
        for (_, session) in &sessions {
            let funnel: Vec<&str> = session
                .iter()
                .map(String::as_str)
                .filter(|page| FUNNEL_PAGES.contains(page))
                .collect();
            assert_eq!(
                funnel,
                FUNNEL_PAGES[..funnel.len()],
                "funnel steps in order, once each: {session:?}"
            );
            if let Some(first) = session.iter().position(|page| page == "/products") {
                assert!(
                    session[first..]
                        .iter()
                        .all(|page| FUNNEL_PAGES.contains(&page.as_str())),
                    "{session:?}"
                );
            }
            for count in &mut step_visits[..funnel.len()] {
                *count += 1;
            }
        }
        let funnel_share = step_visits[0] as f64 / sessions.len() as f64;
        assert!(
            (funnel_share / config.funnel - 1.0).abs() < 0.1,
            "funnel share {funnel_share}"
        );
        for step in 1..4 {
            let conversion = step_visits[step] as f64 / step_visits[step - 1] as f64;
            assert!(
                (conversion / config.funnel_continue - 1.0).abs() < 0.1,
                "step {step}: {conversion}"
            );
        }
        let mean_length = sessions.iter().map(|(_, pages)| pages.len()).sum::<usize>() as f64
            / sessions.len() as f64;
        assert!(
            (4.0..8.0).contains(&mean_length),
            "mean session length {mean_length}"
        );
    }

    #[test]
    fn users_come_back_in_separate_sessions() {
        // If a user's sessions were less than the gap apart, sessionizing would merge them
        // and find fewer sessions than the generator started.
        let config = GeneratorConfig {
            out_of_order: 0.0,
            late: 0.0,
            future: 0.0,
            malformed: 0.0,
            users: 20_000,
            ..config(50_000)
        };
        let mut generator = Generator::new(config.clone()).expect("valid config");
        let mut record = Record::new();
        while generator.next_record(&mut record).is_some() {}
        let sessions = sessionize(check_fates(&config));
        assert_eq!(sessions.len() as u64, generator.next_session_id);
        let mut per_user: HashMap<&str, u32> = HashMap::new();
        for (user, _) in &sessions {
            *per_user.entry(user).or_default() += 1;
        }
        let returning = per_user.values().filter(|&&count| count > 1).count();
        assert!(returning > 500, "only {returning} users came back");
    }

    #[test]
    fn invalid_configs_are_refused_with_the_field_named() {
        let cases = [
            (
                GeneratorConfig {
                    late: 1.5,
                    ..GeneratorConfig::default()
                },
                "late",
            ),
            (
                GeneratorConfig {
                    funnel: f64::NAN,
                    ..GeneratorConfig::default()
                },
                "funnel",
            ),
            (
                GeneratorConfig {
                    malformed: 0.6,
                    out_of_order: 0.6,
                    ..GeneratorConfig::default()
                },
                "at most 1",
            ),
            (
                GeneratorConfig {
                    pages: 0,
                    ..GeneratorConfig::default()
                },
                "pages",
            ),
            (
                GeneratorConfig {
                    users: 0,
                    ..GeneratorConfig::default()
                },
                "users",
            ),
            (
                GeneratorConfig {
                    users: MAX_USERS + 1,
                    ..GeneratorConfig::default()
                },
                "users",
            ),
            (
                GeneratorConfig {
                    zipf_exponent: -1.0,
                    ..GeneratorConfig::default()
                },
                "zipf_exponent",
            ),
            (
                GeneratorConfig {
                    start_ms: MAX_EVENT_TIME,
                    ..GeneratorConfig::default()
                },
                "largest event time",
            ),
            (
                GeneratorConfig {
                    admission: AdmissionConfig {
                        retention_ms: 0,
                        max_future_ms: u64::MAX,
                    },
                    ..GeneratorConfig::default()
                },
                "largest event time",
            ),
            (
                GeneratorConfig {
                    start_ms: 1000,
                    ..GeneratorConfig::default()
                },
                "late records",
            ),
            (
                GeneratorConfig {
                    admission: AdmissionConfig {
                        retention_ms: 60_000,
                        max_future_ms: 0,
                    },
                    ..GeneratorConfig::default()
                },
                "out-of-order records",
            ),
            (
                GeneratorConfig {
                    max_event_bytes: 100,
                    ..GeneratorConfig::default()
                },
                "max_event_bytes must be in 1024..",
            ),
        ];
        for (config, needle) in cases {
            let error = Generator::new(config)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                error.contains(needle),
                "{error:?} should mention {needle:?}"
            );
        }
        assert!(
            GeneratorConfig {
                start_ms: 1000,
                late: 0.0,
                ..GeneratorConfig::default()
            }
            .validate()
            .is_ok()
        );
        assert!(
            Generator::new(config(0))
                .is_ok_and(|mut g| g.next_record(&mut Record::new()).is_none())
        );
    }
}
