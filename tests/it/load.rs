//! Load an unauthenticated client can put on the real binary, and what every connection is bounded by
//! (issue 11): bursts of connects, ...

use std::time::Duration;

use crate::support::*;

/// The backlog a listening socket was given, as the kernel reports it (`ss`: Send-Q of a listener).
fn listen_backlog(addr: std::net::SocketAddr) -> u32 {
    let output = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", addr.port())])
        .output()
        .expect("ss (Debian's iproute2) reads the listen backlog: apt-get install iproute2");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next().unwrap_or_else(|| panic!("no listener on {addr}: {text}"));
    line.split_whitespace().nth(2).and_then(|q| q.parse().ok()).unwrap_or_else(|| panic!("no Send-Q in {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_a_thousand_connects_all_connect_within_a_second() {
    let dir = temp_dir("load-connect-bursts");
    let file = dir.join("hookgate.yaml");
    let route = "  - name: nowhere\n    topics: [\"*\"]\n    upstream: \"http://127.0.0.1:9/\"\n";
    std::fs::write(&file, fixture_config(route, "")).unwrap();
    let process = HookgateProcess::start(&file);
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
    let expected = 1024.min(somaxconn);
    assert_eq!(listen_backlog(process.addr), expected, "the webhook listener's backlog");
    assert_eq!(listen_backlog(process.admin_addr()), expected, "the admin listener's backlog");
    for burst in 1..=5 {
        let connects = (0..1000).map(|_| {
            let addr = process.addr;
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
            })
        });
        let mut held = Vec::new();
        let mut missed = 0;
        for connect in connects.collect::<Vec<_>>() {
            match connect.await.unwrap() {
                Ok(Ok(stream)) => held.push(stream),
                _ => missed += 1,
            }
        }
        assert_eq!(missed, 0, "burst {burst}: {missed} of 1,000 connects missed their 1 s deadline");
        drop(held);
    }
    drop(process);
    std::fs::remove_dir_all(dir).unwrap();
}
