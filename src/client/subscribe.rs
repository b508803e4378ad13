//! `clickflow subscribe`: follows a view live. Prints the snapshot's rows, then every
//! update batch as `+`/`-` lines with its time, and a line for each progress message,
//! until Ctrl-C or the end of the stream. With `--json`, one object per stream message.
//! After progress, a failure or Ctrl-C says how to resume where the stream stopped.

use clickflow_proto::v1::{SubscribeRequest, SubscribeResponse, View, subscribe_response};

use super::rows::row_fields;
use super::{Answer, ClientArgs, Output, finish, follow, format_as_of, format_time, parse_time};

/// Arguments of `clickflow subscribe`.
#[derive(Debug, clap::Args)]
pub struct SubscribeArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// The view to follow.
    #[arg(long, value_enum)]
    view: ViewName,
    /// Only rows whose page (page views, alerts), user (sessions) or funnel step starts
    /// with this.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Start with the updates, without the view's rows at the start.
    #[arg(long)]
    no_snapshot: bool,
    /// Resume an earlier subscription: the updates at and after this frontier (epoch ms or
    /// ISO-8601, as printed by its progress lines), without a snapshot.
    #[arg(long, value_parser = parse_time)]
    resume_from: Option<u64>,
    /// Only final rows: windows (sessions) the frontier has passed.
    #[arg(long)]
    final_only: bool,
}

/// A view, as named on the command line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ViewName {
    /// page_views_per_minute.
    PageViews,
    /// user_sessions.
    Sessions,
    /// checkout_funnel.
    Funnel,
    /// alerts.
    Alerts,
}

impl From<ViewName> for View {
    fn from(view: ViewName) -> Self {
        match view {
            ViewName::PageViews => View::PageViewsPerMinute,
            ViewName::Sessions => View::UserSessions,
            ViewName::Funnel => View::CheckoutFunnel,
            ViewName::Alerts => View::Alerts,
        }
    }
}

/// Runs `clickflow subscribe`.
pub fn run(args: SubscribeArgs) -> anyhow::Result<()> {
    let request = SubscribeRequest {
        view: View::from(args.view).into(),
        key_prefix: args.prefix,
        snapshot: !args.no_snapshot && args.resume_from.is_none(),
        resume_from_ms: args.resume_from.unwrap_or(0),
        final_only: args.final_only,
    };
    super::run(&args.client, async |mut client, out| {
        let stream = client.subscribe(request).await.answer("Subscribe")?;
        // The frontier of the last progress message: where a new subscription resumes.
        let mut resume_from = None;
        let end = follow(stream, |message| {
            print_message(out, &message, &mut resume_from)
        })
        .await?;
        finish("Subscribe", end, resume_from)
    })
}

/// Prints one stream message and records the frontier of a progress message.
fn print_message(
    out: &mut Output,
    message: &SubscribeResponse,
    resume_from: &mut Option<u64>,
) -> anyhow::Result<()> {
    if let Some(subscribe_response::Message::Progress(progress)) = &message.message {
        *resume_from = progress.as_of.as_ref().map(|as_of| as_of.frontier_ms);
    }
    if out.json {
        return Ok(out.json(message)?);
    }
    match &message.message {
        Some(subscribe_response::Message::Snapshot(snapshot)) => {
            let more = if snapshot.more { ", more follow" } else { "" };
            out.line(format_args!(
                "snapshot {}: {} rows{more}",
                format_as_of(snapshot.as_of.as_ref()),
                snapshot.rows.len()
            ))?;
            for row in &snapshot.rows {
                out.line(format_args!("  {}", row_fields(row)))?;
            }
        }
        Some(subscribe_response::Message::Updates(batch)) => {
            let time = format_time(batch.time_ms);
            for update in &batch.updates {
                let sign = if update.diff < 0 { '-' } else { '+' };
                let count = update.diff.unsigned_abs();
                let row = update.row.as_ref().map_or_else(String::new, row_fields);
                if count == 1 {
                    out.line(format_args!("{time} {sign} {row}"))?;
                } else {
                    out.line(format_args!("{time} {sign}{count} {row}"))?;
                }
            }
        }
        Some(subscribe_response::Message::Progress(progress)) => {
            out.line(format_args!(
                "progress {}",
                format_as_of(progress.as_of.as_ref())
            ))?;
        }
        None => {}
    }
    Ok(())
}
