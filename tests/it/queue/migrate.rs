//! `hookgate spool migrate --from SQLITE`: what a single-node gateway's SQLite spool still owes (a
//! pending order behind a retry, the order's next update waiting behind it, a dead letter, an unrouted
//! delivery) moves into PostgreSQL once, and a gateway on PostgreSQL delivers it in order, under the same
//! event ids.

use super::*;

/// Sends `body` as `topic` and returns the id it was answered with, checking its status.
async fn queued(addr: std::net::SocketAddr, topic: &str, body: &[u8], status: &str) -> String {
    let answer = json(&send_raw(addr, &signed_request("/hooks/main", topic, body)).await);
    assert_eq!(answer["status"], status, "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

// Over 80 lines: one spool filled on SQLite, migrated twice, then delivered from PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_migrate_moves_what_an_sqlite_spool_owes_into_postgres_once() {
    let Some(postgres) = Backend::postgres("queue::migrate::spool_migrate_moves_what_an_sqlite_spool_owes").await
    else {
        return;
    };
    let dir = temp_dir("queue-migrate");
    // On SQLite: order 1 refused with 400 (a dead letter), order 2's first update told to wait ten minutes,
    // its second waiting behind it, and a coupon no route takes (kept as unrouted).
    let refusing = Upstream::scripted(vec![
        UpstreamAnswer { status: StatusCode::BAD_REQUEST, ..Default::default() },
        unavailable_for_ten_minutes(),
    ])
    .await;
    let sqlite_file = dir.join("sqlite.yaml");
    let delivery = queue_delivery_retrying(&Backend::Sqlite, &dir, "10m", "10m", "72h");
    std::fs::write(&sqlite_file, fixture_config(&route("orders", "\"order.*\"", &refusing.url("/")), &delivery))
        .unwrap();
    let single = HookgateProcess::start(&sqlite_file);
    let dead = queued(single.addr, "order.created", &order_body(1, 0), "queued").await;
    eventually(WAIT, "order 1 refused", || refusing.received().len() == 1).await;
    let first = queued(single.addr, "order.updated", &order_body(2, 0), "queued").await;
    eventually(WAIT, "order 2 told to wait", || refusing.received().len() == 2).await;
    let second = queued(single.addr, "order.updated", &order_body(2, 1), "queued").await;
    let coupon = queued(single.addr, "coupon.created", br#"{"id":9,"code":"x"}"#, "unrouted").await;
    single.signal("TERM");
    assert!(single.wait().0.success());

    // The migration, twice: the second run finds everything there already.
    let postgres_dir = postgres.temp_dir("queue-migrate");
    let postgres_file = postgres_dir.join("postgres.yaml");
    let upstream = Upstream::start().await;
    let delivery = queue_delivery_retrying(&postgres, &postgres_dir, "10m", "10m", "72h");
    std::fs::write(&postgres_file, fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &delivery))
        .unwrap();
    let from = dir.join("spool.db");
    let from = from.to_str().unwrap();
    let (code, out, err) = spool(&postgres_file, &["migrate", "--from", from]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("copied 4 events (3 pending or dead deliveries) from "), "{out}");
    assert!(out.ends_with("; 0 were there already\n"), "{out}");
    let (code, out, err) = spool(&postgres_file, &["migrate", "--from", from]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("copied 0 events (0 pending or dead deliveries)") && out.contains("4 were there already"),
        "{out}"
    );
    let events = "SELECT COUNT(*) FROM events";
    assert_eq!(postgres.count(&postgres_dir, events), 4, "each event once");

    // On PostgreSQL: the dead letter and the unrouted coupon are as they were; order 2's updates arrive in
    // order once the first one's wait is cut short, with the ids WooCommerce was answered.
    let replica = HookgateProcess::start(&postgres_file);
    let (_, dead_listed, _) = spool(&postgres_file, &["list", "--state", "dead"]);
    assert!(dead_listed.starts_with(&format!("{dead}  orders  dead  order.created")), "{dead_listed}");
    let (_, unrouted_listed, _) = spool(&postgres_file, &["list", "--state", "unrouted"]);
    assert!(unrouted_listed.starts_with(&format!("{coupon}  -  unrouted")), "{unrouted_listed}");
    let (code, _, err) = spool(&postgres_file, &["retry", "--all"]);
    assert_eq!(code, Some(0), "{err}");
    eventually(WAIT, "order 2's two updates arrive", || upstream.received().len() == 2).await;
    let received = upstream.received();
    let ids: Vec<&str> = received.iter().map(|r| r.headers["x-hookgate-event-id"].to_str().unwrap()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str()], "in order, under the ids answered on SQLite");
    assert_eq!(sequence_of(&received[0]), (2, 0));
    assert_eq!(sequence_of(&received[1]), (2, 1));
    drop(replica);
}

#[tokio::test]
async fn spool_migrate_needs_a_postgres_spool_in_the_config() {
    let dir = temp_dir("queue-migrate-sqlite");
    let file = dir.join("hookgate.yaml");
    std::fs::write(
        &file,
        fixture_config(
            &route("orders", "\"order.*\"", "http://127.0.0.1:9/"),
            &queue_delivery(&Backend::Sqlite, &dir, ""),
        ),
    )
    .unwrap();
    let (code, _, err) = spool(&file, &["migrate", "--from", dir.join("old.db").to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("names no PostgreSQL spool: set delivery.postgres"), "{err}");
}
