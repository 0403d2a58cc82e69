//! The store's REST API client against the real store (`start.sh DIR serve PORT`, started by `.ci/run`):
//! a webhook created, listed, paused and deleted over OAuth 1.0a on plain http; one created, listed and
//! deleted over HTTP Basic on https, through nginx terminating TLS in front of the store with a private
//! CA's certificate given as `ca_file` (and the store's certificate refused without it); a wrong key
//! refused with an error that never shows it. Paging and the timeout are checked against a stand-in,
//! since the real store would need hundreds of webhooks, and always answers.

use std::path::Path;

use hookgate::config::Config;
use hookgate::secret::Secret;
use hookgate::store_api::{StoreClient, StoreError, WebhookFields, WebhookStatus};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_created_listed_paused_and_deleted_over_oauth_on_the_real_store() {
    let Some((site, url)) =
        WooCommerceSite::served("a_webhook_is_created_listed_paused_and_deleted_over_oauth_on_the_real_store").await
    else {
        return;
    };
    assert!(url.starts_with("http://"), "this test is about OAuth 1.0a over plain http: {url}");
    let (consumer_key, consumer_secret) = site.rest_key().await;
    // The creation ping goes here, and is answered 200.
    let upstream = Upstream::start().await;
    let delivery_url = upstream.url("/hooks/store-api");
    let store = StoreClient::new(&store_settings(&url, &consumer_key, &consumer_secret, &delivery_url)).unwrap();

    let name = format!("hookgate: store-api test {}", std::process::id());
    let created = store
        .create_webhook(&WebhookFields {
            name: Some(name.clone()),
            status: Some(WebhookStatus::Active),
            topic: Some("order.created".to_owned()),
            delivery_url: Some(delivery_url.clone()),
            secret: Some(Secret::new(b"store-api-webhook-secret".to_vec())),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(created.name, name);
    assert_eq!(created.status, WebhookStatus::Active);
    assert_eq!(created.topic, "order.created");
    assert_eq!(created.delivery_url, delivery_url);
    let pings: Vec<_> = upstream.received().into_iter().filter(|r| r.body.starts_with(b"webhook_id=")).collect();
    assert_eq!(pings.len(), 1, "WooCommerce pinged the new webhook's delivery URL once");
    assert_eq!(pings[0].body, format!("webhook_id={}", created.id).as_bytes());

    let listed = store.list_webhooks().await.unwrap_or_else(|e| panic!("{e}"));
    let found = listed.iter().find(|webhook| webhook.id == created.id).expect("the new webhook is listed");
    assert_eq!(found.name, name);
    assert_eq!(found.status, WebhookStatus::Active);

    let paused = store
        .update_webhook(created.id, &WebhookFields { status: Some(WebhookStatus::Paused), ..WebhookFields::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(paused.status, WebhookStatus::Paused);
    let listed = store.list_webhooks().await.unwrap();
    assert_eq!(listed.iter().find(|webhook| webhook.id == created.id).unwrap().status, WebhookStatus::Paused);

    store.delete_webhook(created.id).await.unwrap_or_else(|e| panic!("{e}"));
    let listed = store.list_webhooks().await.unwrap();
    assert!(listed.iter().all(|webhook| webhook.id != created.id), "the webhook is gone: {listed:?}");
}

/// A client of the store at `url` with the key given, built from a config file in `dir` whose one source
/// has that store, with `store_lines` (such as `ca_file`) added to its block: checked as `hookgate serve`
/// checks it, so `ca_file` is read as an operator's would be. Also what its roots hold, in words.
fn checked_client(dir: &Path, url: &str, (key, secret): (&str, &str), store_lines: &str) -> (StoreClient, String) {
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\nadmin_listen: \"127.0.0.1:0\"\nsources:\n  - name: shop\n    path: /hooks/shop\n    \
         secrets:\n      - value: \"a-webhook-secret\"\n    store:\n      url: \"{url}\"\n      \
         consumer_key: {{ value: \"{key}\" }}\n      consumer_secret: {{ value: \"{secret}\" }}\n      \
         delivery_url: \"http://127.0.0.1:9/hooks/shop\"\n      watch: 0\n{store_lines}routes:\n{ROUTE_TO_NOWHERE}delivery:\n  mode: proxy\n",
    );
    let config = Config::from_yaml(&yaml, &dir.join("hookgate.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let settings = config.sources[0].store.as_ref().expect("the source has a store");
    (StoreClient::new(settings).unwrap(), settings.trusts.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_created_listed_and_deleted_over_basic_on_https_through_a_tls_proxy() {
    let test = "a_webhook_is_created_listed_and_deleted_over_basic_on_https_through_a_tls_proxy";
    let Some((site, site_url)) = WooCommerceSite::served(test).await else { return };
    let dir = temp_dir("store-api-https");
    let ca = PrivateCa::new("hookgate store-api test CA");
    let (cert_file, key_file) = (dir.join("store.pem"), dir.join("store.key"));
    ca.certificate_files("store", &cert_file, &key_file);
    ca.write_to(&dir.join("store-ca.pem"));
    // The site takes X-Forwarded-Proto: https as HTTPS, and the REST key as HTTP Basic only over HTTPS. Host
    // stays the site's own (nginx's default, said here): the REST API answers under any host, but WordPress
    // redirects a page asked for under another to its home URL.
    let headers = [("X-Forwarded-Proto", "https"), ("Host", "$proxy_host")];
    let Some(proxy) = Nginx::tls_proxy(test, &dir, (&cert_file, &key_file), &site_url, &headers).await else {
        return;
    };
    let store_url = format!("https://127.0.0.1:{}", proxy.port);
    let (consumer_key, consumer_secret) = site.rest_key().await;
    let key = (consumer_key.as_str(), consumer_secret.as_str());
    let (store, trusts) = checked_client(&dir, &store_url, key, "      ca_file: store-ca.pem\n");
    assert!(trusts.starts_with("the bundled roots and ") && trusts.ends_with("store-ca.pem"), "{trusts}");
    // The creation ping goes here, and is answered 200.
    let upstream = Upstream::start().await;
    let delivery_url = upstream.url("/hooks/store-api-https");

    let name = format!("hookgate: store-api https test {}", std::process::id());
    let fields = WebhookFields {
        name: Some(name.clone()),
        status: Some(WebhookStatus::Active),
        topic: Some("order.created".to_owned()),
        delivery_url: Some(delivery_url.clone()),
        secret: Some(Secret::new(b"store-api-https-webhook-secret".to_vec())),
    };
    let created = store.create_webhook(&fields).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((created.name.as_str(), created.delivery_url.as_str()), (name.as_str(), delivery_url.as_str()));
    let listed = store.list_webhooks().await.unwrap_or_else(|e| panic!("{e}"));
    let found = listed.iter().find(|webhook| webhook.id == created.id).expect("the new webhook is listed");
    assert_eq!((found.name.as_str(), found.status), (name.as_str(), WebhookStatus::Active));
    store.delete_webhook(created.id).await.unwrap_or_else(|e| panic!("{e}"));
    let listed = store.list_webhooks().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(listed.iter().all(|webhook| webhook.id != created.id), "the webhook is gone: {listed:?}");

    // Every request went through the proxy, with the key as HTTP Basic rather than a signed query.
    let log = proxy.access_log();
    assert!(log.lines().any(|line| line == "POST /wp-json/wc/v3/webhooks HTTP/1.1 201"), "{log}");
    assert!(log.lines().any(|line| line.starts_with("GET /wp-json/wc/v3/webhooks?per_page=100&page=1 ")), "{log}");
    assert!(log.lines().any(|line| line.starts_with(&format!("DELETE /wp-json/wc/v3/webhooks/{}?", created.id))));
    assert!(!log.contains("oauth_"), "{log}");

    // Without ca_file, the proxy's certificate is of an unknown issuer: refused before any request is sent.
    let (untrusting, _) = checked_client(&dir, &store_url, key, "");
    let error = untrusting.list_webhooks().await.expect_err("the store's certificate is not trusted");
    assert!(matches!(error, StoreError::Unreachable { .. }), "{error}");
    let shown = error.to_string();
    assert!(shown.contains(&store_url) && shown.contains("GET /wp-json/wc/v3/webhooks"), "{shown}");
    assert!(shown.contains("certificate") && shown.contains("UnknownIssuer"), "{shown}");
    assert!(!shown.contains(&consumer_key) && !shown.contains(&consumer_secret), "{shown}");
    assert!(!format!("{error:?}").contains(&consumer_secret), "{error:?}");
    assert_eq!(proxy.access_log(), log, "no request reached the proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_consumer_secret_is_a_clear_401_that_never_shows_the_key() {
    let Some((site, url)) =
        WooCommerceSite::served("a_wrong_consumer_secret_is_a_clear_401_that_never_shows_the_key").await
    else {
        return;
    };
    let (consumer_key, _) = site.rest_key().await;
    let wrong_secret = "cs_0000000000000000000000000000000000000000";
    let store =
        StoreClient::new(&store_settings(&url, &consumer_key, wrong_secret, "http://127.0.0.1:9/hooks/none")).unwrap();
    let error = store.list_webhooks().await.expect_err("a wrong secret is refused");
    let StoreError::Status { status, .. } = &error else { panic!("not an answer from the store: {error}") };
    assert_eq!(status.as_u16(), 401, "{error}");
    let shown = error.to_string();
    assert!(shown.contains(&url) && shown.contains("GET /wp-json/wc/v3/webhooks"), "{shown}");
    assert!(shown.contains("signature"), "the store's reason is kept: {shown}");
    assert!(!shown.contains(wrong_secret) && !shown.contains(&consumer_key), "{shown}");
    assert!(!format!("{error:?}").contains(wrong_secret), "{error:?}");
}

/// A stand-in for a store that lists `total` webhooks, `per_page` at a time as the query asks, saying how
/// many pages there are in `X-WP-TotalPages` as WooCommerce does; it records each request line. With
/// `silent`, it reads requests and never answers.
async fn paging_store(total: u64, silent: bool) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = lines.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let lines = recorded.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buffer = [0; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let read = socket.read(&mut buffer).await.unwrap();
                    if read == 0 {
                        return;
                    }
                    head.extend_from_slice(&buffer[..read]);
                }
                let line = String::from_utf8_lossy(&head).lines().next().unwrap().to_owned();
                lines.lock().unwrap().push(line.clone());
                if silent {
                    tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                    return;
                }
                let number = |key: &str| -> u64 {
                    line.split(['?', '&', ' ']).find_map(|pair| pair.strip_prefix(key)).unwrap().parse().unwrap()
                };
                let (page, per_page) = (number("page="), number("per_page="));
                let ids = ((page - 1) * per_page + 1..=(page * per_page).min(total)).map(|id| {
                    format!(r#"{{"id":{id},"name":"w{id}","status":"active","topic":"order.created","delivery_url":"http://h/","api_version":"wp_api_v3"}}"#)
                });
                let body = format!("[{}]", ids.collect::<Vec<_>>().join(","));
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-wp-total: {total}\r\nx-wp-totalpages: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    total.div_ceil(per_page),
                    body.len()
                );
                socket.write_all(answer.as_bytes()).await.unwrap();
            });
        }
    });
    (url, lines)
}

#[tokio::test]
async fn every_page_of_webhooks_is_listed_one_hundred_a_page() {
    let (url, lines) = paging_store(250, false).await;
    let store = StoreClient::new(&store_settings(&url, "ck_key", "cs_secret", "http://127.0.0.1:9/")).unwrap();
    let webhooks = store.list_webhooks().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(webhooks.len(), 250);
    assert_eq!(webhooks.iter().map(|w| w.id).collect::<Vec<_>>(), (1..=250).collect::<Vec<_>>());
    assert_eq!(webhooks[0].api_version.as_deref(), Some("wp_api_v3"));
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines.len(), 3, "three pages, no more: {lines:?}");
    for (page, line) in lines.iter().enumerate() {
        assert!(
            line.starts_with(&format!("GET /wp-json/wc/v3/webhooks?per_page=100&page={}&oauth_", page + 1)),
            "{line}"
        );
        assert!(!line.contains("cs_secret"), "{line}");
    }
}

#[tokio::test]
async fn a_store_that_does_not_answer_times_out_with_the_store_and_endpoint_named() {
    let (url, _) = paging_store(1, true).await;
    let store = StoreClient::new(&store_settings(&url, "ck_key", "cs_secret", "http://127.0.0.1:9/"))
        .unwrap()
        .with_timeout(std::time::Duration::from_millis(300));
    let error = store.delete_webhook(5).await.expect_err("no answer");
    assert!(matches!(error, StoreError::Timeout { .. }), "{error}");
    let shown = error.to_string();
    assert!(shown.contains(&url) && shown.contains("DELETE /wp-json/wc/v3/webhooks/5"), "{shown}");
    assert!(!shown.contains("cs_secret") && !shown.contains("ck_key"), "{shown}");
}
