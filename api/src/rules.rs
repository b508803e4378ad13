//! Alert rules as data: the registry behind CreateAlertRule, DeleteAlertRule and
//! ListAlertRules. Every change also goes into the dataflow's rule input, where it fires
//! or clears alerts incrementally (a new rule fires at once for the windows that already
//! satisfy it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use clickflow_dataflow::{AlertRule, Comparison, Metric, RuleChanges, ViewName};
use clickflow_proto::v1;

use crate::error::ApiError;

/// The longest rule id.
const MAX_RULE_ID: usize = 128;

/// The rules in force. Cloning shares them.
#[derive(Clone)]
pub struct AlertRules {
    rules: Arc<Mutex<BTreeMap<String, AlertRule>>>,
    changes: RuleChanges,
}

impl AlertRules {
    /// A registry that sends its changes to `changes`, starting with `initial`.
    pub fn new(changes: RuleChanges, initial: impl IntoIterator<Item = AlertRule>) -> Self {
        let registry = Self {
            rules: Arc::default(),
            changes,
        };
        for rule in initial {
            // Initial rules are the service's own; a duplicate id keeps the first.
            let _ = registry.create(rule);
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
        self.changes.add(rule.clone());
        rules.insert(id, rule.clone());
        Ok(rule)
    }

    /// Removes the rule `id`.
    pub fn delete(&self, id: &str) -> Result<AlertRule, ApiError> {
        let rule = self
            .lock()
            .remove(id)
            .ok_or_else(|| ApiError::NoSuchRule(id.to_owned()))?;
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
