//! Admission of decoded events against the watermark: the `too_late` and
//! `future_timestamp` dead-letter rules.
//!
//! The watermark is the largest event time admitted so far. An event is too late when it
//! is older than `watermark - retention`, and in the future when it is more than
//! `max_future` ahead of the watermark. Refused events never move the watermark. Before
//! the first admitted event there is no watermark and every decodable event is admitted.

use crate::{DeadLetterReason, EventTime};

/// The time bounds that admission enforces, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdmissionConfig {
    /// How far behind the watermark an event (and the state it touches) is kept.
    pub retention_ms: u64,
    /// How far ahead of the watermark an event may be.
    pub max_future_ms: u64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            retention_ms: 24 * 3_600_000,
            max_future_ms: 3_600_000,
        }
    }
}

/// The watermark of one input (a file, or one Kafka partition) and the rules it applies.
#[derive(Clone, Debug)]
pub struct Admission {
    config: AdmissionConfig,
    watermark: Option<EventTime>,
}

impl Admission {
    /// An admission with no events seen yet.
    pub fn new(config: AdmissionConfig) -> Self {
        Self {
            config,
            watermark: None,
        }
    }

    /// The largest admitted event time, if any event was admitted.
    pub fn watermark(&self) -> Option<EventTime> {
        self.watermark
    }

    /// Admits `time` (advancing the watermark) or says why it is refused.
    pub fn admit(&mut self, time: EventTime) -> Result<(), DeadLetterReason> {
        self.admit_at(time, 0)
    }

    /// Admits `time` into a dataflow whose inputs are already at logical time `floor`
    /// (a watermark reached elsewhere, such as other partitions): the event is also too
    /// late when it is older than `floor - retention`, since its state would have expired.
    pub fn admit_at(&mut self, time: EventTime, floor: EventTime) -> Result<(), DeadLetterReason> {
        let horizon = self.watermark.unwrap_or(0).max(floor);
        if time.saturating_add(self.config.retention_ms) < horizon {
            return Err(DeadLetterReason::TooLate);
        }
        if let Some(watermark) = self.watermark
            && time > watermark.saturating_add(self.config.max_future_ms)
        {
            return Err(DeadLetterReason::FutureTimestamp);
        }
        self.watermark = Some(self.watermark.map_or(time, |w| w.max(time)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission() -> Admission {
        Admission::new(AdmissionConfig {
            retention_ms: 100,
            max_future_ms: 10,
        })
    }

    #[test]
    fn first_event_is_always_admitted() {
        let mut a = admission();
        assert_eq!(a.admit(1_000_000), Ok(()));
        assert_eq!(a.watermark(), Some(1_000_000));
    }

    #[test]
    fn retention_boundary_is_inclusive() {
        let mut a = admission();
        a.admit(1000).unwrap();
        assert_eq!(
            a.admit(900),
            Ok(()),
            "exactly watermark - retention is kept"
        );
        assert_eq!(a.admit(899), Err(DeadLetterReason::TooLate));
        assert_eq!(
            a.watermark(),
            Some(1000),
            "late events do not move the watermark"
        );
    }

    #[test]
    fn the_floor_makes_old_events_late_even_before_the_first() {
        let mut a = admission();
        assert_eq!(a.admit_at(899, 1000), Err(DeadLetterReason::TooLate));
        assert_eq!(a.watermark(), None);
        assert_eq!(a.admit_at(900, 1000), Ok(()));
        assert_eq!(
            a.admit_at(799, 0),
            Err(DeadLetterReason::TooLate),
            "own watermark 900 is the horizon"
        );
        assert_eq!(
            a.admit_at(900, 1500),
            Err(DeadLetterReason::TooLate),
            "the floor beats the own watermark"
        );
    }

    #[test]
    fn future_boundary_is_inclusive_and_refusals_do_not_move_the_watermark() {
        let mut a = admission();
        a.admit(1000).unwrap();
        assert_eq!(a.admit(1011), Err(DeadLetterReason::FutureTimestamp));
        assert_eq!(a.watermark(), Some(1000));
        assert_eq!(a.admit(1010), Ok(()));
        assert_eq!(a.watermark(), Some(1010));
    }
}
