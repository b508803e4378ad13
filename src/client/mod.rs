//! The gRPC client subcommands (`query`, `subscribe`, `alerts`, `status`) and what they
//! share: the `--server`/`--json` flags, connecting, a current-thread runtime per command,
//! gRPC errors as readable errors, time parsing and formatting, tables, the paging loop
//! and the loop that follows a server stream until Ctrl-C.
//!
//! Output is a readable table or `key=value` lines by default; with `--json`, every
//! response or stream message is one JSON object per line, the message with its `.proto`
//! field names (see [`json`]).

pub mod alerts;
mod json;
pub mod query;
mod rows;
pub mod status;
pub mod subscribe;

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clickflow_events::{MAX_EVENT_TIME, format_iso8601_utc, parse_iso8601};
use clickflow_proto::v1::clickflow_client::ClickflowClient;
use clickflow_proto::v1::{
    AlertRow, AsOf, FunnelRow, ListAlertsResponse, PageViewRow, QueryFunnelResponse,
    QueryPageViewsResponse, QuerySessionsResponse, SessionRow, TimeRange,
};
use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use json::ToJson;

/// The server address when neither `--server` nor `CLICKFLOW_SERVER` is given.
const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// How long a connection with a call in progress may be silent before it is pinged.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// The largest response accepted: a snapshot holds a whole view.
const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// How to reach the server and how to print; accepted before or after the subcommand.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Server and output")]
pub struct ClientArgs {
    /// The clickflow server, `http://HOST:PORT` (`HOST:PORT` means `http://HOST:PORT`).
    #[arg(long, global = true, env = "CLICKFLOW_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// How long to wait for the connection, and for the answer to each call (a
    /// subscription's stream then runs on), in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_ms: u64,
    /// Print one JSON object per response or stream message, one per line.
    #[arg(long, global = true)]
    json: bool,
}

impl ClientArgs {
    /// Connects to the server, failing with the address and the cause.
    async fn connect(&self) -> anyhow::Result<ClickflowClient<Channel>> {
        let address = match self.server.split_once("://") {
            Some(("http" | "https", _)) => self.server.clone(),
            Some((scheme, _)) => bail!(
                "--server {:?}: {scheme}:// is not a gRPC address; give http://HOST:PORT or \
                 HOST:PORT",
                self.server
            ),
            None => format!("http://{}", self.server),
        };
        let timeout = Duration::from_millis(self.timeout_ms);
        let endpoint = Endpoint::from_shared(address.clone())
            .with_context(|| format!("--server {:?} is not a valid address", self.server))?;
        if endpoint.uri().port_u16().is_none_or(|port| port == 0) {
            bail!(
                "--server {:?}: no port, or not one from 1 to 65535; give HOST:PORT (`clickflow \
                 serve` listens on port 50051 unless api.listen says otherwise)",
                self.server
            );
        }
        let endpoint = endpoint
            .connect_timeout(timeout)
            .timeout(timeout)
            // A subscription to a server that vanished ends instead of waiting forever.
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(timeout);
        let channel = endpoint.connect().await.map_err(|error| {
            let message = format!("cannot connect to the clickflow server at {address}");
            anyhow!(
                "{}; is `clickflow serve` running there? (--server or CLICKFLOW_SERVER set \
                 the address)",
                with_causes(message, &error)
            )
        })?;
        Ok(ClickflowClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES))
    }
}

/// Runs a client command on a current-thread runtime: connects, then runs `command` with
/// the client and stdout. A closed stdout (`| head`) ends the command without an error.
fn run<F>(args: &ClientArgs, command: F) -> anyhow::Result<()>
where
    F: AsyncFnOnce(ClickflowClient<Channel>, &mut Output) -> anyhow::Result<()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the client's runtime")?;
    let result = runtime.block_on(async {
        let client = args.connect().await?;
        command(client, &mut Output::new(args.json)).await
    });
    match result {
        Err(error)
            if error
                .downcast_ref::<io::Error>()
                .is_some_and(|error| error.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        result => result,
    }
}

