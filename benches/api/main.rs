//! The API benchmark (issue "gRPC API"): query latency and subscription fan-out of a
//! running `clickflow serve` while the load generator writes live events to its input.
//! `scripts/bench-api` starts the broker, builds, and runs this against it.
//!
//! 1. `clickflow serve -w W` reads a fresh 12-partition topic from its latest offsets,
//!    with the gRPC API on a free port, while the load generator writes `--rate`
//!    records/s (event times follow the wall clock) for the whole benchmark.
//! 2. After `--warm-up-seconds`, for `--phase-seconds` each, one client on one thread
//!    issues sequential requests, back to back or at most `--query-rate` a second, of: a
//!    round trip of one byte over loopback to an echo thread of the benchmark (no gRPC:
//!    the floor that this machine's scheduling puts under any request and answer), a
//!    point query (one user's sessions, random users), a page query (one page's rows of
//!    the last minutes), and top-10 pages of the latest window. Latencies are measured at
//!    the client, over loopback, and reported as p50/p99, beside the service's own
//!    (`clickflow_api_request_duration_seconds`) and the events ingested per second
//!    meanwhile.
//! 3. Fan-out: 1, 100 and 1000 subscribers to `page_views_per_minute` (spread over
//!    connections of at most 100 streams each) for `--phase-seconds` each: updates per
//!    second delivered to all of them together; meanwhile the ingest rate (events counted
//!    per second by the service) and the cores used by the service (and by its API
//!    threads) and by the benchmark's client, to compare with the phase without
//!    subscribers; and how many streams ended before the phase did, and why (a subscriber
//!    that falls behind is cut off with `RESOURCE_EXHAUSTED`). The client counts each
//!    update batch's updates without decoding their rows ([`CountedResponse`]), so that
//!    it takes little of the cores it shares with the service.
//!
//! Progress goes to stderr, a markdown summary to stdout.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use clickflow_benches::harness::kafka::{
    PARTITIONS, create_topics, generator, produce, topic_names,
};
use clickflow_benches::harness::metrics::{histogram_between, quantile_at_most};
use clickflow_benches::harness::process::threads_cpu_seconds;
use clickflow_benches::harness::serve::{Serve, free_local_address};
use clickflow_proto::v1;
use clickflow_proto::v1::clickflow_client::ClickflowClient;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// The name of the fan-out client's runtime threads (at most 15 bytes: Linux keeps no more).
const CLIENT_THREADS: &str = "api-client";

/// Streams per connection at most (HTTP/2 servers commonly allow 100 to 200).
const STREAMS_PER_CONNECTION: usize = 100;

