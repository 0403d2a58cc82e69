//! Queue mode on a PostgreSQL spool when something fails, with the real `hookgate` binary and a real
//! PostgreSQL: two replicas on one database, one of them killed with SIGKILL mid-stream (`crash`), and one
//! gateway whose PostgreSQL server is stopped mid-stream and started again (`database_restart`). Both need
//! the server `HOOKGATE_POSTGRES_URL` names (the second only as a sign that PostgreSQL is installed: it
//! stops a throwaway server of its own, never the shared one).

mod crash;
mod database_restart;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// The longest a test waits for what it checks (a takeover comes about 12 s after a kill).
const WAIT: Duration = Duration::from_secs(60);

/// A route for `order.*` to `upstream` whose timeout is one second, so that a claim's lease (twice the
/// timeout and ten seconds) lapses 12 s after it was taken.
fn orders_route(upstream: &Upstream) -> String {
    format!(
        "  - name: orders\n    topics: [\"order.*\"]\n    upstream: \"{}\"\n    timeout: 1s\n",
        upstream.url("/orders")
    )
}

/// An order update as WooCommerce would send it; `sequence` counts the order's updates from 0.
fn update_body(order: u64, sequence: u64) -> Vec<u8> {
    format!(r#"{{"id":{order},"status":"processing","sequence":{sequence}}}"#).into_bytes()
}

/// Order id and sequence of a body [`update_body`] made.
fn order_and_sequence(received: &Received) -> (u64, u64) {
    let body: serde_json::Value = serde_json::from_slice(&received.body)
        .unwrap_or_else(|_| panic!("not an update: {}", String::from_utf8_lossy(&received.body)));
    (body["id"].as_u64().unwrap(), body["sequence"].as_u64().unwrap())
}

/// The `X-Hookgate-Event-Id` a forwarded delivery carries.
fn event_id(received: &Received) -> String {
    let id = received.headers.get("x-hookgate-event-id").expect("every forwarded delivery has an event id");
    id.to_str().unwrap().to_owned()
}

/// `request` (made by [`signed_request`]) with its signature header replaced by `signature`, or removed.
fn resigned(request: &[u8], signature: Option<&str>) -> Vec<u8> {
    let text = String::from_utf8(request.to_vec()).unwrap();
    let start = text.find("X-WC-Webhook-Signature:").unwrap();
    let end = start + text[start..].find("\r\n").unwrap() + 2;
    let header = signature.map(|value| format!("X-WC-Webhook-Signature: {value}\r\n")).unwrap_or_default();
    format!("{}{header}{}", &text[..start], &text[end..]).into_bytes()
}

/// An answer of the webhook listener, as a sender saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: serde_json::Value,
}

impl Answer {
    /// The `status` field of a 2xx answer's body (`queued`, `duplicate`).
    fn outcome(&self) -> &str {
        self.body["status"].as_str().unwrap_or_default()
    }

    /// The event id of a 2xx answer (for a duplicate, the delivery it repeats).
    fn id(&self) -> String {
        self.body["id"].as_str().unwrap_or_else(|| panic!("an answer without an id: {self:?}")).to_owned()
    }
}

/// Sends one HTTP/1.0 request on a new connection and reads the answer to the end; `None` when the
/// connection fails or closes first (a gateway killed meanwhile).
async fn try_send(addr: SocketAddr, request: &[u8]) -> Option<Answer> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(request).await.ok()?;
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut bytes)).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let retry_after = head.split("\r\n").find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("retry-after").then(|| value.trim().to_owned())
    });
    let body = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    Some(Answer { status, retry_after, body })
}

/// `/readyz` on an admin listener: its status and body.
async fn readiness(admin: SocketAddr) -> (u16, String) {
    let answer = send_raw(admin, b"GET /readyz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").await;
    (answer.status, answer.text())
}
