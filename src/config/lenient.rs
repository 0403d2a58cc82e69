//! What the operator's commands read from a configuration file without checking the whole of it: the route
//! names (`hookgate spool`) and the admin listener's address (`hookgate health`). Read leniently, like
//! [`Config::load_spool_path`], so that they work without the environment the secrets come from (inside a
//! container's health check, or on an operator's machine).

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::check::{postgres_url_origin, resolve_postgres_url};
use super::{Config, ConfigError, DEFAULT_ADMIN_LISTEN, DEFAULT_SPOOL_PATH, PostgresSettings, SpoolLocation};

/// The keys read, and nothing else (unknown keys are ignored here; `hookgate check` reports them).
#[derive(Deserialize, Default)]
struct Lenient {
    admin_listen: Option<String>,
    #[serde(default)]
    routes: Vec<LenientRoute>,
    #[serde(default)]
    delivery: LenientDelivery,
}

#[derive(Deserialize, Default)]
struct LenientDelivery {
    spool_path: Option<String>,
    postgres: Option<LenientPostgres>,
}

#[derive(Deserialize)]
struct LenientPostgres {
    url_env: Option<Spanned<String>>,
    url_file: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    ca_file: Option<String>,
}

#[derive(Deserialize)]
struct LenientRoute {
    name: String,
}

fn read(path: &Path) -> Result<Lenient, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, &e))?;
    serde_saphyr::from_str(&text).map_err(|e| ConfigError::syntax(path, &text, &e))
}

impl Config {
    /// Only where the spool is, for `hookgate spool`: the SQLite file, or the PostgreSQL database (its URL
    /// chosen and resolved as `hookgate check` does, with the same problems, since that is how to reach it;
    /// nothing else of the file is).
    pub fn load_spool(path: &Path) -> Result<SpoolLocation, ConfigError> {
        let delivery = read(path)?.delivery;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let Some(postgres) = delivery.postgres else {
            return Ok(SpoolLocation::Sqlite(
                base_dir.join(delivery.spool_path.as_deref().unwrap_or(DEFAULT_SPOOL_PATH)),
            ));
        };
        let problem = |message: String| ConfigError {
            file: path.to_path_buf(),
            problems: vec![format!("{}: {message}\n", path.display())],
        };
        let keys = [postgres.url_env.as_ref(), postgres.url_file.as_ref(), postgres.url.as_ref()];
        let (_, origin, url_from) = postgres_url_origin(keys, &base_dir).map_err(problem)?;
        let url = resolve_postgres_url(&origin, &url_from).map_err(problem)?;
        let ca =
            match postgres.ca_file {
                None => None,
                Some(file) => {
                    use rustls::pki_types::{CertificateDer, pem::PemObject};
                    let file = base_dir.join(file);
                    let certificates: Result<Vec<CertificateDer<'static>>, _> =
                        CertificateDer::pem_file_iter(&file).and_then(|certificates| certificates.collect());
                    Some(certificates.map_err(|e| {
                        problem(format!("cannot read delivery.postgres.ca_file {}: {e}", file.display()))
                    })?)
                }
            };
        Ok(SpoolLocation::Postgres(Box::new(PostgresSettings { url, url_from, max_connections: 2, ca })))
    }

    /// The names of the routes the file configures, in file order, for `hookgate spool` to tell a route
    /// that does not exist from one that has nothing in the spool.
    pub fn load_route_names(path: &Path) -> Result<Vec<String>, ConfigError> {
        Ok(read(path)?.routes.into_iter().map(|route| route.name).collect())
    }

    /// The admin listener's address as the file sets it (its default when unset), for `hookgate health`.
    pub fn load_admin_listen(path: &Path) -> Result<SocketAddr, ConfigError> {
        let written = read(path)?.admin_listen;
        let text = written.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
        text.trim().parse().map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![format!(
                "{}: admin_listen {text:?} is not an address ({e}): write IP:PORT, such as \"127.0.0.1:9090\" (hookgate check says where)",
                path.display()
            )],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hookgate-lenient-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hookgate.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn route_names_and_the_admin_address_are_read_without_resolving_secrets() {
        let path = file(
            "read",
            "admin_listen: \"0.0.0.0:9191\"\nsources:\n  - name: s\n    path: /s\n    secrets: [{env: HOOKGATE_LENIENT_UNSET}]\nroutes:\n  - name: a\n    topics: [\"*\"]\n    upstream: http://127.0.0.1:1/\n  - name: b\n    topics: [\"*\"]\n    upstream: http://127.0.0.1:2/\n",
        );
        assert_eq!(Config::load_route_names(&path).unwrap(), ["a", "b"]);
        assert_eq!(Config::load_admin_listen(&path).unwrap(), "0.0.0.0:9191".parse().unwrap());
        let path = file("default", "sources: []\n");
        assert!(Config::load_route_names(&path).unwrap().is_empty());
        assert_eq!(Config::load_admin_listen(&path).unwrap(), DEFAULT_ADMIN_LISTEN.parse().unwrap());
        let path = file("bad", "admin_listen: nine\n");
        let error = Config::load_admin_listen(&path).unwrap_err().to_string();
        assert!(error.contains("admin_listen \"nine\" is not an address"), "{error}");
        for name in ["read", "default", "bad"] {
            let _ = std::fs::remove_dir_all(file(name, "").parent().unwrap());
        }
    }

    #[test]
    fn the_postgres_url_is_chosen_and_resolved_as_the_check_does() {
        let path = file(
            "postgres",
            "delivery:\n  postgres:\n    url_env: HOOKGATE_LENIENT_UNSET_URL\n    max_connections: many\n",
        );
        let error = Config::load_spool(&path).unwrap_err().to_string();
        assert!(error.contains("environment variable HOOKGATE_LENIENT_UNSET_URL is not set"), "{error}");
        let path =
            file("two-urls", "delivery:\n  postgres:\n    url_env: A_VAR\n    url: \"postgres://hg:pw-9@h/hg\"\n");
        let error = Config::load_spool(&path).unwrap_err().to_string();
        assert!(error.contains("delivery.postgres has more than one URL") && !error.contains("pw-9"), "{error}");
        let path = file("url", "delivery:\n  postgres:\n    url: \"postgres://hg:pw-9@h/hg\"\n");
        let SpoolLocation::Postgres(postgres) = Config::load_spool(&path).unwrap() else { panic!("not postgres") };
        assert_eq!((postgres.url.expose(), postgres.url_from.as_str()), (&b"postgres://hg:pw-9@h/hg"[..], "url"));
        for name in ["postgres", "two-urls", "url"] {
            let _ = std::fs::remove_dir_all(file(name, "").parent().unwrap());
        }
    }
}