/// Arguments of the benchmark.
#[derive(Parser, Debug)]
#[command(about = "clickflow's API benchmark against a running Kafka")]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long)]
    bootstrap: String,
    /// The `clickflow` binary.
    #[arg(long, default_value = "target/release/clickflow")]
    clickflow: PathBuf,
    /// Worker threads of clickflow.
    #[arg(short = 'w', long, default_value_t = 2)]
    workers: usize,
    /// Records per second written while measuring.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Requests per second the query client sends at most (each after the previous
    /// answer); 0 sends them back to back.
    #[arg(long, default_value_t = 0)]
    query_rate: u64,
    /// Seconds before measuring.
    #[arg(long, default_value_t = 10)]
    warm_up_seconds: u64,
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 10)]
    phase_seconds: u64,
    /// Where the service's log goes.
    #[arg(long, default_value = "target/bench-api")]
    logs: PathBuf,
    /// The command line to print in the summary.
    #[arg(long, default_value = "scripts/bench-api")]
    command: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.logs)
        .with_context(|| format!("cannot create {}", args.logs.display()))?;
    let prefix = format!("bench-api-{}", std::process::id());
    let topics = topic_names(&prefix);
    create_topics(&args.bootstrap, &topics.specs())?;
    let api = free_local_address()?;
    let sets = vec![
        format!("kafka.bootstrap=\"{}\"", args.bootstrap),
        format!("kafka.input_topics=[\"{}\"]", topics.input),
        format!("kafka.dead_letter_topic=\"{}\"", topics.dead_letters),
        format!("kafka.page_view_counts_topic=\"{}\"", topics.counts),
        format!("kafka.alerts_topic=\"{}\"", topics.alerts),
        format!("kafka.rules_topic=\"{}\"", topics.rules),
        format!("kafka.transactional_id=\"{prefix}\""),
        "kafka.start=\"latest\"".to_owned(),
        "kafka.idle_timeout_ms=1000".to_owned(),
        format!("api.listen=\"{api}\""),
    ];
    let mut serve = Serve::start(
        &args.clickflow,
        args.workers,
        None,
        &sets,
        &args.logs.join("serve.log"),
    )?;
    std::thread::sleep(Duration::from_secs(3));

    // The load for the whole benchmark.
    // With room to spare (requests under load can overrun their phase); the load stops
    // when the measuring ends.
    let total_seconds = 2 * (args.warm_up_seconds + (args.phase_seconds + 1) * 7 + 10);
    let events = args.rate * total_seconds;
    let start_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let (bootstrap, input, rate) = (args.bootstrap.clone(), topics.input.clone(), args.rate);
    let measured = Arc::new(AtomicBool::new(false));
    let load_stop = Arc::clone(&measured);
    let load = std::thread::spawn(move || {
        produce(
            &bootstrap,
            &input,
            generator(events, start_ms, total_seconds * 1000),
            rate,
            &load_stop,
        )
    });
    eprintln!(
        "bench-api: writing {events} records at {} records/s to {PARTITIONS} partitions",
        args.rate
    );

    let address = format!("http://{api}");
    // One request at a time needs one thread: on a work-stealing runtime the client's own
    // hand-offs between its threads would add wake-ups to every request it times.
    let latencies = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(measure_latencies(&args, &mut serve, &address));
    // A thousand subscribers' streams are read on a runtime of several threads.
    let report = latencies.and_then(|latencies| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name(CLIENT_THREADS)
            .enable_all()
            .build()?
            .block_on(measure_fan_out(&args, &mut serve, &address, latencies))
    });
    measured.store(true, Ordering::Relaxed);
    let produced = load
        .join()
        .map_err(|_| anyhow::anyhow!("the load generator panicked"))?;
    serve.stop()?;
    let report = report?;
    let produced = produced?;
    println!("## API under ingest load\n");
    println!(
        "`{}` (`-w {}`), {} records/s asked, {:.0} records/s delivered by the load generator.\n",
        args.command,
        args.workers,
        args.rate,
        produced.records_per_second()
    );
    println!(
        "Client: measured by the benchmark's client. Server: from the service's \
         `clickflow_api_request_duration_seconds` (the bucket bound each quantile falls in).\n"
    );
    println!(
        "| request | requests | client p50 | client p99 | server p50 | server p99 | \
         events/s ingested meanwhile |\n\
         |---|---|---|---|---|---|---|"
    );
    for phase in &report.latencies {
        let server = phase.server.map_or("- | -".to_owned(), |(p50, p99)| {
            format!("≤ {} ms | ≤ {} ms", p50 * 1000.0, p99 * 1000.0)
        });
        println!(
            "| {} | {} | {:.3} ms | {:.3} ms | {server} | {:.0} |",
            phase.name,
            phase.client.len(),
            percentile(&phase.client, 0.5),
            percentile(&phase.client, 0.99),
            phase.ingest
        );
    }
    println!(
        "\n| subscribers | updates/s delivered (all) | events/s ingested meanwhile | \
         service cores (API threads) | client cores | streams ended early |\n\
         |---|---|---|---|---|---|"
    );
    let load = |load: &PhaseLoad| {
        format!(
            "{:.0} | {:.2} ({:.2}) | {:.2}",
            load.ingest, load.service_cores, load.api_cores, load.client_cores
        )
    };
    println!("| 0 | - | {} | - |", load(&report.without));
    for fan_out in &report.fan_out {
        let ended: Vec<String> = fan_out
            .ended
            .iter()
            .map(|(why, count)| format!("{count} ({why})"))
            .collect();
        println!(
            "| {} | {:.0} | {} | {} |",
            fan_out.subscribers,
            fan_out.updates,
            load(&fan_out.load),
            if ended.is_empty() {
                "0".to_owned()
            } else {
                ended.join(", ")
            }
        );
    }
    Ok(())
}

