//! Prometheus metrics: one process-wide recorder (the `metrics` crate with metrics-exporter-prometheus,
//! rendered by hookgate's own admin route), and the names dashboards and alerts rely on.
//!
//! Label values come only from the configuration (source and route names) or from fixed sets, never from
//! request input, so a caller cannot blow up the number of series.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests by source and outcome.
pub const REQUESTS_TOTAL: &str = "hookgate_requests_total";
/// Receipt to answer, by source.
pub const REQUEST_DURATION_SECONDS: &str = "hookgate_request_duration_seconds";
/// Body sizes, by source.
pub const REQUEST_BODY_BYTES: &str = "hookgate_request_body_bytes";
/// Requests to upstreams, by route and result.
pub const UPSTREAM_REQUESTS_TOTAL: &str = "hookgate_upstream_requests_total";
/// Upstream exchange time, by route.
pub const UPSTREAM_DURATION_SECONDS: &str = "hookgate_upstream_duration_seconds";
/// Pending deliveries, by route (queue mode).
pub const QUEUE_PENDING: &str = "hookgate_queue_pending";
/// Age of the oldest pending delivery, by route (queue mode).
pub const QUEUE_OLDEST_PENDING_AGE_SECONDS: &str = "hookgate_queue_oldest_pending_age_seconds";
/// Delivery attempts, by route and result (`delivered`, `retry`, `dead`).
pub const DELIVERY_ATTEMPTS_TOTAL: &str = "hookgate_delivery_attempts_total";
/// Dead letters waiting for an operator, by route.
pub const DEAD_LETTERS: &str = "hookgate_dead_letters";
/// Deliveries no route took, kept in the spool for `hookgate spool replay --unrouted` (queue mode).
pub const UNROUTED_EVENTS: &str = "hookgate_unrouted_events";
/// Bytes the spool's live data takes.
pub const SPOOL_BYTES: &str = "hookgate_spool_bytes";
/// 1 while the spool can be written, 0 while it cannot (a PostgreSQL spool unreachable, a full disk), by
/// backend (`sqlite`, `postgres`).
pub const SPOOL_AVAILABLE: &str = "hookgate_spool_available";
/// Failed spool commits and failed PostgreSQL health checks, by backend.
pub const SPOOL_ERRORS_TOTAL: &str = "hookgate_spool_errors_total";
/// Configuration loads and reloads, by result.
pub const CONFIG_RELOADS_TOTAL: &str = "hookgate_config_reloads_total";
/// When the configuration was last loaded successfully.
pub const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS: &str = "hookgate_config_last_reload_success_timestamp_seconds";
/// Failed accepts, by listener (`webhook`, `admin`): file descriptors running out, say.
pub const ACCEPT_ERRORS_TOTAL: &str = "hookgate_accept_errors_total";
/// Connections closed at accept, by reason (`max_connections`, `per_client`).
pub const CONNECTIONS_REFUSED_TOTAL: &str = "hookgate_connections_refused_total";
/// Connections closed for sending no request, by reason (`first_request`, `idle`).
pub const CONNECTIONS_IDLED_TOTAL: &str = "hookgate_connections_idled_total";
/// HTTP/2 connections closed for sending control frames past the limit (GOAWAY `ENHANCE_YOUR_CALM`).
pub const HTTP2_CONTROL_FLOODS_TOTAL: &str = "hookgate_http2_control_floods_total";
/// The store's webhooks that deliver to a source, by source and status (active, paused, disabled), as the
/// last watch found them.
pub const STORE_WEBHOOKS: &str = "hookgate_store_webhooks";
/// Watch checks of a store that failed (unreachable, refused), by source.
pub const STORE_CHECK_ERRORS_TOTAL: &str = "hookgate_store_check_errors_total";
/// Webhooks that WooCommerce disabled and the watch set active again, by source.
pub const STORE_REACTIVATIONS_TOTAL: &str = "hookgate_store_reactivations_total";
/// Resources fetched from a store by a backfill and queued, by source.
pub const STORE_BACKFILLED_TOTAL: &str = "hookgate_store_backfilled_total";
/// Unix time of a store's last successful watch check, by source.
pub const STORE_LAST_CHECK_SUCCESS_TIMESTAMP_SECONDS: &str = "hookgate_store_last_check_success_timestamp_seconds";
/// Always 1, labelled with the version.
pub const BUILD_INFO: &str = "hookgate_build_info";

/// The label for requests that name no configured source (a path no source has).
pub const NO_SOURCE: &str = "none";

/// Request and upstream times: from a fraction of a millisecond to WooCommerce's own 60 s limit.
const DURATION_BUCKETS: [f64; 15] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0];
/// Body sizes: from a ping to the 64 MiB bound.
const BODY_BUCKETS: [f64; 10] =
    [64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 67108864.0];
