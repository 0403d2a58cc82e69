//! The real WooCommerce store (`../shared/woocommerce-site`: WordPress and WooCommerce as released, on a
//! private MariaDB), for the tests that are about what WooCommerce itself sends. `.ci/run` starts it and
//! names its folder in `HOOKGATE_WOOCOMMERCE_SITE`. Without it, a test run by hand says how to start the
//! store and passes over the part that needs it; under CI (`CI` set) it fails instead.

use std::path::PathBuf;
use std::process::Command;

/// The variable `.ci/run` names the started store's folder in.
pub const SITE_VARIABLE: &str = "HOOKGATE_WOOCOMMERCE_SITE";
/// The variable `.ci/run` names the served store's URL in (`start.sh DIR serve PORT`: its REST API).
pub const URL_VARIABLE: &str = "HOOKGATE_WOOCOMMERCE_URL";

/// A started store.
pub struct WooCommerceSite {
    dir: PathBuf,
    /// Held while a test drives the store: its webhooks and scheduled actions are shared, so tests take
    /// turns.
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl WooCommerceSite {
    /// The store `.ci/run` started, waiting for the store's turn; `None` (after saying how to start it) when
    /// none was started and this is not CI.
    pub async fn started(test: &str) -> Option<WooCommerceSite> {
        static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let Some(dir) = std::env::var_os(SITE_VARIABLE).map(PathBuf::from) else {
            let how = format!(
                "{test} needs the real WooCommerce store: start it with `bash ../shared/woocommerce-site/start.sh /tmp/wcsite` \
                 and run the tests with {SITE_VARIABLE}=/tmp/wcsite (.ci/run does both)"
            );
            assert!(std::env::var_os("CI").is_none(), "{how}; CI is set, so this is a failure");
            eprintln!("NOT RUN: {how}");
            return None;
        };
        assert!(dir.join("send.php").is_file(), "{SITE_VARIABLE}={} holds no started store", dir.display());
        Some(WooCommerceSite { dir, _turn: TURN.lock().await })
    }

    /// The store `.ci/run` started and serves over http (its REST API), waiting for the store's turn, with
    /// its URL; `None` (after saying how to serve it) when none is served and this is not CI.
    pub async fn served(test: &str) -> Option<(WooCommerceSite, String)> {
        let site = WooCommerceSite::started(test).await?;
        let Ok(url) = std::env::var(URL_VARIABLE) else {
            let how = format!(
                "{test} needs the real WooCommerce store served: start it with \
                 `bash ../shared/woocommerce-site/start.sh /tmp/wcsite serve 18481` and run the tests with \
                 {SITE_VARIABLE}=/tmp/wcsite {URL_VARIABLE}=http://127.0.0.1:18481 (.ci/run does both)"
            );
            assert!(std::env::var_os("CI").is_none(), "{how}; CI is set, so this is a failure");
            eprintln!("NOT RUN: {how}");
            return None;
        };
        Some((site, url))
    }

    /// A new REST API key for the store's admin (`php rest-key.php`): the consumer key and secret.
    pub async fn rest_key(&self) -> (String, String) {
        let mut command = Command::new("php");
        command.arg(self.dir.join("rest-key.php"));
        let output =
            tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("php runs rest-key.php");
        assert!(output.status.success(), "rest-key.php failed: {}", String::from_utf8_lossy(&output.stderr));
        let key: serde_json::Value = serde_json::from_slice(&output.stdout).expect("rest-key.php prints JSON");
        (key["consumer_key"].as_str().unwrap().to_owned(), key["consumer_secret"].as_str().unwrap().to_owned())
    }

    /// Runs the store's scheduled actions once (`php run-queue.php`), as WP-Cron would: the webhook
    /// deliveries that changes made through the REST API queued go out now.
    pub async fn run_queue(&self) {
        let mut command = Command::new("php");
        command.arg(self.dir.join("run-queue.php"));
        let output =
            tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("php runs run-queue.php");
        assert!(output.status.success(), "run-queue.php failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// Runs `php send.php ARGS...` (WooCommerce's own webhook code, see the kit's README) and returns the
    /// JSON line it prints for each delivery attempt.
    pub async fn send(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let mut command = Command::new("php");
        command.arg(self.dir.join("send.php")).args(args);
        let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("php runs send.php");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "send.php {args:?} failed: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// `store` settings (made as the config's checker makes them, with the bundled roots) for the store at `url` with the key `consumer_key`/`consumer_secret`.
pub fn store_settings(
    url: &str,
    consumer_key: &str,
    consumer_secret: &str,
    delivery_url: &str,
) -> hookgate::config::StoreSettings {
    hookgate::config::StoreSettings {
        url: url.parse().unwrap(),
        consumer_key: hookgate::secret::Secret::new(consumer_key.as_bytes().to_vec()),
        consumer_secret: hookgate::secret::Secret::new(consumer_secret.as_bytes().to_vec()),
        key_origins: ("value".to_owned(), "value".to_owned()),
        delivery_url: delivery_url.parse().unwrap(),
        watch: None,
        reactivate: true,
        backfill: true,
        roots: hookgate::upstream::bundled_roots(),
        trusts: "the bundled roots".to_owned(),
    }
}
