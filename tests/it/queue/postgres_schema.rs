//! What only a PostgreSQL spool has: its schema migrated once by replicas starting together and refused
//! when newer than the binary, and the NOTIFY that wakes every replica when a delivery is stored.

use super::*;

fn database(backend: &Backend) -> &PostgresDatabase {
    match backend {
        Backend::Postgres(database) => database,
        Backend::Sqlite => unreachable!("a PostgreSQL test"),
    }
}

/// Two gateways starting at once on an empty database both start (the migration runs under an advisory
/// lock: without it, the second would fail creating tables the first just made); a schema newer than this
/// build's is then refused with an error that says so.
#[tokio::test]
async fn replicas_starting_together_migrate_once_and_a_newer_schema_is_refused() {
    let test = concat!(module_path!(), "::replicas_starting_together_migrate_once_and_a_newer_schema_is_refused");
    let Some(backend) = Backend::postgres(test).await else { return };
    let dir = backend.temp_dir("queue-pg-schema");
    let config =
        fixture_config(&route("orders", "\"order.*\"", "http://127.0.0.1:9/"), &queue_delivery(&backend, &dir, ""));
    let (first, second) = tokio::join!(TestGateway::start(&config), TestGateway::start(&config));
    assert_eq!(backend.count(&dir, "SELECT COUNT(*) FROM hookgate_schema"), 1, "one version row");
    first.stop().await;
    second.stop().await;

    database(&backend).query("UPDATE hookgate_schema SET version = version + 1");
    let parsed = hookgate::config::Config::from_yaml(&config, Path::new("test-config.yaml")).unwrap();
    let error = hookgate::server::Gateway::new(parsed).await.err().expect("a newer schema is refused").to_string();
    assert!(error.contains("newer than this hookgate's") && error.contains("run a newer hookgate"), "{error}");
}

/// A stored delivery is announced on `hookgate_pending` (a listener of the test's own hears it), and
/// every gateway holds a LISTEN session for it: a delivery stored by one replica wakes the others.
#[tokio::test]
async fn a_stored_delivery_is_announced_to_every_replica() {
    let test = concat!(module_path!(), "::a_stored_delivery_is_announced_to_every_replica");
    let Some(backend) = Backend::postgres(test).await else { return };
    let dir = backend.temp_dir("queue-pg-notify");
    let upstream = Upstream::start().await;
    let config =
        fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &queue_delivery(&backend, &dir, ""));
    let gateway = TestGateway::start(&config).await;
    let listening = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN hookgate_pending'";
    eventually(WAIT, "the gateway listens on hookgate_pending", || backend.count(&dir, listening) == 1).await;

    let (client, mut connection) =
        tokio_postgres::connect(&database(&backend).url, tokio_postgres::NoTls).await.unwrap();
    let (heard, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    let messages = tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(notification) = message {
                let _ = heard.send(notification.channel().to_owned());
            }
        }
    });
    client.batch_execute("LISTEN hookgate_pending").await.unwrap();
    let answer = send_raw(gateway.addr, &signed_request("/hooks/main", "order.created", &order_body(1, 0))).await;
    assert_eq!(json(&answer)["status"], "queued");
    let channel = tokio::time::timeout(WAIT, notifications.recv()).await.expect("no notification").unwrap();
    assert_eq!(channel, "hookgate_pending");
    messages.abort();
    gateway.stop().await;
}