/// How often the exporter's histograms are maintained.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use (later calls, such as a second gateway in one test
/// process, share it).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &DURATION_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(REQUEST_BODY_BYTES.into()), &BODY_BUCKETS))
            .expect("the bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder was installed first; /metrics will be empty");
        }
        metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        // Both series exist from the start, so that an alert on increase() sees the first failure.
        metrics::counter!(CONFIG_RELOADS_TOTAL, "result" => "failure").increment(0);
        metrics::counter!(CONFIG_RELOADS_TOTAL, "result" => "success").increment(0);
        describe();
        handle
    })
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS_TOTAL, "Requests on the webhook listener, by source and outcome.");
    describe_histogram!(REQUEST_DURATION_SECONDS, Unit::Seconds, "Time from receipt to answer, by source.");
    describe_histogram!(REQUEST_BODY_BYTES, Unit::Bytes, "Request body sizes, by source.");
    describe_counter!(UPSTREAM_REQUESTS_TOTAL, "Requests to upstreams, by route and result.");
    describe_histogram!(UPSTREAM_DURATION_SECONDS, Unit::Seconds, "Upstream exchange time, by route.");
    describe_gauge!(QUEUE_PENDING, "Pending deliveries, by route.");
    describe_gauge!(SPOOL_AVAILABLE, "1 while the spool can be written, 0 while it cannot, by backend.");
    describe_counter!(SPOOL_ERRORS_TOTAL, "Failed spool commits and failed PostgreSQL health checks, by backend.");
    describe_gauge!(QUEUE_OLDEST_PENDING_AGE_SECONDS, Unit::Seconds, "Age of the oldest pending delivery, by route.");
    describe_counter!(DELIVERY_ATTEMPTS_TOTAL, "Delivery attempts from the spool, by route and result.");
    describe_gauge!(DEAD_LETTERS, "Dead letters waiting for an operator, by route.");
    describe_gauge!(
        UNROUTED_EVENTS,
        "Deliveries no route took, kept in the spool until replayed or past delivery.keep_unrouted."
    );
    describe_gauge!(SPOOL_BYTES, Unit::Bytes, "Bytes the spool's live data takes.");
    describe_counter!(CONFIG_RELOADS_TOTAL, "Configuration loads and reloads, by result.");
    describe_gauge!(
        STORE_WEBHOOKS,
        "The store's webhooks delivering to a source, by source and status, at the last watch."
    );
    describe_counter!(
        STORE_CHECK_ERRORS_TOTAL,
        "Failed watch checks of a source's store (unreachable, refused), by source."
    );
    describe_counter!(
        STORE_REACTIVATIONS_TOTAL,
        "Webhooks WooCommerce disabled that the watch set active again, by source."
    );
    describe_counter!(STORE_BACKFILLED_TOTAL, "Resources fetched from the store by a backfill and queued, by source.");
    describe_gauge!(
        STORE_LAST_CHECK_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time of the last successful watch check of a source's store."
    );
    describe_gauge!(
        CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time of the last successful configuration load."
    );
    describe_counter!(ACCEPT_ERRORS_TOTAL, "Failed accepts on a listener (out of file descriptors, say).");
    describe_counter!(
        CONNECTIONS_REFUSED_TOTAL,
        "Connections closed at accept: limits.max_connections or limits.max_connections_per_client reached."
    );
    describe_counter!(
        CONNECTIONS_IDLED_TOTAL,
        "Connections closed for idling: no first request head within limits.header_timeout of the accept (first_request), or no request in flight for limits.idle_timeout (idle)."
    );
    describe_counter!(
        HTTP2_CONTROL_FLOODS_TOTAL,
        "HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM: control frames (PING, SETTINGS, ...) past the limit."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label.");
}

/// Records a successful configuration load (at start, and later at each reload).
pub fn config_loaded() {
    handle();
    metrics::counter!(CONFIG_RELOADS_TOTAL, "result" => "success").increment(1);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    metrics::gauge!(CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP_SECONDS).set(now);
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    handle().render()
}

/// Runs the exporter's upkeep on an interval, until the returned task is aborted.
pub fn spawn_upkeep() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            interval.tick().await;
            handle().run_upkeep();
        }
    })
}

/// The `result` label of an upstream exchange that was answered: its status class.
pub fn upstream_status_class(status: http::StatusCode) -> &'static str {
    if status.is_success() || status.is_informational() {
        "2xx"
    } else if status.is_redirection() {
        "3xx"
    } else if status.is_client_error() {
        "4xx"
    } else {
        "5xx"
    }
}
