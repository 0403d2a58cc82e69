//! Upstreams that need more than a URL: one behind a private CA (`tls.ca_file`, reloaded when the file is
//! rewritten), one that requires a client certificate (`tls.client_cert_file` and `client_key_file`), and
//! one that wants a credential (`headers`, whose value reaches the upstream in both modes and no log line,
//! command output or spool file). Real HTTPS upstreams (rustls) with rcgen certificates.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

const TOKEN: &str = "Bearer hg-upstream-token-Qm7Zx2Lw";
const API_KEY: &str = "hg-api-key-Vt4Rs8Nc";
const ROTATED_API_KEY: &str = "hg-api-key-rotated-Pp3Ww9";

fn reloaded(json: &serde_json::Value) -> bool {
    json["message"] == "configuration reloaded"
}

/// One route taking every topic to `upstream`, with `more` lines added to it.
fn route_to(upstream: &str, more: &str) -> String {
    format!("  - name: fulfillment\n    topics: [\"*\"]\n    upstream: \"{upstream}\"\n{more}")
}

/// Sends an order to the process in proxy mode: 502, and its request line names the certificate's issuer
/// as unknown.
async fn refused_as_unknown_issuer(process: &mut HookgateProcess) {
    let answer = send_raw(process.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    assert_eq!(answer.status, 502, "{}", answer.text());
    let line = process.wait_for_log("the request line", |line| line["message"] == "request");
    assert_eq!(line["outcome"], "upstream_failed", "{line}");
    assert!(line["error"].as_str().is_some_and(|e| e.contains("UnknownIssuer")), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_upstream_is_reached_once_its_ca_file_is_trusted_and_a_rewritten_ca_file_is_reloaded() {
    let dir = temp_dir("upstream-private-ca");
    let (ca, other) = (PrivateCa::new("hookgate test upstream CA"), PrivateCa::new("hookgate test other CA"));
    let upstream = Upstream::https(ca.server_config(None)).await;
    let url = upstream.https_url("/in");
    let order = Fixture::load("order-created");

    // The bundled roots do not know a private CA.
    let file = config_file(&dir, &route_to(&url, ""), "");
    let mut process = HookgateProcess::start(&file);
    refused_as_unknown_issuer(&mut process).await;
    drop(process);

    // A ca_file of another CA does not help either.
    other.write_to(&dir.join("ca.pem"));
    let file = config_file(&dir, &route_to(&url, "    tls:\n      ca_file: ca.pem\n"), "");
    let mut process = HookgateProcess::start(&file);
    refused_as_unknown_issuer(&mut process).await;

    // The CA file rewritten with the upstream's CA (the file watched, as a renewed Secret would be): the next
    // delivery arrives, whole.
    ca.write_to(&dir.join("ca.pem"));
    process.wait_for_log("the reload", reloaded);
    let answer = send_raw(process.addr, &order.request("/hooks/main")).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(upstream.received().len(), 1);
    assert_eq!(upstream.received()[0].body, order.body);

    // And back: the route's client is built anew, its pooled connection to the upstream not reused.
    other.write_to(&dir.join("ca.pem"));
    process.wait_for_log("the reload", reloaded);
    refused_as_unknown_issuer(&mut process).await;
    assert_eq!(upstream.received().len(), 1);
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_mtls_upstream_refuses_a_route_without_the_client_certificate_and_takes_one_with_it() {
    let dir = temp_dir("upstream-mtls");
    let (ca, clients) = (PrivateCa::new("hookgate test upstream CA"), PrivateCa::new("hookgate test client CA"));
    let upstream = Upstream::https(ca.server_config(Some(&clients))).await;
    ca.write_to(&dir.join("ca.pem"));
    let (cert_file, key_file) = clients.client_certificate(&dir);
    let url = upstream.https_url("/in");
    let ca_file = dir.join("ca.pem");
    let routes = format!(
        "  - name: anonymous\n    topics: [\"order.created\"]\n    upstream: \"{url}\"\n    tls:\n      ca_file: {}\n\
         {}    tls:\n      ca_file: {}\n      client_cert_file: {}\n      client_key_file: {}\n",
        ca_file.display(),
        route_to(&url, ""),
        ca_file.display(),
        cert_file.display(),
        key_file.display(),
    );
    let gateway = TestGateway::start(&fixture_config(&routes, "")).await;

    let refused = send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    assert_eq!(refused.status, 502, "{}", refused.text());
    assert!(upstream.received().is_empty(), "the handshake refused it: nothing arrived");
    let coupon = Fixture::load("coupon-deleted");
    let accepted = send_raw(gateway.addr, &coupon.request("/hooks/main")).await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    assert_eq!(upstream.received().len(), 1);
    assert_eq!(upstream.received()[0].body, coupon.body);
    assert_eq!(upstream.received()[0].headers["x-hookgate-route"], "fulfillment");
    gateway.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// `hookgate check` on `file` with the token in the environment: its whole output.
fn check(file: &std::path::Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["check", "--config"])
        .arg(file)
        .env("FULFILLMENT_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn assert_no_header_value(what: &str, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    for value in [TOKEN, API_KEY, ROTATED_API_KEY] {
        for form in crate::secrets::encodings(value) {
            assert!(!text.contains(&form), "{what} holds {value:?} (as {form:?})");
        }
    }
}

// Over 80 lines: each mode's run of the real binary, from start through a reload to its stop, is one story.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_headers_reach_the_upstream_in_both_modes_and_nothing_else() {
    for mode in ["proxy", "queue"] {
        let dir = temp_dir(&format!("upstream-headers-{mode}"));
        let upstream = Upstream::start().await;
        std::fs::write(dir.join("api-key"), format!("{API_KEY}\n")).unwrap();
        let headers =
            "    headers:\n      Authorization: { env: FULFILLMENT_TOKEN }\n      X-Api-Key: { file: api-key }\n";
        let extra =
            if mode == "queue" { queue_delivery(&Backend::Sqlite, &dir.join("data"), "") } else { String::new() };
        let file = config_file(&dir, &route_to(&upstream.url("/in"), headers), &extra);
        let mut process =
            HookgateProcess::start_with_env(&file, &[("RUST_LOG", "debug"), ("FULFILLMENT_TOKEN", TOKEN)]);

        let answer = send_raw(process.addr, &Fixture::load("order-created").request("/hooks/main")).await;
        assert_eq!(answer.status, 200, "{mode}: {}", answer.text());
        eventually(Duration::from_secs(20), "the delivery arrives", || upstream.received().len() == 1).await;
        let received = &upstream.received()[0];
        assert_eq!(received.headers["authorization"], TOKEN, "{mode}");
        assert_eq!(received.headers["x-api-key"], API_KEY, "{mode}");
        assert_eq!(received.headers["x-hookgate-route"], "fulfillment", "{mode}");

        // The key file rotated: watched, reloaded, and the next request carries the new value.
        write_atomically(&dir.join("api-key"), &format!("{ROTATED_API_KEY}\n"));
        process.wait_for_log("the reload", reloaded);
        let answer = send_raw(process.addr, &Fixture::load("coupon-deleted").request("/hooks/main")).await;
        assert_eq!(answer.status, 200, "{mode}: {}", answer.text());
        eventually(Duration::from_secs(20), "the second delivery arrives", || upstream.received().len() == 2).await;
        assert_eq!(upstream.received()[1].headers["x-api-key"], ROTATED_API_KEY, "{mode}");
        assert_eq!(upstream.received()[1].headers["authorization"], TOKEN, "{mode}");

        let checked = check(&file);
        let key_file = dir.join("api-key");
        let summary =
            format!("headers: authorization from env FULFILLMENT_TOKEN, x-api-key from file {}", key_file.display());
        assert!(checked.contains(&summary), "{checked}");
        process.signal("TERM");
        let (status, log) = tokio::task::spawn_blocking(move || process.wait()).await.unwrap();
        assert_eq!(status.code(), Some(0), "{mode}");
        let log = log.join("\n");
        assert!(log.contains("\"level\":\"DEBUG\""), "{mode}: debug lines were captured");
        assert_no_header_value(&format!("{mode}: the log"), log.as_bytes());
        assert_no_header_value(&format!("{mode}: check"), checked.as_bytes());
        if mode == "queue" {
            // What is stored is what the store sent: the route's headers are added at each attempt.
            for entry in std::fs::read_dir(dir.join("data")).unwrap() {
                let path = entry.unwrap().path();
                assert_no_header_value(&path.display().to_string(), &std::fs::read(&path).unwrap());
            }
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
