//! Serving: [`Server`] is the one way a gateway starts, for the command line and the tests alike. It binds
//! the webhook and admin listeners, opens the gateway (in queue mode its spool), says "hookgate is
//! serving" only then, watches for reloads, and at a stop lets requests and delivery attempts in flight
//! finish within one grace period.
//!
//! A request's path through the parts: `listener` accepts the connection (counted in [`clients`]),
//! [`conn`] does TLS or protocol detection and hands it to hyper (an HTTP/2 connection through
//! [`control_frames`], which bounds the client's control frames; every connection's deadlines are in
//! [`idle`]), [`service`] caps the requests of each client and maps every end to an answer, [`gateway`]
//! takes the request through the contract's steps, and [`log`] writes its one line.

pub mod admin;
pub mod capacity;
pub mod clients;
pub mod conn;
pub mod control_frames;
pub mod gateway;
pub mod idle;
pub(crate) mod listener;
pub mod log;
mod reload;
pub mod service;
mod store_watch;
pub mod unverified;
pub mod workers;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper::service::service_fn;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::Config;
use crate::spool::SpoolError;

pub use gateway::{Gateway, Health};
pub use reload::Reloads;

/// Why a gateway could not start. Each names the setting and the file to look at.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind its address (`listen` or `admin_listen`).
    #[error("cannot listen on {addr} ({key}: in {file}): {error}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The config key that names it.
        key: &'static str,
        /// The config file.
        file: String,
        /// Why the bind failed.
        error: std::io::Error,
    },
    /// Queue mode's spool could not be opened (or another gateway holds it).
    #[error("cannot open the spool (delivery.spool_path or delivery.postgres in {file}): {error}")]
    Spool {
        /// The config file.
        file: String,
        /// Why the spool could not be opened.
        error: SpoolError,
    },
}

/// A gateway with everything it needs open: its listeners bound and, in queue mode, its spool open.
/// [`Server::run`] starts the rest and serves until a stop.
pub struct Server {
    gateway: Arc<Gateway>,
    webhook: TcpListener,
    admin: TcpListener,
    reloads: Option<Reloads>,
    /// Threads serving the webhook listener's connections (see [`workers`]); none: the caller's runtime
    /// serves them.
    connection_workers: usize,
}

impl Server {
    /// Binds `listen` and `admin_listen` from `config`, then opens the gateway on the system's clock.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        let file = config.file.display().to_string();
        let bind = |addr: SocketAddr, key: &'static str| {
            let file = file.clone();
            async move { listen(addr).map_err(|error| StartError::Bind { addr, key, file, error }) }
        };
        let webhook = bind(config.listen, "listen").await?;
        let admin = bind(config.admin_listen, "admin_listen").await?;
        Server::with_listeners(config, webhook, admin, Clock::system()).await
    }

    /// Opens the gateway on listeners already bound (tests bind `127.0.0.1:0`): in queue mode its spool,
    /// which nothing delivers from until [`Server::run`]. It reads the time from `clock` (tests pass one
    /// that follows tokio's paused clock).
    pub async fn with_listeners(
        config: Config,
        webhook: TcpListener,
        admin: TcpListener,
        clock: Clock,
    ) -> Result<Server, StartError> {
        let file = config.file.display().to_string();
        let gateway = Gateway::with_clock(config, clock).await.map_err(|error| StartError::Spool { file, error })?;
        Ok(Server { gateway: Arc::new(gateway), webhook, admin, reloads: None, connection_workers: 0 })
    }

    /// Reloads the configuration while serving, as `reloads` says (see [`Reloads`]).
    pub fn reload(mut self, reloads: Reloads) -> Server {
        self.reloads = Some(reloads);
        self
    }

    /// Serves the webhook listener's connections on `count` threads of their own, each with a
    /// current-thread runtime and its own pool of upstream connections, the connections handed to them in
    /// turn (see [`workers`]); 0, the default, serves them on the runtime [`Server::run`] runs on (tests
    /// do, so that tokio's paused clock governs their connections too).
    pub fn with_connection_workers(mut self, count: usize) -> Server {
        self.connection_workers = count;
        self
    }

    /// The gateway being served.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Where the webhook listener listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.webhook.local_addr()
    }

    /// Where the admin listener listens.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` completes, then stops: the webhook listener closes and `/readyz` says 503,
    /// requests in flight and then delivery attempts get what is left of `shutdown_grace`, the spool is
    /// closed, and the admin listener closes last.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let Server { gateway, webhook, admin, reloads, connection_workers } = self;
        let (listen, admin_addr) = (webhook.local_addr()?, admin.local_addr()?);
        // Before the serving line: a worker's runtime needs files of its own, which a flood of connections
        // right after the line could take (a worker that cannot start is a start-up failure, not a stop).
        let workers = workers::Workers::start(connection_workers)?;
        crate::metrics::config_loaded();
        let upkeep = crate::metrics::spawn_upkeep();
        // Watching from before the serving line, so that no change made after it is missed.
        let watching = reloads.map(|reloads| reloads.watch(Arc::clone(&gateway)));
        let config = gateway.config();
        // The admin listener outlives the webhook listener, so that /readyz says 503 during the stop.
        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = tokio::spawn(admin::run(admin, Arc::clone(&gateway), async {
            let _ = admin_stopped.await;
        }));
        // Ready from the serving line on (the listener is bound: connections wait in its backlog until the
        // accept loop below takes them), so that nobody who read the line finds /readyz still 503.
        gateway.health.set_serving();
        tracing::info!(
            listen = %listen,
            admin = %admin_addr,
            sources = config.sources.len(),
            routes = config.routes.len(),
            mode = %config.delivery.mode().as_str(),
            "hookgate is serving"
        );
        drop(config);
        // After the serving line, so that attempts and the spool-folder warning follow it (the SIGHUP handler
        // has been in place since the `Reloads` was made).
        // The store watches read what the spool holds from each store before the dispatcher's first prune.
        let store_watches = store_watch::spawn(&gateway).await;
        gateway.start_delivering();
        let reloads = watching.map(|watching| tokio::spawn(watching.run()));
        let reports = tokio::spawn({
            let gateway = Arc::clone(&gateway);
            async move {
                let mut every = tokio::time::interval(SUPPRESSED_REPORT_INTERVAL);
                loop {
                    every.tick().await;
                    gateway.throttle.report();
                }
            }
        });
        let result = serve_webhooks(webhook, Arc::clone(&gateway), workers, shutdown).await;
        reports.abort();
        store_watches.iter().for_each(tokio::task::JoinHandle::abort);
        gateway.throttle.report();
        if let Some(reloads) = reloads {
            reloads.abort();
        }
        let _ = admin_stop.send(());
        let _ = admin.await;
        upkeep.abort();
        result
    }
}

