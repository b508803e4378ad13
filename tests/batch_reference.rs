//! `clickflow batch` against the reference implementation in `support::reference`: random,
//! edge-case-heavy inputs (property tests), one file with every malformed shape, one with
//! every timestamp format, and a check that the generator really reaches the edge cases.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::Value;

use support::Config;
use support::generate::{
    Case, Delta, EventSpec, Extra, FIXED_LINES, Field, LineSpec, Mutation, NAME_REPLACEMENTS,
    NON_UTF8, PageChoice, T0, TIMESTAMP_REPLACEMENTS, TRAILERS, TimeSpec, TsStyle, case,
    materialize,
};
use support::reference::{Event, FUNNEL_STEPS, classify, reference};
use support::run::{compare, run_batch, slow_config};
use support::timestamp::{Fraction, IsoFormat, Offset};

/// Runs the binary on `input` and compares every output file with the reference.
fn check(input: &[u8], cfg: &Config) -> Result<(), String> {
    let expected = reference(input, cfg);
    let actual = run_batch(input, cfg)?.parse()?;
    compare(&expected, &actual, input, cfg)
}

proptest! {
    #![proptest_config(slow_config(56))]

    #[test]
    fn batch_matches_the_reference(case in case(40)) {
        check(&case.input, &case.cfg).map_err(TestCaseError::fail)?;
    }
}

/// A valid event one millisecond after the largest time so far.
fn event(user: usize, page: usize, delta_ms: i64, style: TsStyle) -> EventSpec {
    EventSpec {
        user,
        page: PageChoice::Index(page),
        time: TimeSpec::AfterMax(Delta::Ms(delta_ms)),
        style,
        order: 0,
        spaced: false,
        extra: Extra::None,
    }
}

