//! `user_sessions`: gap-based sessionization of each user's events.
//!
//! Keyed by user; the state is the user's events sorted by (event time, arrival). Two
//! consecutive events belong to one session when their times differ by at most the gap,
//! so the view always equals sessionizing all counted events of the user: a late event
//! may extend a session, merge two, or start a new one. A session shows a row while
//! `session_end + retention` is after the watermark; its events are forgotten once
//! `session_end + gap + retention` is before the watermark, when no admissible event can
//! join it any more.
//!
//! Sessions that end more than a gap before the earliest change since the user's last
//! rows keep those rows, and their events are not read again. The next session keeps its
//! last row's pages before the change, shared ([`PageSequence::truncated`]), and adds the
//! rest ([`PageSequence::extended`]); its events before the change are not searched for
//! gaps again. The next wake-up comes from the first session alone. An event thus costs
//! the pages from it to its session's end and a few searches back from the user's last
//! event, not the length of its session or of its user's history: an event in order, only
//! its own page and the events next to it.

use std::ops::Range;

use compact_str::CompactString;
use differential_dataflow::VecCollection;

use crate::keyed::{KeyedView, maintain};
use crate::multiset::{apply_to_sorted, partition_point_from_end};
use crate::page_sequence::PageSequence;
use crate::rows::SessionRow;
use crate::views::{ArrivedEvent, Time};

/// Maintains `user_sessions` over `events`.
pub(crate) fn user_sessions<'s>(
    events: VecCollection<'s, Time, ArrivedEvent>,
    gap_ms: u64,
    retention_ms: u64,
) -> VecCollection<'s, Time, SessionRow> {
    let keyed = events.map(|arrived| {
        let event = arrived.event;
        (
            event.user_id,
            SessionEvent {
                time: event.time,
                arrival: arrived.arrival,
                page: event.page,
            },
        )
    });
    maintain(
        keyed,
        "UserSessions",
        Sessions {
            gap_ms,
            retention_ms,
        },
    )
}

/// One event of a user, ordered by event time and then arrival.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub(crate) struct SessionEvent {
    time: u64,
    arrival: u64,
    page: CompactString,
}

struct Sessions {
    gap_ms: u64,
    retention_ms: u64,
}

/// One user's events, and what changed since the user's rows were last derived.
#[derive(Default)]
pub(crate) struct UserEvents {
    events: Vec<SessionEvent>,
    /// The earliest time of an event added or removed since then; `None` if none was.
    changed_from: Option<u64>,
}

impl Sessions {
    /// The index ranges of `events` that form sessions, in time order, given that the
    /// first `one_session` events are known to belong to one session (no gap is looked for
    /// among them).
    fn spans<'a>(
        &self,
        events: &'a [SessionEvent],
        one_session: usize,
    ) -> impl Iterator<Item = Range<usize>> + 'a {
        let gap = self.gap_ms;
        let mut start = 0;
        (one_session.clamp(1, events.len().max(1))..=events.len()).filter_map(move |end| {
            let closes = end == events.len() || events[end].time - events[end - 1].time > gap;
            closes.then(|| {
                let span = start..end;
                start = end;
                span
            })
        })
    }

    fn expires_at(&self, session_end: u64) -> Time {
        session_end.saturating_add(self.retention_ms)
    }

    fn forgotten_at(&self, session_end: u64) -> Time {
        session_end
            .saturating_add(self.gap_ms)
            .saturating_add(self.retention_ms)
            .saturating_add(1)
    }
}

impl KeyedView for Sessions {
    type Key = CompactString;
    type Value = SessionEvent;
    type State = UserEvents;
    type Row = SessionRow;

    fn apply(&self, user: &mut UserEvents, event: SessionEvent, diff: isize) {
        user.changed_from = Some(user.changed_from.map_or(event.time, |t| t.min(event.time)));
        apply_to_sorted(&mut user.events, event, diff);
    }