/// What was measured.
struct Report {
    latencies: Vec<Latencies>,
    /// Ingest and CPU use without subscribers.
    without: PhaseLoad,
    fan_out: Vec<FanOut>,
}

/// One fan-out phase.
struct FanOut {
    subscribers: usize,
    /// Updates delivered per second to all subscribers together.
    updates: f64,
    /// Ingest and CPU use meanwhile.
    load: PhaseLoad,
    /// Streams that ended before the phase did, by why (a status code, or a close).
    ended: BTreeMap<String, usize>,
}

/// The query phases: each kind of request's latencies.
async fn measure_latencies(
    args: &Args,
    serve: &mut Serve,
    address: &str,
) -> anyhow::Result<Vec<Latencies>> {
    let mut client = ClickflowClient::connect(address.to_owned())
        .await
        .context("connecting to the API")?;
    tokio::time::sleep(Duration::from_secs(args.warm_up_seconds)).await;
    let phase = Duration::from_secs(args.phase_seconds);
    let pacing = (args.query_rate > 0).then(|| Duration::from_secs(1) / args.query_rate as u32);
    let mut latencies = Vec::new();
    eprintln!("bench-api: loopback round trips");
    let mut echo = Echo::start()?;
    latencies.push(
        timed(
            serve,
            "loopback round trip, no gRPC (an echo thread)",
            None,
            phase,
            pacing,
            || std::future::ready(echo.round_trip()),
        )
        .await?,
    );
    echo.stop()?;
    eprintln!("bench-api: point queries");
    let mut user = 0_u64;
    latencies.push(
        timed(
            serve,
            "QuerySessions (one user)",
            Some("QuerySessions"),
            phase,
            pacing,
            || {
                user = (user + 7_919) % 1_000_000;
                let request = v1::QuerySessionsRequest {
                    user_id: format!("u{user}"),
                    ..Default::default()
                };
                let mut client = client.clone();
                async move { client.query_sessions(request).await.map(drop) }
            },
        )
        .await?,
    );
    let window_start = client
        .top_pages(v1::TopPagesRequest::default())
        .await?
        .into_inner()
        .window_start_ms;
    latencies.push(
        timed(
            serve,
            "QueryPageViews (one page, last 5 windows)",
            Some("QueryPageViews"),
            phase,
            pacing,
            || {
                let request = v1::QueryPageViewsRequest {
                    page_filter: Some(v1::query_page_views_request::PageFilter::Page(
                        "/page/1".into(),
                    )),
                    range: Some(v1::TimeRange {
                        start_ms: window_start.saturating_sub(4 * 60_000),
                        end_ms: 0,
                    }),
                    ..Default::default()
                };
                let mut client = client.clone();
                async move { client.query_page_views(request).await.map(drop) }
            },
        )
        .await?,
    );
    eprintln!("bench-api: top-k queries");
    latencies.push(
        timed(
            serve,
            "TopPages (k = 10, latest window)",
            Some("TopPages"),
            phase,
            pacing,
            || {
                let request = v1::TopPagesRequest {
                    k: 10,
                    ..Default::default()
                };
                let mut client = client.clone();
                async move { client.top_pages(request).await.map(drop) }
            },
        )
        .await?,
    );
    Ok(latencies)
}

