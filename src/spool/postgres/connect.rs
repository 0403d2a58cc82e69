//! Reaching PostgreSQL: the URL parsed, TLS through rustls as its `sslmode` asks, a pool of connections
//! that replaces broken ones, and the LISTEN connection that wakes the dispatcher.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{SpoolError, pg_error};
use crate::config::PostgresSettings;

/// How long a new connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the first connection is waited for at start (a server starting beside hookgate).
const FIRST_CONNECTION_WAIT: Duration = Duration::from_secs(15);
/// The LISTEN connection reconnects after a wait that doubles up to this.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(30);

/// The URL parsed, with hookgate's defaults where it says nothing, and the TLS connector.
pub fn config(settings: &PostgresSettings) -> Result<(tokio_postgres::Config, MakeRustlsConnect), SpoolError> {
    let url = std::str::from_utf8(settings.url.expose()).map_err(|_| unreadable())?;
    let mut config: tokio_postgres::Config = url.parse().map_err(|_| unreadable())?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("hookgate");
    }
    // A connection the network dropped without a word is found dead within a minute.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .keepalives_interval(Duration::from_secs(10))
        .keepalives_retries(3);
    Ok((config, tls(settings.ca.as_deref())))
}

fn unreadable() -> SpoolError {
    SpoolError::Open("the PostgreSQL URL cannot be read (its text is not shown: it holds a password)".into())
}

/// TLS for the connections that `sslmode` (`prefer`, the default, or `require`) makes use it: the server's
/// certificate is checked against `ca_file`'s certificates, or else the bundled Mozilla roots.
fn tls(ca: Option<&[rustls::pki_types::CertificateDer<'static>]>) -> MakeRustlsConnect {
    let roots = match ca {
        Some(certificates) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add_parsable_certificates(certificates.iter().cloned());
            roots
        }
        None => crate::upstream::bundled_roots(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    MakeRustlsConnect::new(config)
}

/// A pool of up to `size` connections; a connection found closed is replaced.
pub fn pool(config: &tokio_postgres::Config, tls: &MakeRustlsConnect, size: usize) -> Result<Pool, SpoolError> {
    // Verified: a connection is checked with a query before it is handed out again, so one the network
    // hung (or a timeout abandoned mid-query) is replaced instead of hanging the next batch.
    let recycling = ManagerConfig { recycling_method: RecyclingMethod::Verified };
    let manager = Manager::from_config(config.clone(), tls.clone(), recycling);
    Pool::builder(manager)
        .max_size(size)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| SpoolError::Open(format!("cannot set up the PostgreSQL pool: {e}")))
}

/// One connection of its own (for the migration), trying for [`FIRST_CONNECTION_WAIT`].
pub async fn first(config: &tokio_postgres::Config, tls: &MakeRustlsConnect) -> Result<Client, SpoolError> {
    let started = tokio::time::Instant::now();
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, connection)) => {
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                return Ok(client);
            }
            Err(error) if started.elapsed() >= FIRST_CONNECTION_WAIT => {
                return Err(SpoolError::Open(format!(
                    "cannot connect to PostgreSQL (delivery.postgres): {}",
                    pg_error(error)
                )));
            }
            Err(error) => {
                tracing::warn!(error = %pg_error(error), "PostgreSQL does not answer yet; trying again");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Listens on `channel` for ever, waking `wake` at each notification, and once after every (re)connection
/// (a notification sent while it was away is lost). Reconnects with a doubling wait.
pub async fn listen(config: tokio_postgres::Config, tls: MakeRustlsConnect, channel: &'static str, wake: Arc<Notify>) {
    let mut wait = Duration::from_millis(250);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let (listening, mut ended) = tokio::sync::oneshot::channel::<()>();
                let messages = {
                    let wake = Arc::clone(&wake);
                    tokio::spawn(async move {
                        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                            match message {
                                Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                                Ok(_) => {}
                                Err(_) => break,
                            }
                        }
                        drop(listening);
                    })
                };
                if client.batch_execute(&format!("LISTEN {channel}")).await.is_ok() {
                    wait = Duration::from_millis(250);
                    wake.notify_one();
                    let _ = (&mut ended).await;
                }
                messages.abort();
            }
            Err(error) => tracing::debug!(error = %pg_error(error), "the LISTEN connection to PostgreSQL failed"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_RECONNECT_WAIT);
    }
}