/// Where results go: stdout, as text or as JSON lines.
struct Output {
    out: io::StdoutLock<'static>,
    json: bool,
}

impl Output {
    fn new(json: bool) -> Self {
        Output {
            out: io::stdout().lock(),
            json,
        }
    }

    /// Writes `message` as one line of JSON.
    fn json(&mut self, message: &impl ToJson) -> io::Result<()> {
        writeln!(self.out, "{}", message.to_json())
    }

    /// Writes one line of text.
    fn line(&mut self, line: impl std::fmt::Display) -> io::Result<()> {
        writeln!(self.out, "{line}")
    }

    /// Writes a table: a header line and aligned columns, numbers right-aligned.
    fn table(&mut self, columns: &[Column], rows: &[Vec<String>]) -> io::Result<()> {
        let mut widths: Vec<usize> = columns.iter().map(|c| c.name.chars().count()).collect();
        for row in rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header: Vec<String> = columns.iter().map(|c| c.name.to_owned()).collect();
        for row in std::iter::once(&header).chain(rows) {
            let mut line = String::new();
            for ((column, width), cell) in columns.iter().zip(&widths).zip(row) {
                if !line.is_empty() {
                    line.push_str("  ");
                }
                let pad = " ".repeat(width - cell.chars().count());
                if column.numeric {
                    line.push_str(&pad);
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
            }
            writeln!(self.out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// A column of a table.
struct Column {
    name: &'static str,
    numeric: bool,
}

/// A left-aligned column.
const fn text(name: &'static str) -> Column {
    Column {
        name,
        numeric: false,
    }
}

/// A right-aligned column.
const fn number(name: &'static str) -> Column {
    Column {
        name,
        numeric: true,
    }
}

/// The answer of a unary call, or the call's error as [`status_error`] writes it.
trait Answer<T> {
    fn answer(self, rpc: &str) -> anyhow::Result<T>;
}

impl<T> Answer<T> for Result<tonic::Response<T>, Status> {
    fn answer(self, rpc: &str) -> anyhow::Result<T> {
        self.map(tonic::Response::into_inner)
            .map_err(|status| status_error(rpc, &status))
    }
}

/// The error for a failed call: [`status_message`].
fn status_error(rpc: &str, status: &Status) -> anyhow::Error {
    anyhow!(status_message(rpc, status))
}

/// What went wrong in a call or stream: the RPC, the status code's canonical name, the
/// server's message, any transport cause, and whether it was our timeout.
fn status_message(rpc: &str, status: &Status) -> String {
    let timed_out = status.code() == tonic::Code::Cancelled
        && status.message() == tonic::TimeoutExpired(()).to_string();
    let message = format!(
        "{rpc} failed: {}: {}",
        code_name(status.code()),
        status.message()
    );
    let mut message = with_causes(message, status);
    if timed_out {
        message.push_str(" (no answer within --timeout-ms)");
    }
    message
}

/// A status code as gRPC spells it: `INVALID_ARGUMENT`.
fn code_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// `message` followed by the causes of `error`, each after `": "`, but for those that it
/// already says (tonic repeats a cause in its message, and some causes in theirs).
fn with_causes(mut message: String, error: &dyn std::error::Error) -> String {
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_message = cause.to_string();
        if !message.contains(&cause_message) {
            message.push_str(": ");
            message.push_str(&cause_message);
        }
        source = cause.source();
    }
    message
}

/// Parses a time of the command line: epoch milliseconds or an ISO-8601 date-time.
fn parse_time(text: &str) -> Result<u64, String> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| format!("{text} is too large for epoch milliseconds"));
    }
    parse_iso8601(text).ok_or_else(|| {
        format!(
            "{text:?} is neither epoch milliseconds nor an ISO-8601 time \
             (e.g. 2026-11-24T12:00:00Z)"
        )
    })
}

/// Formats epoch milliseconds as ISO-8601 UTC; a time past the last representable one
/// (a frontier that will not move again) as `end`.
fn format_time(ms: u64) -> String {
    if ms > MAX_EVENT_TIME {
        "end".to_owned()
    } else {
        format_iso8601_utc(ms)
    }
}

/// `as of FRONTIER, offsets TOPIC:PARTITION@OFFSET ...`.
fn format_as_of(as_of: Option<&AsOf>) -> String {
    let Some(as_of) = as_of else {
        return "as of (not given)".to_owned();
    };
    let mut text = format!("as of {}", format_time(as_of.frontier_ms));
    if !as_of.offsets.is_empty() {
        text.push_str(", offsets");
        for offset in &as_of.offsets {
            text.push_str(&format!(
                " {}:{}@{}",
                offset.topic, offset.partition, offset.next_offset
            ));
        }
    }
    text
}

/// A range of window (or session) starts on the command line.
#[derive(Debug, clap::Args)]
struct RangeArgs {
    /// Only windows starting at or after this time (epoch ms or ISO-8601).
    #[arg(long, value_parser = parse_time)]
    from: Option<u64>,
    /// Only windows starting before this time (epoch ms or ISO-8601).
    #[arg(long, value_parser = parse_time)]
    to: Option<u64>,
}

impl RangeArgs {
    /// The range to send; unset when neither bound is given.
    fn range(&self) -> Option<TimeRange> {
        (self.from.is_some() || self.to.is_some()).then(|| TimeRange {
            start_ms: self.from.unwrap_or(0),
            end_ms: self.to.unwrap_or(0),
        })
    }
}

/// Paging of a query that may answer in several responses.
#[derive(Debug, clap::Args)]
struct PageArgs {
    /// Rows per response (1..=10000) [default: the server's, 1000].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: Option<u32>,
    /// Start at this token, printed by an earlier query that had more rows.
    #[arg(long, default_value = "")]
    page_token: String,
    /// Follow the page tokens until the last row.
    #[arg(long)]
    all: bool,
}

/// A response that is one page of a longer answer.
trait Page: ToJson {
    /// The rows' type.
    type Row: rows::Tabular;
    /// What the page reflects.
    fn as_of(&self) -> Option<&AsOf>;
    /// The rows, taken out.
    fn take_rows(&mut self) -> Vec<Self::Row>;
    /// The token of the next page; empty after the last.
    fn next_page_token(&self) -> &str;
}

/// Implements [`Page`] for a response with `as_of`, `rows` and `next_page_token`.
macro_rules! page {
    ($response:ty, $row:ty) => {
        impl Page for $response {
            type Row = $row;

            fn as_of(&self) -> Option<&AsOf> {
                self.as_of.as_ref()
            }

            fn take_rows(&mut self) -> Vec<$row> {
                std::mem::take(&mut self.rows)
            }

            fn next_page_token(&self) -> &str {
                &self.next_page_token
            }
        }
    };
}

page!(QueryPageViewsResponse, PageViewRow);
page!(QuerySessionsResponse, SessionRow);
page!(ListAlertsResponse, AlertRow);
page!(QueryFunnelResponse, FunnelRow);

/// Writes `rows` as a table, then how many and what they reflect.
fn print_rows<T: rows::Tabular>(
    out: &mut Output,
    rows: &[T],
    as_of: Option<&AsOf>,
) -> io::Result<()> {
    rows::write_table(out, rows)?;
    out.line(format_args!(
        "{} {}",
        count(rows.len(), "row", "rows"),
        format_as_of(as_of)
    ))
}

/// Fetches the pages of a query (all of them with `--all`, else one), calling `fetch` with
/// each page token. JSON prints each response as it comes; text prints one table of every
/// row, then the last page's `as_of` and, if rows are left, how to get them.
async fn print_pages<P: Page>(
    out: &mut Output,
    paging: &PageArgs,
    mut fetch: impl AsyncFnMut(String) -> anyhow::Result<P>,
) -> anyhow::Result<()> {
    let mut token = paging.page_token.clone();
    let mut rows = Vec::new();
    loop {
        let mut page = fetch(token).await?;
        token = page.next_page_token().to_owned();
        if out.json {
            out.json(&page)?;
        } else {
            rows.append(&mut page.take_rows());
        }
        if token.is_empty() || !paging.all {
            if !out.json {
                print_rows(out, &rows, page.as_of())?;
                if !token.is_empty() {
                    out.line(format_args!(
                        "more rows: add --all, or --page-token {token}"
                    ))?;
                }
            }
            return Ok(());
        }
    }
}

/// How a followed stream ended.
enum StreamEnd {
    /// The user pressed Ctrl-C.
    Interrupted,
    /// The server closed the stream.
    Closed,
    /// The stream failed.
    Failed(Status),
}

/// Reads `stream` until the server ends it or the user presses Ctrl-C, handing each
/// message to `each`. Errors are this side's (output, signals); see [`finish`] for the
/// stream's.
async fn follow<T>(
    mut stream: tonic::Streaming<T>,
    mut each: impl FnMut(T) -> anyhow::Result<()>,
) -> anyhow::Result<StreamEnd> {
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            signal = &mut ctrl_c => {
                signal.context("cannot listen for Ctrl-C")?;
                return Ok(StreamEnd::Interrupted);
            }
            message = stream.message() => match message {
                Ok(Some(message)) => each(message)?,
                Ok(None) => return Ok(StreamEnd::Closed),
                Err(status) => return Ok(StreamEnd::Failed(status)),
            },
        }
    }
}

