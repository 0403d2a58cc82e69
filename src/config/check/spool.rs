//! Where queue mode's spool is: `delivery.spool_path` (an SQLite file) or `delivery.postgres` (one spool in
//! PostgreSQL, shared by replicas), never both. The PostgreSQL URL is a secret: it is resolved here, and no
//! message ever holds it.

use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::super::raw::{RawDelivery, RawPostgres};
use super::super::{DEFAULT_SPOOL_PATH, PostgresSettings, SpoolLocation};
use super::{Checker, unresolved_secret};
use crate::secret::{self, Secret, SecretOrigin};

/// Connections in a replica's pool when `max_connections` is not given.
pub const DEFAULT_POSTGRES_CONNECTIONS: usize = 16;

impl Checker<'_> {
    /// The spool `delivery` names: its `postgres` section, else its `spool_path` (or the default file).
    pub(super) fn spool_location(&mut self, raw: &RawDelivery) -> SpoolLocation {
        let sqlite = match &raw.spool_path {
            Some(path) if path.value.trim().is_empty() => {
                self.problem(path, "delivery.spool_path is empty: write a file path such as ./data/hookgate.db");
                PathBuf::from(DEFAULT_SPOOL_PATH)
            }
            Some(path) => self.base_dir.join(&path.value),
            None => self.base_dir.join(DEFAULT_SPOOL_PATH),
        };
        let Some(postgres) = &raw.postgres else { return SpoolLocation::Sqlite(sqlite) };
        if raw.spool_path.is_some() {
            self.problem(
                postgres,
                "delivery.spool_path and delivery.postgres are both set: keep spool_path for one gateway with an SQLite file, or postgres for replicas sharing one PostgreSQL spool, not both",
            );
        }
        match self.postgres(postgres) {
            Some(settings) => SpoolLocation::Postgres(Box::new(settings)),
            None => SpoolLocation::Sqlite(sqlite),
        }
    }

    /// The `delivery.postgres` section, with its URL resolved and parsed; `None` after a problem.
    fn postgres(&mut self, raw: &Spanned<RawPostgres>) -> Option<PostgresSettings> {
        let section = &raw.value;
        let max_connections = self.count(
            section.max_connections.as_ref(),
            DEFAULT_POSTGRES_CONNECTIONS,
            1000,
            "delivery.postgres.max_connections",
        );
        let ca = section.ca_file.as_ref().and_then(|file| {
            self.pem_certificates(file, "delivery.postgres.ca_file", "the CA that signed PostgreSQL's certificate")
        });
        let keys = [section.url_env.as_ref(), section.url_file.as_ref(), section.url.as_ref()];
        let (at, origin, url_from) = match postgres_url_origin(keys, &self.base_dir) {
            Ok(chosen) => chosen,
            Err(message) => {
                self.problem(raw, message);
                return None;
            }
        };
        let url = match resolve_postgres_url(&origin, &url_from) {
            Ok(url) => url,
            Err(message) => {
                self.problem(at, message);
                return None;
            }
        };
        if let Some(file) = &section.url_file {
            self.files.push(self.base_dir.join(&file.value));
        }
        let parsed =
            std::str::from_utf8(url.expose()).ok().and_then(|text| text.parse::<tokio_postgres::Config>().ok());
        if parsed.is_none_or(|config| config.get_hosts().is_empty()) {
            // The parser's own message may quote the text: it is not shown.
            self.problem(at, format!("the PostgreSQL URL from {url_from} cannot be read: write postgres://USER:PASSWORD@HOST:PORT/DATABASE[?sslmode=require] (its text is not shown: it holds a password)"));
            return None;
        }
        Some(PostgresSettings { url, url_from, max_connections, ca })
    }
}

/// Where `delivery.postgres` keeps its URL: of its `keys` `[url_env, url_file, url]`, the one given (the
/// key as the file has it, for positions), what it points at (`url_file` relative to `base_dir`) and how
/// messages name it (`env VAR`, `file PATH` or `url`; never the URL). The error is the problem to tell
/// when not exactly one is given. `hookgate check` and `hookgate spool` choose the URL through here.
pub(in crate::config) fn postgres_url_origin<'a>(
    keys: [Option<&'a Spanned<String>>; 3],
    base_dir: &Path,
) -> Result<(&'a Spanned<String>, SecretOrigin, String), String> {
    let [url_env, url_file, url] = keys;
    let origins: Vec<(&Spanned<String>, SecretOrigin, String)> = [
        url_env.map(|var| (var, SecretOrigin::Env(var.value.clone()), format!("env {}", var.value))),
        url_file.map(|file| {
            let path = base_dir.join(&file.value);
            (file, SecretOrigin::File(path.clone()), format!("file {}", path.display()))
        }),
        url.map(|url| (url, SecretOrigin::Value(Secret::new(url.value.as_bytes().to_vec())), "url".to_owned())),
    ]
    .into_iter()
    .flatten()
    .collect();
    <[_; 1]>::try_from(origins).map(|[chosen]| chosen).map_err(|given| {
        let message =
            if given.is_empty() { "delivery.postgres needs its URL" } else { "delivery.postgres has more than one URL" };
        format!("{message}: give exactly one of url_env (a variable holding it), url_file (a file holding it) or url (trials only: it holds a password)")
    })
}

/// The PostgreSQL URL read from `origin` (named `url_from` in messages); the error is the problem to tell,
/// which says how to fix it and never holds the URL.
pub(in crate::config) fn resolve_postgres_url(origin: &SecretOrigin, url_from: &str) -> Result<Secret, String> {
    secret::resolve(origin).map_err(|error| {
        let empty =
            format!("the PostgreSQL URL from {url_from} is empty: give postgres://USER:PASSWORD@HOST:PORT/DATABASE");
        unresolved_secret(error, "delivery.postgres", "export it with the PostgreSQL URL, or use url_file", empty)
    })
}