#[test]
fn every_malformed_shape_matches_the_reference() {
    let base = event(0, 0, 1, TsStyle::Integer);
    let fields = [Field::UserId, Field::Page, Field::Timestamp];
    let names = NAME_REPLACEMENTS.iter().flat_map(|v| {
        [
            Mutation::Replace(Field::UserId, v),
            Mutation::Replace(Field::Page, v),
        ]
    });
    let mutations = fields
        .iter()
        .flat_map(|f| [Mutation::Drop(*f), Mutation::Null(*f)])
        .chain(names)
        .chain(
            TIMESTAMP_REPLACEMENTS
                .iter()
                .map(|v| Mutation::Replace(Field::Timestamp, v)),
        )
        .chain(TRAILERS.iter().map(|t| Mutation::Trailing(t)))
        .chain(
            NON_UTF8
                .iter()
                .flat_map(|b| [Mutation::NonUtf8(b, 0), Mutation::NonUtf8(b, 20)]),
        )
        .chain([0, 1, 128, 255].map(Mutation::Truncate))
        .chain([Mutation::Bom]);
    let extras = [
        Extra::Optional,
        Extra::Unknown,
        Extra::DuplicateUser,
        Extra::DuplicateTimestamp,
        Extra::DuplicatePage,
    ];
    let mut lines = vec![LineSpec::Event(base)];
    lines.extend(FIXED_LINES.iter().map(|text| LineSpec::Fixed(text)));
    lines.extend(mutations.map(|m| LineSpec::Mutated(base, m)));
    lines.extend(extras.map(|extra| LineSpec::Event(EventSpec { extra, ..base })));
    lines.extend((-1..=1).map(|e| LineSpec::Padded(base, e)));
    let lines: Vec<(LineSpec, bool)> = lines.into_iter().map(|l| (l, false)).collect();
    // Invalid UTF-8 inside string values that a decoder might skip rather than read.
    let mut skipped_values = Vec::new();
    for bad in NON_UTF8 {
        for (before, after) in [
            (r#""referrer":""#, r#"""#),
            (r#""x":""#, r#"""#),
            (r#""x":[{"y":""#, r#""}]"#),
        ] {
            skipped_values.extend_from_slice(b"{\"user_id\":\"u1\",\"page\":\"/\",");
            skipped_values.extend_from_slice(before.as_bytes());
            skipped_values.extend_from_slice(bad);
            skipped_values.extend_from_slice(after.as_bytes());
            skipped_values.extend_from_slice(format!(",\"timestamp\":{T0}}}\n").as_bytes());
        }
    }
    for max_event_bytes in [None, Some(90)] {
        let cfg = Config {
            max_event_bytes,
            ..Config::default()
        };
        let mut input = materialize(&cfg, &lines, true);
        input.extend_from_slice(&skipped_values);
        check(&input, &cfg).unwrap_or_else(|report| panic!("{report}"));
    }
}

#[test]
fn every_timestamp_format_matches_the_reference() {
    let fractions = [
        Fraction::None,
        Fraction::Shortest,
        Fraction::Padded(0),
        Fraction::Padded(6),
    ];
    let offsets = [
        Offset::None,
        Offset::Zulu(false),
        Offset::Zulu(true),
        Offset::Colon(330),
        Offset::Colon(-1439),
        Offset::Compact(-90),
        Offset::Compact(1439),
        Offset::Hours(-23),
        Offset::Hours(5),
    ];
    let mut lines = Vec::new();
    for separator in ['T', 't', ' '] {
        for seconds in [false, true] {
            for fraction in fractions {
                for offset in offsets {
                    let format = IsoFormat {
                        separator,
                        seconds,
                        fraction,
                        offset,
                    };
                    let n = lines.len();
                    let step = [60_000, 1, 1_000, 999][n % 4];
                    let spec = event(n % 3, n % 8, step, TsStyle::Iso(format));
                    lines.push((LineSpec::Event(spec), n % 5 == 0));
                }
            }
        }
    }
    let cfg = Config {
        high_traffic_threshold: Some(2),
        ..Config::default()
    };
    let input = materialize(&cfg, &lines, false);
    check(&input, &cfg).unwrap_or_else(|report| panic!("{report}"));
}

/// The edge cases a generated case reaches, by name (computed with the reference).
fn features(case: &Case) -> BTreeSet<&'static str> {
    let cfg = &case.cfg;
    let (records, _) = classify(&case.input, cfg);
    let out = reference(&case.input, cfg);
    let mut found = BTreeSet::new();
    found.extend(records.iter().filter_map(|r| r.reason.map(|r| r.as_str())));
    let admitted: Vec<_> = records.iter().filter_map(|r| r.admitted()).collect();

    let mut by_user: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for e in &admitted {
        by_user.entry(&e.user).or_default().push(e.time);
    }
    for times in by_user.values_mut() {
        times.sort_unstable();
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            if gap == cfg.session_gap_ms() {
                found.insert("consecutive events exactly one gap apart");
            }
            if gap == cfg.session_gap_ms() + 1 {
                found.insert("consecutive events one gap + 1 ms apart");
            }
        }
    }
    let mut running_max = 0;
    let mut late: Vec<&Event> = Vec::new();
    for e in &admitted {
        if e.time < running_max {
            late.push(e);
        }
        running_max = running_max.max(e.time);
    }
    let in_row = |e: &Event, row: &Value| {
        row["page"] == e.page.as_str()
            && (row["window_start"].as_u64().unwrap()..row["window_end"].as_u64().unwrap())
                .contains(&e.time)
    };
    if out.alerts.iter().any(|a| late.iter().any(|e| in_row(e, a))) {
        found.insert("late event inside an alerted window");
    }
    if !late.is_empty()
        && out
            .sessions
            .iter()
            .any(|s| s["pages_viewed"].as_u64() > Some(1))
    {
        found.insert("late events and multi-event sessions");
    }
    let counted: u64 = out
        .page_views
        .iter()
        .filter_map(|r| r["view_count"].as_u64())
        .sum();
    if counted < admitted.len() as u64 {
        found.insert("retention drops windows at the end");
    }
    if out.sessions.len() < by_user.len() {
        found.insert("retention drops sessions at the end");
    }
    let in_funnel = |e: &Event| FUNNEL_STEPS.iter().any(|(_, page)| e.page == *page);
    for (i, a) in admitted.iter().enumerate() {
        for b in admitted[i + 1..]
            .iter()
            .filter(|b| (&b.user, b.time) == (&a.user, a.time))
        {
            if a.page == b.page {
                found.insert("duplicate events");
            } else if in_funnel(a) && in_funnel(b) {
                found.insert("funnel visits with equal times");
            }
        }
    }
    for row in &out.funnel {
        let (unique, converted) = (&row["unique_users"], &row["converted_users"]);
        if row["funnel_step"] == "purchase" && converted.as_u64() > Some(0) {
            found.insert("funnel purchase converted");
        }
        if row["funnel_step"] != "browse" && converted.as_u64() < unique.as_u64() {
            found.insert("funnel visit without conversion");
        }
    }
    if !out.alerts.is_empty() {
        found.insert("alerts");
    }
    for (condition, name) in [
        (case.input.windows(2).any(|w| w == b"\r\n"), "crlf"),
        (
            case.input.last().is_some_and(|b| *b != b'\n'),
            "no final newline",
        ),
        (
            records
                .iter()
                .any(|r| r.event.is_some() && r.raw.len() as u64 == cfg.max_event_bytes()),
            "event of exactly max_event_bytes",
        ),
    ] {
        if condition {
            found.insert(name);
        }
    }
    found
}

#[test]
fn generator_reaches_the_edge_cases() {
    let mut runner = TestRunner::deterministic();
    let strategy = case(40);
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let cases = 400;
    for _ in 0..cases {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        for feature in features(&case) {
            *seen.entry(feature).or_default() += 1;
        }
    }
    let wanted = [
        "too_large",
        "invalid_json",
        "missing_field",
        "invalid_field",
        "invalid_timestamp",
        "too_late",
        "future_timestamp",
        "consecutive events exactly one gap apart",
        "consecutive events one gap + 1 ms apart",
        "late event inside an alerted window",
        "late events and multi-event sessions",
        "retention drops windows at the end",
        "retention drops sessions at the end",
        "funnel visits with equal times",
        "duplicate events",
        "funnel purchase converted",
        "funnel visit without conversion",
        "alerts",
        "crlf",
        "no final newline",
        "event of exactly max_event_bytes",
    ];
    let rare: Vec<_> = wanted
        .iter()
        .filter(|name| seen.get(*name).copied().unwrap_or(0) < cases / 100)
        .collect();
    assert!(
        rare.is_empty(),
        "rarely generated: {rare:?}\nall counts: {seen:#?}"
    );
}