    fn rows(
        &self,
        user_id: &CompactString,
        user: &mut UserEvents,
        time: Time,
        previous: &[SessionRow],
        rows: &mut Vec<SessionRow>,
    ) {
        let changed_from = user.changed_from.take();
        // Sessions that end more than a gap before the earliest change are as they were (a
        // changed event could neither join nor split them): their rows stay while they
        // have not expired, and only the events after them are sessionized again.
        let kept = previous.partition_point(|row| {
            changed_from.is_none_or(|changed| row.session_end.saturating_add(self.gap_ms) < changed)
        });
        let kept = &previous[..kept];
        rows.extend(
            kept.iter()
                .filter(|row| time < self.expires_at(row.session_end))
                .cloned(),
        );
        let from = kept.last().map_or(0, |row| {
            partition_point_from_end(&user.events, |event| event.time <= row.session_end)
        });
        let events = &user.events[from..];
        // The first session after the kept ones still starts with its row's events before
        // the earliest change, which hold no gap: the search for session ends goes on from
        // the last of them, so an event in order does not read its session's earlier events.
        let unchanged = previous
            .get(kept.len())
            .map_or(0, |row| unchanged_prefix(events, row, changed_from));
        for span in self.spans(events, unchanged) {
            let session = &events[span];
            let (first, last) = (&session[0], &session[session.len() - 1]);
            if time < self.expires_at(last.time) {
                rows.push(SessionRow {
                    user_id: user_id.clone(),
                    session_start: first.time,
                    session_end: last.time,
                    pages_viewed: session.len() as u64,
                    page_sequence: page_sequence(session, previous, changed_from),
                });
            }
        }
    }

    fn retire(&self, _user_id: &CompactString, user: &mut UserEvents, time: Time) -> bool {
        let events = &mut user.events;
        // The first session ends no earlier than its first event: while that event is not
        // forgotten, no session is (and the first session is not scanned).
        if events
            .first()
            .is_some_and(|first| self.forgotten_at(first.time) > time)
        {
            return false;
        }
        let forgotten = self
            .spans(events, 0)
            .take_while(|span| self.forgotten_at(events[span.end - 1].time) <= time)
            .last()
            .map_or(0, |span| span.end);
        events.drain(..forgotten);
        events.is_empty()
    }

    fn next_change(
        &self,
        _user_id: &CompactString,
        user: &UserEvents,
        time: Time,
        rows: &[SessionRow],
    ) -> Option<Time> {
        // Sessions end in time order, more than a gap apart, so the first session expires
        // before any other does, and is forgotten before any other expires. Retirement has
        // left it unforgotten. Its row, when it still shows one, gives its end.
        let first = user.events.first()?;
        let end = match rows.first() {
            Some(row) if row.session_start == first.time => row.session_end,
            _ => {
                let span = self.spans(&user.events, 0).next()?;
                user.events[span.end - 1].time
            }
        };
        [self.expires_at(end), self.forgotten_at(end)]
            .into_iter()
            .find(|&at| at > time)
    }
}

/// The pages of `session`: those of its row in `previous` (the one with the same start)
/// before the earliest change, shared, followed by the rest.
fn page_sequence(
    session: &[SessionEvent],
    previous: &[SessionRow],
    changed_from: Option<u64>,
) -> PageSequence {
    fn pages(events: &[SessionEvent]) -> impl ExactSizeIterator<Item = CompactString> + '_ {
        events.iter().map(|event| event.page.clone())
    }
    let row = previous
        .binary_search_by_key(&session[0].time, |row| row.session_start)
        .ok()
        .map(|index| &previous[index]);
    match row.map(|row| (row, unchanged_prefix(session, row, changed_from))) {
        Some((row, unchanged)) if unchanged > 0 => row
            .page_sequence
            .truncated(unchanged)
            .extended(pages(&session[unchanged..])),
        _ => pages(session).collect(),
    }
}

/// How many of the first `events` are still the first events of `row`, the user's last
/// row for the session that starts with them: those before the earliest change (`None`:
/// nothing changed), when `row` starts with the first of them. No event below the change
/// was added or removed, and a session's events are consecutive, so those are the row's.
fn unchanged_prefix(events: &[SessionEvent], row: &SessionRow, changed_from: Option<u64>) -> usize {
    let starts_alike = events
        .first()
        .is_some_and(|first| first.time == row.session_start);
    if !starts_alike {
        return 0;
    }
    partition_point_from_end(events, |event| {
        changed_from.is_none_or(|changed| event.time < changed)
    })
    .min(row.pages_viewed as usize)
}
