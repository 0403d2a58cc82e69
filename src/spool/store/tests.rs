use super::*;

fn temp_db(name: &str) -> (PathBuf, Connection) {
    let dir = std::env::temp_dir().join(format!("hookgate-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("nested/spool.db");
    let conn = open(&path).unwrap();
    (dir, conn)
}

/// What a pruning pass at `now` removes, with the three ages in ms.
fn ages(now: i64, keep_delivered_ms: i64, keep_unrouted_ms: i64, dedupe_window_ms: i64) -> PruneAges {
    PruneAges { now, keep_delivered_ms, keep_unrouted_ms, dedupe_window_ms }
}

fn event(id: &str, resource: Option<&str>, routes: &[&str], at: i64) -> NewEvent {
    NewEvent {
        public_id: id.to_owned(),
        received_at: at,
        source: "shop".into(),
        topic: "order.updated".into(),
        resource_key: resource.map(str::to_owned),
        headers: b"x-wc-webhook-topic: order.updated\n".to_vec(),
        body: Bytes::from(format!("{{\"id\":\"{id}\"}}")),
        routes: routes.iter().map(|r| r.to_string()).collect(),
        dedupe: None,
    }
}

fn due_ids(conn: &Connection, route: &str, now: i64, limit: usize, in_flight: &HashSet<i64>) -> Vec<String> {
    due(conn, route, now, limit, in_flight).unwrap().into_iter().map(|d| d.public_id).collect()
}

use std::path::PathBuf;

#[test]
fn an_empty_file_is_migrated_to_the_current_schema() {
    let dir = std::env::temp_dir().join(format!("hookgate-store-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("empty.db");
    std::fs::write(&path, b"").unwrap();
    let conn = open(&path).unwrap();
    assert_eq!(schema_version(&conn).unwrap(), SCHEMA_VERSION);
    let journal: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0)).unwrap();
    assert_eq!(journal, "wal");
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0)).unwrap();
    assert_eq!(synchronous, 2, "FULL");
    drop(conn);
    // Opening again is a no-op migration.
    let conn = open(&path).unwrap();
    assert_eq!(schema_version(&conn).unwrap(), SCHEMA_VERSION);
    // A file from a newer hookgate is refused.
    conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
    drop(conn);
    let error = open(&path).expect_err("a newer schema is refused").to_string();
    assert!(error.contains("newer than this hookgate"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn deliveries_about_one_resource_go_one_at_a_time_in_order() {
    let (dir, conn) = temp_db("order");
    insert_event(&conn, &event("a1", Some("shop/order:1"), &["r"], 10)).unwrap();
    insert_event(&conn, &event("b1", Some("shop/order:2"), &["r"], 11)).unwrap();
    insert_event(&conn, &event("a2", Some("shop/order:1"), &["r"], 12)).unwrap();
    insert_event(&conn, &event("x", None, &["r"], 13)).unwrap();
    insert_event(&conn, &event("a3", Some("shop/order:1"), &["r"], 14)).unwrap();
    // Only the head of each resource is due; unordered deliveries are always due.
    assert_eq!(due_ids(&conn, "r", 100, 10, &HashSet::new()), ["a1", "b1", "x"]);
    // With a1 in flight, a2 still waits behind it.
    let a1 = due(&conn, "r", 100, 1, &HashSet::new()).unwrap()[0].delivery_id;
    assert_eq!(due_ids(&conn, "r", 100, 10, &HashSet::from([a1])), ["b1", "x"]);
    // a1 fails and backs off: a2 still waits (never out of order), other resources go on.
    record_attempt(
        &conn,
        a1,
        100,
        &Attempted::Retry { next_attempt_at: 500, status: Some(503), error: "e".into(), answer: vec![] },
    )
    .unwrap();
    assert_eq!(due_ids(&conn, "r", 100, 10, &HashSet::new()), ["b1", "x"]);
    // Earliest due first: a1 now waits behind the others, which were due before its retry.
    assert_eq!(due_ids(&conn, "r", 500, 10, &HashSet::new()), ["b1", "x", "a1"]);
    // a1 delivered: a2 becomes the head.
    record_attempt(&conn, a1, 501, &Attempted::Delivered { status: 200 }).unwrap();
    assert_eq!(due_ids(&conn, "r", 501, 10, &HashSet::new()), ["b1", "a2", "x"]);
    // The limit counts what is returned, not what is skipped for being in flight.
    let b1 = due(&conn, "r", 501, 1, &HashSet::new()).unwrap()[0].delivery_id;
    assert_eq!(due_ids(&conn, "r", 501, 1, &HashSet::from([b1])), ["a2"]);
    // Another route has its own order.
    assert!(due_ids(&conn, "other", 501, 10, &HashSet::new()).is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fan_out_gives_each_route_its_own_delivery() {
    let (dir, conn) = temp_db("fanout");
    insert_event(&conn, &event("e", Some("shop/order:1"), &["crm", "fulfillment"], 10)).unwrap();
    assert_eq!(due_ids(&conn, "crm", 10, 10, &HashSet::new()), ["e"]);
    assert_eq!(due_ids(&conn, "fulfillment", 10, 10, &HashSet::new()), ["e"]);
    let crm = due(&conn, "crm", 10, 1, &HashSet::new()).unwrap()[0].delivery_id;
    record_attempt(&conn, crm, 11, &Attempted::Dead { status: Some(400), error: "bad".into(), answer: b"no".to_vec() })
        .unwrap();
    assert_eq!(
        due_ids(&conn, "fulfillment", 11, 10, &HashSet::new()),
        ["e"],
        "one route's failure does not touch the other"
    );
    let stats = stats(&conn).unwrap();
    assert_eq!((stats[0].route.as_str(), stats[0].dead, stats[0].pending), ("crm", 1, 0));
    assert_eq!(
        (stats[1].route.as_str(), stats[1].pending, stats[1].oldest_pending_since),
        ("fulfillment", 1, Some(10))
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dedupe_finds_a_repeat_only_within_the_window() {
    let (dir, conn) = temp_db("dedupe");
    let mut first = event("first", None, &["r"], 1000);
    first.dedupe = Some(([7; 32], 0));
    assert_eq!(insert_event(&conn, &first).unwrap(), Stored::Queued { public_id: "first".into() });
    let mut repeat = event("repeat", None, &["r"], 2000);
    repeat.dedupe = Some(([7; 32], 500));
    assert_eq!(insert_event(&conn, &repeat).unwrap(), Stored::Duplicate { public_id: "first".into() });
    let mut late = event("late", None, &["r"], 9000);
    late.dedupe = Some(([7; 32], 1001));
    assert_eq!(insert_event(&conn, &late).unwrap(), Stored::Queued { public_id: "late".into() });
    assert_eq!(due_ids(&conn, "r", 10_000, 10, &HashSet::new()), ["first", "late"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn prune_replay_and_drop() {
    let (dir, mut conn) = temp_db("prune");
    insert_event(&conn, &event("done", None, &["r"], 10)).unwrap();
    insert_event(&conn, &event("dead", None, &["r"], 11)).unwrap();
    let ids: Vec<i64> = due(&conn, "r", 20, 10, &HashSet::new()).unwrap().iter().map(|d| d.delivery_id).collect();
    record_attempt(&conn, ids[0], 20, &Attempted::Delivered { status: 200 }).unwrap();
    record_attempt(&conn, ids[1], 20, &Attempted::Dead { status: Some(404), error: "gone".into(), answer: vec![] })
        .unwrap();
    assert_eq!(prune(&conn, ages(25, 10, 1000, 10)).unwrap(), 0, "delivered 5 ms ago is kept for 10");
    assert_eq!(prune(&conn, ages(40, 10, 1000, 10)).unwrap(), 1);
    assert!(show(&conn, "done").unwrap().is_none(), "the event went with its last delivery");
    let dead = show(&conn, "dead").unwrap().unwrap();
    assert_eq!(dead.deliveries[0].0.state, "dead");
    assert_eq!(dead.deliveries[0].0.last_status, Some(404));
    assert_eq!(replay(&mut conn, None, Some("other"), 50).unwrap(), 0);
    assert_eq!(replay(&mut conn, None, None, 50).unwrap(), 1);
    assert_eq!(due_ids(&conn, "r", 50, 10, &HashSet::new()), ["dead"]);
    assert!(drop_event(&mut conn, "dead").unwrap());
    assert!(!drop_event(&mut conn, "dead").unwrap());
    assert!(stats(&conn).unwrap().is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_replayed_or_dropped_head_keeps_one_head_per_resource() {
    let (dir, mut conn) = temp_db("heads");
    insert_event(&conn, &event("a1", Some("k"), &["r"], 10)).unwrap();
    insert_event(&conn, &event("a2", Some("k"), &["r"], 11)).unwrap();
    let a1 = due(&conn, "r", 20, 10, &HashSet::new()).unwrap()[0].delivery_id;
    record_attempt(&conn, a1, 20, &Attempted::Dead { status: Some(422), error: "no".into(), answer: vec![] }).unwrap();
    assert_eq!(due_ids(&conn, "r", 20, 10, &HashSet::new()), ["a2"], "a dead letter hands on the head");
    // Replayed, the older delivery goes first again; a2 waits behind it.
    assert_eq!(replay(&mut conn, Some("a1"), None, 30).unwrap(), 1);
    assert_eq!(due_ids(&conn, "r", 30, 10, &HashSet::new()), ["a1"]);
    // Dropped, the next one becomes the head.
    assert!(drop_event(&mut conn, "a1").unwrap());
    assert_eq!(due_ids(&conn, "r", 30, 10, &HashSet::new()), ["a2"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A spool file as a hookgate of schema `version` left it (its first `version` migrations run, not
/// opened through [`open`]), in a fresh folder: the folder, the file, and a connection to it.
fn spool_at_version(version: usize) -> (PathBuf, PathBuf, Connection) {
    let dir = std::env::temp_dir().join(format!("hookgate-store-v{version}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("v{version}.db"));
    let conn = Connection::open(&path).unwrap();
    for migration in &schema::MIGRATIONS[..version] {
        conn.execute_batch(migration).unwrap();
    }
    conn.pragma_update(None, "user_version", version as i64).unwrap();
    (dir, path, conn)
}

#[test]
fn a_version_1_spool_is_migrated_in_place_and_keeps_what_it_held() {
    // The file as hookgate 1's schema left it, with a pending delivery in it.
    let (dir, path, conn) = spool_at_version(1);
    conn.execute(
        "INSERT INTO events (public_id, received_at, source, topic, headers, body) VALUES ('old', 5, 'shop', 'order.created', x'', x'7b7d')",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO deliveries (event_id, route, state, pending_since, next_attempt_at) VALUES (1, 'r', 'pending', 5, 5)",
        [],
    )
    .unwrap();
    drop(conn);
    let conn = open(&path).unwrap();
    assert_eq!(schema_version(&conn).unwrap(), SCHEMA_VERSION);
    assert_eq!(due_ids(&conn, "r", 10, 10, &HashSet::new()), ["old"], "the pending delivery is still due");
    assert!(!show(&conn, "old").unwrap().unwrap().unrouted);
    assert_eq!(unrouted_stats(&conn).unwrap().events, 0);
    insert_event(&conn, &event("new", None, &[], 20)).unwrap();
    assert_eq!(unrouted_stats(&conn).unwrap(), UnroutedStats { events: 1, oldest_received_at: Some(20) });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_version_2_spool_gets_the_state_check_without_in_and_keeps_its_rows() {
    let (dir, path, conn) = spool_at_version(2);
    insert_event(&conn, &event("kept", Some("shop/order:1"), &["r"], 5)).unwrap();
    drop(conn);
    // A reader that holds the file open across the migration, as `hookgate spool` might, having read the
    // old definition.
    let reader = Connection::open(&path).unwrap();
    let pending: i64 =
        reader.query_row("SELECT count(*) FROM deliveries WHERE state = 'pending'", [], |r| r.get(0)).unwrap();
    assert_eq!(pending, 1);
    let conn = open(&path).unwrap();
    assert_eq!(schema_version(&conn).unwrap(), SCHEMA_VERSION);
    let table: String = conn
        .query_row("SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'deliveries'", [], |r| r.get(0))
        .unwrap();
    assert!(table.contains("CHECK (state = 'pending' OR state = 'delivered' OR state = 'dead')"), "{table}");
    assert!(!table.contains("state IN"), "{table}");
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(integrity, "ok");
    assert_eq!(due_ids(&conn, "r", 10, 10, &HashSet::new()), ["kept"], "the pending delivery is still due");
    // The check still holds, on this connection and on the one that had read the old definition (which
    // reads the new one now: the bumped cookie tells it to).
    for c in [&conn, &reader] {
        let refused = c.execute("UPDATE deliveries SET state = 'lost'", []).expect_err("not a state");
        assert!(refused.to_string().contains("CHECK constraint failed"), "{refused}");
    }
    // Neither storing a delivery nor recording its end builds a temporary b-tree any more, on either
    // connection.
    for (c, statement) in [&conn, &reader].into_iter().flat_map(|c| {
        [
            "INSERT INTO deliveries (event_id, route, resource_key, state, is_head, pending_since, next_attempt_at) VALUES (1, 'r', NULL, 'pending', 1, 1, 1)",
            "UPDATE deliveries SET state = 'delivered', is_head = 0, finished_at = 1 WHERE id = 1",
        ]
        .map(|statement| (c, statement))
    }) {
        let mut explain = c.prepare(&format!("EXPLAIN {statement}")).unwrap();
        let opcodes: Vec<String> = explain.query_map([], |r| r.get(1)).unwrap().map(Result::unwrap).collect();
        assert!(!opcodes.iter().any(|op| op == "OpenEphemeral"), "{statement}: {opcodes:?}");
    }
    drop((conn, reader));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn route_set(yaml_routes: &[(&str, &str)]) -> crate::route::Routes {
    yaml_routes
        .iter()
        .map(|(name, topic)| crate::route::Route {
            name: (*name).to_owned(),
            source: None,
            topics: vec![crate::route::TopicPattern::parse(topic).unwrap()],
            upstream: "http://127.0.0.1:1/".parse().unwrap(),
            timeout: std::time::Duration::from_secs(1),
            client: None,
            headers: crate::upstream::UpstreamHeaders::default(),
        })
        .collect()
}

#[test]
fn an_unrouted_event_is_kept_without_deliveries_and_routed_once_by_a_replay() {
    let (dir, mut conn) = temp_db("unrouted");
    let mut first = event("u1", Some("shop/order:1"), &[], 10);
    first.dedupe = Some(([1; 32], 0));
    assert_eq!(insert_event(&conn, &first).unwrap(), Stored::Unrouted { public_id: "u1".into() });
    let mut repeat = event("u1-again", Some("shop/order:1"), &[], 11);
    repeat.dedupe = Some(([1; 32], 0));
    assert_eq!(insert_event(&conn, &repeat).unwrap(), Stored::Duplicate { public_id: "u1".into() });
    let mut coupon = event("u2", None, &[], 12);
    coupon.topic = "coupon.deleted".into();
    insert_event(&conn, &coupon).unwrap();
    assert!(stats(&conn).unwrap().is_empty(), "no delivery: nothing for the dispatcher");
    let listed: Vec<String> =
        list(&conn, None, Some("unrouted"), 10).unwrap().into_iter().map(|l| l.public_id).collect();
    assert_eq!(listed, ["u1", "u2"]);
    assert!(list(&conn, Some("r"), Some("unrouted"), 10).unwrap().is_empty(), "an unrouted event has no route");

    // Routed by topic, along the routes given: two for the order, none yet for the coupon.
    let orders = route_set(&[("a", "order.*"), ("b", "*.updated"), ("c", "coupon.*")]);
    let only_orders = crate::route::TopicPattern::parse("order.*").unwrap();
    let routed = route_unrouted(&mut conn, &orders, None, Some(&only_orders), 50).unwrap();
    assert_eq!(routed, Routed { events: 1, deliveries: 2, still_unrouted: vec![] });
    assert_eq!(due_ids(&conn, "a", 50, 10, &HashSet::new()), ["u1"]);
    assert_eq!(due_ids(&conn, "b", 50, 10, &HashSet::new()), ["u1"]);
    assert!(due_ids(&conn, "a", 49, 10, &HashSet::new()).is_empty(), "due from the replay on");
    assert_eq!(route_unrouted(&mut conn, &orders, None, Some(&only_orders), 60).unwrap(), Routed::default(), "once");
    assert_eq!(due_ids(&conn, "a", 60, 10, &HashSet::new()), ["u1"], "no second delivery");

    // With no route for it, an event stays unrouted and is named.
    let none = route_set(&[("a", "order.*")]);
    let routed = route_unrouted(&mut conn, &none, None, None, 70).unwrap();
    assert_eq!(routed.still_unrouted, [("coupon.deleted".to_owned(), 1)]);
    assert!(show(&conn, "u2").unwrap().unwrap().unrouted);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unrouted_events_are_pruned_after_keep_unrouted() {
    let (dir, conn) = temp_db("prune-unrouted");
    insert_event(&conn, &event("old", None, &[], 10)).unwrap();
    insert_event(&conn, &event("new", None, &[], 30)).unwrap();
    assert_eq!(prune(&conn, ages(35, 0, 20, 0)).unwrap(), 1, "received 25 ms ago, kept for 20");
    assert!(show(&conn, "old").unwrap().is_none());
    assert!(show(&conn, "new").unwrap().unwrap().unrouted, "received 5 ms ago: kept");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn retry_now_cuts_short_only_the_waits_it_is_asked_to() {
    let (dir, conn) = temp_db("retry-now");
    insert_event(&conn, &event("a", Some("shop/order:1"), &["r", "s"], 10)).unwrap();
    insert_event(&conn, &event("b", Some("shop/order:2"), &["r"], 11)).unwrap();
    insert_event(&conn, &event("c", Some("shop/order:3"), &["r"], 12)).unwrap();
    let waiting = Attempted::Retry { next_attempt_at: 10_000, status: Some(503), error: "503".into(), answer: vec![] };
    let ids: Vec<i64> = conn
        .prepare("SELECT id FROM deliveries ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for &id in &ids[..3] {
        record_attempt(&conn, id, 100, &waiting).unwrap();
    }
    record_attempt(&conn, ids[3], 100, &Attempted::Delivered { status: 200 }).unwrap();
    assert!(due_ids(&conn, "r", 200, 10, &HashSet::new()).is_empty(), "a, b wait on r, c is delivered");
    assert!(event_exists(&conn, "a").unwrap() && !event_exists(&conn, "z").unwrap());
    assert_eq!(routes(&conn).unwrap(), ["r", "s"]);

    assert_eq!(retry_now(&conn, Some("a"), Some("s"), 200).unwrap(), 1, "event a on route s");
    assert_eq!(due_ids(&conn, "s", 200, 10, &HashSet::new()), ["a"]);
    assert!(due_ids(&conn, "r", 200, 10, &HashSet::new()).is_empty());
    assert_eq!(retry_now(&conn, None, Some("r"), 200).unwrap(), 2, "a and b on route r");
    assert_eq!(due_ids(&conn, "r", 200, 10, &HashSet::new()), ["a", "b"]);
    assert_eq!(retry_now(&conn, None, None, 200).unwrap(), 0, "nothing waits any more; c is delivered");
    let attempts: u32 =
        conn.query_row("SELECT attempts FROM deliveries WHERE id = ?1", [ids[0]], |r| r.get(0)).unwrap();
    assert_eq!(attempts, 1, "the attempts already made still count");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_next_due_time_is_of_a_delivery_waiting_for_its_time_and_heads_come_back_when_promoted() {
    let (dir, conn) = temp_db("next-due");
    insert_event(&conn, &event("a1", Some("shop/order:1"), &["r"], 10)).unwrap();
    let mut heads = Vec::new();
    insert_event_due(&conn, &event("a2", Some("shop/order:1"), &["r"], 11), &mut heads).unwrap();
    assert!(heads.is_empty(), "a2 waits behind a1: not due at once");
    insert_event_due(&conn, &event("b1", Some("shop/order:2"), &["r"], 12), &mut heads).unwrap();
    assert_eq!(heads.iter().map(|d| d.public_id.as_str()).collect::<Vec<_>>(), ["b1"], "a head is due at once");
    // Everything pending is due already (being sent, or ready): nothing waits for its time.
    assert_eq!(next_due_at(&conn, "r", 100).unwrap(), None);
    let b1 = heads[0].delivery_id;
    let retry = Attempted::Retry { next_attempt_at: 500, status: Some(503), error: "e".into(), answer: vec![] };
    record_attempt(&conn, b1, 100, &retry).unwrap();
    assert_eq!(next_due_at(&conn, "r", 100).unwrap(), Some(500), "b1 waits for its retry");
    let a1 = due(&conn, "r", 100, 1, &HashSet::new()).unwrap()[0].delivery_id;
    let mut promoted = Vec::new();
    record_attempt_due(&conn, a1, 120, &Attempted::Delivered { status: 200 }, &mut promoted).unwrap();
    assert_eq!(promoted.iter().map(|d| d.public_id.as_str()).collect::<Vec<_>>(), ["a2"], "a2 is due once a1 is done");
    assert_eq!(promoted[0].body, Bytes::from("{\"id\":\"a2\"}"), "as a read would return it");
    let _ = std::fs::remove_dir_all(dir);
}
