//! The views' exact `(row, time, diff)` updates: late corrections, session merges,
//! retention at exactly `end + retention`, and alert rules added and removed at run time;
//! and sessions fed one event per time equal, at every time, sessionizing the events so
//! far (a session's rows share and extend pages from time to time).

use std::sync::{Arc, Mutex};

use clickflow_dataflow::{
    AlertRow, AlertRule, ArrivedEvent, Comparison, Metric, PageViewRow, SessionRow, Time,
    ViewConfig, ViewName, build_views,
};
use clickflow_events::Event;
use differential_dataflow::VecCollection;
use differential_dataflow::consolidation::consolidate_updates;
use differential_dataflow::input::Input;
use proptest::prelude::*;
use timely::dataflow::ProbeHandle;

const MINUTE: u64 = 60_000;
const RETENTION: u64 = 60 * MINUTE;
const GAP: u64 = 30 * MINUTE;

/// Something to do at an input time.
#[derive(Clone, Debug)]
enum Step {
    Event(&'static str, &'static str, u64),
    AddRule(AlertRule),
    RemoveRule(AlertRule),
}

#[derive(Default)]
struct Updates {
    page_views: Vec<(PageViewRow, Time, isize)>,
    sessions: Vec<(SessionRow, Time, isize)>,
    alerts: Vec<(AlertRow, Time, isize)>,
}

/// Feeds `steps` (each at its input time, in order; input times respect admission: no
/// event is older than its input time minus the retention) and runs until every time before
/// `until` is complete; returns each view's consolidated updates.
fn run(steps: Vec<(Time, Step)>, until: Time) -> Updates {
    run_on(1, steps, until)
}

/// Appends every update of `view` to `updates`, on the side `side` picks.
fn collect<R: differential_dataflow::Data>(
    view: VecCollection<'_, Time, R>,
    updates: &Arc<Mutex<Updates>>,
    side: fn(&mut Updates) -> &mut Vec<(R, Time, isize)>,
) {
    let sink = Arc::clone(updates);
    view.inspect(move |update| {
        side(&mut sink.lock().expect("a worker panicked")).push(update.clone())
    });
}

/// [`run`] on `workers` worker threads, with every step fed by the first.
fn run_on(workers: usize, steps: Vec<(Time, Step)>, until: Time) -> Updates {
    let collected = Arc::new(Mutex::new(Updates::default()));
    let steps = Mutex::new(Some(steps));
    let updates = Arc::clone(&collected);
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let steps = match worker.index() {
            0 => steps
                .lock()
                .expect("a worker panicked")
                .take()
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        let probe = ProbeHandle::new();
        let config = ViewConfig {
            retention_ms: RETENTION,
            session_gap_ms: GAP,
            ..ViewConfig::default()
        };
        let (mut events, mut rules) = worker.dataflow::<Time, _, _>(|scope| {
            let (events_input, events) = scope.new_collection::<ArrivedEvent, isize>();
            let (rules_input, rules) = scope.new_collection::<AlertRule, isize>();
            let views = build_views(events, rules, &config).probe_with(&probe);
            collect(views.page_views, &updates, |all| &mut all.page_views);
            collect(views.sessions, &updates, |all| &mut all.sessions);
            collect(views.alerts, &updates, |all| &mut all.alerts);
            (events_input, rules_input)
        });
        let mut current = 0;
        for (arrival, (time, step)) in (1..).zip(steps) {
            events.advance_to(time);
            rules.advance_to(time);
            if time > current {
                // Each time reaches the views on its own, after the earlier ones are done.
                events.flush();
                rules.flush();
                worker.step_while(|| probe.less_than(&time));
                current = time;
            }
            match step {
                Step::Event(user, page, at) => {
                    let event = Event {
                        user_id: user.into(),
                        page: page.into(),
                        time: at,
                    };
                    events.insert(ArrivedEvent { event, arrival });
                }
                Step::AddRule(rule) => rules.insert(rule),
                Step::RemoveRule(rule) => rules.remove(rule),
            }
        }
        events.advance_to(until);
        rules.advance_to(until);
        events.flush();
        rules.flush();
        worker.step_while(|| probe.less_than(&until));
    })
    .expect("the workers start");
    for result in guards.join() {
        result.expect("a worker failed");
    }
    let mut updates = std::mem::take(&mut *collected.lock().expect("a worker panicked"));
    consolidate_updates(&mut updates.page_views);
    consolidate_updates(&mut updates.sessions);
    consolidate_updates(&mut updates.alerts);
    updates
}

