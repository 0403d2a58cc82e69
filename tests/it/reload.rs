//! Hot reload with the real binary: SIGHUP and a changed file swap the configuration in; a bad file is
//! refused while the old configuration keeps serving every request.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;

fn config(routes: &str, extra: &str) -> String {
    fixture_config(routes, extra)
}

fn route(name: &str, topics: &str, upstream: &Upstream) -> String {
    format!("  - name: {name}\n    topics: [{topics}]\n    upstream: \"{}\"\n", upstream.url("/"))
}

fn reloaded(json: &serde_json::Value) -> bool {
    json["message"] == "configuration reloaded"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_a_route_and_a_bad_file_is_refused_without_dropping_requests() {
    let dir = temp_dir("reload-sighup");
    let (orders, coupons) = (Upstream::start().await, Upstream::start().await);
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, config(&route("orders", "\"order.*\"", &orders), "")).unwrap();
    let mut process = HookgateProcess::start(&file);
    let addr = process.addr;
    let coupon = Fixture::load("coupon-deleted");
    let answer = send_raw(addr, &coupon.request("/hooks/main")).await;
    assert_eq!(answer.text(), r#"{"error":"unrouted"}"#, "proxy mode: no route, no 200");

    // A new route, on SIGHUP.
    std::fs::write(
        &file,
        config(
            &format!("{}{}", route("orders", "\"order.*\"", &orders), route("coupons", "\"coupon.*\"", &coupons)),
            "",
        ),
    )
    .unwrap();
    process.signal("HUP");
    let line = process.wait_for_log("the reload", reloaded);
    assert_eq!(line["changes"], "routes added: coupons", "the log line says what changed: {line}");
    assert_eq!(send_raw(addr, &coupon.request("/hooks/main")).await.status, 200);
    assert_eq!(coupons.received().len(), 1, "the new route took the coupon");

    // A bad file, while deliveries keep coming.
    let answered = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let sending = {
        let (answered, failed) = (Arc::clone(&answered), Arc::clone(&failed));
        tokio::spawn(async move {
            for _ in 0..40 {
                let status = send_raw(addr, &Fixture::load("order-created").request("/hooks/main")).await.status;
                if status == 200 {
                    answered.fetch_add(1, Ordering::SeqCst)
                } else {
                    failed.fetch_add(1, Ordering::SeqCst)
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(&file, "sources: [\n").unwrap();
    process.signal("HUP");
    let refused = process.wait_for_log("the refusal", |j| {
        j["message"] == "configuration reload refused: the previous configuration keeps serving"
    });
    assert!(refused["error"].as_str().unwrap().contains("hookgate.yaml:1:10"), "{refused}");
    sending.await.unwrap();
    assert_eq!(failed.load(Ordering::SeqCst), 0, "every request during the reload was answered");
    assert_eq!(answered.load(Ordering::SeqCst), 40);
    // The previous configuration (with the coupons route) still serves.
    assert_eq!(send_raw(addr, &coupon.request("/hooks/main")).await.status, 200);
    assert_eq!(coupons.received().len(), 2);
    let metrics = process.metrics().await;
    assert!(metrics.contains("hookgate_config_reloads_total{result=\"failure\"} 1"), "{metrics}");
    assert!(metrics.contains("hookgate_config_reloads_total{result=\"success\"} 2"), "start and one reload: {metrics}");
    process.signal("TERM");
    let (status, _) = tokio::task::spawn_blocking(move || process.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_reloaded_without_a_signal_and_a_new_listen_needs_a_restart() {
    let dir = temp_dir("reload-watch");
    let (orders, coupons) = (Upstream::start().await, Upstream::start().await);
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, config(&route("orders", "\"order.*\"", &orders), "")).unwrap();
    let mut process = HookgateProcess::start(&file);
    let addr = process.addr;
    // The watch starts just after the start-up line.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Written as Kubernetes does: a new file renamed over the old one.
    let next = config(
        &format!("{}{}", route("orders", "\"order.*\"", &orders), route("coupons", "\"coupon.*\"", &coupons)),
        "",
    )
    // Only the webhook listener's line (the first): the admin listener may not share its address.
    .replacen("listen: \"127.0.0.1:0\"", "listen: \"127.0.0.1:1\"", 1);
    std::fs::write(dir.join(".next.yaml"), next).unwrap();
    std::fs::rename(dir.join(".next.yaml"), &file).unwrap();
    let line = process.wait_for_log("the reload", reloaded);
    assert_eq!(line["cause"], "file change");
    process.wait_for_log("the restart warning", |j| j["setting"].as_str().is_some_and(|s| s.starts_with("listen (")));
    assert_eq!(send_raw(addr, &Fixture::load("coupon-deleted").request("/hooks/main")).await.status, 200);
    assert_eq!(coupons.received().len(), 1, "still listening where it was, with the new route");
    process.signal("TERM");
    let _ = tokio::task::spawn_blocking(move || process.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_file_is_picked_up_without_a_signal() {
    let dir = temp_dir("reload-secret");
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("main"), "the-old-secret\n").unwrap();
    let orders = Upstream::start().await;
    let file = dir.join("hookgate.yaml");
    let text = config(&route("orders", "\"order.*\"", &orders), "").replace(
        "      - value: \"an-older-secret-tried-first\"\n",
        &format!("      - file: {}\n", secrets.join("main").display()),
    );
    std::fs::write(&file, text).unwrap();
    let mut process = HookgateProcess::start(&file);
    let addr = process.addr;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = br#"{"id":9,"status":"processing"}"#;
    let signed_with = |secret: &str| {
        let signature = hookgate::verify::sign(
            hookgate::verify::Algorithm::Sha256,
            &hookgate::secret::Secret::new(secret.as_bytes().to_vec()),
            body,
        );
        let headers: Vec<(String, String)> =
            [("X-WC-Webhook-Topic", "order.created"), ("X-WC-Webhook-Signature", signature.as_str())]
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
        raw_request("POST", "/hooks/main", "HTTP/1.0", &headers, body)
    };
    assert_eq!(send_raw(addr, &signed_with("the-old-secret")).await.status, 200);
    assert_eq!(send_raw(addr, &signed_with("the-new-secret")).await.status, 401);
    // Rotated the way Kubernetes updates a mounted Secret: a new file renamed over the old.
    std::fs::write(secrets.join(".new"), "the-new-secret\n").unwrap();
    std::fs::rename(secrets.join(".new"), secrets.join("main")).unwrap();
    let line = process.wait_for_log("the reload", reloaded);
    assert_eq!(line["changes"], "secrets rotated: main", "named, never shown: {line}");
    assert!(!line.to_string().contains("the-new-secret") && !line.to_string().contains("the-old-secret"), "{line}");
    assert_eq!(send_raw(addr, &signed_with("the-new-secret")).await.status, 200);
    assert_eq!(send_raw(addr, &signed_with("the-old-secret")).await.status, 401);
    process.signal("TERM");
    let _ = tokio::task::spawn_blocking(move || process.wait()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_a_changed_file_adds_a_route_through_the_same_start_up_as_the_binary() {
    let dir = temp_dir("reload-in-process");
    let (orders, coupons) = (Upstream::start().await, Upstream::start().await);
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, config(&route("orders", "\"order.*\"", &orders), "")).unwrap();
    let loaded = hookgate::config::Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
    let gateway = TestGateway::serve(loaded, Some(&file)).await;
    let coupon = Fixture::load("coupon-deleted");
    assert_eq!(send_raw(gateway.addr, &coupon.request("/hooks/main")).await.text(), r#"{"error":"unrouted"}"#);

    let both = format!("{}{}", route("orders", "\"order.*\"", &orders), route("coupons", "\"coupon.*\"", &coupons));
    std::fs::write(&file, config(&both, "")).unwrap();
    eventually(Duration::from_secs(10), "the file's new route to be in force", || {
        gateway.gateway.config().routes.by_name("coupons").is_some()
    })
    .await;
    assert_eq!(send_raw(gateway.addr, &coupon.request("/hooks/main")).await.status, 200);
    assert_eq!(coupons.received().len(), 1, "the delivery reached the route the reload added");
    gateway.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// A source's `store` block changed in the file takes effect at a restart (its watch runs with the settings
/// at start), and a reload says so; a reload that leaves it alone does not.
#[tokio::test]
async fn a_changed_store_block_needs_a_restart() {
    let dir = temp_dir("reload-store");
    let store = |watch: &str| {
        format!(
            "    store:\n      url: \"http://127.0.0.1:9\"\n      consumer_key: {{ value: \"ck_reload\" }}\n      consumer_secret: {{ value: \"cs_reload\" }}\n      delivery_url: \"https://hooks.example.com/hooks/main\"\n      watch: {watch}\n"
        )
    };
    let with_store = |watch: &str| {
        fixture_config(ROUTE_TO_NOWHERE, "").replacen(
            "  - name: legacy\n",
            &format!("{}  - name: legacy\n", store(watch)),
            1,
        )
    };
    let gateway = TestGateway::start(&with_store("0")).await;
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, with_store("0")).unwrap();
    let restart = gateway.gateway.reload(&file).unwrap_or_else(|e| panic!("{e}"));
    assert!(restart.is_empty(), "{restart:?}");
    std::fs::write(&file, with_store("5m")).unwrap();
    let restart = gateway.gateway.reload(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(restart, ["sources[].store (the store watches run with the settings at start)"]);
    gateway.stop().await;
}

/// A spool beside the config file: its commits write in the watched folder, yet no reload is attempted for
/// them, and a change to the config file is still reloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_beside_the_config_file_triggers_no_reload_and_the_file_still_reloads() {
    let dir = temp_dir("reload-spool-beside");
    let (orders, coupons) = (Upstream::start().await, Upstream::start().await);
    let file = dir.join("hookgate.yaml");
    // Every delivery stored (the same fixture 20 times), so that each one writes the spool.
    let queue = "delivery:\n  mode: queue\n  spool_path: ./hookgate.db\ndedupe:\n  window: 0s\n";
    std::fs::write(&file, config(&route("orders", "\"order.*\"", &orders), queue)).unwrap();
    let mut process = HookgateProcess::start(&file);
    let addr = process.addr;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..20 {
        assert_eq!(send_raw(addr, &Fixture::load("order-created").request("/hooks/main")).await.status, 200);
    }
    eventually(Duration::from_secs(10), "the 20 deliveries", || orders.received().len() == 20).await;
    assert!(dir.join("hookgate.db-wal").exists(), "the spool wrote its log beside the config");
    // Longer than the reload's settle window: a reload the spool's writes had caused would be done.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = process.metrics().await;
    assert!(
        metrics.contains("hookgate_config_reloads_total{result=\"success\"} 1"),
        "only the load at start, no reload for the spool's writes: {metrics}"
    );

    // The config file written in place, beside the spool: reloaded.
    let both = format!("{}{}", route("orders", "\"order.*\"", &orders), route("coupons", "\"coupon.*\"", &coupons));
    std::fs::write(&file, config(&both, queue)).unwrap();
    let line = process.wait_for_log("the reload", reloaded);
    assert_eq!(line["cause"], "file change");
    assert_eq!(line["changes"], "routes added: coupons", "{line}");
    let metrics = process.metrics().await;
    assert!(metrics.contains("hookgate_config_reloads_total{result=\"success\"} 2"), "one reload: {metrics}");
    process.signal("TERM");
    let (status, log) = tokio::task::spawn_blocking(move || process.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
    #[cfg(target_os = "linux")]
    assert!(!log.join("\n").contains("watched for config changes"), "no warning where the writes wake nothing");
    let _ = log;
    std::fs::remove_dir_all(dir).unwrap();
}
