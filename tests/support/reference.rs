//! The reference implementation of `clickflow batch`: plain loops and `BTreeMap`s, written
//! from the product spec and the project's decisions, sharing no code with the dataflow.
//!
//! [`classify`] splits the file into records and decides each one (admitted event or dead
//! letter, in line order, with the watermark); [`reference`] computes the five outputs
//! from that.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::timestamp::{MAX_TIMESTAMP_MS, parse_iso};
use super::{Config, Outputs};

/// The funnel steps: (name, page), in order.
pub const FUNNEL_STEPS: [(&str, &str); 4] = [
    ("browse", "/products"),
    ("cart", "/cart"),
    ("checkout", "/checkout"),
    ("purchase", "/confirmation"),
];

/// A decoded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The 1-based line number (arrival order).
    pub line: usize,
    /// `user_id`.
    pub user: String,
    /// `page`.
    pub page: String,
    /// Event time, epoch milliseconds.
    pub time: u64,
}

/// Why a record became a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Longer than `max_event_bytes`.
    TooLarge,
    /// Not UTF-8, not JSON, or not an object.
    InvalidJson,
    /// A required field is absent or null.
    MissingField,
    /// `user_id` or `page` is not a non-empty string.
    InvalidField,
    /// `timestamp` is unparseable or out of range.
    InvalidTimestamp,
    /// Older than the watermark minus retention.
    TooLate,
    /// Further than `max_future` ahead of the watermark.
    FutureTimestamp,
}

impl Reason {
    /// The reason as written in `dead_letters.jsonl`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::InvalidJson => "invalid_json",
            Reason::MissingField => "missing_field",
            Reason::InvalidField => "invalid_field",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::TooLate => "too_late",
            Reason::FutureTimestamp => "future_timestamp",
        }
    }
}

/// One record of the input and what became of it.
#[derive(Clone, Debug)]
pub struct Record {
    /// The 1-based line number.
    pub line: usize,
    /// The record's bytes, without the line terminator.
    pub raw: Vec<u8>,
    /// The decoded event, if the record decodes (admitted or not).
    pub event: Option<Event>,
    /// The dead-letter reason, if the record is not admitted.
    pub reason: Option<Reason>,
}

impl Record {
    /// The event, if it was admitted.
    pub fn admitted(&self) -> Option<&Event> {
        self.event.as_ref().filter(|_| self.reason.is_none())
    }
}

/// Splits a file into records: on `\n`, dropping one trailing `\r` per line, and ignoring
/// the empty segment after a final `\n`.
pub fn split_records(input: &[u8]) -> Vec<&[u8]> {
    let mut segments: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
    if segments.last().is_some_and(|s| s.is_empty()) {
        segments.pop();
    }
    segments
        .into_iter()
        .map(|s| s.strip_suffix(b"\r").unwrap_or(s))
        .collect()
}

/// Decodes one record (everything but admission).
pub fn decode(line: usize, record: &[u8], max_event_bytes: u64) -> Result<Event, Reason> {
    if record.len() as u64 > max_event_bytes {
        return Err(Reason::TooLarge);
    }
    let text = std::str::from_utf8(record).map_err(|_| Reason::InvalidJson)?;
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) else {
        return Err(Reason::InvalidJson);
    };
    let field = |name: &str| object.get(name).filter(|v| !v.is_null());
    let (Some(user), Some(page), Some(timestamp)) =
        (field("user_id"), field("page"), field("timestamp"))
    else {
        return Err(Reason::MissingField);
    };
    let non_empty = |v: &Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
    let (Some(user), Some(page)) = (non_empty(user), non_empty(page)) else {
        return Err(Reason::InvalidField);
    };
    let time = match timestamp {
        Value::Number(n) => n.as_u64().filter(|t| *t <= MAX_TIMESTAMP_MS),
        Value::String(s) => parse_iso(s),
        _ => None,
    }
    .ok_or(Reason::InvalidTimestamp)?;
    Ok(Event {
        line,
        user,
        page,
        time,
    })
}

/// Decodes and admits every record in line order. Returns the records and the final
/// watermark (`None` if nothing was admitted).
pub fn classify(input: &[u8], cfg: &Config) -> (Vec<Record>, Option<u64>) {
    let mut watermark: Option<u64> = None;
    let mut records = Vec::new();
    for (index, raw) in split_records(input).into_iter().enumerate() {
        let line = index + 1;
        let (event, reason) = match decode(line, raw, cfg.max_event_bytes()) {
            Err(reason) => (None, Some(reason)),
            Ok(event) => {
                let t = u128::from(event.time);
                let reason = match watermark.map(u128::from) {
                    Some(w) if t + u128::from(cfg.retention_ms()) < w => Some(Reason::TooLate),
                    Some(w) if t > w + u128::from(cfg.max_future_ms()) => {
                        Some(Reason::FutureTimestamp)
                    }
                    _ => {
                        watermark = Some(watermark.map_or(event.time, |w| w.max(event.time)));
                        None
                    }
                };
                (Some(event), reason)
            }
        };
        records.push(Record {
            line,
            raw: raw.to_vec(),
            event,
            reason,
        });
    }
    (records, watermark)
}

