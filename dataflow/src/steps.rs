//! Completed steps: the updates of the published views, handed over frontier step by
//! frontier step.
//!
//! The page-view and alert updates of every worker are routed to worker 0, stashed, and
//! released once the least frontier of both views has passed their times. A [`Step`]
//! therefore holds every update at times in `[from, to)` and nothing else: a consumer that
//! applies steps in order sees each view exactly as it is at `to`, never a partial step.
//! Steps with no updates are released too, so that progress is visible.

use differential_dataflow::VecCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::rows::{AlertRow, PageViewRow};
use crate::stash::TimeStash;
use crate::views::Time;

/// The updates of one frontier step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// The frontier before the step.
    pub from: Time,
    /// The frontier after the step; `None` once the views are complete.
    pub to: Option<Time>,
    /// `page_views_per_minute` updates at times in `[from, to)`, ordered by time.
    pub page_views: Vec<(PageViewRow, Time, isize)>,
    /// `alerts` updates at times in `[from, to)`, ordered by time.
    pub alerts: Vec<(AlertRow, Time, isize)>,
}

/// Hands every completed step of `page_views` and `alerts` to `publish`, which is called
/// on worker 0 only (other workers pass `None`).
pub fn publish_steps<'s>(
    page_views: VecCollection<'s, Time, PageViewRow>,
    alerts: VecCollection<'s, Time, AlertRow>,
    mut publish: Option<impl FnMut(Step) + 'static>,
) {
    let mut page_views_stashed = TimeStash::default();
    let mut alerts_stashed = TimeStash::default();
    let mut from: Time = 0;
    let mut complete = false;
    page_views
        .inner
        .binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
            alerts.inner,
            Exchange::new(|_: &(PageViewRow, Time, isize)| 0),
            Exchange::new(|_: &(AlertRow, Time, isize)| 0),
            "PublishSteps",
            |_capability, _info| {
                move |(page_view_input, page_view_frontier),
                      (alert_input, alert_frontier),
                      _output| {
                    page_view_input.for_each(|_, data| page_views_stashed.push(data));
                    alert_input.for_each(|_, data| alerts_stashed.push(data));
                    // The least frontier; an empty one (a view complete) is the largest.
                    let to = [page_view_frontier.frontier(), alert_frontier.frontier()]
                        .into_iter()
                        .filter_map(|frontier| frontier.first().copied())
                        .min();
                    if complete || to == Some(from) {
                        return;
                    }
                    let Some(publish) = publish.as_mut() else {
                        return;
                    };
                    let released = Step {
                        from,
                        to,
                        page_views: page_views_stashed.take_before(to),
                        alerts: alerts_stashed.take_before(to),
                    };
                    from = to.unwrap_or(from);
                    complete = to.is_none();
                    publish(released);
                }
            },
        );
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use differential_dataflow::input::Input;

    use super::*;

    fn alert(window_start: u64) -> AlertRow {
        AlertRow {
            rule: "high_traffic".into(),
            page: "/a".into(),
            window_start,
            window_end: window_start + 60_000,
            value: 2,
            threshold: 1,
        }
    }

    /// Page views complete while alerts still have updates to come: the steps carry those
    /// updates, and only the last step says the views are complete.
    #[test]
    fn a_view_that_completes_first_does_not_end_the_steps() {
        let steps = timely::execute_directly(move |worker| {
            let published: Rc<RefCell<Vec<Step>>> = Rc::default();
            let sink = Rc::clone(&published);
            let (page_views, mut alerts) = worker.dataflow::<Time, _, _>(|scope| {
                let (page_views_input, page_views) = scope.new_collection::<PageViewRow, isize>();
                let (alerts_input, alerts) = scope.new_collection::<AlertRow, isize>();
                publish_steps(
                    page_views,
                    alerts,
                    Some(move |step| sink.borrow_mut().push(step)),
                );
                (page_views_input, alerts_input)
            });
            page_views.close();
            let settle = |worker: &mut timely::worker::Worker| {
                for _ in 0..20 {
                    worker.step();
                }
            };
            alerts.advance_to(1);
            alerts.flush();
            settle(worker);
            alerts.insert(alert(0));
            alerts.advance_to(5);
            alerts.flush();
            settle(worker);
            alerts.close();
            settle(worker);
            published.take()
        });
        let released: Vec<_> = steps.iter().flat_map(|step| step.alerts.clone()).collect();
        assert_eq!(released, vec![(alert(0), 1, 1)]);
        let complete: Vec<bool> = steps.iter().map(|step| step.to.is_none()).collect();
        assert_eq!(complete.last(), Some(&true));
        assert_eq!(complete.iter().filter(|done| **done).count(), 1);
    }
}
