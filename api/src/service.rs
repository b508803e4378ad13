//! The `clickflow.v1.Clickflow` service, `grpc.health.v1` and server reflection on one
//! listener, until a shutdown signal.

use std::future::Future;
use std::time::Instant;

use clickflow_proto::FILE_DESCRIPTOR_SET;
use clickflow_proto::v1::clickflow_server::{Clickflow, ClickflowServer};
use clickflow_proto::{EncodedSubscribeResponse, v1};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::metrics::Method;
use crate::rules::{parse_rule, validate_rule_id};
use crate::state::ApiState;
use crate::subscribe::{Subscription, run_feed, subscribe, subscribe_alerts};
use crate::{convert, queries};

/// Serves the API on `listener` until `shutdown` completes; subscriptions end with it.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ClickflowServer<Service>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // v1, and v1alpha for clients from before v1 (older grpcurl and Postman).
    let (reflection, reflection_v1alpha) =
        (reflection().build_v1()?, reflection().build_v1alpha()?);
    let feed = tokio::spawn(run_feed(state.clone()));
    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(ClickflowServer::new(Service { state }))
        // Without TCP_NODELAY, small answers wait for the client's delayed ACK (~40 ms).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await;
    feed.abort();
    Ok(result?)
}

/// The service's handlers.
struct Service {
    state: ApiState,
}

fn answer<T>(result: Result<T, ApiError>) -> Result<Response<T>, Status> {
    result.map(Response::new).map_err(Status::from)
}

/// Runs `work`, which may wait (for the store's thread, for the broker), on a blocking
/// thread rather than on one of the API runtime's, which answer queries meanwhile.
async fn blocking<T: Send + 'static>(
    what: &str,
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| Status::internal(format!("{what} failed: {error}")))?
        .map_err(Status::from)
}

impl Service {
    /// Answers a unary query with `query`, counting the time it took.
    fn timed<T>(
        &self,
        method: Method,
        query: impl FnOnce(&ApiState) -> Result<T, ApiError>,
    ) -> Result<Response<T>, Status> {
        let started = Instant::now();
        let result = query(&self.state);
        self.state.durations.record(method, started.elapsed());
        answer(result)
    }
}

#[tonic::async_trait]
impl Clickflow for Service {
    async fn query_page_views(
        &self,
        request: Request<v1::QueryPageViewsRequest>,
    ) -> Result<Response<v1::QueryPageViewsResponse>, Status> {
        self.timed(Method::QueryPageViews, |state| {
            queries::page_views(state, request.into_inner())
        })
    }

    async fn top_pages(
        &self,
        request: Request<v1::TopPagesRequest>,
    ) -> Result<Response<v1::TopPagesResponse>, Status> {
        self.timed(Method::TopPages, |state| {
            queries::top_pages(state, request.into_inner())
        })
    }

    async fn query_sessions(
        &self,
        request: Request<v1::QuerySessionsRequest>,
    ) -> Result<Response<v1::QuerySessionsResponse>, Status> {
        self.timed(Method::QuerySessions, |state| {
            queries::sessions(state, request.into_inner())
        })
    }

    async fn query_funnel(
        &self,
        request: Request<v1::QueryFunnelRequest>,
    ) -> Result<Response<v1::QueryFunnelResponse>, Status> {
        self.timed(Method::QueryFunnel, |state| {
            queries::funnel(state, request.into_inner())
        })
    }

    async fn list_alerts(
        &self,
        request: Request<v1::ListAlertsRequest>,
    ) -> Result<Response<v1::ListAlertsResponse>, Status> {
        self.timed(Method::ListAlerts, |state| {
            queries::alerts(state, request.into_inner())
        })
    }

    type SubscribeStream = Subscription<EncodedSubscribeResponse>;

    /// The set-up may wait for the store's thread (the first subscriber of a view) and
    /// converts a snapshot of the whole view: it runs on a blocking thread, not on one of
    /// the API runtime's, which answer the queries meanwhile.
    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let state = self.state.clone();
        // The subscriber's task is spawned from there onto the API runtime.
        blocking("subscribe set-up", move || {
            subscribe(&state, request.into_inner())
        })
        .await
        .map(Response::new)
    }

    async fn create_alert_rule(
        &self,
        request: Request<v1::CreateAlertRuleRequest>,
    ) -> Result<Response<v1::CreateAlertRuleResponse>, Status> {
        let rule = parse_rule(request.into_inner().rule)?;
        let rules = self.state.rules.clone();
        // Writing the rules' log waits for the broker.
        let created = blocking("creating the rule", move || rules.create(rule)).await?;
        Ok(Response::new(v1::CreateAlertRuleResponse {
            rule: Some(convert::rule(&created)),
        }))
    }

    async fn delete_alert_rule(
        &self,
        request: Request<v1::DeleteAlertRuleRequest>,
    ) -> Result<Response<v1::DeleteAlertRuleResponse>, Status> {
        let id = request.into_inner().rule_id;
        validate_rule_id(&id, "rule_id")?;
        let rules = self.state.rules.clone();
        let deleted = blocking("deleting the rule", move || rules.delete(&id)).await?;
        Ok(Response::new(v1::DeleteAlertRuleResponse {
            rule: Some(convert::rule(&deleted)),
        }))
    }

    async fn list_alert_rules(
        &self,
        _: Request<v1::ListAlertRulesRequest>,
    ) -> Result<Response<v1::ListAlertRulesResponse>, Status> {
        Ok(Response::new(v1::ListAlertRulesResponse {
            rules: self.state.rules.list().iter().map(convert::rule).collect(),
        }))
    }

    type SubscribeAlertsStream = Subscription<v1::AlertTransition>;

    async fn subscribe_alerts(
        &self,
        request: Request<v1::SubscribeAlertsRequest>,
    ) -> Result<Response<Self::SubscribeAlertsStream>, Status> {
        answer(subscribe_alerts(&self.state, request.into_inner()))
    }

    async fn get_status(
        &self,
        _: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::GetStatusResponse>, Status> {
        self.timed(Method::GetStatus, |state| Ok(queries::status(state)))
    }
}