/// How often the request lines held back during a flood are summed up in one line per outcome.
const SUPPRESSED_REPORT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections the kernel completes and queues for a listener before hookgate accepts them. Linux's own
/// default (and tokio's) is 128: a burst of a thousand connects then loses some SYNs, and each lost one costs
/// its client a second-long retransmit. nginx uses 511; the kernel caps this at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 1024;

/// A listener on `addr` with a backlog of [`LISTEN_BACKLOG`], and `SO_REUSEADDR` as the standard library
/// sets it (a restart may bind while the last run's connections are in TIME_WAIT).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The webhook listener's accept loop, then the stop: one grace period for requests being answered and
/// then delivery attempts in flight. Connections are served by `workers` when given (which end once the
/// stop is done), or else on the runtime this runs on.
async fn serve_webhooks(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    workers: Option<workers::Workers>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let protocols = conn::Protocols::new(&gateway.config().limits, gateway.config().http2);
    // Every connection holds a receiver: a stop sends on it, then waits for them all to be dropped.
    let (stopping, stop) = tokio::sync::watch::channel(());
    tokio::pin!(shutdown);
    // Whether the listener speaks TLS is decided at start; a reload changes the certificate, not that.
    let started_with_tls = gateway.config().tls.clone();
    let limits = gateway.config().limits;
    let connections = clients::Connections::new(limits.max_connections, limits.max_connections_per_client);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener::accept(&listener, "webhook") => accepted,
            () = &mut shutdown => break,
        };
        let trusted_proxy = gateway.config().trusted_proxies.contains(peer.ip());
        let admitted = match connections.admit(peer.ip(), trusted_proxy) {
            Ok(admitted) => admitted,
            Err(refused) => {
                // Closed at once: the kernel has done the handshake, hookgate spends nothing more on it.
                drop(stream);
                metrics::counter!(crate::metrics::CONNECTIONS_REFUSED_TOTAL, "reason" => refused.as_str()).increment(1);
                continue;
            }
        };
        let config = gateway.config();
        // The certificate in force now: a reload's new certificate serves the next handshake.
        let tls = started_with_tls.as_ref().map(|first| config.tls.clone().unwrap_or_else(|| Arc::clone(first)));
        let protocols = protocols.clone().with_timeouts(&config.limits);
        let webhook = service::webhook(Arc::clone(&gateway), peer);
        let gateway = Arc::clone(&gateway);
        let hyper_service = service_fn(move |request| {
            let (webhook, gateway) = (webhook.clone(), Arc::clone(&gateway));
            async move { Ok::<_, Infallible>(service::respond(webhook, &gateway, request).await) }
        });
        let stop = stop.clone();
        let serve = move |stream| async move {
            protocols.serve(stream, peer, tls, hyper_service, stop).await;
            drop(admitted);
        };
        match &workers {
            Some(workers) => workers.serve(stream, serve),
            None => drop(tokio::spawn(serve(stream))),
        }
    }
    gateway.health.set_stopping();
    drop(listener);
    drop(stop);
    let deadline = tokio::time::Instant::now() + gateway.config().shutdown_grace;
    let _ = stopping.send(());
    if tokio::time::timeout_at(deadline, stopping.closed()).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
    gateway.shutdown(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
    Ok(())
}
