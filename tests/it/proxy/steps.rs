//! The contract's steps: what each answers, and what reaches the upstream.

use super::*;

#[tokio::test]
async fn every_signed_fixture_reaches_the_upstream_byte_for_byte_with_its_headers() {
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream).await;
    let mut expected = Vec::new();
    for fixture in Fixture::all().into_iter().filter(|f| f.field("expect") == "accepted") {
        let path = if fixture.field("algorithm") == "sha1" { "/hooks/legacy" } else { "/hooks/main" };
        let answer = send_raw(gateway.addr, &fixture.request(path)).await;
        assert_eq!(answer.status, 200, "{}: {}", fixture.name, answer.text());
        assert_eq!(answer.text(), r#"{"ok":true}"#, "{}: the upstream's answer is relayed", fixture.name);
        expected.push((fixture, path));
    }
    assert_eq!(expected.len(), 7, "every accepted fixture was sent");
    let received = upstream.received();
    assert_eq!(received.len(), expected.len());
    for (got, (fixture, path)) in received.iter().zip(&expected) {
        assert_eq!(got.method, "POST");
        assert_eq!(got.path_and_query, "/in?x=1", "the upstream URL's path and query are used as configured");
        assert_eq!(got.body, fixture.body, "{}: the exact bytes", fixture.name);
        for (name, value) in fixture.headers() {
            assert_eq!(
                got.headers.get(&name).map(|v| v.to_str().unwrap()),
                Some(value.as_str()),
                "{}: {name}",
                fixture.name
            );
        }
        let source = if *path == "/hooks/legacy" { "legacy" } else { "main" };
        assert_eq!(got.headers["x-hookgate-source"], source);
        assert_eq!(got.headers["x-hookgate-route"], "everything");
        assert_eq!(got.headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(got.headers["x-forwarded-proto"], "http");
        assert_eq!(got.headers["x-forwarded-host"], "hooks.example.com");
        assert_eq!(got.headers["content-length"], fixture.body.len().to_string().as_str());
    }
    gateway.stop().await;
}

#[tokio::test]
async fn hop_by_hop_and_unrelated_headers_are_not_forwarded_and_x_forwarded_for_is_appended() {
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream).await;
    let fixture = Fixture::load("order-created");
    let mut headers = headers(&[("Host", "shop-hooks.example.com")]);
    headers.extend(fixture.headers());
    headers.extend(self::headers(&[
        ("Connection", "close, X-Drop-Me, X-WC-Webhook-Event"),
        ("X-Drop-Me", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic c2VjcmV0"),
        ("Cookie", "session=abc"),
        ("Authorization", "Bearer token"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("TE", "trailers"),
    ]));
    let answer = send_raw(gateway.addr, &raw_request("POST", "/hooks/main", "HTTP/1.1", &headers, &fixture.body)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let got = &upstream.received()[0];
    for name in ["x-drop-me", "keep-alive", "proxy-authorization", "cookie", "authorization", "te", "connection"] {
        assert!(got.headers.get(name).is_none(), "{name} must not be forwarded");
    }
    assert!(got.headers.get("x-wc-webhook-event").is_none(), "a header named by Connection is hop-by-hop");
    assert_eq!(got.headers["x-wc-webhook-topic"], "order.created");
    assert_eq!(got.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(got.headers["x-forwarded-host"], "shop-hooks.example.com");
    gateway.stop().await;
}

// 1. Anything but POST: 405 with Allow: POST. A path no source has: 404.
#[tokio::test]
async fn other_methods_get_405_and_unknown_paths_get_404() {
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream).await;
    // (HEAD is answered 405 too; it is left out here only because its answer has no body to read.)
    for method in ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let answer = send_raw(
            gateway.addr,
            &raw_request(method, "/hooks/main", "HTTP/1.1", &headers(&[("Host", "x"), ("Connection", "close")]), b""),
        )
        .await;
        assert_eq!(answer.status, 405, "{method}");
        assert_eq!(answer.header("allow"), Some("POST"), "{method}");
        assert_eq!(answer.text(), r#"{"error":"method_not_allowed"}"#);
    }
    let fixture = Fixture::load("order-created");
    for path in ["/hooks/other", "/hooks/main/", "/", "/hooks/MAIN"] {
        let answer = send_raw(gateway.addr, &fixture.request(path)).await;
        assert_eq!(answer.status, 404, "{path}");
        assert_eq!(answer.text(), r#"{"error":"not_found"}"#);
    }
    // A query string does not change which source the path names.
    let answer = send_raw(gateway.addr, &fixture.request("/hooks/main?from=woo")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(upstream.received().len(), 1, "only the signed POST on the right path went through");
    gateway.stop().await;
}

// 2. The body is bounded by max_body_bytes: Content-Length checked first, a chunked body cut at the bound.
#[tokio::test]
async fn a_body_past_the_bound_gets_413() {
    let upstream = Upstream::start().await;
    let routes = format!("  - name: all\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/"));
    let config = fixture_config(&routes, "").replace("max_body_bytes: 1048576", "max_body_bytes: 4096");
    let gateway = TestGateway::start(&config).await;

    // Content-Length past the bound: refused before any body byte is sent.
    let fixture = Fixture::load("order-updated-large");
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let mut head = String::from("POST /hooks/main HTTP/1.1\r\nHost: x\r\n");
    for (name, value) in fixture.headers() {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", fixture.body.len()));
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_response(&mut stream).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.text(), r#"{"error":"too_large"}"#);
    assert_eq!(answer.header("connection"), Some("close"));

    // Expect: 100-continue with a body too large: 413 and no 100 Continue invitation.
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let with_expect = head.replace("Host: x\r\n", "Host: x\r\nExpect: 100-continue\r\n");
    stream.write_all(with_expect.as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 413");

    // Chunked, with no length announced: reading stops at the bound.
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    let chunked =
        head.replace(&format!("Content-Length: {}\r\n", fixture.body.len()), "Transfer-Encoding: chunked\r\n");
    stream.write_all(chunked.as_bytes()).await.unwrap();
    let mut sent = 0;
    for chunk in fixture.body.chunks(1000).take(10) {
        stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await.unwrap();
        stream.write_all(chunk).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
        sent += chunk.len();
    }
    assert!(sent > 4096);
    let answer = read_response(&mut stream).await;
    assert_eq!(answer.status, 413);

    // A signed body of exactly the bound is accepted (the bound is inclusive).
    let body = vec![b'x'; 4096];
    let signature = hookgate::verify::sign(
        hookgate::verify::Algorithm::Sha256,
        &hookgate::secret::Secret::new(FIXTURE_SECRET.as_bytes().to_vec()),
        &body,
    );
    let request_headers = fixture.headers_with(&[("X-WC-Webhook-Signature", Some(&signature))]);
    let answer = send_raw(gateway.addr, &raw_request("POST", "/hooks/main", "HTTP/1.0", &request_headers, &body)).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(upstream.received().len(), 1, "only the body within the bound went through");
    assert_eq!(upstream.received()[0].body.len(), 4096);
    gateway.stop().await;
}

// 3. The ping: unsigned `webhook_id=<digits>` gets 200 at once and reaches no one; 403 outside webhook_ids.
#[tokio::test]
async fn the_unsigned_ping_gets_200_and_reaches_no_upstream() {
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream).await;
    let ping = Fixture::load("ping");
    let answer = send_raw(gateway.addr, &ping.request("/hooks/main")).await;
    assert_eq!(answer.status, 200, "WooCommerce counts only exactly 200 as a good ping");
    assert_eq!(answer.text(), r#"{"status":"pong"}"#);
    assert_eq!(answer.header("content-type"), Some("application/json"));

    // The legacy source allows webhook 537 only: a ping from 535 shows the mistake in WooCommerce's admin.
    let answer = send_raw(gateway.addr, &ping.request("/hooks/legacy")).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.text(), r#"{"error":"forbidden_webhook"}"#);
    let allowed = raw_request("POST", "/hooks/legacy", "HTTP/1.0", &ping.headers(), b"webhook_id=537");
    assert_eq!(send_raw(gateway.addr, &allowed).await.status, 200);

    // Not a ping: extra fields, no digits, a huge id, a JSON body.
    for body in [&b"webhook_id=535&x=1"[..], b"webhook_id=", b"webhook_id=123456789012345678901234", b"{\"id\":1}"] {
        let answer =
            send_raw(gateway.addr, &raw_request("POST", "/hooks/main", "HTTP/1.0", &ping.headers(), body)).await;
        assert_eq!(answer.status, 401, "{:?}", String::from_utf8_lossy(body));
        assert_eq!(answer.text(), r#"{"error":"missing_signature"}"#);
    }
    assert!(upstream.received().is_empty(), "a ping and unsigned requests reach no upstream");
    gateway.stop().await;
}

// 4. Unsigned, or a signature that is not base64 or has the wrong length: 401.
#[tokio::test]
async fn missing_or_malformed_signatures_get_401_and_reach_no_upstream() {
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream).await;
    let fixture = Fixture::load("order-created");
    let good = fixture.field("signature").to_owned();
    let cases: Vec<(String, Headers, &str)> = vec![
        ("no signature".into(), fixture.headers_with(&[("X-WC-Webhook-Signature", None)]), "missing_signature"),
        (
            "not base64".into(),
            fixture.headers_with(&[("X-WC-Webhook-Signature", Some("!!!!not-base64-at-all-but-44-characters!!!!"))]),
            "invalid_signature",
        ),
        (
            "no padding".into(),
            fixture.headers_with(&[("X-WC-Webhook-Signature", Some(good.trim_end_matches('=')))]),
            "invalid_signature",
        ),
        (
            "sha1 length on a sha256 source".into(),
            fixture.headers_with(&[("X-WC-Webhook-Signature", Some("47FDOQRhzljLD4wECTmW14V4tM0="))]),
            "invalid_signature",
        ),
        ("empty".into(), fixture.headers_with(&[("X-WC-Webhook-Signature", Some(""))]), "invalid_signature"),
        (
            "a second signature header".into(),
            {
                let mut h = fixture.headers();
                h.push(("X-WC-Webhook-Signature".into(), good.clone()));
                h
            },
            "invalid_signature",
        ),
    ];
    for (what, headers, error) in cases {
        let answer =
            send_raw(gateway.addr, &raw_request("POST", "/hooks/main", "HTTP/1.0", &headers, &fixture.body)).await;
        assert_eq!(answer.status, 401, "{what}");
        assert_eq!(answer.text(), format!(r#"{{"error":"{error}"}}"#), "{what}");
    }
    // The URL-safe alphabet: coupon-deleted's signature holds a '+'.
    let coupon = Fixture::load("coupon-deleted");
    let url_safe = coupon.field("signature").replace('+', "-");
    assert_ne!(url_safe, coupon.field("signature"));
    let headers = coupon.headers_with(&[("X-WC-Webhook-Signature", Some(&url_safe))]);
    let answer = send_raw(gateway.addr, &raw_request("POST", "/hooks/main", "HTTP/1.0", &headers, &coupon.body)).await;
    assert_eq!(answer.status, 401, "url-safe alphabet");
    assert!(upstream.received().is_empty(), "nothing rejected reaches the upstream");
    gateway.stop().await;
}

// 5. X-WC-Webhook-ID outside a configured webhook_ids: 403.
#[tokio::test]
async fn a_webhook_id_outside_the_allow_list_gets_403() {
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream).await;
    let fixture = Fixture::load("customer-created-sha1");
    for id in [Some("538"), Some("0537"), Some("+537"), Some(" 537x"), Some("x"), None, Some("537")] {
        let headers = fixture.headers_with(&[("X-WC-Webhook-ID", id)]);
        let answer =
            send_raw(gateway.addr, &raw_request("POST", "/hooks/legacy", "HTTP/1.0", &headers, &fixture.body)).await;
        if id == Some("537") {
            assert_eq!(answer.status, 200, "{id:?}");
        } else {
            assert_eq!(answer.status, 403, "{id:?}");
            assert_eq!(answer.text(), r#"{"error":"forbidden_webhook"}"#);
        }
    }
    assert_eq!(upstream.received().len(), 1);
    gateway.stop().await;
}

// 6. The HMAC of the raw body with every secret: a tampered body gets 401; entity-decoded and rotated
// secrets verify (the fixtures signed with the second, third and fourth secrets are accepted above).
#[tokio::test]
async fn a_tampered_body_or_an_unknown_secret_gets_401() {
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream).await;
    let tampered = Fixture::load("tampered-body");
    let answer = send_raw(gateway.addr, &tampered.request("/hooks/main")).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.text(), r#"{"error":"invalid_signature"}"#);

    // A body re-serialised with unescaped slashes (what a JSON library does) no longer verifies.
    let fixture = Fixture::load("order-created");
    let reserialised = String::from_utf8(fixture.body.clone()).unwrap().replace("\\/", "/");
    assert_ne!(reserialised.as_bytes(), fixture.body.as_slice());
    let answer = send_raw(
        gateway.addr,
        &raw_request("POST", "/hooks/main", "HTTP/1.0", &fixture.headers(), reserialised.as_bytes()),
    )
    .await;
    assert_eq!(answer.status, 401);

    // The sha1 fixture sent to the sha256 source: wrong length for the algorithm.
    let sha1 = Fixture::load("customer-created-sha1");
    assert_eq!(send_raw(gateway.addr, &sha1.request("/hooks/main")).await.status, 401);
    // A sha256 signature on the sha1 source: refused for its length before the webhook id is looked at.
    assert_eq!(send_raw(gateway.addr, &fixture.request("/hooks/legacy")).await.status, 401);
    assert!(upstream.received().is_empty());
    gateway.stop().await;
}

// 7. Routing by topic, first match in file order; unrouted deliveries as `unrouted` says.
#[tokio::test]
async fn the_topic_picks_the_first_matching_route_and_unrouted_discard_answers_200() {
    let orders = Upstream::start().await;
    let catalogue = Upstream::start().await;
    let routes = format!(
        "  - name: orders\n    source: main\n    topics: [\"order.created\"]\n    upstream: \"{}\"\n  - name: catalogue\n    topics: [\"product.*\", \"order.*\"]\n    upstream: \"{}\"\n",
        orders.url("/orders"),
        catalogue.url("/catalogue")
    );
    let gateway = TestGateway::start(&fixture_config(&routes, "unrouted: discard")).await;
    for (name, status) in [
        ("order-created", 200),
        ("order-updated-large", 200),
        ("product-updated-special-secret", 200),
        ("coupon-deleted", 200),
    ] {
        let answer = send_raw(gateway.addr, &Fixture::load(name).request("/hooks/main")).await;
        assert_eq!(answer.status, status, "{name}");
        if name == "coupon-deleted" {
            assert_eq!(answer.text(), r#"{"status":"unrouted"}"#);
        }
    }
    let to_orders: Vec<_> =
        orders.received().iter().map(|r| r.headers["x-wc-webhook-topic"].to_str().unwrap().to_owned()).collect();
    let to_catalogue: Vec<_> =
        catalogue.received().iter().map(|r| r.headers["x-wc-webhook-topic"].to_str().unwrap().to_owned()).collect();
    assert_eq!(to_orders, ["order.created"]);
    assert_eq!(to_catalogue, ["order.updated", "product.updated"]);
    assert_eq!(catalogue.received()[0].headers["x-hookgate-route"], "catalogue");
    // A route restricted to one source does not take another source's deliveries.
    let sha1 = Fixture::load("customer-created-sha1");
    let answer = send_raw(gateway.addr, &sha1.request("/hooks/legacy")).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), r#"{"status":"unrouted"}"#);
    gateway.stop().await;
}

/// Proxy mode keeps nothing, so unless the file says `discard` a delivery no route takes is answered 404
/// (WooCommerce logs it as failed) rather than 200 and dropped; `accept`, which promises it kept, is taken
/// as `reject`, and `hookgate check` warns about it.
#[tokio::test]
async fn unrouted_is_rejected_with_404_by_default_in_proxy_mode_and_forwarded_nowhere() {
    let upstream = Upstream::start().await;
    let routes = format!("  - name: orders\n    topics: [\"order.*\"]\n    upstream: \"{}\"\n", upstream.url("/"));
    // `accept` (as older examples wrote it) cannot keep a delivery without a spool: it is taken as reject.
    for extra in ["", "unrouted: reject", "unrouted: accept"] {
        let gateway = TestGateway::start(&fixture_config(&routes, extra)).await;
        let answer = send_raw(gateway.addr, &Fixture::load("coupon-deleted").request("/hooks/main")).await;
        assert_eq!(answer.status, 404, "{extra:?}");
        assert_eq!(answer.text(), r#"{"error":"unrouted"}"#);
        gateway.stop().await;
    }
    assert!(upstream.received().is_empty());
}

#[tokio::test]
async fn a_verified_delivery_without_a_valid_topic_gets_400() {
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream).await;
    let fixture = Fixture::load("order-created");
    for topic in [None, Some("order created"), Some("")] {
        let headers = fixture.headers_with(&[("X-WC-Webhook-Topic", topic)]);
        let answer =
            send_raw(gateway.addr, &raw_request("POST", "/hooks/main", "HTTP/1.0", &headers, &fixture.body)).await;
        assert_eq!(answer.status, 400, "{topic:?}");
        assert_eq!(answer.text(), r#"{"error":"missing_topic"}"#);
    }
    // Unsigned with no topic is still 401: the caller learns nothing about what else is checked.
    let headers = fixture.headers_with(&[("X-WC-Webhook-Topic", None), ("X-WC-Webhook-Signature", None)]);
    let answer = send_raw(gateway.addr, &raw_request("POST", "/hooks/main", "HTTP/1.0", &headers, &fixture.body)).await;
    assert_eq!(answer.status, 401);
    assert!(upstream.received().is_empty());
    gateway.stop().await;
}

#[tokio::test]
async fn answers_made_by_the_gateway_never_mention_a_secret() {
    let upstream = Upstream::start().await;
    let gateway = gateway_with(&upstream).await;
    let tampered = Fixture::load("tampered-body");
    let answer = send_raw(gateway.addr, &tampered.request("/hooks/main")).await;
    let everything = format!("{:?} {}", answer.headers, answer.text());
    for secret in [FIXTURE_SECRET, "an-older-secret", "abc&", "Sr%VVRNC"] {
        assert!(!everything.contains(secret), "{everything}");
    }
    gateway.stop().await;
}
