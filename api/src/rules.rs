//! Alert rules as data: the registry behind CreateAlertRule, DeleteAlertRule and
//! ListAlertRules. Every change also goes into the dataflow's rule input, where it fires
//! or clears alerts incrementally (a new rule fires at once for the windows that already
//! satisfy it). With a [`RuleLog`], a change is written to the log first and takes effect
//! only once the broker has it, and the registry starts from the rules the log holds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use clickflow_dataflow::{AlertRule, Comparison, Metric, RuleChanges, ViewName};
use clickflow_ingest::rule_log::{LoggedRules, RuleLog};
use clickflow_proto::v1;

use crate::error::ApiError;

/// The longest rule id.
const MAX_RULE_ID: usize = 128;

/// The rules in force. Cloning shares them.
#[derive(Clone)]
pub struct AlertRules {
    rules: Arc<Mutex<BTreeMap<String, AlertRule>>>,
    changes: RuleChanges,
    log: Option<Arc<RuleLog>>,
}

impl AlertRules {
    /// A registry that sends its changes to `changes`, starting with `initial`.
    pub fn new(changes: RuleChanges, initial: impl IntoIterator<Item = AlertRule>) -> Self {
        let registry = Self {
            rules: Arc::default(),
            changes,
            log: None,
        };
        for rule in initial {
            // Initial rules are the service's own; a duplicate id keeps the first.
            let _ = registry.create(rule);
        }
        registry
    }

    /// A registry that starts from the rules `log` holds (see [`Self::restored`]) and
    /// writes its changes to `log` from then on.
    pub fn logged(
        changes: RuleChanges,
        initial: impl IntoIterator<Item = AlertRule>,
        log: RuleLog,
        logged: LoggedRules,
    ) -> Self {
        Self {
            log: Some(Arc::new(log)),
            ..Self::restored(changes, initial, logged)
        }
    }

    /// A registry that starts with `initial`, then takes each rule's state in `logged`: a
    /// logged rule replaces an initial one of its id, and a logged deletion removes it.
    fn restored(
        changes: RuleChanges,
        initial: impl IntoIterator<Item = AlertRule>,
        logged: LoggedRules,
    ) -> Self {
        let registry = Self::new(changes, initial);
        {
            let mut rules = registry.lock();
            for (id, rule) in logged {
                if let Some(replaced) = rules.remove(&id) {
                    registry.changes.remove(replaced);
                }
                if let Some(rule) = rule {
                    registry.changes.add(rule.clone());
                    rules.insert(id, rule);
                }
            }
        }
        registry
    }

    /// Where the rule changes go: the dataflow's rule input.
    pub fn changes(&self) -> RuleChanges {
        self.changes.clone()
    }

    /// Adds `rule`; its id must be new.
    pub fn create(&self, rule: AlertRule) -> Result<AlertRule, ApiError> {
        let mut rules = self.lock();
        let id = rule.rule_id.to_string();
        if rules.contains_key(&id) {
            return Err(ApiError::RuleExists(id));
        }
        if let Some(log) = &self.log {
            log.record(&id, Some(&rule))?;
        }
        self.changes.add(rule.clone());
        rules.insert(id, rule.clone());
        Ok(rule)
    }

    /// Removes the rule `id`.
    pub fn delete(&self, id: &str) -> Result<AlertRule, ApiError> {
        let mut rules = self.lock();
        let Some(rule) = rules.get(id).cloned() else {
            return Err(ApiError::NoSuchRule(id.to_owned()));
        };
        if let Some(log) = &self.log {
            log.record(id, None)?;
        }
        rules.remove(id);
        self.changes.remove(rule.clone());
        Ok(rule)
    }

    /// Every rule, by id.
    pub fn list(&self) -> Vec<AlertRule> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, AlertRule>> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Checks a requested rule and turns it into the dataflow's.
pub fn parse_rule(rule: Option<v1::AlertRule>) -> Result<AlertRule, ApiError> {
    let rule = rule.ok_or_else(|| ApiError::invalid("rule", "required"))?;
    validate_rule_id(&rule.rule_id, "rule.rule_id")?;
    let view = match v1::View::try_from(rule.view) {
        Ok(v1::View::PageViewsPerMinute) => ViewName::PageViewsPerMinute,
        _ => {
            return Err(ApiError::invalid(
                "rule.view",
                "only VIEW_PAGE_VIEWS_PER_MINUTE is supported",
            ));
        }
    };
    let metric = match v1::Metric::try_from(rule.metric) {
        Ok(v1::Metric::ViewCount) => Metric::ViewCount,
        Ok(v1::Metric::UniqueUsers) => Metric::UniqueUsers,
        _ => {
            return Err(ApiError::invalid(
                "rule.metric",
                "required: METRIC_VIEW_COUNT or METRIC_UNIQUE_USERS",
            ));
        }
    };
    let comparison = match v1::Comparison::try_from(rule.comparison) {
        Ok(v1::Comparison::Greater) => Comparison::Greater,
        Ok(v1::Comparison::GreaterOrEqual) => Comparison::GreaterOrEqual,
        Ok(v1::Comparison::Less) => Comparison::Less,
        Ok(v1::Comparison::LessOrEqual) => Comparison::LessOrEqual,
        Ok(v1::Comparison::Equal) => Comparison::Equal,
        _ => return Err(ApiError::invalid("rule.comparison", "required")),
    };
    if rule.page_prefix.len() > 1024 {
        return Err(ApiError::invalid(
            "rule.page_prefix",
            "longer than 1024 bytes",
        ));
    }
    Ok(AlertRule {
        rule_id: rule.rule_id.into(),
        view,
        metric,
        comparison,
        threshold: rule.threshold,
        page_prefix: rule.page_prefix.into(),
    })
}

/// Checks a rule id: 1..=128 characters of `[A-Za-z0-9_.-]`.
pub fn validate_rule_id(id: &str, field: &'static str) -> Result<(), ApiError> {
    let valid = !id.is_empty()
        && id.len() <= MAX_RULE_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("{id:?} is not 1 to {MAX_RULE_ID} characters of A-Z a-z 0-9 _ . -"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, threshold: u64) -> AlertRule {
        AlertRule {
            rule_id: id.into(),
            threshold,
            ..AlertRule::high_traffic(0)
        }
    }

    #[test]
    fn logged_rules_replace_and_delete_the_initial_ones() {
        let initial = [rule("high_traffic", 1000), rule("kept", 1)];
        let logged = LoggedRules::from([
            ("high_traffic".to_owned(), Some(rule("high_traffic", 5))),
            ("added".to_owned(), Some(rule("added", 2))),
            ("kept".to_owned(), None),
            ("never_there".to_owned(), None),
        ]);
        let registry = AlertRules::restored(RuleChanges::default(), initial.clone(), logged);
        assert_eq!(registry.list(), [rule("added", 2), rule("high_traffic", 5)]);
        let only_initial =
            AlertRules::restored(RuleChanges::default(), initial.clone(), LoggedRules::new());
        assert_eq!(only_initial.list(), initial);
    }
}
