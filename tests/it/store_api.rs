//! The store's REST API client against the real store (`start.sh DIR serve PORT`, started by `.ci/run`):
//! a webhook created, listed, paused and deleted over OAuth 1.0a on plain http, and a wrong key refused
//! with an error that never shows it.

use hookgate::config::StoreSettings;
use hookgate::secret::Secret;
use hookgate::store_api::{StoreClient, StoreError, WebhookFields, WebhookStatus};

use crate::support::*;

/// Settings for the served store at `url` with the key `consumer_key`/`consumer_secret`.
fn settings(url: &str, consumer_key: &str, consumer_secret: &str, delivery_url: &str) -> StoreSettings {
    StoreSettings {
        url: url.parse().unwrap(),
        consumer_key: Secret::new(consumer_key.as_bytes().to_vec()),
        consumer_secret: Secret::new(consumer_secret.as_bytes().to_vec()),
        key_origins: ("value".to_owned(), "value".to_owned()),
        delivery_url: delivery_url.parse().unwrap(),
        watch: None,
        reactivate: true,
        backfill: true,
        roots: hookgate::upstream::bundled_roots(),
        trusts: "the bundled roots".to_owned(),
    }
}

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
    let store = StoreClient::new(&settings(&url, &consumer_key, &consumer_secret, &delivery_url)).unwrap();

    let name = format!("hookgate: store-api test {}", std::process::id());
    let created = store
        .create_webhook(&WebhookFields {
            name: Some(name.clone()),
            status: Some(WebhookStatus::Active),
            topic: Some("order.created".to_owned()),
            delivery_url: Some(delivery_url.clone()),
            secret: Some(Secret::new(b"store-api-webhook-secret".to_vec())),
            api_version: Some("wp_api_v3".to_owned()),
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
        StoreClient::new(&settings(&url, &consumer_key, wrong_secret, "http://127.0.0.1:9/hooks/none")).unwrap();
    let error = store.list_webhooks().await.expect_err("a wrong secret is refused");
    let StoreError::Status { status, .. } = &error else { panic!("not an answer from the store: {error}") };
    assert_eq!(status.as_u16(), 401, "{error}");
    let shown = error.to_string();
    assert!(shown.contains(&url) && shown.contains("GET /wp-json/wc/v3/webhooks"), "{shown}");
    assert!(shown.contains("signature"), "the store's reason is kept: {shown}");
    assert!(!shown.contains(wrong_secret) && !shown.contains(&consumer_key), "{shown}");
    assert!(!format!("{error:?}").contains(wrong_secret), "{error:?}");
}
