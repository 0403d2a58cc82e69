//! What the integration tests share: a real hookgate on a real port, a recording upstream, the
//! WooCommerce fixtures, and a raw HTTP/1.x client that shows exactly what went over the wire.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use hookgate::config::Config;
use hookgate::server::{Gateway, run};

/// The secret most fixtures are signed with.
pub const FIXTURE_SECRET: &str = "k3Y9pQ2wXr7Lm4Tz8Vb1Nc6Hd0Sf5Gj";

/// A hookgate serving on 127.0.0.1 with an ephemeral port; stopped when dropped.
pub struct TestGateway {
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`, `/healthz`, `/readyz`).
    pub admin_addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestGateway {
    /// Starts hookgate on `config_yaml`, which is validated exactly as a file would be.
    pub async fn start(config_yaml: &str) -> TestGateway {
        let config = Config::from_yaml(config_yaml, Path::new("test-config.yaml")).unwrap_or_else(|e| panic!("{e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let gateway = Arc::new(Gateway::new(config).unwrap_or_else(|e| panic!("{e}")));
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_addr = admin_listener.local_addr().unwrap();
        let (admin_stop, admin_stopped) = oneshot::channel::<()>();
        tokio::spawn(hookgate::admin::run(admin_listener, Arc::clone(&gateway), async {
            let _ = admin_stopped.await;
        }));
        let served = Arc::clone(&gateway);
        let task = tokio::spawn(async move {
            let result = run(listener, served, async {
                let _ = stopped.await;
            })
            .await;
            let _ = admin_stop.send(());
            result
        });
        TestGateway { addr, admin_addr, gateway, stop: Some(stop), task: Some(task) }
    }

    /// Asks for a graceful stop and waits for the server to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One request as an upstream received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// When its body had arrived.
    pub at: std::time::Instant,
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How the recording upstream answers.
#[derive(Clone)]
pub struct UpstreamAnswer {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, &'static str)>,
    pub body: &'static str,
    pub delay: Duration,
}

impl Default for UpstreamAnswer {
    fn default() -> Self {
        UpstreamAnswer { status: StatusCode::OK, headers: vec![], body: r#"{"ok":true}"#, delay: Duration::ZERO }
    }
}

/// A real HTTP server on 127.0.0.1 that records every request it gets.
pub struct Upstream {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    connections: Arc<Mutex<usize>>,
    /// Requests being answered now, and the most there ever were at once.
    concurrency: Arc<Mutex<(usize, usize)>>,
}

impl Upstream {
    /// Starts an upstream answering 200 `{"ok":true}`.
    pub async fn start() -> Upstream {
        Upstream::answering(UpstreamAnswer::default()).await
    }

    /// Starts an upstream that answers every request with `answer`.
    pub async fn answering(answer: UpstreamAnswer) -> Upstream {
        Upstream::scripted(vec![answer]).await
    }

    /// Starts an upstream that gives the answers in order, the last one from then on.
    pub async fn scripted(answers: Vec<UpstreamAnswer>) -> Upstream {
        Upstream::scripted_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), answers).await
    }

    /// Starts an upstream answering 200 on a given address (to bring a "down" upstream up).
    pub async fn start_on(addr: SocketAddr) -> Upstream {
        let listener = TcpListener::bind(addr).await.unwrap();
        Upstream::scripted_on(listener, vec![UpstreamAnswer::default()]).await
    }

    async fn scripted_on(listener: TcpListener, answers: Vec<UpstreamAnswer>) -> Upstream {
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(std::collections::VecDeque::from(answers)));
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let concurrency = Arc::new(Mutex::new((0, 0)));
        let (received_in, connections_in, concurrency_in) =
            (Arc::clone(&received), Arc::clone(&connections), Arc::clone(&concurrency));
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                *connections_in.lock().unwrap() += 1;
                let received = Arc::clone(&received_in);
                let script = Arc::clone(&script);
                let concurrency = Arc::clone(&concurrency_in);
                let service = service_fn(move |request: Request<Incoming>| {
                    let received = Arc::clone(&received);
                    let concurrency = Arc::clone(&concurrency);
                    let answer = {
                        let mut script = script.lock().unwrap();
                        if script.len() > 1 { script.pop_front().unwrap() } else { script[0].clone() }
                    };
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        received.lock().unwrap().push(Received {
                            at: std::time::Instant::now(),
                            method: parts.method.to_string(),
                            path_and_query: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                            headers: parts.headers,
                            body,
                        });
                        {
                            let mut now = concurrency.lock().unwrap();
                            now.0 += 1;
                            now.1 = now.1.max(now.0);
                        }
                        tokio::time::sleep(answer.delay).await;
                        concurrency.lock().unwrap().0 -= 1;
                        let mut response = Response::new(Full::new(Bytes::from_static(answer.body.as_bytes())));
                        *response.status_mut() = answer.status;
                        for (name, value) in &answer.headers {
                            response.headers_mut().append(*name, value.parse().unwrap());
                        }
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ =
                        auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Upstream { addr, received, connections, concurrency }
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The most requests the upstream was answering at once.
    pub fn max_concurrency(&self) -> usize {
        self.concurrency.lock().unwrap().1
    }

    /// How many TCP connections the upstream accepted.
    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    /// The upstream's URL with `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Signs `body` with the fixtures' secret and builds WooCommerce's HTTP/1.0 request for `topic`.
pub fn signed_request(path: &str, topic: &str, body: &[u8]) -> Vec<u8> {
    let signature = hookgate::verify::sign(
        hookgate::verify::Algorithm::Sha256,
        &hookgate::secret::Secret::new(FIXTURE_SECRET.as_bytes().to_vec()),
        body,
    );
    let (resource, event) = topic.split_once('.').unwrap();
    let headers: Vec<(String, String)> = [
        ("Host", "hooks.example.com"),
        ("User-Agent", "WooCommerce/10.3.4 Hookshot (WordPress/6.8.3)"),
        ("Content-Type", "application/json"),
        ("X-WC-Webhook-Source", "https://shop.example.com/"),
        ("X-WC-Webhook-Topic", topic),
        ("X-WC-Webhook-Resource", resource),
        ("X-WC-Webhook-Event", event),
        ("X-WC-Webhook-Signature", &signature),
        ("X-WC-Webhook-ID", "535"),
        ("X-WC-Webhook-Delivery-ID", "0123456789abcdef0123456789abcdef"),
        ("Connection", "close"),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    raw_request("POST", path, "HTTP/1.0", &headers, body)
}

/// Waits until `check` holds, polling every 20 ms, for at most `limit`.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fresh folder for a test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hookgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `delivery:` section for queue mode with a spool in `dir` and quick retries.
pub fn queue_delivery(dir: &Path, extra: &str) -> String {
    format!(
        "delivery:\n  mode: queue\n  spool_path: {}\n  retry:\n    initial_backoff: 50ms\n    max_backoff: 200ms\n    give_up_after: 1h\n{extra}",
        dir.join("spool.db").display()
    )
}

/// A delivery from `tests/fixtures/woocommerce/`.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub name: String,
    pub body: Vec<u8>,
    pub meta: serde_json::Value,
}

impl Fixture {
    /// The fixture's WooCommerce headers, with some replaced or removed (`None`).
    pub fn headers_with(&self, changes: &[(&str, Option<&str>)]) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = self
            .headers()
            .into_iter()
            .filter(|(n, _)| !changes.iter().any(|(c, _)| c.eq_ignore_ascii_case(n)))
            .collect();
        for (name, value) in changes {
            if let Some(value) = value {
                headers.push((name.to_string(), value.to_string()));
            }
        }
        headers
    }