/// The phase without subscribers, then the fan-out phases; with `latencies`, the report.
async fn measure_fan_out(
    args: &Args,
    serve: &mut Serve,
    address: &str,
    latencies: Vec<Latencies>,
) -> anyhow::Result<Report> {
    let phase = Duration::from_secs(args.phase_seconds);
    let without = phase_load(serve, phase).await?;
    let mut fan_out = Vec::new();
    for subscribers in [1, 100, 1000] {
        eprintln!("bench-api: {subscribers} subscribers");
        let delivered = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let mut channel = None;
        for index in 0..subscribers {
            if index % STREAMS_PER_CONNECTION == 0 {
                channel = Some(Channel::from_shared(address.to_owned())?.connect().await?);
            }
            let mut client = tonic::client::Grpc::new(channel.clone().context("a connection")?);
            let (delivered, stop) = (Arc::clone(&delivered), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let request = v1::SubscribeRequest {
                    view: v1::View::PageViewsPerMinute as i32,
                    ..Default::default()
                };
                client
                    .ready()
                    .await
                    .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
                let mut stream = client
                    .server_streaming(
                        tonic::Request::new(request),
                        PathAndQuery::from_static("/clickflow.v1.Clickflow/Subscribe"),
                        tonic_prost::ProstCodec::<_, CountedResponse>::default(),
                    )
                    .await?
                    .into_inner();
                while !stop.load(Ordering::Relaxed) {
                    match stream.message().await? {
                        Some(CountedResponse {
                            updates: Some(batch),
                        }) => {
                            delivered.fetch_add(batch.updates.len() as u64, Ordering::Relaxed);
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
                Ok::<_, tonic::Status>(())
            }));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = delivered.load(Ordering::Relaxed);
        let load = phase_load(serve, phase).await?;
        let updates = (delivered.load(Ordering::Relaxed) - before) as f64 / phase.as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let mut ended = BTreeMap::new();
        for task in tasks {
            if task.is_finished() {
                let why = match task.await {
                    Ok(Ok(())) => "closed by the server".to_owned(),
                    Ok(Err(status)) => format!("{:?}", status.code()),
                    Err(error) => format!("task failed: {error}"),
                };
                *ended.entry(why).or_default() += 1;
            } else {
                task.abort();
            }
        }
        fan_out.push(FanOut {
            subscribers,
            updates,
            load,
            ended,
        });
    }
    Ok(Report {
        latencies,
        without,
        fan_out,
    })
}

/// A `clickflow.v1.SubscribeResponse` as the fan-out's client reads it: an update batch
/// with its updates left encoded, to be counted (the field numbers are the .proto's;
/// snapshots and progress messages are skipped).
#[derive(Clone, PartialEq, prost::Message)]
struct CountedResponse {
    /// `SubscribeResponse.updates`.
    #[prost(message, optional, tag = "2")]
    updates: Option<CountedBatch>,
}

/// A `clickflow.v1.UpdateBatch` with each `Update` left encoded.
#[derive(Clone, PartialEq, prost::Message)]
struct CountedBatch {
    /// `UpdateBatch.updates`.
    #[prost(bytes = "bytes", repeated, tag = "2")]
    updates: Vec<prost::bytes::Bytes>,
}

/// One kind of request's latencies.
struct Latencies {
    name: &'static str,
    /// Each request's, at the client, in milliseconds.
    client: Vec<f64>,
    /// Events counted per second by the service meanwhile.
    ingest: f64,
    /// The service's own median and 99th percentile (bucket bounds), in seconds; none for
    /// a request that does not reach the service.
    server: Option<(f64, f64)>,
}

/// Runs `request` for `phase`, back to back or one per `pacing` at most; the latencies at
/// the client, the service's own for `method` (if it is one of the service's) over the
/// same requests, and the ingest rate meanwhile.
async fn timed<F, Fut, E>(
    serve: &mut Serve,
    name: &'static str,
    method: Option<&str>,
    phase: Duration,
    pacing: Option<Duration>,
    mut request: F,
) -> anyhow::Result<Latencies>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let before = serve.scrape()?;
    let start = Instant::now();
    let end = start + phase;
    let mut client = Vec::new();
    while Instant::now() < end {
        if let Some(pacing) = pacing {
            tokio::time::sleep_until((start + pacing * client.len() as u32).into()).await;
        }
        let started = Instant::now();
        request().await.context("request failed")?;
        client.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let after = serve.scrape()?;
    let ingest = (after.sum("clickflow_events_total") - before.sum("clickflow_events_total"))
        / start.elapsed().as_secs_f64();
    let server = method.map(|method| {
        let server = histogram_between(
            &before,
            &after,
            "clickflow_api_request_duration_seconds",
            Some(("method", method)),
        );
        (
            quantile_at_most(&server, 0.5),
            quantile_at_most(&server, 0.99),
        )
    });
    Ok(Latencies {
        name,
        client,
        ingest,
        server,
    })
}

/// A thread that answers each byte sent to it over loopback with the same byte: a round
/// trip to it is what any request and answer between two threads takes on this machine
/// at that moment, before any gRPC, HTTP/2 or view store.
struct Echo {
    stream: TcpStream,
    thread: std::thread::JoinHandle<std::io::Result<()>>,
}

impl Echo {
    fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept()?;
            stream.set_nodelay(true)?;
            let mut byte = [0_u8; 1];
            while stream.read(&mut byte)? == 1 {
                stream.write_all(&byte)?;
            }
            Ok(())
        });
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        Ok(Self { stream, thread })
    }

    /// Sends a byte and waits for it to come back.
    fn round_trip(&mut self) -> std::io::Result<()> {
        let mut byte = [1_u8; 1];
        self.stream.write_all(&byte)?;
        self.stream.read_exact(&mut byte)
    }

    /// Closes the connection, which ends the thread.
    fn stop(self) -> anyhow::Result<()> {
        drop(self.stream);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the echo thread panicked"))??;
        Ok(())
    }
}

