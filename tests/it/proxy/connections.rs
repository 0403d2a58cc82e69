//! Connections: HTTP/1.0, keep-alive, HTTP/2 when it is on, Host, and the timeouts of a connection.

use super::*;

// 9. WooCommerce's HTTP/1.0 with Connection: close, and HTTP/1.1 keep-alive with Expect: 100-continue.
#[tokio::test]
async fn http_1_0_close_and_http_1_1_keep_alive_with_expect_continue_work() {
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream).await;
    let fixture = Fixture::load("order-created");

    let answer = send_raw(gateway.addr, &fixture.request("/hooks/main")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.version, "HTTP/1.0", "an HTTP/1.0 request is answered in HTTP/1.0");

    // Two deliveries and a ping on one kept-alive HTTP/1.1 connection, the first with Expect: 100-continue.
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let mut head = String::from("POST /hooks/main HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n");
    for (name, value) in fixture.headers() {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", fixture.body.len()));
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut interim = [0u8; 25];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut interim).await.unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n", "the gateway invites the body");
    stream.write_all(&fixture.body).await.unwrap();
    let first = read_response(&mut stream).await;
    assert_eq!(first.status, 200);

    let with_host = |fixture: &Fixture| {
        let mut headers = headers(&[("Host", "x")]);
        headers.extend(fixture.headers());
        raw_request("POST", "/hooks/main", "HTTP/1.1", &headers, &fixture.body)
    };
    let second = Fixture::load("coupon-deleted");
    stream.write_all(&with_host(&second)).await.unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    let ping = Fixture::load("ping");
    stream.write_all(&with_host(&ping)).await.unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);

    let received = upstream.received();
    assert_eq!(received.len(), 3);
    assert_eq!(received[1].body, fixture.body);
    assert_eq!(received[2].body, second.body);
    assert_eq!(upstream.connections(), 1, "the upstream connection is kept alive across deliveries");
    gateway.stop().await;
}

// `hookgate serve` serves connections on one worker thread per core, each with its own upstream pool.
#[tokio::test]
async fn connections_served_by_workers_are_relayed_and_each_worker_keeps_its_upstream_connection() {
    let upstream = Upstream::start().await;
    let routes = format!("  - name: everything\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in"));
    let gateway = TestGateway::start_with_workers(&fixture_config(&routes, ""), 2).await;
    let fixture = Fixture::load("order-created");
    let mut request = headers(&[("Host", "x")]);
    request.extend(fixture.headers());
    let request = raw_request("POST", "/hooks/main", "HTTP/1.1", &request, &fixture.body);
    // Four kept-alive connections, handed to the two workers in turn, two deliveries each, one at a time.
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(TcpStream::connect(gateway.addr).await.unwrap());
    }
    for _ in 0..2 {
        for stream in &mut streams {
            stream.write_all(&request).await.unwrap();
            assert_eq!(read_response(stream).await.status, 200);
        }
    }
    let received = upstream.received();
    assert_eq!(received.len(), 8);
    assert!(received.iter().all(|delivery| delivery.body == fixture.body));
    assert_eq!(upstream.connections(), 2, "one kept-alive upstream connection per worker");
    drop(streams);
    gateway.stop().await;
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_off_at_body_timeout() {
    let upstream = Upstream::start().await;
    let routes = format!("  - name: all\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/"));
    let config = fixture_config(&routes, "").replace("body_timeout: 5s", "body_timeout: 300ms");
    let gateway = TestGateway::start(&config).await;
    let fixture = Fixture::load("order-created");
    let request = fixture.request("/hooks/main");
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    // Everything but the last 100 bytes of the body, then silence.
    stream.write_all(&request[..request.len() - 100]).await.unwrap();
    let answer = read_response(&mut stream).await;
    assert_eq!(answer.status, 408);
    assert_eq!(answer.text(), r#"{"error":"body_timeout"}"#);
    assert!(upstream.received().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn http_2_with_prior_knowledge_is_served_when_http2_is_on() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let upstream = Upstream::start().await;
    let routes = format!("  - name: everything\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/in?x=1"));
    let gateway = TestGateway::start(&format!("http2: true\n{}", fixture_config(&routes, ""))).await;
    let fixture = Fixture::load("order-created");
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).http2_only(true).build_http();
    let mut request = http::Request::post(format!("http://{}/hooks/main", gateway.addr));
    for (name, value) in fixture.headers() {
        request = request.header(name, value);
    }
    let response =
        client.request(request.body(Full::new(bytes::Bytes::from(fixture.body.clone()))).unwrap()).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes().as_ref(), br#"{"ok":true}"#);
    assert_eq!(upstream.received()[0].body, fixture.body);
    assert_eq!(
        upstream.received()[0].headers["x-forwarded-host"],
        gateway.addr.to_string().as_str(),
        "from :authority"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn connections_that_send_nothing_or_stall_are_closed_at_header_timeout() {
    use tokio::io::AsyncReadExt;
    let upstream = Upstream::start().await;
    let routes = format!("  - name: all\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/"));
    let config = fixture_config(&routes, "").replace("header_timeout: 5s", "header_timeout: 400ms");
    let gateway = TestGateway::start(&config).await;
    let fixture = Fixture::load("order-created");
    // Silent, one byte, half an HTTP/2 preface, half a request head: each is closed by the gateway.
    let openings: [&[u8]; 4] = [b"", b"P", b"PRI * HTTP/2.0\r\n", b"POST /hooks/main HTTP/1.1\r\nHost: x\r\n"];
    let mut streams = Vec::new();
    for opening in openings {
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        stream.write_all(opening).await.unwrap();
        streams.push(stream);
    }
    // A kept-alive connection that goes quiet after one delivery.
    let mut kept = TcpStream::connect(gateway.addr).await.unwrap();
    let mut with_host = headers(&[("Host", "x")]);
    with_host.extend(fixture.headers());
    kept.write_all(&raw_request("POST", "/hooks/main", "HTTP/1.1", &with_host, &fixture.body)).await.unwrap();
    assert_eq!(read_response(&mut kept).await.status, 200);
    streams.push(kept);
    for (index, mut stream) in streams.into_iter().enumerate() {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "connection {index} is still open after 5 s");
    }
    // Meanwhile a delivery is answered as usual.
    assert_eq!(send_raw(gateway.addr, &fixture.request("/hooks/main")).await.status, 200);
    gateway.stop().await;
}

#[tokio::test]
async fn an_http_1_0_delivery_may_leave_out_host_and_an_http_1_1_one_may_not() {
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream).await;
    let fixture = Fixture::load("order-created");
    let mut headers = fixture.headers();
    headers.push(("Connection".into(), "close".into()));
    let answer = send_raw(gateway.addr, &raw_request("POST", "/hooks/main", "HTTP/1.0", &headers, &fixture.body)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(upstream.received().len(), 1);
    let answer = send_raw(gateway.addr, &raw_request("POST", "/hooks/main", "HTTP/1.1", &headers, &fixture.body)).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.text(), r#"{"error":"bad_host"}"#);
    assert_eq!(upstream.received().len(), 1, "the refused one reached no upstream");
}

#[tokio::test]
async fn http_2_is_off_unless_configured() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream).await;
    // An HTTP/2 preface and a SETTINGS frame: the connection is closed without an answer.
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed at once, not at header_timeout: {read:?}");
    assert!(answer.is_empty(), "no HTTP/2 frame came back: {answer:?}");
    // HTTP/1.1 on the same listener is served as ever.
    let answer = send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/main")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(upstream.received().len(), 1);
    gateway.stop().await;
}
