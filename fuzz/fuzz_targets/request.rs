//! The request path as WooCommerce's side of the socket sees it: arbitrary bytes, parsed by hyper and
//! classified by `Gateway::handle` (path, method, size, signature, ping, topic) in proxy mode. The upstream
//! is a closed port, so a request that got forwarded would be answered 502: none may, because no input
//! without the secret can verify (the seeds are WooCommerce's fixtures, signed with other secrets).
#![no_main]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use hookgate::config::Config;
use hookgate::server::Gateway;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"
listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
limits:
  max_body_bytes: 4096
  header_timeout: 1s
  body_timeout: 1s
sources:
  - name: main
    path: /hooks/main
    secrets:
      - value: "a-secret-that-no-seed-is-signed-with"
      - value: 'abc&amp;def'
    reject_older_than: 24h
  - name: pinned
    path: /hooks/pinned
    algorithm: sha1
    secrets:
      - value: "another-secret"
    webhook_ids: [535]
routes:
  - name: all
    topics: ["*"]
    upstream: "http://127.0.0.1:9/in"
delivery:
  mode: proxy
"#;

struct World {
    runtime: tokio::runtime::Runtime,
    gateway: Arc<Gateway>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let config = Config::from_yaml(CONFIG, std::path::Path::new("fuzz.yaml")).unwrap();
        let gateway = runtime.block_on(async { Arc::new(Gateway::new(config).await.unwrap()) });
        World { runtime, gateway }
    })
}

fuzz_target!(|data: &[u8]| {
    let world = world();
    let gateway = Arc::clone(&world.gateway);
    let answer = world.runtime.block_on(async move {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let service = service_fn(move |request| {
            let gateway = Arc::clone(&gateway);
            async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
        });
        let serve = tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(server), service)
                .await;
        });
        let (mut read, mut write) = tokio::io::split(client);
        // Written while the answers are read, as a client does: pipelined requests whose answers nobody
        // reads would fill the pipe and stall both sides.
        let data = data.to_vec();
        let writer = tokio::spawn(async move {
            let _ = write.write_all(&data).await;
            let _ = write.shutdown().await;
        });
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), read.read_to_end(&mut answer)).await;
        writer.abort();
        serve.abort();
        answer
    });
    // Every answer the gateway gives; 502/504 would mean a request was forwarded to the closed upstream.
    for status in [" 502 ", " 504 "] {
        assert!(
            !answer.windows(status.len()).any(|w| w == status.as_bytes()),
            "a fuzzed request was forwarded: {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
});