fn page_row(page: &str, start: u64, views: u64, users: u64) -> PageViewRow {
    PageViewRow {
        page: page.into(),
        window_start: start,
        window_end: start + MINUTE,
        view_count: views,
        unique_users: users,
    }
}

fn session(user: &str, start: u64, end: u64, pages: &[&str]) -> SessionRow {
    SessionRow {
        user_id: user.into(),
        session_start: start,
        session_end: end,
        pages_viewed: pages.len() as u64,
        page_sequence: pages.iter().map(|&p| p.into()).collect(),
    }
}

#[test]
fn a_late_event_corrects_its_window_and_retention_retracts_at_end_plus_retention() {
    let t0 = 100 * MINUTE;
    let updates = run(
        vec![
            (t0, Step::Event("a", "/p", t0 + 5)),
            (t0 + 5, Step::Event("b", "/p", t0 + 2 * MINUTE)),
            // Late by two minutes, still inside retention: corrects the first window.
            (t0 + 2 * MINUTE, Step::Event("b", "/p", t0 + 10)),
        ],
        t0 + 2 * RETENTION,
    );
    let corrected = page_row("/p", t0, 2, 2);
    let mut expected = vec![
        (page_row("/p", t0, 1, 1), t0, 1),
        (page_row("/p", t0, 1, 1), t0 + 2 * MINUTE, -1),
        (corrected.clone(), t0 + 2 * MINUTE, 1),
        (corrected, t0 + MINUTE + RETENTION, -1),
        (page_row("/p", t0 + 2 * MINUTE, 1, 1), t0 + 5, 1),
        (
            page_row("/p", t0 + 2 * MINUTE, 1, 1),
            t0 + 3 * MINUTE + RETENTION,
            -1,
        ),
    ];
    consolidate_updates(&mut expected);
    assert_eq!(updates.page_views, expected);
}

#[test]
fn a_late_event_merges_two_sessions_and_sessions_expire_at_end_plus_retention() {
    let t0 = 1000 * MINUTE;
    let later = t0 + GAP + 20 * MINUTE;
    let updates = run(
        vec![
            (t0, Step::Event("u", "/a", t0)),
            (t0 + 1, Step::Event("u", "/c", later)),
            // Within the gap of both: joins them into one session.
            (later, Step::Event("u", "/b", t0 + GAP)),
        ],
        later + RETENTION + 1,
    );
    let merged = session("u", t0, later, &["/a", "/b", "/c"]);
    let mut expected = vec![
        (session("u", t0, t0, &["/a"]), t0, 1),
        (session("u", t0, t0, &["/a"]), later, -1),
        (session("u", later, later, &["/c"]), t0 + 1, 1),
        (session("u", later, later, &["/c"]), later, -1),
        (merged.clone(), later, 1),
        (merged, later + RETENTION, -1),
    ];
    consolidate_updates(&mut expected);
    assert_eq!(updates.sessions, expected);
}

/// The sessions of `events` (user, page, time; in arrival order), as a plain reference.
fn sessionize(events: &[(&str, &str, u64)]) -> Vec<SessionRow> {
    let mut by_user: Vec<_> = events.iter().enumerate().collect();
    by_user.sort_by_key(|&(arrival, &(user, _, time))| (user, time, arrival));
    let mut rows = Vec::new();
    let mut current: Option<(&str, u64, u64, Vec<&str>)> = None;
    for (_, &(user, page, time)) in by_user {
        match &mut current {
            Some((u, _, end, pages)) if *u == user && time - *end <= GAP => {
                *end = time;
                pages.push(page);
            }
            _ => {
                rows.extend(current.take().map(|(u, s, e, p)| session(u, s, e, &p)));
                current = Some((user, time, time, vec![page]));
            }
        }
    }
    rows.extend(current.map(|(u, s, e, p)| session(u, s, e, &p)));
    rows.sort();
    rows
}