    /// Loads `NAME.json` and `NAME.body`.
    pub fn load(name: &str) -> Fixture {
        let dir = fixtures_dir();
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
        let body = std::fs::read(dir.join(format!("{name}.body"))).unwrap();
        Fixture { name: name.to_owned(), body, meta }
    }

    /// Every fixture, by name.
    pub fn all() -> Vec<Fixture> {
        let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".json").map(str::to_owned))
            .collect();
        names.sort();
        names.iter().map(|n| Fixture::load(n)).collect()
    }

    /// The headers WooCommerce sent, in its order.
    pub fn headers(&self) -> Vec<(String, String)> {
        self.meta["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect()
    }

    /// A string field of the `.json` file.
    pub fn field(&self, key: &str) -> &str {
        self.meta[key].as_str().unwrap_or_else(|| panic!("{} has no string {key}", self.name))
    }

    /// A raw HTTP/1.0 request exactly as WooCommerce sends it (`Connection: close`), to `path`.
    pub fn request(&self, path: &str) -> Vec<u8> {
        let mut headers: Vec<(String, String)> = vec![("Host".into(), "hooks.example.com".into())];
        headers.extend(self.headers());
        headers.push(("Connection".into(), "close".into()));
        raw_request("POST", path, "HTTP/1.0", &headers, &self.body)
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/woocommerce")
}

/// Builds a request with a `Content-Length` matching the body.
pub fn raw_request(method: &str, path: &str, version: &str, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut request = format!("{method} {path} {version}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// An answer read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends raw bytes on a new connection and reads one answer.
pub async fn send_raw(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_response(&mut stream).await
}

/// Reads one final answer (skipping `100 Continue`) from a stream: by `Content-Length`, or to the end.
pub async fn read_response(stream: &mut TcpStream) -> RawResponse {
    let read = async {
        let mut buffer = Vec::new();
        loop {
            let head_end = loop {
                if let Some(end) = find(&buffer, b"\r\n\r\n") {
                    break end;
                }
                let mut chunk = [0u8; 8192];
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed before an answer: {:?}", String::from_utf8_lossy(&buffer));
                buffer.extend_from_slice(&chunk[..n]);
            };
            let head = String::from_utf8(buffer[..head_end].to_vec()).unwrap();
            buffer.drain(..head_end + 4);
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap();
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap().to_owned();
            let status: u16 = parts.next().unwrap().parse().unwrap();
            let headers: Vec<(String, String)> = lines
                .map(|l| {
                    let (n, v) = l.split_once(':').unwrap();
                    (n.trim().to_owned(), v.trim().to_owned())
                })
                .collect();
            if status == 100 {
                continue;
            }
            let length = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse::<usize>().unwrap());
            match length {
                Some(length) => {
                    while buffer.len() < length {
                        let mut chunk = [0u8; 8192];
                        let n = stream.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "connection closed inside a body");
                        buffer.extend_from_slice(&chunk[..n]);
                    }
                    buffer.truncate(length);
                }
                None => {
                    stream.read_to_end(&mut buffer).await.unwrap();
                }
            }
            return RawResponse { status, version, headers, body: buffer };
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("no answer within 30 s")
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A config with two sources over the fixtures' secrets and the routes given, plus `extra` appended at the
/// top level. Proxy mode unless `extra` has a `delivery:` section.
pub fn fixture_config(routes: &str, extra: &str) -> String {
    let extra =
        if extra.contains("delivery:") { extra.to_owned() } else { format!("{extra}\ndelivery:\n  mode: proxy\n") };
    format!(
        r#"listen: "127.0.0.1:0"
admin_listen: "127.0.0.1:0"
limits:
  max_body_bytes: 1048576
  header_timeout: 5s
  body_timeout: 5s
sources:
  - name: main
    path: /hooks/main
    algorithm: sha256
    secrets:
      - value: "an-older-secret-tried-first"
      - value: "{FIXTURE_SECRET}"
      - value: 'abc&amp;def&quot;ghi'
      - value: '<Sr%VVRNC1Ad]1`MAah.ay@)04R7AU^&aV~e&ln]JzmcqTYAiU'
  - name: legacy
    path: /hooks/legacy
    algorithm: sha1
    secrets:
      - value: "{FIXTURE_SECRET}"
    webhook_ids: [537]
routes:
{routes}
{extra}
"#
    )
}

/// The real `hookgate` binary serving a config file, with its log lines collected.
pub struct HookgateProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub lines: std::sync::mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl HookgateProcess {
    /// Starts `hookgate serve --config FILE` (the file should listen on port 0) and waits until it says
    /// where it listens.
    pub fn start(config_file: &Path) -> HookgateProcess {
        HookgateProcess::start_with_env(config_file, &[])
    }

    /// [`HookgateProcess::start`] with more environment variables (they may override `RUST_LOG`).
    pub fn start_with_env(config_file: &Path, env: &[(&str, &str)]) -> HookgateProcess {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["serve", "--config"])
            .arg(config_file)
            .env_remove("HOOKGATE_CONFIG")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (lines_in, lines) = std::sync::mpsc::channel::<String>();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = lines_in.send(line);
            }
        });
        let mut log = Vec::new();
        let addr = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("hookgate did not start: {log:?}"));
            log.push(line.clone());
            if let Some(addr) = logged_listen_address(&line) {
                break addr;
            }
        };
        HookgateProcess { child, addr, lines, log }
    }

    /// Waits until a log line (parsed as JSON) satisfies `wanted`, and returns it.
    pub fn wait_for_log(&mut self, what: &str, wanted: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no log line for: {what}; log: {:?}", self.log));
            self.log.push(line.clone());
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                && wanted(&json)
            {
                return json;
            }
        }
    }

    /// The admin listener's address, from the start-up line.
    pub fn admin_addr(&self) -> SocketAddr {
        self.log
            .iter()
            .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?.get("admin")?.as_str()?.parse().ok())
            .expect("the start-up line names the admin address")
    }

    /// Sends a signal (`TERM`, `KILL`) to the process.
    pub fn signal(&self, name: &str) {
        let sent = std::process::Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
        assert!(sent.unwrap().success(), "kill -{name} failed");
    }

    /// Waits for the process to end and returns its exit status, with every log line read.
    pub fn wait(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.log.push(line);
        }
        (status, std::mem::take(&mut self.log))
    }
}

impl Drop for HookgateProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The webhook listener's address from hookgate's start-up line, in JSON (`"listen":"..."`) or text
/// (`listen=...`) format.
pub fn logged_listen_address(line: &str) -> Option<SocketAddr> {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        return json.get("listen")?.as_str()?.parse().ok();
    }
    line.split(" listen=").nth(1)?.split_whitespace().next()?.parse().ok()
}

/// The value of the one sample in a Prometheus scrape whose line starts with `series` (name and labels
/// as rendered).
pub fn metric_sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}
