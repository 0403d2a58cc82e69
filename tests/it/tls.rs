//! The TLS webhook listener: a throwaway certificate (rcgen), a real rustls client, HTTP/2 and HTTP/1.1
//! chosen by ALPN.

use std::sync::Arc;

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

struct Certificate {
    dir: std::path::PathBuf,
    der: rustls::pki_types::CertificateDer<'static>,
}

fn certificate(name: &str) -> Certificate {
    let dir = temp_dir(name);
    let issued = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), issued.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), issued.signing_key.serialize_pem()).unwrap();
    Certificate { der: issued.cert.der().clone(), dir }
}

/// A client that trusts only `certificate` and offers `alpn`.
fn client(
    certificate: &Certificate,
    http2: bool,
) -> Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only();
    let connector = if http2 { builder.enable_all_versions().build() } else { builder.enable_http1().build() };
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn post(
    client: &Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>,
    url: &str,
    fixture: &Fixture,
) -> (http::Version, u16, String) {
    let mut request = http::Request::post(url);
    for (name, value) in fixture.headers() {
        request = request.header(name, value);
    }
    let response = client.request(request.body(Full::new(Bytes::from(fixture.body.clone()))).unwrap()).await.unwrap();
    let (version, status) = (response.version(), response.status().as_u16());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (version, status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_tls_listener_answers_a_ping_over_https_with_http2_and_http1() {
    let certificate = certificate("tls-ping");
    let upstream = Upstream::start().await;
    let routes = format!("  - name: all\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/"));
    let tls = format!(
        "tls:\n  cert_file: {}\n  key_file: {}\n",
        certificate.dir.join("cert.pem").display(),
        certificate.dir.join("key.pem").display()
    );
    let gateway = TestGateway::start(&format!("http2: true\n{}", fixture_config(&routes, &tls))).await;
    let url = format!("https://localhost:{}/hooks/main", gateway.addr.port());

    let (version, status, body) = post(&client(&certificate, true), &url, &Fixture::load("ping")).await;
    assert_eq!((version, status, body.as_str()), (http::Version::HTTP_2, 200, r#"{"status":"pong"}"#));
    let (version, status, _) = post(&client(&certificate, false), &url, &Fixture::load("ping")).await;
    assert_eq!((version, status), (http::Version::HTTP_11, 200));
    gateway.stop().await;

    // Without `http2: true`, ALPN offers HTTP/1.1 only: a client that would take HTTP/2 gets HTTP/1.1.
    let gateway = TestGateway::start(&fixture_config(&routes, &tls)).await;
    let url = format!("https://localhost:{}/hooks/main", gateway.addr.port());
    let (version, status, _) = post(&client(&certificate, true), &url, &Fixture::load("ping")).await;
    assert_eq!((version, status), (http::Version::HTTP_11, 200));

    let (_, status, _) = post(&client(&certificate, true), &url, &Fixture::load("order-created")).await;
    assert_eq!(status, 200);
    assert_eq!(upstream.received()[0].headers["x-forwarded-proto"], "https");
    assert_eq!(upstream.received()[0].body, Fixture::load("order-created").body);

    // Plain HTTP on the TLS port gets no HTTP answer: the handshake fails and the connection closes.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut plain = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    plain.write_all(&Fixture::load("ping").request("/hooks/main")).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), plain.read_to_end(&mut answer)).await.unwrap();
    assert!(!answer.starts_with(b"HTTP/"), "{:?}", String::from_utf8_lossy(&answer));
    assert_eq!(upstream.received().len(), 1);
    gateway.stop().await;
}

#[test]
fn a_missing_or_mismatched_certificate_is_a_config_error() {
    let certificate = certificate("tls-config");
    let other = certificate_key_only("tls-config-other");
    let base = fixture_config("  []", "");
    let text = format!(
        "{base}tls:\n  cert_file: {}\n  key_file: {}\n",
        certificate.dir.join("missing.pem").display(),
        certificate.dir.join("key.pem").display()
    );
    let error = hookgate::config::Config::from_yaml(&text, std::path::Path::new("t.yaml")).unwrap_err().to_string();
    assert!(error.contains("cannot read tls.cert_file"), "{error}");
    let text = format!(
        "{base}tls:\n  cert_file: {}\n  key_file: {}\n",
        certificate.dir.join("cert.pem").display(),
        other.display()
    );
    let error = hookgate::config::Config::from_yaml(&text, std::path::Path::new("t.yaml")).unwrap_err().to_string();
    assert!(error.contains("the TLS key does not fit the certificate"), "{error}");
    assert!(!error.contains("PRIVATE KEY"), "the key is never shown: {error}");
}

fn certificate_key_only(name: &str) -> std::path::PathBuf {
    let other = certificate(name);
    other.dir.join("key.pem")
}

#[tokio::test]
async fn a_reload_brings_a_new_certificate_to_the_next_handshake() {
    let first = certificate("tls-reload-first");
    let second = certificate("tls-reload-second");
    let upstream = Upstream::start().await;
    let routes = format!("  - name: all\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/"));
    let tls_for = |c: &Certificate| {
        format!(
            "tls:\n  cert_file: {}\n  key_file: {}\n",
            c.dir.join("cert.pem").display(),
            c.dir.join("key.pem").display()
        )
    };
    let config_file = first.dir.join("hookgate.yaml");
    std::fs::write(&config_file, fixture_config(&routes, &tls_for(&first))).unwrap();
    let gateway = TestGateway::start(&fixture_config(&routes, &tls_for(&first))).await;
    let url = format!("https://localhost:{}/hooks/main", gateway.addr.port());
    let ping = Fixture::load("ping");
    assert_eq!(post(&client(&first, true), &url, &ping).await.1, 200);
    let refused = try_post(&client(&second, true), &url, &ping).await;
    assert!(refused.is_err(), "a client trusting only the second certificate refuses the first");

    std::fs::write(&config_file, fixture_config(&routes, &tls_for(&second))).unwrap();
    gateway.gateway.reload(&config_file).unwrap();
    assert_eq!(post(&client(&second, true), &url, &ping).await.1, 200, "the next handshake uses the new certificate");
    assert!(try_post(&client(&first, true), &url, &ping).await.is_err());
    gateway.stop().await;
}

async fn try_post(
    client: &Client<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, Full<Bytes>>,
    url: &str,
    fixture: &Fixture,
) -> Result<u16, String> {
    let mut request = http::Request::post(url);
    for (name, value) in fixture.headers() {
        request = request.header(name, value);
    }
    client
        .request(request.body(Full::new(Bytes::from(fixture.body.clone()))).unwrap())
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_tls_connection_that_chose_http2_and_sends_no_preface_is_closed_at_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certificate = certificate("tls-no-preface");
    let tls = format!(
        "tls:\n  cert_file: {}\n  key_file: {}\n",
        certificate.dir.join("cert.pem").display(),
        certificate.dir.join("key.pem").display()
    );
    let config = format!("http2: true\n{}", fixture_config(ROUTE_TO_NOWHERE, &tls))
        .replace("  header_timeout: 5s\n", "  header_timeout: 1s\n");
    assert!(config.contains("header_timeout: 1s"));
    let gateway = TestGateway::start(&config).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate.der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    // One connection stops after the handshake, the other after half the preface.
    let mut silent = Vec::new();
    for preface_part in [&b""[..], &b"PRI * HTTP/2.0\r\n"[..]] {
        let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
        let mut stream = connector.connect(name.clone(), tcp).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        stream.write_all(preface_part).await.unwrap();
        stream.flush().await.unwrap();
        silent.push(stream);
    }
    for (n, mut stream) in silent.into_iter().enumerate() {
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(std::time::Duration::from_secs(4), stream.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "connection {n} is still open 4 s after a 1 s header_timeout");
    }
    gateway.stop().await;
}
