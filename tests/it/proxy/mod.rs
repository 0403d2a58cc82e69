//! Proxy mode end to end: a real hookgate and a real upstream on loopback sockets, driven with the
//! WooCommerce fixtures. Each test names the behaviour of the contract it checks: `steps` for what each
//! step of the contract answers, `upstream` for what comes back from the upstream, `connections` for the
//! protocol versions and the timeouts of a connection.

mod connections;
mod steps;
mod upstream;

use std::time::Duration;

use crate::support::*;
use http::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// One route taking every topic from every source.
async fn gateway_with(upstream: &Upstream) -> TestGateway {
    let routes = format!("  - name: everything\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in?x=1"));
    TestGateway::start(&fixture_config(&routes, "")).await
}

type Headers = Vec<(String, String)>;

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}
