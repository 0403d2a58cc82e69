//! The queue mode's promise under a crash: the real `hookgate` binary is killed with SIGKILL in the middle
//! of a stream of deliveries and started again on the same spool. Every delivery it answered 2xx must reach
//! the upstream at least once, and nothing unsigned or wrongly signed may ever reach it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::*;

/// Senders running at once.
const SENDERS: u64 = 4;
/// Deliveries answered 2xx before the kill.
const ANSWERED_BEFORE_KILL: usize = 150;

on_both_backends!(
    every_delivery_answered_before_a_sigkill_is_delivered_after_the_restart,
    flavor = "multi_thread",
    worker_threads = 2
);
// Over 80 lines: one process killed mid-stream and restarted on its spool; each step needs the one before.
async fn every_delivery_answered_before_a_sigkill_is_delivered_after_the_restart(backend: Backend) {
    let dir = backend.temp_dir("crash");
    // A slow upstream, four attempts at a time (40 deliveries a second, slower than the senders are answered
    // on either spool), so that a backlog is pending (and attempts are in flight) when the kill comes.
    let upstream =
        Upstream::answering(UpstreamAnswer { delay: Duration::from_millis(100), ..Default::default() }).await;
    // The route's timeout sets how long the killed process's claims on PostgreSQL last (twice it and 10 s).
    let routes = format!(
        "  - name: orders\n    topics: [\"order.*\"]\n    upstream: \"{}\"\n    timeout: 2s\n",
        upstream.url("/orders")
    );
    let config = fixture_config(&routes, &queue_delivery(&backend, &dir, "  max_in_flight: 4\n"));
    let config_file = dir.join("hookgate.yaml");
    std::fs::write(&config_file, &config).unwrap();

    let first = HookgateProcess::start(&config_file);
    let addr = first.addr;
    let answered: Arc<Mutex<HashSet<String>>> = Arc::default();
    let forged_sent: Arc<Mutex<usize>> = Arc::default();
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (answered, forged_sent) = (Arc::clone(&answered), Arc::clone(&forged_sent));
        senders.push(tokio::spawn(async move {
            for n in 0..10_000u64 {
                let id = sender * 100_000 + n;
                let body = format!(r#"{{"id":{id},"status":"processing","marker":"genuine-{id}"}}"#);
                let request = if n % 10 == 9 {
                    // Every tenth: unsigned, which must be refused too.
                    let mut request = signed_request("/hooks/main", "order.created", body.as_bytes());
                    let text = String::from_utf8_lossy(&request).into_owned();
                    let start = text.find("X-WC-Webhook-Signature:").unwrap();
                    let end = start + text[start..].find("\r\n").unwrap() + 2;
                    request.drain(start..end);
                    let marker = request.len() - body.len();
                    request.truncate(marker);
                    request.extend_from_slice(body.replace("genuine", "unsignd").as_bytes());
                    *forged_sent.lock().unwrap() += 1;
                    request
                } else if n % 5 == 4 {
                    // Every fifth: a forged delivery, signed over other bytes than those sent.
                    let forged = format!(r#"{{"id":{id},"status":"processing","marker":"forgery-{id}"}}"#);
                    let mut request = signed_request("/hooks/main", "order.created", body.as_bytes());
                    let at = request.len() - body.len();
                    request.truncate(at);
                    request.extend_from_slice(forged.as_bytes());
                    *forged_sent.lock().unwrap() += 1;
                    request
                } else {
                    signed_request("/hooks/main", "order.created", body.as_bytes())
                };
                let Some(status) = try_send(addr, &request).await else { return };
                if n % 5 == 4 {
                    assert_eq!(status, 401, "a forged or unsigned delivery was not refused");
                } else if (200..300).contains(&status) {
                    answered.lock().unwrap().insert(format!("genuine-{id}"));
                }
            }
        }));
    }
    eventually(Duration::from_secs(60), "enough deliveries answered", || {
        answered.lock().unwrap().len() >= ANSWERED_BEFORE_KILL
    })
    .await;
    first.signal("KILL");
    let (status, _) = tokio::task::spawn_blocking(move || first.wait()).await.unwrap();
    assert_eq!(status.code(), None, "killed by a signal");
    for sender in senders {
        sender.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    let delivered_before_restart = markers(&upstream).len();
    assert!(
        delivered_before_restart < answered.len(),
        "the kill should leave a backlog ({delivered_before_restart} of {} delivered)",
        answered.len()
    );

    let second = HookgateProcess::start(&config_file);
    eventually(Duration::from_secs(60), "every answered delivery reaches the upstream", || {
        let received = markers(&upstream);
        answered.iter().all(|m| received.contains_key(m))
    })
    .await;
    // The attempts the kill cut short are made again and recorded: on PostgreSQL once the killed process's
    // claims have lapsed.
    let unfinished = "SELECT COUNT(*) FROM deliveries WHERE state <> 'delivered'";
    eventually(Duration::from_secs(60), "every delivery is recorded delivered", || {
        backend.count(&dir, unfinished) == 0
    })
    .await;
    second.signal("TERM");
    let (status, _) = tokio::task::spawn_blocking(move || second.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));

    let received = markers(&upstream);
    assert!(received.keys().all(|m| m.starts_with("genuine-")), "a forged or unsigned body reached the upstream");
    assert!(*forged_sent.lock().unwrap() > 0);
    let repeats: usize = received.values().map(|n| n - 1).sum();
    println!(
        "answered {} before the kill, {} delivered before the restart, {} after; {} sent twice (at-least-once); {} forged or unsigned refused",
        answered.len(),
        delivered_before_restart,
        received.len(),
        repeats,
        forged_sent.lock().unwrap()
    );
}

/// How often each body marker reached the upstream.
fn markers(upstream: &Upstream) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for got in upstream.received() {
        let body: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        *seen.entry(body["marker"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    seen
}

/// Sends one request; `None` once the gateway is gone.
async fn try_send(addr: std::net::SocketAddr, request: &[u8]) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.write_all(request).await.ok()?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await.ok()?.ok()?;
    let status_line = answer.split(|&b| b == b'\r').next()?;
    std::str::from_utf8(status_line).ok()?.split(' ').nth(1)?.parse().ok()
}
