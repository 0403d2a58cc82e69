//! A hookgate on a real port, in this process, and a recording upstream for it to forward to.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use hookgate::clock::Clock;
use hookgate::config::Config;
use hookgate::server::{Gateway, Reloads, Server};

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
        TestGateway::serve(config, None).await
    }

    /// Starts hookgate the way `hookgate serve` does (the same [`Server`]), on loopback listeners, reloading
    /// from `reload_from` when given.
    pub async fn serve(config: Config, reload_from: Option<&Path>) -> TestGateway {
        TestGateway::serve_with_workers(config, reload_from, 0).await
    }

    /// Starts hookgate on `config_yaml` with `count` connection workers, as `hookgate serve` does (one per
    /// core there): connections are then served on threads of their own, outside the test's runtime.
    pub async fn start_with_workers(config_yaml: &str, count: usize) -> TestGateway {
        let config = Config::from_yaml(config_yaml, Path::new("test-config.yaml")).unwrap_or_else(|e| panic!("{e}"));
        TestGateway::serve_with_workers(config, None, count).await
    }

    async fn serve_with_workers(config: Config, reload_from: Option<&Path>, workers: usize) -> TestGateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        // Its clock follows tokio's, so that a test can move the gateway's time with `skip_time`.
        let server = Server::with_listeners(config, listener, admin_listener, Clock::following_tokio()).await;
        let mut server = server.unwrap_or_else(|e| panic!("{e}")).with_connection_workers(workers);
        if let Some(path) = reload_from {
            server = server.reload(Reloads::on_file_change(path));
        }
        let (addr, admin_addr) = (server.local_addr().unwrap(), server.admin_addr().unwrap());
        let gateway = Arc::clone(server.gateway());
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        // Serving (and, with a reload file, watching it) before the test goes on.
        let ready = Arc::clone(&gateway);
        crate::support::eventually(Duration::from_secs(10), "the gateway to serve", move || {
            ready.not_ready().is_none()
        })
        .await;
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

    /// Starts an upstream answering 200 over HTTPS with `tls` (see [`Upstream::https_url`]); a client the
    /// handshake refuses reaches nothing.
    pub async fn https(tls: Arc<rustls::ServerConfig>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Upstream::serve(listener, vec![UpstreamAnswer::default()], Some(tokio_rustls::TlsAcceptor::from(tls))).await
    }

    async fn scripted_on(listener: TcpListener, answers: Vec<UpstreamAnswer>) -> Upstream {
        Upstream::serve(listener, answers, None).await
    }

    async fn serve(
        listener: TcpListener,
        answers: Vec<UpstreamAnswer>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Upstream {
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
                let tls = tls.clone();
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => builder.serve_connection(TokioIo::new(stream), service).await,
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => builder.serve_connection(TokioIo::new(stream), service).await,
                            Err(_) => return,
                        },
                    };
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

    /// The URL with `path` of an upstream started with [`Upstream::https`].
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }
}
