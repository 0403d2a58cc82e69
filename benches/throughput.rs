//! Accepted deliveries per second, queue mode against proxy mode, in one run on one machine.
//!
//! The real `hookgate` binary (built with the bench profile) runs as a child process for each mode, in
//! front of the same minimal upstream; this process is the load generator: C kept-alive HTTP/1.1
//! connections, each POSTing the signed `order-created` fixture back to back for a fixed time.
//!
//! `cargo bench --bench throughput` runs the full measurement; `cargo bench --bench throughput -- --test`
//! runs a short smoke (used by CI so the bench keeps working).

use std::convert::Infallible;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

struct Settings {
    duration: Duration,
    warmup: Duration,
    connections: Vec<usize>,
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let settings = if quick {
        Settings { duration: Duration::from_millis(500), warmup: Duration::from_millis(100), connections: vec![4] }
    } else {
        let seconds = std::env::var("HOOKGATE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
        Settings {
            duration: Duration::from_secs(seconds),
            warmup: Duration::from_secs(1),
            connections: vec![1, 16, 64],
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = root.join("tests/fixtures/woocommerce");
    let body = Bytes::from(std::fs::read(fixture.join("order-created.body")).unwrap());
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture.join("order-created.json")).unwrap()).unwrap();
    let headers: Vec<(String, String)> =
        meta["headers"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect();
    let secret = meta["secret"].as_str().unwrap().to_owned();

    let upstream = start_upstream().await;
    println!("hookgate throughput: order-created fixture ({} bytes), upstream answers 200 at once", body.len());
    println!("{:<7} {:>5} {:>12} {:>10} {:>10}", "mode", "conns", "requests/s", "p50 ms", "p99 ms");
    let mut results: Vec<(&str, usize, f64)> = Vec::new();
    let modes = std::env::var("HOOKGATE_BENCH_MODES").unwrap_or_else(|_| "proxy,queue".into());
    for mode in modes.split(',') {
        let dir = std::env::temp_dir().join(format!("hookgate-bench-{mode}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("hookgate.yaml");
        std::fs::write(&config, config_text(mode, &secret, upstream)).unwrap();
        let (mut child, addr) = start_hookgate(&config);
        for &connections in &settings.connections {
            let (rate, p50, p99) = load(addr, connections, &settings, &headers, &body).await;
            println!("{mode:<7} {connections:>5} {rate:>12.0} {p50:>10.2} {p99:>10.2}");
            results.push((mode, connections, rate));
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
    for &connections in &settings.connections {
        let rate = |mode: &str| results.iter().find(|r| r.0 == mode && r.1 == connections).map_or(0.0, |r| r.2);
        println!("queue/proxy at {connections} connections: {:.0}%", 100.0 * rate("queue") / rate("proxy"));
    }
    if quick {
        assert!(results.iter().all(|r| r.2 > 0.0), "every mode answered deliveries: {:?}", results);
    }
}

fn config_text(mode: &str, secret: &str, upstream: SocketAddr) -> String {
    format!(
        r#"listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
sources:
  - name: main
    path: /hooks/main
    secrets:
      - value: "{secret}"
routes:
  - name: orders
    topics: ["order.*"]
    upstream: "http://{upstream}/orders"
delivery:
  mode: {mode}
  max_spool_bytes: 17179869184
dedupe:
  window: 0s
"#
    )
}

/// Starts the bench-profile binary and reads the address it listens on from its log.
fn start_hookgate(config: &PathBuf) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn,hookgate::cli=info,hookgate::server=info,hookgate::server::log=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let addr = loop {
        let line = lines.next().expect("hookgate exited").unwrap();
        if let Some(addr) = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|json| json.get("listen")?.as_str()?.parse::<SocketAddr>().ok())
        {
            break addr;
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// The same minimal upstream for both modes: 200 with a two-byte body, at once.
async fn start_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async move {
                    let _ = request.into_body().collect().await;
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

/// Runs `connections` kept-alive connections for the warm-up and then the measured time; returns
/// 2xx answers per second and the p50 and p99 latency in milliseconds.
async fn load(
    addr: SocketAddr,
    connections: usize,
    settings: &Settings,
    headers: &[(String, String)],
    body: &Bytes,
) -> (f64, f64, f64) {
    let ok = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + settings.warmup;
    let end = start + settings.duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (ok, headers, body) = (Arc::clone(&ok), headers.to_vec(), body.clone());
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
            tokio::spawn(connection);
            let mut latencies = Vec::new();
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let mut request = hyper::Request::post("/hooks/main").header("host", "bench");
                for (name, value) in &headers {
                    request = request.header(name.as_str(), value.as_str());
                }
                let request = request.body(Full::new(body.clone())).unwrap();
                let response = sender.send_request(request).await.unwrap();
                let status = response.status();
                let _ = response.into_body().collect().await;
                if now >= start {
                    latencies.push(now.elapsed());
                    if status.is_success() {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    latencies.sort();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    (ok.load(Ordering::Relaxed) as f64 / settings.duration.as_secs_f64(), percentile(0.50), percentile(0.99))
}