/// Users and pages of the generated sessions.
const USERS: [&str; 2] = ["u0", "u1"];
const PAGES: [&str; 3] = ["/a", "/b", "/c"];

/// The consolidated collection of `updates` at `time`.
fn at<R: Ord + Clone>(updates: &[(R, Time, isize)], time: Time) -> Vec<(R, isize)> {
    let mut shown: Vec<_> = updates
        .iter()
        .filter(|(_, at, _)| *at <= time)
        .map(|(row, _, diff)| (row.clone(), *diff))
        .collect();
    differential_dataflow::consolidation::consolidate(&mut shown);
    shown
}

proptest! {
    #[test]
    fn sessions_fed_an_event_at_a_time_equal_sessionizing_the_events_so_far(
        events in prop::collection::vec((0..2usize, 0..3usize, 0..8u64, 0..3u64), 1..25),
    ) {
        // Times in steps of two thirds of the gap, some equal: events extend sessions at
        // either end, fall inside them, bridge two, or start new ones.
        let events: Vec<(&str, &str, u64)> = events
            .into_iter()
            .map(|(user, page, step, ms)| (USERS[user], PAGES[page], step * GAP * 2 / 3 + ms))
            .collect();
        let steps = (1..)
            .zip(&events)
            .map(|(time, &(user, page, at))| (time, Step::Event(user, page, at)))
            .collect();
        let until = events.len() as Time + 1;
        let updates = run(steps, until);
        for time in 1..until {
            let shown = at(&updates.sessions, time);
            let expected: Vec<_> = sessionize(&events[..time as usize])
                .into_iter()
                .map(|row| (row, 1))
                .collect();
            prop_assert_eq!(shown, expected, "at time {}", time);
        }
    }

    #[test]
    fn sessions_at_the_watermark_equal_sessionizing_the_admitted_events_less_the_expired(
        events in prop::collection::vec((0..2usize, 0..3usize, 0..12u64, 0..3u64), 1..25),
    ) {
        // Each event enters at the watermark (the largest event time so far), as the
        // sources do; one older than the watermark minus the retention is not admitted.
        // Over four hours of event time, sessions expire and are forgotten meanwhile.
        let mut watermark = 0;
        let mut admitted = Vec::new();
        for (user, page, step, ms) in events {
            let at = step * GAP * 2 / 3 + ms;
            watermark = watermark.max(at);
            if at + RETENTION >= watermark {
                admitted.push((watermark, (USERS[user], PAGES[page], at)));
            }
        }
        let steps = admitted
            .iter()
            .map(|&(time, (user, page, at))| (time, Step::Event(user, page, at)))
            .collect();
        let until = watermark + 1;
        let updates = run(steps, until);
        let events: Vec<_> = admitted.iter().map(|&(_, event)| event).collect();
        for (index, &(time, _)) in admitted.iter().enumerate() {
            if admitted.get(index + 1).is_some_and(|&(next, _)| next == time) {
                continue;
            }
            let shown = at(&updates.sessions, time);
            let expected: Vec<_> = sessionize(&events[..=index])
                .into_iter()
                .filter(|row| row.session_end + RETENTION > time)
                .map(|row| (row, 1))
                .collect();
            prop_assert_eq!(shown, expected, "at time {}", time);
        }
    }
}

#[test]
fn rules_added_at_run_time_fire_for_existing_windows_and_clear_when_removed() {
    let t0 = 50 * MINUTE;
    let rule = AlertRule::high_traffic(1);
    let steps = vec![
        (t0, Step::Event("a", "/hot", t0)),
        (t0, Step::Event("b", "/hot", t0 + 1)),
        (t0, Step::Event("c", "/cold", t0 + 2)),
        (t0 + 10, Step::AddRule(rule.clone())),
        (t0 + 20, Step::RemoveRule(rule)),
    ];
    let updates = run(steps, t0 + 30);
    let alert = AlertRow {
        rule: "high_traffic".into(),
        page: "/hot".into(),
        window_start: t0,
        window_end: t0 + MINUTE,
        value: 2,
        threshold: 1,
    };
    assert_eq!(
        updates.alerts,
        vec![(alert.clone(), t0 + 10, 1), (alert, t0 + 20, -1)]
    );
}

