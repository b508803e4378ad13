//! Alert rules as a live input: rules added or removed from any thread enter the dataflow
//! at the current frontier of a stream they follow (the sources' progress), so the rule
//! input never holds the frontier back and a change takes effect in the next step.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use differential_dataflow::{AsCollection, VecCollection};
use timely::Container;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::scheduling::SyncActivator;

use crate::alerts::AlertRule;
use crate::views::Time;

/// Rule changes waiting to enter the dataflow. Cloning shares the queue.
#[derive(Clone, Default)]
pub struct RuleChanges {
    queue: Arc<Mutex<Queue>>,
}

#[derive(Default)]
struct Queue {
    pending: Vec<(AlertRule, isize)>,
    /// Wakes the operator that takes the changes, once it exists.
    activator: Option<SyncActivator>,
}

impl RuleChanges {
    /// Adds `rule` (once per call: adding a rule twice needs two removals).
    pub fn add(&self, rule: AlertRule) {
        self.push(rule, 1);
    }

    /// Removes `rule`.
    pub fn remove(&self, rule: AlertRule) {
        self.push(rule, -1);
    }

    fn push(&self, rule: AlertRule, diff: isize) {
        let mut queue = self.lock();
        queue.pending.push((rule, diff));
        if let Some(activator) = &queue.activator {
            // A dataflow that is gone takes no more rules; nothing to wake.
            let _ = activator.activate();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The collection of alert rules: the changes queued in `changes` (pass `None` on all
/// workers but one), each at the frontier of `follow` when it is taken.
pub fn alert_rules<'s, C: Container>(
    follow: Stream<'s, Time, C>,
    changes: Option<RuleChanges>,
) -> VecCollection<'s, Time, AlertRule> {
    let worker = follow.scope().worker();
    follow
        .unary_frontier::<CapacityContainerBuilder<Vec<(AlertRule, Time, isize)>>, _, _, _>(
            Pipeline,
            "AlertRules",
            move |capability, info| {
                if let Some(changes) = &changes {
                    changes.lock().activator =
                        Some(worker.sync_activator_for(info.address.to_vec()));
                }
                let mut capability = Some(capability);
                move |(input, frontier), output| {
                    // Only the frontier of `follow` matters, not its data.
                    input.for_each(|_, _| {});
                    let Some(held) = capability.as_mut() else {
                        return;
                    };
                    if let Some(changes) = &changes {
                        let pending = std::mem::take(&mut changes.lock().pending);
                        if !pending.is_empty() {
                            let time = *held.time();
                            output.session(&*held).give_iterator(
                                pending.into_iter().map(|(rule, diff)| (rule, time, diff)),
                            );
                        }
                    }
                    match frontier.frontier().first() {
                        Some(time) if time > held.time() => held.downgrade(time),
                        Some(_) => {}
                        None => capability = None,
                    }
                }
            },
        )
        .as_collection()
}
