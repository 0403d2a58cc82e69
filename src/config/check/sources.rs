//! The checks of `sources`: each store's name, path and secrets (resolved, never shown), each name and
//! path used once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::{Checker, is_plain_name, unresolved_secret};
use crate::config::Source;
use crate::config::raw::{RawSecret, RawSource};
use crate::secret::{self, Secret, SecretOrigin};
use crate::verify::{Algorithm, Verifier};

impl Checker<'_> {
    /// The sources in file order, each with a name and a Delivery URL path of its own, and which source
    /// each path belongs to.
    pub(super) fn sources(&mut self, raw: &Spanned<Vec<RawSource>>) -> (Vec<Arc<Source>>, HashMap<String, usize>) {
        if raw.value.is_empty() {
            self.problem(raw, "sources is empty: add one source per WooCommerce store (name, path, secrets)");
        }
        let mut sources = Vec::new();
        let mut source_by_path = HashMap::new();
        let mut first_name_line: HashMap<String, u64> = HashMap::new();
        let mut first_path_owner: HashMap<String, String> = HashMap::new();
        for raw_source in &raw.value {
            if let Some(line) = first_name_line.get(&raw_source.name.value) {
                self.problem(
                    &raw_source.name,
                    format!(
                        "source name {:?} is already used on line {line}: give each source its own name",
                        raw_source.name.value
                    ),
                );
            } else {
                first_name_line.insert(raw_source.name.value.clone(), raw_source.name.referenced.line());
            }
            if let Some(other) = first_path_owner.get(&raw_source.path.value) {
                self.problem(
                    &raw_source.path,
                    format!(
                        "path {:?} is already the path of source {other:?}: each store needs its own Delivery URL path",
                        raw_source.path.value
                    ),
                );
            } else {
                first_path_owner.insert(raw_source.path.value.clone(), raw_source.name.value.clone());
            }
            if let Some(source) = self.source(raw_source) {
                source_by_path.entry(source.path.clone()).or_insert(sources.len());
                sources.push(Arc::new(source));
            }
        }
        (sources, source_by_path)
    }

    /// One source: a plain name, a Delivery URL path, at least one secret (each resolved), its webhook ids
    /// and `reject_older_than`; `None` when anything is wrong (each problem recorded).
    fn source(&mut self, raw: &RawSource) -> Option<Source> {
        let before = self.problems.len();
        let name = raw.name.value.clone();
        if !is_plain_name(&name) {
            self.problem(&raw.name, format!("source name {name:?} must be 1 to 64 letters, digits, '-', '_' or '.': it appears in logs, metrics and headers"));
        }
        let path = raw.path.value.clone();
        if !path.starts_with('/')
            || path.contains(['?', '#'])
            || path.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            self.problem(&raw.path, format!("path {path:?} must start with '/' and hold no query, fragment or space: write the path part of the Delivery URL, such as /webhooks/main-store"));
        }
        if raw.secrets.value.is_empty() {
            self.problem(&raw.secrets, format!("source {name:?} has no secrets: add at least one (env:, file: or value:), the webhook's secret from WooCommerce"));
        }
        let mut secrets = Vec::new();
        let mut secret_origins = Vec::new();
        for raw_secret in &raw.secrets.value {
            if let Some((secret, origin)) = self.secret(raw_secret, &name) {
                secrets.push(secret);
                secret_origins.push(origin);
            }
        }
        let webhook_ids = raw.webhook_ids.as_ref().map(|ids| {
            if ids.value.is_empty() {
                self.problem(ids, "webhook_ids is empty, which would refuse every delivery: list the allowed X-WC-Webhook-ID values, or remove the key");
            }
            ids.value.iter().copied().collect()
        });
        let reject_older_than = raw
            .reject_older_than
            .as_ref()
            .map(|value| self.duration(Some(value), Duration::ZERO, &format!("sources[{name}].reject_older_than")));
        let store = raw.store.as_ref().and_then(|store| self.store(store, &name));
        if self.problems.len() > before {
            return None;
        }
        let algorithm = raw.algorithm.unwrap_or(Algorithm::Sha256);
        Some(Source {
            verifier: Verifier::new(algorithm, &secrets),
            name,
            path,
            secret_origins,
            secrets,
            webhook_ids,
            reject_older_than,
            store,
        })
    }

    /// One secret of `source`, resolved, and where it came from (for summaries); the resolver's errors are
    /// told with the source's name and how to fix them.
    fn secret(&mut self, raw: &Spanned<RawSecret>, source: &str) -> Option<(Secret, String)> {
        let (origin, label) = self.secret_origin(&raw.value);
        match secret::resolve(&origin) {
            Ok(secret) => Some((secret, label)),
            Err(error) => {
                let empty = format!(
                    "the {label} secret of source {source:?} is empty: WooCommerce never signs with an empty secret; set the webhook's secret"
                );
                let owner = format!("source {source:?}");
                self.problem(raw, unresolved_secret(error, &owner, "export it, or use file: or value:", empty));
                None
            }
        }
    }

    /// Where a secret (or a route's header value) comes from, and a label for summaries that never holds
    /// it; a file is watched for reloads from here on.
    pub(super) fn secret_origin(&mut self, raw: &RawSecret) -> (SecretOrigin, String) {
        match raw {
            RawSecret::Env(var) => (SecretOrigin::Env(var.clone()), format!("env {var}")),
            RawSecret::File(file) => {
                let path = self.base_dir.join(file);
                self.files.push(path.clone());
                let label = format!("file {}", path.display());
                (SecretOrigin::File(path), label)
            }
            RawSecret::Value(value) => (
                SecretOrigin::Value(Secret::new(value.as_bytes().to_vec())),
                "value (literal in the config file)".to_owned(),
            ),
        }
    }
}
