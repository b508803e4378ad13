//! `clickflow alerts`: the alerts that hold now, the alert rules (list, create, delete),
//! and the alert transitions as they happen (`watch`).

use clickflow_proto::v1::{
    AlertRule, AlertState, Comparison, CreateAlertRuleRequest, DeleteAlertRuleRequest,
    ListAlertRulesRequest, ListAlertsRequest, Metric, SubscribeAlertsRequest, View,
};

use super::rows::{condition, fields};
use super::{
    Answer, ClientArgs, Output, PageArgs, RangeArgs, count, finish, follow, format_time,
    print_pages, rows,
};

/// Arguments of `clickflow alerts`.
#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: AlertsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AlertsCommand {
    /// The alerts that hold now.
    List {
        /// Only this rule's alerts.
        #[arg(long, default_value = "")]
        id: String,
        /// Only pages starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        #[command(flatten)]
        range: RangeArgs,
        #[command(flatten)]
        paging: PageArgs,
    },
    /// Every alert rule.
    Rules,
    /// Add a rule on page_views_per_minute: it fires at once for every window that already
    /// satisfies it.
    Create {
        /// The rule's id: 1 to 128 of A-Z a-z 0-9 _ . -
        #[arg(long, value_parser = rule_id)]
        id: String,
        /// The threshold.
        #[arg(long)]
        threshold: u64,
        /// The value compared: view_count or unique_users.
        #[arg(long, value_enum, default_value_t = MetricName::Views)]
        metric: MetricName,
        /// How the value compares with the threshold for the alert to hold.
        #[arg(long, value_enum, default_value_t = ComparisonName::Gt)]
        comparison: ComparisonName,
        /// Only pages starting with this [default: all pages].
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Remove a rule; its alerts clear.
    Delete {
        /// The rule's id.
        #[arg(long, value_parser = rule_id)]
        id: String,
    },
    /// Print alert transitions (fired, cleared) as they happen, until Ctrl-C.
    Watch {
        /// Only this rule's transitions.
        #[arg(long, default_value = "")]
        id: String,
    },
}

/// A rule id as the server takes it, checked before connecting.
fn rule_id(id: &str) -> Result<String, String> {
    clickflow_api::rules::validate_rule_id(id, "id")
        .map(|()| id.to_owned())
        .map_err(|error| error.to_string())
}

/// A metric, as named on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum MetricName {
    /// view_count.
    Views,
    /// unique_users.
    Users,
}

/// A comparison, as named on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ComparisonName {
    /// value > threshold.
    Gt,
    /// value >= threshold.
    Ge,
    /// value < threshold.
    Lt,
    /// value <= threshold.
    Le,
    /// value == threshold.
    Eq,
}

/// Runs `clickflow alerts`.
pub fn run(args: AlertsArgs) -> anyhow::Result<()> {
    super::run(&args.client, async |mut client, out| match args.command {
        AlertsCommand::List {
            id,
            prefix,
            range,
            paging,
        } => {
            print_pages(out, &paging, async |page_token| {
                let request = ListAlertsRequest {
                    rule_id: id.clone(),
                    page_prefix: prefix.clone(),
                    range: range.range(),
                    limit: paging.limit.unwrap_or(0),
                    page_token,
                };
                client.list_alerts(request).await.answer("ListAlerts")
            })
            .await
        }
        AlertsCommand::Rules => {
            let response = client
                .list_alert_rules(ListAlertRulesRequest {})
                .await
                .answer("ListAlertRules")?;
            if out.json {
                return Ok(out.json(&response)?);
            }
            rows::write_table(out, &response.rules)?;
            Ok(out.line(count(response.rules.len(), "rule", "rules"))?)
        }
        AlertsCommand::Create {
            id,
            threshold,
            metric,
            comparison,
            prefix,
        } => {
            let rule = AlertRule {
                rule_id: id,
                view: View::PageViewsPerMinute.into(),
                metric: match metric {
                    MetricName::Views => Metric::ViewCount,
                    MetricName::Users => Metric::UniqueUsers,
                }
                .into(),
                comparison: match comparison {
                    ComparisonName::Gt => Comparison::Greater,
                    ComparisonName::Ge => Comparison::GreaterOrEqual,
                    ComparisonName::Lt => Comparison::Less,
                    ComparisonName::Le => Comparison::LessOrEqual,
                    ComparisonName::Eq => Comparison::Equal,
                }
                .into(),
                threshold,
                page_prefix: prefix,
            };
            let request = CreateAlertRuleRequest { rule: Some(rule) };
            let response = client
                .create_alert_rule(request)
                .await
                .answer("CreateAlertRule")?;
            if out.json {
                return Ok(out.json(&response)?);
            }
            Ok(print_rule(out, "created", response.rule.as_ref())?)
        }
        AlertsCommand::Delete { id } => {
            let request = DeleteAlertRuleRequest { rule_id: id };
            let response = client
                .delete_alert_rule(request)
                .await
                .answer("DeleteAlertRule")?;
            if out.json {
                return Ok(out.json(&response)?);
            }
            Ok(print_rule(out, "deleted", response.rule.as_ref())?)
        }
        AlertsCommand::Watch { id } => {
            let request = SubscribeAlertsRequest { rule_id: id };
            let stream = client
                .subscribe_alerts(request)
                .await
                .answer("SubscribeAlerts")?;
            let end = follow(stream, |transition| {
                if out.json {
                    return Ok(out.json(&transition)?);
                }
                let state = match transition.state() {
                    AlertState::Fired => "fired",
                    AlertState::Cleared => "cleared",
                    AlertState::Unspecified => "unspecified",
                };
                let alert = transition.alert.as_ref().map_or_else(String::new, fields);
                Ok(out.line(format_args!(
                    "{} {state:<7} {alert}",
                    format_time(transition.time_ms)
                ))?)
            })
            .await?;
            finish("SubscribeAlerts", end, None)
        }
    })
}

/// `created rule ID: CONDITION for pages starting with PREFIX`.
fn print_rule(out: &mut Output, what: &str, rule: Option<&AlertRule>) -> std::io::Result<()> {
    let Some(rule) = rule else {
        return out.line(format_args!("{what} (the server sent no rule back)"));
    };
    let pages = if rule.page_prefix.is_empty() {
        "every page".to_owned()
    } else {
        format!("pages starting with {:?}", rule.page_prefix)
    };
    out.line(format_args!(
        "{what} rule {}: {} for {pages}",
        rule.rule_id,
        condition(rule)
    ))
}