/// Whether state ending at `end` is still retained at final watermark `watermark`.
fn retained(end: u64, cfg: &Config, watermark: u64) -> bool {
    u128::from(end) + u128::from(cfg.retention_ms()) > u128::from(watermark)
}

fn window_start(time: u64, size: u64) -> u64 {
    time / size * size
}

/// Computes all five outputs of `clickflow batch` over a whole input file.
pub fn reference(input: &[u8], cfg: &Config) -> Outputs {
    let (records, watermark) = classify(input, cfg);
    let events: Vec<&Event> = records.iter().filter_map(Record::admitted).collect();
    let final_watermark = watermark.unwrap_or(0);
    let page_views = page_views(&events, cfg, final_watermark);
    let alerts = page_views
        .iter()
        .filter(|row| row["view_count"].as_u64() > Some(cfg.high_traffic_threshold()))
        .map(|row| {
            json!({
                "rule": "high_traffic",
                "page": row["page"],
                "window_start": row["window_start"],
                "window_end": row["window_end"],
                "value": row["view_count"],
                "threshold": cfg.high_traffic_threshold(),
            })
        })
        .collect();
    let dead_letters = records
        .iter()
        .filter_map(|r| {
            let reason = r.reason?;
            Some(json!({
                "line": r.line,
                "reason": reason.as_str(),
                "raw": String::from_utf8_lossy(&r.raw),
            }))
        })
        .collect();
    Outputs {
        page_views,
        sessions: sessions(&events, cfg, final_watermark),
        funnel: funnel(&events, cfg, final_watermark),
        alerts,
        dead_letters,
    }
}

fn page_views(events: &[&Event], cfg: &Config, watermark: u64) -> Vec<Value> {
    let mut windows: BTreeMap<(&str, u64), (u64, BTreeSet<&str>)> = BTreeMap::new();
    for e in events {
        let key = (e.page.as_str(), window_start(e.time, cfg.window_ms()));
        let (count, users) = windows.entry(key).or_default();
        *count += 1;
        users.insert(&e.user);
    }
    windows
        .into_iter()
        .filter(|((_, start), _)| retained(start + cfg.window_ms(), cfg, watermark))
        .map(|((page, start), (count, users))| {
            json!({
                "page": page,
                "window_start": start,
                "window_end": start + cfg.window_ms(),
                "view_count": count,
                "unique_users": users.len(),
            })
        })
        .collect()
}

fn sessions(events: &[&Event], cfg: &Config, watermark: u64) -> Vec<Value> {
    let mut by_user: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in events {
        by_user.entry(&e.user).or_default().push(e);
    }
    let mut rows = Vec::new();
    for (user, mut list) in by_user {
        list.sort_by_key(|e| (e.time, e.line));
        let mut sessions: Vec<Vec<&Event>> = Vec::new();
        for e in list {
            match sessions.last_mut() {
                Some(current)
                    if current
                        .last()
                        .is_some_and(|prev| e.time - prev.time <= cfg.session_gap_ms()) =>
                {
                    current.push(e);
                }
                _ => sessions.push(vec![e]),
            }
        }
        for session in sessions {
            let (start, end) = (session[0].time, session[session.len() - 1].time);
            if retained(end, cfg, watermark) {
                let pages: Vec<&str> = session.iter().map(|e| e.page.as_str()).collect();
                rows.push(json!({
                    "user_id": user,
                    "session_start": start,
                    "session_end": end,
                    "pages_viewed": session.len(),
                    "page_sequence": pages,
                }));
            }
        }
    }
    rows
}

/// Whether `visits` (one user's events in one window) contain steps `0..=step` of the
/// funnel at non-decreasing times; greedily takes the earliest possible visit per step.
fn converted(visits: &[&Event], step: usize) -> bool {
    let mut earliest = 0;
    FUNNEL_STEPS[..=step].iter().all(|(_, page)| {
        let next = visits
            .iter()
            .filter(|e| e.page == *page && e.time >= earliest)
            .map(|e| e.time)
            .min();
        next.inspect(|t| earliest = *t).is_some()
    })
}

