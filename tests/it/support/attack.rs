//! The store's side of an attack test (issue 11): while an attacker works on one loopback address, the
//! store sends one signed delivery every 250 ms from another, and every one must still be answered 2xx,
//! quickly.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Received, signed_request};

/// The attackers' `X-WC-Webhook-Signature`: well-formed for SHA-256 (43 base64 characters and `=`), matching
/// no secret.
pub const FORGED_SIGNATURE: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// The address the store sends from; attackers use 127.0.0.2 to 127.0.0.9.
pub const STORE_ADDRESS: &str = "127.0.0.1";

/// `config` (from [`super::fixture_config`]) with the limits of the probe that found the attacks: 64 slots,
/// 2 s to send a body.
pub fn probe_limits(config: String) -> String {
    let config = config.replace("  body_timeout: 5s\n", "  body_timeout: 2s\n  max_concurrent: 64\n");
    assert!(config.contains("max_concurrent: 64"));
    config
}

/// What the store's deliveries got during an attack: each one's status (0 when it got no answer) and how
/// long it took.
#[derive(Debug)]
pub struct Deliveries {
    pub answers: Vec<(u16, Duration)>,
}

impl Deliveries {
    /// Sends `count` signed `order.created` deliveries to `/hooks/main`, one every 250 ms, each on a new
    /// connection from [`STORE_ADDRESS`], with ids from `first_id` on.
    pub async fn every_quarter_second(addr: SocketAddr, count: u64, first_id: u64) -> Deliveries {
        let mut answers = Vec::new();
        for sequence in 0..count {
            let body = format!(r#"{{"id":{},"status":"processing"}}"#, first_id + sequence);
            let request = signed_request("/hooks/main", "order.created", body.as_bytes());
            let started = std::time::Instant::now();
            let status = tokio::time::timeout(Duration::from_secs(5), status_of(addr, &request)).await;
            answers.push((status.ok().flatten().unwrap_or(0), started.elapsed()));
            tokio::time::sleep(Duration::from_millis(250).saturating_sub(started.elapsed())).await;
        }
        Deliveries { answers }
    }

    /// How many were answered 2xx.
    pub fn succeeded(&self) -> usize {
        self.answers.iter().filter(|(status, _)| (200..300).contains(status)).count()
    }

    /// Nothing unsigned reached the upstream: what it `received` carries no forged signature, and (in proxy
    /// mode, where each 2xx is one forwarded delivery) as many arrived as were answered 2xx when `all_of_them`.
    pub fn assert_only_these_reached(&self, received: &[Received], all_of_them: bool) {
        if all_of_them {
            assert_eq!(received.len(), self.succeeded(), "only the signed deliveries reached the upstream");
        }
        assert!(
            received.iter().all(|r| r
                .headers
                .get("x-wc-webhook-signature")
                .is_some_and(|s| s.as_bytes() != FORGED_SIGNATURE.as_bytes())),
            "a forged delivery reached the upstream"
        );
    }

    /// Nothing unsigned was kept: the spool of the (stopped) gateway configured by `config_file` holds
    /// exactly the deliveries answered 2xx.
    pub fn assert_only_these_spooled(&self, config_file: &std::path::Path) {
        let spool = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["spool", "list", "--config"])
            .arg(config_file)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&spool.stdout);
        assert_eq!(listing.matches("order.created").count(), self.succeeded(), "{listing}");
    }

    /// The issue's bar: at least 99% answered 2xx, and the 99th percentile of their times under 1 s.
    pub fn assert_survived(&self, attack: &str) {
        let total = self.answers.len();
        assert!(total > 0, "{attack}: no delivery was sent");
        assert!(
            self.succeeded() * 100 >= total * 99,
            "{attack}: {} of {total} signed deliveries answered 2xx: {:?}",
            self.succeeded(),
            self.answers
        );
        let mut times: Vec<Duration> = self.answers.iter().map(|(_, took)| *took).collect();
        times.sort();
        let p99 = times[(total * 99).div_ceil(100) - 1];
        assert!(p99 < Duration::from_secs(1), "{attack}: p99 {p99:?} over {total} deliveries: {:?}", self.answers);
    }
}

/// The status of the answer to `request`, sent on a new connection from [`STORE_ADDRESS`]; `None` when the
/// connection failed or closed without one.
async fn status_of(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(STORE_ADDRESS.parse::<IpAddr>().unwrap(), 0)).ok()?;
    let mut stream = socket.connect(addr).await.ok()?;
    stream.write_all(request).await.ok()?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    std::str::from_utf8(&head).ok()?.split(' ').nth(1)?.parse().ok()
}

/// A TCP connection to `addr` from `from` (a loopback address such as 127.0.0.2).
pub async fn connect_from(from: &str, addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
    socket.connect(addr).await
}
