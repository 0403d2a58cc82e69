//! A source's `store` section as checked: the store's REST API (its home URL and a key whose two parts are
//! secrets), where the store must deliver this source's webhooks, and what watching it does.

use std::fmt;
use std::time::Duration;

use crate::secret::Secret;

/// Checking the store's webhooks every five minutes finds a disabled webhook well before a day's orders
/// are missed, and costs the store one REST request a page of webhooks.
pub const DEFAULT_STORE_WATCH: Duration = Duration::from_secs(5 * 60);

/// The store behind a source, reached through its REST API (`/wp-json/wc/v3`). `Debug` never shows the
/// key: both parts are [`Secret`]s.
pub struct StoreSettings {
    /// The site's home URL (`https://shop.example.com`), http or https, with no credentials, query or
    /// fragment. Over https the key goes as HTTP Basic; over http it signs each request (OAuth 1.0a).
    pub url: http::Uri,
    /// The REST API key's consumer key (`ck_...`).
    pub consumer_key: Secret,
    /// The REST API key's consumer secret (`cs_...`).
    pub consumer_secret: Secret,
    /// Where the two parts come from (`env NAME`, `file PATH`), for summaries; never their values.
    pub key_origins: (String, String),
    /// Where the store must send this source's deliveries (the webhooks' Delivery URL).
    pub delivery_url: http::Uri,
    /// How often the store's webhooks are checked; `None` when watching is off (`watch: 0`).
    pub watch: Option<Duration>,
    /// Whether a webhook WooCommerce disabled is set active again.
    pub reactivate: bool,
    /// Whether what changed during a gap is fetched and delivered.
    pub backfill: bool,
    /// The roots the store's certificate is checked against: the bundled ones, and `ca_file` when given.
    pub roots: rustls::RootCertStore,
    /// What `roots` holds, in words for summaries (`the bundled roots and /etc/hookgate/store-ca.pem`).
    pub trusts: String,
}

impl fmt::Debug for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSettings")
            .field("url", &self.url)
            .field("consumer_key", &self.key_origins.0)
            .field("consumer_secret", &self.key_origins.1)
            .field("delivery_url", &self.delivery_url)
            .field("watch", &self.watch)
            .field("reactivate", &self.reactivate)
            .field("backfill", &self.backfill)
            .field("trusts", &self.trusts)
            .finish()
    }
}

impl StoreSettings {
    /// Whether `other` watches the same store in the same way: the same URL, key (compared in constant
    /// time), delivery URL, watch, reactivate, backfill and trusted roots.
    pub fn same_as(&self, other: &StoreSettings) -> bool {
        use subtle::ConstantTimeEq;
        let same_key = bool::from(
            self.consumer_key.expose().ct_eq(other.consumer_key.expose())
                & self.consumer_secret.expose().ct_eq(other.consumer_secret.expose()),
        );
        same_key
            && self.url == other.url
            && self.delivery_url == other.delivery_url
            && self.watch == other.watch
            && self.reactivate == other.reactivate
            && self.backfill == other.backfill
            && self.trusts == other.trusts
    }
}
