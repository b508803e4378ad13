//! `clickflow status`: the serving process's frontier, events and dead letters counted,
//! workers, processes and subscribers, and a table of its input partitions (offsets,
//! high watermarks, lag, watermarks, idleness).

use clickflow_proto::v1::GetStatusRequest;

use super::{Answer, ClientArgs, count, format_time, rows};

/// Arguments of `clickflow status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// Runs `clickflow status`.
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    super::run(&args.client, async |mut client, out| {
        let status = client
            .get_status(GetStatusRequest {})
            .await
            .answer("GetStatus")?;
        if out.json {
            return Ok(out.json(&status)?);
        }
        let frontier = status.as_of.as_ref().map_or_else(
            || "(not given)".to_owned(),
            |as_of| format_time(as_of.frontier_ms),
        );
        let mut dead_letters: Vec<_> = status.dead_letters.iter().collect();
        dead_letters.sort();
        let dead_letter_total: u64 = dead_letters.iter().map(|(_, count)| **count).sum();
        let by_reason: Vec<String> = dead_letters
            .iter()
            .map(|(reason, count)| format!("{reason} {count}"))
            .collect();
        out.line(format_args!("frontier      {frontier}"))?;
        out.line(format_args!(
            "workers       {} per process, {}",
            count(status.workers as usize, "thread", "threads"),
            count(status.processes as usize, "process", "processes")
        ))?;
        out.line(format_args!(
            "events        {} counted",
            status.events_counted
        ))?;
        if by_reason.is_empty() {
            out.line("dead letters  0")?;
        } else {
            out.line(format_args!(
                "dead letters  {dead_letter_total} ({})",
                by_reason.join(", ")
            ))?;
        }
        out.line(format_args!("subscribers   {}", status.subscribers))?;
        out.line("")?;
        Ok(rows::write_table(out, &status.partitions)?)
    })
}
