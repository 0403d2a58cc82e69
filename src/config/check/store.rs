//! The checks of a source's `store`: its URLs (http or https, a host, no credentials), the REST key's two
//! parts resolved as secrets (never shown), `watch` and `ca_file`.

use serde_saphyr::Spanned;

use super::Checker;
use crate::config::raw::{RawSecret, RawStore};
use crate::config::{DEFAULT_STORE_WATCH, StoreSettings};
use crate::secret::{self, ResolveError, Secret};
use crate::upstream::bundled_roots;

impl Checker<'_> {
    /// Source `source`'s `store`, whole or `None` after a problem (each recorded).
    pub(super) fn store(&mut self, raw: &Spanned<RawStore>, source: &str) -> Option<StoreSettings> {
        let before = self.problems.len();
        let store = &raw.value;
        let url = self.store_url(&store.url, &format!("sources[{source}].store.url"), "https://shop.example.com");
        let delivery_url = self.store_url(
            &store.delivery_url,
            &format!("sources[{source}].store.delivery_url"),
            "https://hooks.example.com/webhooks/main-store",
        );
        let consumer_key = self.store_key_part(&store.consumer_key, "consumer_key", source);
        let consumer_secret = self.store_key_part(&store.consumer_secret, "consumer_secret", source);
        let watch = self.duration_or_zero(
            store.watch.as_ref(),
            DEFAULT_STORE_WATCH,
            &format!("sources[{source}].store.watch"),
            true,
        );
        let mut roots = bundled_roots();
        let mut trusts = "the bundled roots".to_owned();
        if let Some(ca_file) = &store.ca_file {
            let key = format!("sources[{source}].store.ca_file");
            let path = self.base_dir.join(&ca_file.value);
            for certificate in self.pem_certificates(ca_file, &key, "the CA certificates to trust").unwrap_or_default()
            {
                if let Err(e) = roots.add(certificate) {
                    self.problem(
                        ca_file,
                        format!(
                            "{key} {}: a certificate cannot be trusted as a CA ({e}): give the CA certificates in PEM",
                            path.display()
                        ),
                    );
                }
            }
            trusts = format!("the bundled roots and {}", path.display());
        }
        if self.problems.len() > before {
            return None;
        }
        let ((consumer_key, key_origin), (consumer_secret, secret_origin)) = (consumer_key?, consumer_secret?);
        Some(StoreSettings {
            url: url?,
            consumer_key,
            consumer_secret,
            key_origins: (key_origin, secret_origin),
            delivery_url: delivery_url?,
            watch: (!watch.is_zero()).then_some(watch),
            reactivate: store.reactivate.unwrap_or(true),
            backfill: store.backfill.unwrap_or(true),
            roots,
            trusts,
        })
    }

    /// A URL of `store` (for `key`): absolute, http or https, with a host, and neither credentials (never
    /// echoed), a query nor a fragment.
    fn store_url(&mut self, raw: &Spanned<String>, key: &str, example: &str) -> Option<http::Uri> {
        let text = raw.value.trim();
        let authority =
            text.split_once("://").map_or(text, |(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""));
        let problem = if authority.contains('@') {
            // Never echo the URL: what stands before '@' is a password.
            format!(
                "{key} holds credentials (user:password@): give the REST key as consumer_key and consumer_secret instead"
            )
        } else {
            match text.parse::<http::Uri>() {
                Ok(uri)
                    if matches!(uri.scheme_str(), Some("http" | "https"))
                        && uri.host().is_some_and(|host| !host.is_empty())
                        && uri.query().is_none()
                        && !text.contains('#') =>
                {
                    return Some(uri);
                }
                Ok(_) => format!(
                    "{key} {text:?} must be an http:// or https:// URL with a host and no query or fragment, such as \"{example}\""
                ),
                Err(e) => format!("{key} {text:?} is not a URL ({e}): write it in full, such as \"{example}\""),
            }
        };
        self.problem(raw, problem);
        None
    }

    /// One part (`consumer_key` or `consumer_secret`) of source `source`'s REST key, resolved like a
    /// secret, with where it came from; the problem names where it was looked for, never what it holds.
    fn store_key_part(&mut self, raw: &Spanned<RawSecret>, part: &str, source: &str) -> Option<(Secret, String)> {
        let (origin, label) = self.secret_origin(&raw.value);
        let message = match secret::resolve(&origin) {
            Ok(secret) => return Some((secret, label)),
            Err(ResolveError::EnvUnset(var)) => format!(
                "environment variable {var} is not set (store.{part} of source {source:?}): export it, or use file: or value:"
            ),
            Err(ResolveError::Unreadable { path, error }) => format!(
                "cannot read the file {} ({error}) of store.{part} of source {source:?}: check the path (relative paths start at the config file's folder) and its permissions",
                path.display()
            ),
            Err(ResolveError::Empty) => format!(
                "store.{part} of source {source:?} ({label}) is empty: give the REST API key made in WooCommerce > Settings > Advanced > REST API"
            ),
        };
        self.problem(raw, message);
        None
    }
}

/// Warnings about the `store` blocks of `sources` (in `file`): a `delivery_url` whose path is not the
/// source's (the store's deliveries would go to another source, or to none), and a backfill over plain
/// http in queue mode (the requests are signed, the answers are not: what is fetched could be changed in
/// transit).
pub(super) fn store_warnings(
    file: &std::path::Path,
    sources: &[crate::config::raw::RawSource],
    mode: crate::config::DeliveryMode,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for source in sources {
        let Some(store) = source.store.as_ref().map(|store| &store.value) else { continue };
        let name = &source.name.value;
        let delivery_path = store.delivery_url.value.parse::<http::Uri>().ok().map(|uri| uri.path().to_owned());
        if let Some(delivery_path) =
            delivery_path.filter(|path| path.trim_end_matches('/') != source.path.value.trim_end_matches('/'))
        {
            warnings.push(format!(
                "{}:{}: sources[{name}].store.delivery_url ends in {delivery_path}, not in the source's path {}: the webhooks `hookgate store sync` makes would deliver to another source, or to none, unless a proxy in front rewrites the path",
                file.display(),
                store.delivery_url.referenced.line(),
                source.path.value
            ));
        }
        let over_http = store.url.value.trim().starts_with("http://");
        if over_http && store.value_backfill() && mode == crate::config::DeliveryMode::Queue {
            warnings.push(format!(
                "{}:{}: sources[{name}].store.url is plain http: the REST key's requests are signed, but what the store answers is not, so a backfilled resource could be changed on the way; give the store's https URL, or backfill: false",
                file.display(),
                store.url.referenced.line()
            ));
        }
    }
    warnings
}

impl RawStore {
    /// `backfill`, or its default (on).
    fn value_backfill(&self) -> bool {
        self.backfill.unwrap_or(true)
    }
}
