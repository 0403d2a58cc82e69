//! Queue mode end to end: a real hookgate with its spool and real upstreams on loopback sockets. Each test
//! runs on both spools, SQLite and PostgreSQL (`on_both_backends!`), unless it says why not.
//! `delivery`: what is delivered, where, in what order and how many at once; `retries`: backoff, dead
//! letters and replays; `spool`: what the spool keeps across repeats, stops, restarts and pruning;
//! `unrouted`: what becomes of a delivery no route takes.
//! `operator`: `hookgate spool retry` and `--route` checks against a running binary.
//! `replicas`: two gateways on one PostgreSQL spool.

mod delivery;
mod migrate;
mod operator;
mod postgres_schema;
mod postgres_tls;
mod replicas;
mod retries;
mod spool;
mod unrouted;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::*;
use http::StatusCode;

/// Runs the real binary's `hookgate spool ARGS --config FILE`: exit code, standard output, standard error.
fn spool(config_file: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .arg("spool")
        .args(args)
        .arg("--config")
        .arg(config_file)
        .env_remove("HOOKGATE_CONFIG")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const WAIT: Duration = Duration::from_secs(20);

fn route(name: &str, topics: &str, upstream: &str) -> String {
    format!("  - name: {name}\n    topics: [{topics}]\n    upstream: \"{upstream}\"\n    timeout: 2s\n")
}

fn order_body(id: u64, sequence: u64) -> Vec<u8> {
    format!(r#"{{"id":{id},"status":"processing","sequence":{sequence}}}"#).into_bytes()
}

fn json(answer: &RawResponse) -> serde_json::Value {
    serde_json::from_slice(&answer.body).unwrap_or_else(|_| panic!("not JSON: {}", answer.text()))
}

fn sequence_of(received: &Received) -> (u64, u64) {
    let body: serde_json::Value = serde_json::from_slice(&received.body).unwrap();
    (body["id"].as_u64().unwrap(), body["sequence"].as_u64().unwrap())
}

/// A 503 asking for ten minutes: the retry is due exactly then (Retry-After is honoured up to max_backoff),
/// not at a random point of a jittered backoff, so the delivery stays pending, due long after a test.
fn unavailable_for_ten_minutes() -> UpstreamAnswer {
    UpstreamAnswer {
        status: StatusCode::SERVICE_UNAVAILABLE,
        headers: vec![("retry-after", "600")],
        ..Default::default()
    }
}

/// A queue-mode `delivery:` section like [`queue_delivery`]'s with the retry settings given, and
/// `max_in_flight: 1` (for [`received_before_a_new_delivery`]).
fn queue_delivery_retrying(
    backend: &Backend,
    dir: &Path,
    initial_backoff: &str,
    max_backoff: &str,
    give_up_after: &str,
) -> String {
    format!(
        "delivery:\n  mode: queue\n{}  max_in_flight: 1\n  retry:\n    initial_backoff: {initial_backoff}\n    max_backoff: {max_backoff}\n    give_up_after: {give_up_after}\n",
        backend.delivery_section(dir)
    )
}

/// The state, recorded attempts and last error of event `event_id`'s delivery (on its one route).
fn delivery_of(backend: &Backend, dir: &Path, event_id: &str) -> (String, u32, Option<String>) {
    let rows = backend.query(
        dir,
        &format!(
            "SELECT d.state, d.attempts, d.last_error FROM deliveries d JOIN events e ON e.id = d.event_id
             WHERE e.public_id = {}",
            quoted(event_id)
        ),
    );
    let [row] = &rows[..] else { panic!("event {event_id} has {} deliveries, not one", rows.len()) };
    (row[0].clone().unwrap(), row[1].as_deref().unwrap().parse().unwrap(), row[2].clone())
}

/// Waits until the spool has recorded `attempts` attempts of `event_id`'s delivery, leaving it in `state`;
/// fails at once if more were made.
async fn recorded(backend: &Backend, dir: &Path, event_id: &str, state: &str, attempts: u32) {
    let what = format!("{state} after {attempts} attempts");
    eventually(WAIT, &what, || {
        let (now, tried, _) = delivery_of(backend, dir, event_id);
        assert!(tried <= attempts, "waiting for {what}, found {now} after {tried} attempts");
        now == state && tried == attempts
    })
    .await;
}

/// Sends order `id` and returns what the upstream received before it. On a route with `max_in_flight: 1`
/// the dispatcher sends the delivery due earliest first and one at a time, so anything that was due by
/// then (a retry, a repeat, a duplicate stored by mistake) reached the upstream before it: this shows
/// what was sent without waiting for a while in the hope of seeing it.
async fn received_before_a_new_delivery(gateway: &TestGateway, upstream: &Upstream, id: u64) -> Vec<Received> {
    let body = order_body(id, 0);
    let answer = send_raw(gateway.addr, &signed_request("/hooks/main", "order.created", &body)).await;
    assert_eq!(json(&answer)["status"], "queued", "{}", answer.text());
    let mut received = Vec::new();
    eventually(WAIT, "the new delivery arrives", || {
        received = upstream.received();
        received.iter().any(|r| r.body == body)
    })
    .await;
    let position = received.iter().position(|r| r.body == body).unwrap();
    received.truncate(position);
    received
}
