//! A store that does not answer never touches receiving: with one source's store accepting connections and
//! never answering, and the other's refusing them, deliveries to both are answered and forwarded while the
//! watch waits, `/readyz` says ready, and the failed checks are counted.

use std::sync::Arc;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_does_not_answer_never_touches_receiving() {
    // Accepts connections and reads nothing: a watch's request to it waits until its timeout (15 s).
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let held = Arc::clone(&accepted);
    let holder = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((connection, _)) = silent.accept().await {
            held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            connections.push(connection);
        }
    });
    let store = |url: &str| {
        format!(
            "    store:\n      url: \"{url}\"\n      consumer_key: {{ value: \"ck_unreachable\" }}\n      consumer_secret: {{ value: \"cs_unreachable\" }}\n      delivery_url: \"https://hooks.example.com/hooks/main\"\n      watch: 1s\n"
        )
    };
    let upstream = Upstream::start().await;
    let routes = format!("  - name: all\n    topics: [\"*\"]\n    upstream: \"{}\"\n", upstream.url("/"));
    let config = fixture_config(&routes, "")
        .replacen("  - name: legacy\n", &format!("{}  - name: legacy\n", store(&silent_url)), 1)
        .replacen("    webhook_ids: [537]\n", &format!("    webhook_ids: [537]\n{}", store("http://127.0.0.1:9")), 1);
    let gateway = TestGateway::start(&config).await;
    eventually(Duration::from_secs(10), "the watch waits on the silent store", || {
        accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1
    })
    .await;
    for _ in 0..5 {
        let answer = send_raw(gateway.addr, &Fixture::load("order-created").request("/hooks/main")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    assert_eq!(upstream.received().len(), 5);
    assert!(gateway.gateway.not_ready().is_none(), "ready while the store does not answer");
    let scrape = || async {
        send_raw(gateway.admin_addr, b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").await.text()
    };
    let mut errors = None;
    for _ in 0..50 {
        errors = metric_sample(&scrape().await, "hookgate_store_check_errors_total{source=\"legacy\"}");
        if errors.is_some_and(|n| n >= 2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(errors.is_some_and(|n| n >= 2.0), "a check a second, each refused: {errors:?}");
    let metrics = scrape().await;
    assert!(!metrics.contains("hookgate_store_last_check_success_timestamp_seconds{source=\"legacy\""), "{metrics}");
    assert!(!metrics.contains("cs_unreachable") && !metrics.contains("ck_unreachable"));
    gateway.stop().await;
    holder.abort();
}