/// Ingest and CPU use over one phase.
struct PhaseLoad {
    /// Events counted per second by the service.
    ingest: f64,
    /// Cores the service used.
    service_cores: f64,
    /// Cores the service's API threads used (a part of `service_cores`).
    api_cores: f64,
    /// Cores this benchmark's client (its tokio runtime) used.
    client_cores: f64,
}

async fn phase_load(serve: &mut Serve, phase: Duration) -> anyhow::Result<PhaseLoad> {
    let sample = |serve: &mut Serve| -> anyhow::Result<[f64; 4]> {
        Ok([
            serve.scrape()?.sum("clickflow_events_total"),
            serve.cpu_seconds()?,
            serve.api_cpu_seconds()?,
            threads_cpu_seconds("self", CLIENT_THREADS)?,
        ])
    };
    let before = sample(serve)?;
    tokio::time::sleep(phase).await;
    let after = sample(serve)?;
    let per_second = |index: usize| (after[index] - before[index]) / phase.as_secs_f64();
    Ok(PhaseLoad {
        ingest: per_second(0),
        service_cores: per_second(1),
        api_cores: per_second(2),
        client_cores: per_second(3),
    })
}

fn percentile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted
        .get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn response(message: v1::subscribe_response::Message) -> Vec<u8> {
        v1::SubscribeResponse {
            message: Some(message),
        }
        .encode_to_vec()
    }

    #[test]
    fn counts_the_updates_of_an_update_batch_and_skips_other_messages() {
        let update = |diff| v1::Update {
            row: Some(v1::Row {
                row: Some(v1::row::Row::PageView(v1::PageViewRow {
                    page: "/a".into(),
                    ..Default::default()
                })),
            }),
            diff,
        };
        let batch = response(v1::subscribe_response::Message::Updates(v1::UpdateBatch {
            time_ms: 7,
            updates: vec![update(1), update(-1), update(1)],
            more: false,
        }));
        let counted = CountedResponse::decode(batch.as_slice()).unwrap();
        assert_eq!(counted.updates.map(|batch| batch.updates.len()), Some(3));
        let progress = response(v1::subscribe_response::Message::Progress(v1::Progress {
            as_of: Some(v1::AsOf {
                frontier_ms: 8,
                offsets: Vec::new(),
            }),
        }));
        let counted = CountedResponse::decode(progress.as_slice()).unwrap();
        assert_eq!(counted.updates, None);
    }
}
