//! Two gateways on one PostgreSQL spool: replicas, each accepting and either delivering. (A second gateway
//! on one SQLite spool is refused instead: `spool::a_second_gateway_cannot_deliver_from_the_same_spool`.)

use std::collections::HashSet;

use super::*;

/// Four orders' updates sent to the two gateways in turn: both accept, every delivery reaches the upstream
/// exactly once, each order's updates one at a time and in the order sent whichever gateway took them, and
/// a repeat sent to the gateway that did not take the original is answered `duplicate`.
#[tokio::test]
async fn two_gateways_on_one_database_both_accept_and_each_delivery_arrives_once() {
    let test = concat!(module_path!(), "::two_gateways_on_one_database_both_accept_and_each_delivery_arrives_once");
    let Some(backend) = Backend::postgres(test).await else { return };
    let dir = backend.temp_dir("queue-replicas");
    let delay = Duration::from_millis(100);
    let upstream = Upstream::answering(UpstreamAnswer { delay, ..Default::default() }).await;
    let delivery = queue_delivery(&backend, &dir, "");
    let config = fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &delivery);
    let replicas = [TestGateway::start(&config).await, TestGateway::start(&config).await];
    let mut event_ids = HashSet::new();
    for sequence in 0..5 {
        for id in [1, 2, 3, 4] {
            let replica = &replicas[((id + sequence) % 2) as usize];
            let update = signed_request("/hooks/main", "order.updated", &order_body(id, sequence));
            let answer = json(&send_raw(replica.addr, &update).await);
            assert_eq!(answer["status"], "queued", "order {id} update {sequence}: {answer}");
            event_ids.insert(answer["id"].as_str().unwrap().to_owned());
        }
    }
    // Order 1's first update went to the second replica; the first has not seen it.
    let repeat = send_raw(replicas[0].addr, &signed_request("/hooks/main", "order.updated", &order_body(1, 0))).await;
    assert_eq!(json(&repeat)["status"], "duplicate", "{}", repeat.text());

    let delivered = "SELECT COUNT(*) FROM deliveries WHERE state = 'delivered'";
    eventually(WAIT, "all twenty are recorded delivered", || backend.count(&dir, delivered) == 20).await;
    // An attempt made twice would have been in flight when the first was recorded: let it arrive.
    tokio::time::sleep(2 * delay).await;
    let received = upstream.received();
    let arrived: Vec<&str> = received.iter().map(|r| r.headers["x-hookgate-event-id"].to_str().unwrap()).collect();
    assert_eq!(arrived.len(), 20, "each delivery exactly once: {arrived:?}");
    assert_eq!(arrived.iter().map(|id| id.to_string()).collect::<HashSet<_>>(), event_ids);
    let mut last: HashMap<u64, (u64, std::time::Instant)> = HashMap::new();
    for got in &received {
        let (id, sequence) = sequence_of(got);
        let expected = last.get(&id).map_or(0, |(previous, _)| previous + 1);
        assert_eq!(sequence, expected, "order {id} arrived out of order");
        if let Some((_, at)) = last.get(&id) {
            assert!(got.at.duration_since(*at) >= delay, "order {id}: two updates in flight at once");
        }
        last.insert(id, (sequence, got.at));
    }
    for replica in replicas {
        replica.stop().await;
    }
}

/// An operator replays order 7's dead first update while its second is being sent by one replica: no
/// replica sends the first until the second has been answered (order per resource holds across replicas
/// for `spool replay` too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_while_another_replica_sends_the_resource_waits_for_it() {
    let test = concat!(module_path!(), "::a_replay_while_another_replica_sends_the_resource_waits_for_it");
    let Some(backend) = Backend::postgres(test).await else { return };
    let dir = backend.temp_dir("queue-replicas-replay");
    let slow = Duration::from_secs(2);
    let upstream = Upstream::scripted(vec![
        UpstreamAnswer { status: StatusCode::BAD_REQUEST, ..Default::default() },
        UpstreamAnswer { delay: slow, ..Default::default() },
    ])
    .await;
    let delivery = queue_delivery(&backend, &dir, "");
    let config = fixture_config(&route("orders", "\"order.*\"", &upstream.url("/")), &delivery);
    let file = dir.join("hookgate.yaml");
    std::fs::write(&file, &config).unwrap();
    let replicas = [TestGateway::start(&config).await, TestGateway::start(&config).await];
    let send = |sequence| signed_request("/hooks/main", "order.updated", &order_body(7, sequence));
    let first = json(&send_raw(replicas[0].addr, &send(0)).await)["id"].as_str().unwrap().to_owned();
    recorded(&backend, &dir, &first, "dead", 1).await;
    send_raw(replicas[1].addr, &send(1)).await;
    eventually(WAIT, "the second update is being sent", || upstream.received().len() == 2).await;
    let (code, out, err) = spool(&file, &["replay", &first]);
    assert_eq!((code, out.as_str()), (Some(0), "replayed 1 delivery\n"), "{err}");
    eventually(WAIT, "the replayed first update arrives", || upstream.received().len() == 3).await;
    let received = upstream.received();
    assert_eq!(sequence_of(&received[2]), (7, 0));
    assert!(
        received[2].at.duration_since(received[1].at) >= slow,
        "the replay went out while the second update was still being sent"
    );
}