fn funnel(events: &[&Event], cfg: &Config, watermark: u64) -> Vec<Value> {
    let size = cfg.funnel_window_ms();
    let mut windows: BTreeMap<u64, BTreeMap<&str, Vec<&Event>>> = BTreeMap::new();
    for e in events {
        windows
            .entry(window_start(e.time, size))
            .or_default()
            .entry(&e.user)
            .or_default()
            .push(e);
    }
    let mut rows = BTreeMap::new();
    for (start, users) in windows {
        if !retained(start + size, cfg, watermark) {
            continue;
        }
        for (step, (name, page)) in FUNNEL_STEPS.iter().enumerate() {
            let visitors = users
                .values()
                .filter(|visits| visits.iter().any(|e| e.page == *page))
                .count();
            let converters = users.values().filter(|v| converted(v, step)).count();
            if visitors > 0 {
                let row = json!({
                    "funnel_step": name,
                    "window_start": start,
                    "window_end": start + size,
                    "unique_users": visitors,
                    "converted_users": converters,
                });
                rows.insert((*name, start), row);
            }
        }
    }
    rows.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_795_521_600_000; // 2026-11-24T12:00:00Z

    fn event(user: &str, page: &str, time: u64) -> String {
        json!({"user_id": user, "page": page, "timestamp": time}).to_string()
    }

    fn reasons(input: &[u8], cfg: &Config) -> Vec<Option<&'static str>> {
        classify(input, cfg)
            .0
            .iter()
            .map(|r| r.reason.map(Reason::as_str))
            .collect()
    }

    #[test]
    fn splits_lines_like_the_decision_says() {
        assert_eq!(split_records(b""), Vec::<&[u8]>::new());
        assert_eq!(split_records(b"\n"), vec![b"" as &[u8]]);
        assert_eq!(split_records(b"a\r\n\r\nb"), vec![b"a" as &[u8], b"", b"b"]);
        assert_eq!(split_records(b"a\r\r\n \n"), vec![b"a\r" as &[u8], b" "]);
    }

    #[test]
    fn decoding_reasons_in_priority_order() {
        let cfg = Config {
            max_event_bytes: Some(60),
            ..Config::default()
        };
        let lines: [(&[u8], Option<&str>); 20] = [
            (
                br#"{"user_id":"u","page":"/","timestamp":1795521600000}"#,
                None,
            ),
            (
                br#"{"user_id":"uuuuuuuuuu","page":"/","timestamp":1795521600000}"#,
                Some("too_large"),
            ),
            (b"", Some("invalid_json")),
            (b"[1]", Some("invalid_json")),
            (b"{} x", Some("invalid_json")),
            (b"{\"user_id\":\"\xff\"}", Some("invalid_json")),
            (
                br#"{"user_id":"u","page":null,"timestamp":"x"}"#,
                Some("missing_field"),
            ),
            (br#"{"user_id":"","page":"/"}"#, Some("missing_field")),
            (
                br#"{"user_id":"","page":"/","timestamp":"x"}"#,
                Some("invalid_field"),
            ),
            (
                br#"{"user_id":"u","page":7,"timestamp":"x"}"#,
                Some("invalid_field"),
            ),
            (
                br#"{"user_id":"u","page":"/","timestamp":"x"}"#,
                Some("invalid_timestamp"),
            ),
            (
                br#"{"user_id":"u","page":"/","timestamp":1.0}"#,
                Some("invalid_timestamp"),
            ),
            (
                br#"{"user_id":"u","page":"/","timestamp":-1}"#,
                Some("invalid_timestamp"),
            ),
            (
                br#"{"user_id":"u","page":"/","timestamp":true}"#,
                Some("invalid_timestamp"),
            ),
            (
                br#"{"user_id":"u","page":"/","timestamp":"1795521600000"}"#,
                Some("invalid_timestamp"),
            ),
            (
                br#"{"user_id":"u","page":"/","timestamp":253402300800000}"#,
                Some("invalid_timestamp"),
            ),
            (
                br#"{"user_id":"u","page":"/","timestamp":253402300799999}"#,
                None,
            ),
            (
                br#"{"page":"/","user_id":"u","page":null,"timestamp":0}"#,
                Some("missing_field"),
            ),
            (
                br#"{"page":null,"user_id":"u","page":"/","timestamp":0}"#,
                None,
            ),
            (
                b" {\"user_id\":\"u\",\"page\":\"/\",\"timestamp\":0}\t",
                None,
            ),
        ];
        for (index, (line, expected)) in lines.iter().enumerate() {
            let got = decode(index + 1, line, 60).err().map(Reason::as_str);
            assert_eq!(got, *expected, "{}", String::from_utf8_lossy(line));
        }
        assert_eq!(reasons(b"x\n", &cfg), vec![Some("invalid_json")]);
    }

    #[test]
    fn admission_uses_the_watermark_of_admitted_events_only() {
        let cfg = Config {
            retention_ms: Some(1000),
            max_future_ms: Some(100),
            ..Config::default()
        };
        let input = [
            event("a", "/", T),
            event("a", "/", T + 101), // future: T + 101 > T + 100
            event("a", "/", T + 100), // admitted, watermark T + 100
            event("a", "/", T - 900), // admitted: T - 900 + 1000 = T + 100, not < W
            event("a", "/", T - 901), // too late
            event("a", "/", T + 200), // admitted (future limit from T + 100)
            "garbage".to_owned(),     // dead letters do not move the watermark
            event("a", "/", T + 300), // admitted
        ]
        .join("\n");
        let got = reasons(input.as_bytes(), &cfg);
        let expected = [
            None,
            Some("future_timestamp"),
            None,
            None,
            Some("too_late"),
            None,
            Some("invalid_json"),
            None,
        ];
        assert_eq!(got, expected);
        assert_eq!(classify(input.as_bytes(), &cfg).1, Some(T + 300));
    }

    #[test]
    fn views_over_a_small_hand_computed_input() {
        let cfg = Config {
            retention_ms: Some(400_000),
            high_traffic_threshold: Some(1),
            ..Config::default()
        };
        let input = [
            event("b", "/products", T + 59_999),
            event("a", "/products", T),
            event("a", "/cart", T),
            event("a", "/products", T + 1_800_000),
            event("b", "/cart", T + 60_000),
            event("a", "/checkout", T + 1_800_000 + 1_800_001),
        ]
        .join("\r\n");
        let out = reference(input.as_bytes(), &cfg);
        // Final watermark T + 3_600_001; retained iff end + 400_000 > that.
        assert_eq!(
            out.page_views,
            vec![json!({"page": "/checkout", "window_start": T + 3_600_000,
                       "window_end": T + 3_660_000, "view_count": 1, "unique_users": 1}),]
        );
        assert_eq!(out.alerts, Vec::<Value>::new());
        assert_eq!(
            out.sessions,
            vec![json!({"user_id": "a", "session_start": T + 3_600_001,
                        "session_end": T + 3_600_001, "pages_viewed": 1,
                        "page_sequence": ["/checkout"]})]
        );
        assert_eq!(
            out.funnel,
            vec![
                json!({"funnel_step": "checkout", "window_start": T + 3_600_000,
                        "window_end": T + 3_900_000, "unique_users": 1,
                        "converted_users": 0})
            ]
        );

        let keep_all = Config {
            high_traffic_threshold: Some(1),
            ..Config::default()
        };
        let out = reference(input.as_bytes(), &keep_all);
        let products = |start: u64, count: u64, users: u64| {
            json!({"page": "/products", "window_start": start, "window_end": start + 60_000,
                   "view_count": count, "unique_users": users})
        };
        assert_eq!(out.page_views.len(), 5);
        assert_eq!(out.page_views[3], products(T, 2, 2));
        assert_eq!(out.page_views[4], products(T + 1_800_000, 1, 1));
        assert_eq!(
            out.alerts,
            vec![
                json!({"rule": "high_traffic", "page": "/products", "window_start": T,
                        "window_end": T + 60_000, "value": 2, "threshold": 1})
            ]
        );
        let a_first = json!({"user_id": "a", "session_start": T,
            "session_end": T + 1_800_000, "pages_viewed": 3,
            "page_sequence": ["/products", "/cart", "/products"]});
        assert_eq!(out.sessions[0], a_first);
        assert_eq!(out.sessions[2]["session_start"], json!(T + 59_999));
        assert_eq!(
            out.sessions[2]["page_sequence"],
            json!(["/products", "/cart"])
        );
        let cart = &out.funnel[2];
        assert_eq!(cart["funnel_step"], "cart");
        assert_eq!(
            (
                cart["unique_users"].as_u64(),
                cart["converted_users"].as_u64()
            ),
            (Some(2), Some(2))
        );
    }

    #[test]
    fn funnel_allows_ties_but_not_reversals() {
        let visits = |pages: &[(&str, u64)]| -> Vec<Event> {
            pages
                .iter()
                .enumerate()
                .map(|(i, (page, time))| Event {
                    line: i + 1,
                    user: "u".into(),
                    page: (*page).into(),
                    time: *time,
                })
                .collect()
        };
        let tie = visits(&[("/cart", 5), ("/products", 5), ("/checkout", 5)]);
        let refs: Vec<&Event> = tie.iter().collect();
        assert!(converted(&refs, 2));
        assert!(!converted(&refs, 3));
        let reversed = visits(&[("/products", 9), ("/cart", 3), ("/products", 1)]);
        let refs: Vec<&Event> = reversed.iter().collect();
        assert!(converted(&refs, 1));
        let reversed = visits(&[("/products", 9), ("/cart", 3)]);
        let refs: Vec<&Event> = reversed.iter().collect();
        assert!(!converted(&refs, 1));
        assert!(converted(&refs, 0));
    }
}
