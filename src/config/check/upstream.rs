//! The checks of a route's way to its upstream beyond the URL: its `tls` (a CA to trust, a client
//! certificate), built into a client of the route's own, and its `headers`, whose values are secrets
//! (resolved like a source's, never shown) and whose names hookgate does not own.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::HeaderName;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_saphyr::Spanned;

use super::Checker;
use crate::config::raw::{RawHeaders, RawUpstreamTls};
use crate::secret::{self, ResolveError};
use crate::upstream::{UpstreamClient, UpstreamHeaders, bundled_roots, refused_header, sensitive_header_value};

/// A client certificate chain, its private key, and the key of the file the chain came from.
type ClientAuth<'t> = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, &'t Spanned<String>);

impl Checker<'_> {
    /// Route `route`'s `tls`, for an upstream that is `https` (or not): the roots (the bundled ones and
    /// `ca_file`, or `ca_file` only) and the client certificate, built into the route's own client; `None`
    /// after a problem.
    pub(super) fn upstream_tls(
        &mut self,
        raw: &Spanned<RawUpstreamTls>,
        route: &str,
        https: bool,
    ) -> Option<UpstreamClient> {
        let key = |name: &str| format!("routes[{route}].tls.{name}");
        let tls = &raw.value;
        if !https {
            self.problem(raw, format!("routes[{route}].tls applies to an https:// upstream only, and this route's upstream is http://: write https://, or remove tls"));
        }
        let only_ca_file = tls.only_ca_file.as_ref().is_some_and(|only| only.value);
        if tls.ca_file.is_none() && tls.client_cert_file.is_none() && tls.client_key_file.is_none() && !only_ca_file {
            self.problem(raw, format!("routes[{route}].tls sets nothing: give ca_file (the CA that signed the upstream's certificate), client_cert_file and client_key_file (a client certificate), or remove tls"));
            return None;
        }
        let (roots, trusts) = self.upstream_roots(tls, route);
        let client_auth = self.client_certificate(tls, route);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = match rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()
        {
            Ok(builder) => builder.with_root_certificates(roots),
            Err(e) => {
                self.problem(raw, format!("routes[{route}].tls cannot be set up ({e})"));
                return None;
            }
        };
        let (config, presents) = match client_auth? {
            None => (builder.with_no_client_auth(), String::new()),
            Some((chain, private_key, cert_file)) => match builder.with_client_auth_cert(chain, private_key) {
                Ok(config) => (config, format!("; presents {}", self.base_dir.join(&cert_file.value).display())),
                Err(e) => {
                    // The key's bytes are never shown, only the kind of mismatch.
                    let at = tls.client_key_file.as_ref().unwrap_or(cert_file);
                    self.problem(at, format!("the client key does not fit the client certificate ({e}): give the key of the first certificate in {}", key("client_cert_file")));
                    return None;
                }
            },
        };
        Some(UpstreamClient::with_tls(config, format!("trusts {trusts}{presents}")))
    }

    /// The roots a route's client trusts (the bundled ones and `ca_file`, or with `only_ca_file` that file
    /// only), and those words for `hookgate check`.
    fn upstream_roots(&mut self, tls: &RawUpstreamTls, route: &str) -> (rustls::RootCertStore, String) {
        let key = |name: &str| format!("routes[{route}].tls.{name}");
        let only_ca_file = tls.only_ca_file.as_ref().is_some_and(|only| only.value);
        let mut roots = if only_ca_file { rustls::RootCertStore::empty() } else { bundled_roots() };
        let Some(ca_file) = &tls.ca_file else {
            if let Some(only) = tls.only_ca_file.as_ref().filter(|only| only.value) {
                self.problem(only, format!("{} is set without ca_file, which would trust no certificate at all: add ca_file, or remove only_ca_file", key("only_ca_file")));
            }
            return (roots, "the bundled roots".to_owned());
        };
        let path = self.base_dir.join(&ca_file.value);
        if let Some(certificates) = self.pem_certificates(ca_file, &key("ca_file"), "the CA certificates to trust") {
            for (index, certificate) in certificates.into_iter().enumerate() {
                if let Err(e) = roots.add(certificate) {
                    self.problem(
                        ca_file,
                        format!(
                            "{} {}: certificate {} cannot be trusted as a CA ({e}): give the CA certificates in PEM",
                            key("ca_file"),
                            path.display(),
                            index + 1
                        ),
                    );
                }
            }
        }
        let trusts = if only_ca_file {
            format!("only {}", path.display())
        } else {
            format!("the bundled roots and {}", path.display())
        };
        (roots, trusts)
    }

    /// The client certificate chain and key of a route's `tls`, both or neither: `Some(None)` without
    /// one, `None` after a problem.
    fn client_certificate<'t>(&mut self, tls: &'t RawUpstreamTls, route: &str) -> Option<Option<ClientAuth<'t>>> {
        let key = |name: &str| format!("routes[{route}].tls.{name}");
        match (&tls.client_cert_file, &tls.client_key_file) {
            (None, None) => Some(None),
            (Some(cert_file), None) => {
                self.problem(cert_file, format!("{} is set without client_key_file: give both the client certificate and its private key, or neither", key("client_cert_file")));
                None
            }
            (None, Some(key_file)) => {
                self.problem(key_file, format!("{} is set without client_cert_file: give both the client certificate and its private key, or neither", key("client_key_file")));
                None
            }
            (Some(cert_file), Some(key_file)) => {
                let chain = self.pem_certificates(
                    cert_file,
                    &key("client_cert_file"),
                    "the client certificate chain, leaf first",
                );
                let private_key = self.pem_private_key(key_file, &key("client_key_file"));
                Some(Some((chain?, private_key?, cert_file)))
            }
        }
    }

    /// Route `route`'s `headers`: each name one a route may set, given once (names are case-insensitive),
    /// each value resolved like a secret and a valid header value. Neither a value nor an unusable name is
    /// ever shown (either may be a credential written in the wrong place).
    pub(super) fn upstream_headers(&mut self, raw: Option<&Spanned<RawHeaders>>, route: &str) -> UpstreamHeaders {
        let Some(raw) = raw else { return UpstreamHeaders::default() };
        let mut headers = Vec::new();
        let mut first_lines: HashMap<HeaderName, u64> = HashMap::new();
        for (name, value) in &raw.value.0 {
            let Ok(header) = HeaderName::from_bytes(name.value.as_bytes()) else {
                self.problem(name, format!("routes[{route}].headers: this name is not a header name (it is not shown, in case it holds a credential): a name is letters, digits and - only, such as Authorization, followed by its value as {{ env: VAR }}, {{ file: PATH }} or {{ value: TEXT }}"));
                continue;
            };
            if let Some(why) = refused_header(header.as_str()) {
                self.problem(name, format!("routes[{route}].headers: {} cannot be set by a route: {why}", name.value));
                continue;
            }
            if let Some(first) = first_lines.get(&header) {
                self.problem(name, format!("routes[{route}].headers: {} is already given on line {first} (header names are case-insensitive): give it once", name.value));
                continue;
            }
            first_lines.insert(header.clone(), name.referenced.line());
            if let Some((value, origin)) = self.header_value(value, &name.value, route) {
                headers.push((header, value, origin));
            }
        }
        UpstreamHeaders::new(headers)
    }

    /// The value of header `name` of route `route`, resolved like a secret and made a sensitive header
    /// value, with where it comes from; `None` after a problem (which never shows the value).
    fn header_value(
        &mut self,
        raw: &Spanned<crate::config::raw::RawSecret>,
        name: &str,
        route: &str,
    ) -> Option<(http::HeaderValue, String)> {
        let (origin, label) = self.secret_origin(&raw.value);
        let message = match secret::resolve(&origin) {
            Ok(secret) => match sensitive_header_value(secret) {
                Some(value) => return Some((value, label)),
                None => format!(
                    "the value of header {name} of route {route:?} ({label}) is not a valid header value: it holds a line break or another control character (it is not shown); a file loses one trailing newline, no more"
                ),
            },
            Err(ResolveError::EnvUnset(var)) => format!(
                "environment variable {var} is not set (header {name} of route {route:?}): export it, or use file: or value:"
            ),
            Err(ResolveError::Unreadable { path, error }) => format!(
                "cannot read the file {} ({error}) of header {name} of route {route:?}: check the path (relative paths start at the config file's folder) and its permissions",
                path.display()
            ),
            Err(ResolveError::Empty) => format!(
                "the value of header {name} of route {route:?} ({label}) is empty: set it, or remove the header"
            ),
        };
        self.problem(raw, message);
        None
    }
}
