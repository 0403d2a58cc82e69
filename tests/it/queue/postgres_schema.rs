//! What only a PostgreSQL spool has: its schema migrated once by replicas starting together and refused
//! when newer than the binary, the NOTIFY that wakes every replica when a delivery is stored, and pruning
//! by one replica at a time.

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

/// The advisory lock a replica holds while it prunes (`spool::postgres::inspect::PRUNE_LOCK`).
const PRUNE_LOCK: i64 = 0x686f_6f6b_6761_7466;

/// Pruning runs on one replica at a time: while another session holds the prune lock, as a replica
/// pruning would, a gateway whose prune falls due leaves the spool alone; once the lock is free, its next
/// prune removes what `keep_delivered` no longer keeps.
#[tokio::test]
async fn a_replica_does_not_prune_while_another_prunes() {
    let test = concat!(module_path!(), "::a_replica_does_not_prune_while_another_prunes");
    let Some(backend) = Backend::postgres(test).await else { return };
    let dir = backend.temp_dir("queue-pg-prune-lock");
    let upstream = Upstream::start().await;
    let delivery = queue_delivery(&backend, &dir, "  keep_delivered: 10m\n");
    let gateway = TestGateway::start(&fixture_config(&route("all", "\"*\"", &upstream.url("/")), &delivery)).await;
    let send = |order| signed_request("/hooks/main", "order.created", &order_body(order, 0));
    let old = json(&send_raw(gateway.addr, &send(1)).await)["id"].as_str().unwrap().to_owned();
    recorded(&backend, &dir, &old, "delivered", 1).await;
    let events =
        |id: &str| backend.count(&dir, &format!("SELECT COUNT(*) FROM events WHERE public_id = {}", quoted(id)));

    let (other, connection) = tokio_postgres::connect(&database(&backend).url, tokio_postgres::NoTls).await.unwrap();
    let connection = tokio::spawn(connection);
    other.execute("SELECT pg_advisory_lock($1)", &[&PRUNE_LOCK]).await.unwrap();
    skip_time(Duration::from_secs(11 * 60)).await;
    // The pass that starts this delivery's attempt prunes right after: once it is recorded (and a moment
    // more), a prune has been tried with the lock held elsewhere.
    let recent = json(&send_raw(gateway.addr, &send(2)).await)["id"].as_str().unwrap().to_owned();
    recorded(&backend, &dir, &recent, "delivered", 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(events(&old), 1, "delivered 11 minutes ago, but another replica is pruning: left alone");

    other.execute("SELECT pg_advisory_unlock($1)", &[&PRUNE_LOCK]).await.unwrap();
    skip_time(Duration::from_secs(61)).await;
    eventually(WAIT, "the next prune, with the lock free, removes it", || events(&old) == 0).await;
    assert_eq!(events(&recent), 1, "delivered a minute ago: kept");
    connection.abort();
    gateway.stop().await;
}