/// Rules that differ in metric, comparison, threshold and page prefix.
fn rule(index: usize) -> AlertRule {
    let (metric, comparison, threshold, prefix) = [
        (Metric::ViewCount, Comparison::Greater, 1, ""),
        (Metric::UniqueUsers, Comparison::GreaterOrEqual, 2, ""),
        (Metric::ViewCount, Comparison::Equal, 1, "/a"),
        (Metric::ViewCount, Comparison::LessOrEqual, 2, "/b"),
        (Metric::UniqueUsers, Comparison::Less, 2, ""),
    ][index];
    AlertRule {
        rule_id: format!("rule{index}").into(),
        view: ViewName::PageViewsPerMinute,
        metric,
        comparison,
        threshold,
        page_prefix: prefix.into(),
    }
}

/// The reference: the alert `rule` raises for `row`, if any.
fn reference_alert(rule: &AlertRule, row: &PageViewRow) -> Option<AlertRow> {
    let value = match rule.metric {
        Metric::ViewCount => row.view_count,
        Metric::UniqueUsers => row.unique_users,
    };
    let holds = match rule.comparison {
        Comparison::Greater => value > rule.threshold,
        Comparison::GreaterOrEqual => value >= rule.threshold,
        Comparison::Less => value < rule.threshold,
        Comparison::LessOrEqual => value <= rule.threshold,
        Comparison::Equal => value == rule.threshold,
    };
    (holds && row.page.starts_with(rule.page_prefix.as_str())).then(|| AlertRow {
        rule: rule.rule_id.clone(),
        page: row.page.clone(),
        window_start: row.window_start,
        window_end: row.window_end,
        value,
        threshold: rule.threshold,
    })
}

proptest! {
    #[test]
    fn alerts_equal_the_rules_of_each_time_evaluated_on_its_page_view_rows(
        actions in prop::collection::vec((0..4usize, 0..5usize, 0..3usize, 0..3u64), 1..40),
        workers in 1..3usize,
    ) {
        // Input times advance by 0 to 4 minutes, so that rules and events share times and
        // windows leave retention; events are up to 2 minutes older than their time. A
        // rule may be added twice, or removed more often than added: a collection's
        // multiplicities carry through the rules as through a join.
        let mut time = 10 * MINUTE;
        let mut rules: Vec<(usize, Time, isize)> = Vec::new();
        let mut steps = Vec::new();
        for (kind, a, b, c) in actions {
            time += c * 2 * MINUTE;
            match kind {
                0 | 1 => {
                    let at = time - (a as u64 % 3) * MINUTE + b as u64;
                    steps.push((time, Step::Event(USERS[a % 2], PAGES[b], at)));
                }
                2 => {
                    rules.push((a, time, 1));
                    steps.push((time, Step::AddRule(rule(a))));
                }
                _ => {
                    rules.push((a, time, -1));
                    steps.push((time, Step::RemoveRule(rule(a))));
                }
            }
        }
        let until = time + 1;
        let updates = run_on(workers, steps.clone(), until);
        let rule_updates: Vec<_> = rules.iter().map(|&(a, at, diff)| (rule(a), at, diff)).collect();
        let mut times: Vec<Time> = steps.iter().map(|(time, _)| *time).collect();
        times.extend(updates.page_views.iter().map(|(_, time, _)| *time));
        times.sort_unstable();
        times.dedup();
        for time in times {
            let mut expected: Vec<(AlertRow, isize)> = Vec::new();
            for (rule, rule_count) in at(&rule_updates, time) {
                for (row, row_count) in at(&updates.page_views, time) {
                    if let Some(alert) = reference_alert(&rule, &row) {
                        expected.push((alert, rule_count * row_count));
                    }
                }
            }
            differential_dataflow::consolidation::consolidate(&mut expected);
            prop_assert_eq!(at(&updates.alerts, time), expected, "at time {}", time);
        }
    }
}