/// Reports how the stream of `rpc` ended: a note on stderr, or the error of a failed
/// stream, which says when the server cut this client off for falling behind
/// (`RESOURCE_EXHAUSTED`) and, given the last frontier received, how to resume.
fn finish(rpc: &str, end: StreamEnd, resume_from: Option<u64>) -> anyhow::Result<()> {
    let resume = resume_from
        .map(|frontier| format!("; resume with --resume-from {frontier}"))
        .unwrap_or_default();
    match end {
        StreamEnd::Interrupted => eprintln!("stopped (Ctrl-C){resume}"),
        StreamEnd::Closed => eprintln!("the server ended the stream"),
        StreamEnd::Failed(status) => {
            let behind = if status.code() == tonic::Code::ResourceExhausted {
                "; the server disconnected this subscriber because it fell behind"
            } else {
                ""
            };
            return Err(anyhow!("{}{behind}{resume}", status_message(rpc, &status)));
        }
    }
    Ok(())
}

/// `1 row`, `2 rows`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_epoch_ms_or_iso8601() {
        assert_eq!(parse_time("1764000000000"), Ok(1_764_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(parse_time("1970-01-01T01:00:00+01:00"), Ok(0));
        assert!(parse_time("yesterday").is_err_and(|e| e.contains("yesterday")));
        assert!(parse_time("").is_err());
        assert!(parse_time("99999999999999999999").is_err_and(|e| e.contains("too large")));
    }

    #[test]
    fn code_names_are_grpc_spelling() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(
            code_name(tonic::Code::ResourceExhausted),
            "RESOURCE_EXHAUSTED"
        );
    }

    #[test]
    fn status_errors_name_the_call_code_and_message() {
        let status = Status::invalid_argument("range: end_ms must be after start_ms");
        assert_eq!(
            status_error("QueryFunnel", &status).to_string(),
            "QueryFunnel failed: INVALID_ARGUMENT: range: end_ms must be after start_ms"
        );
    }

    #[test]
    fn times_past_the_last_one_are_the_end() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(u64::MAX), "end");
    }
}
