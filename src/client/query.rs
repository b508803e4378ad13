//! `clickflow query`: point-in-time queries of the views — page views of a page or a
//! page prefix, the top pages of a window, a user's sessions, and the checkout funnel —
//! each printed with the `as_of` it reflects.

use clickflow_proto::v1::{
    QueryFunnelRequest, QueryPageViewsRequest, QuerySessionsRequest, TopPagesOrder,
    TopPagesRequest, query_page_views_request::PageFilter,
};

use super::{
    Answer, ClientArgs, PageArgs, RangeArgs, format_as_of, format_time, parse_time, print_pages,
    rows,
};

/// Arguments of `clickflow query`.
#[derive(Debug, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    query: Query,
}

#[derive(Debug, clap::Subcommand)]
enum Query {
    /// page_views_per_minute rows of one page or of every page with a prefix.
    #[command(group(clap::ArgGroup::new("filter").required(true).args(["page", "prefix"])))]
    PageViews {
        /// Exactly this page.
        #[arg(long)]
        page: Option<String>,
        /// Every page starting with this ("" for all pages).
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        range: RangeArgs,
        #[command(flatten)]
        paging: PageArgs,
    },
    /// The top pages of one window.
    TopPages {
        /// The window's start (epoch ms or ISO-8601) [default: the latest window with
        /// views].
        #[arg(long, value_parser = parse_time)]
        window: Option<u64>,
        /// Rank by views or by distinct users.
        #[arg(long, value_enum, default_value_t = Rank::Views)]
        by: Rank,
        /// How many pages (1..=1000).
        #[arg(short, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        k: u32,
    },
    /// A user's sessions.
    Sessions {
        /// The user.
        #[arg(long)]
        user: String,
        #[command(flatten)]
        range: RangeArgs,
        #[command(flatten)]
        paging: PageArgs,
    },
    /// checkout_funnel rows.
    Funnel {
        /// Only this step [default: every step].
        #[arg(long)]
        step: Option<String>,
        #[command(flatten)]
        range: RangeArgs,
        #[command(flatten)]
        paging: PageArgs,
    },
}

/// How `top-pages` ranks.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Rank {
    /// view_count.
    Views,
    /// unique_users.
    Users,
}

/// Runs `clickflow query`.
pub fn run(args: QueryArgs) -> anyhow::Result<()> {
    super::run(&args.client, async |mut client, out| match args.query {
        Query::PageViews {
            page,
            prefix,
            range,
            paging,
        } => {
            let page_filter = match (page, prefix) {
                (Some(page), _) => PageFilter::Page(page),
                (None, prefix) => PageFilter::PagePrefix(prefix.unwrap_or_default()),
            };
            print_pages(out, &paging, async |page_token| {
                let request = QueryPageViewsRequest {
                    page_filter: Some(page_filter.clone()),
                    range: range.range(),
                    limit: paging.limit.unwrap_or(0),
                    page_token,
                };
                client
                    .query_page_views(request)
                    .await
                    .answer("QueryPageViews")
            })
            .await
        }
        Query::TopPages { window, by, k } => {
            let request = TopPagesRequest {
                window_start_ms: window.unwrap_or(0),
                order: match by {
                    Rank::Views => TopPagesOrder::ViewCount,
                    Rank::Users => TopPagesOrder::UniqueUsers,
                }
                .into(),
                k,
            };
            let response = client.top_pages(request).await.answer("TopPages")?;
            if out.json {
                return Ok(out.json(&response)?);
            }
            if response.window_start_ms == 0 && response.rows.is_empty() {
                out.line(format_args!(
                    "no window with views yet, {}",
                    format_as_of(response.as_of.as_ref())
                ))?;
                return Ok(());
            }
            out.line(format_args!(
                "top {} pages of the window at {}, {}",
                response.rows.len(),
                format_time(response.window_start_ms),
                format_as_of(response.as_of.as_ref())
            ))?;
            Ok(rows::write_table(out, &response.rows)?)
        }
        Query::Sessions {
            user,
            range,
            paging,
        } => {
            print_pages(out, &paging, async |page_token| {
                let request = QuerySessionsRequest {
                    user_id: user.clone(),
                    range: range.range(),
                    limit: paging.limit.unwrap_or(0),
                    page_token,
                };
                client.query_sessions(request).await.answer("QuerySessions")
            })
            .await
        }
        Query::Funnel {
            step,
            range,
            paging,
        } => {
            print_pages(out, &paging, async |page_token| {
                let request = QueryFunnelRequest {
                    funnel_step: step.clone().unwrap_or_default(),
                    range: range.range(),
                    limit: paging.limit.unwrap_or(0),
                    page_token,
                };
                client.query_funnel(request).await.answer("QueryFunnel")
            })
            .await
        }
    })
}
