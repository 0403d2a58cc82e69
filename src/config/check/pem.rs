//! PEM files the configuration names (the listener's certificate and key, a route's CA and client
//! certificate): read, each problem located at the key that names the file. A private key's bytes are never
//! shown, only its file and the kind of error.

use std::path::PathBuf;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_saphyr::Spanned;

use super::Checker;

impl Checker<'_> {
    /// The certificates in the PEM file that `at` names (relative to the config file's folder), watched for
    /// reloads; `None` after a problem (unreadable, or no certificate in it). `key` is the configuration key
    /// for messages, `holds` says what the file should hold.
    pub(super) fn pem_certificates(
        &mut self,
        at: &Spanned<String>,
        key: &str,
        holds: &str,
    ) -> Option<Vec<CertificateDer<'static>>> {
        let path = self.watched_file(at);
        let certificates: Result<Vec<CertificateDer<'static>>, _> =
            CertificateDer::pem_file_iter(&path).and_then(|certificates| certificates.collect());
        match certificates {
            Ok(certificates) if !certificates.is_empty() => Some(certificates),
            Ok(_) => {
                let message = format!("{key} {} holds no certificate: give a PEM file with {holds}", path.display());
                self.problem(at, message);
                None
            }
            Err(e) => {
                let message =
                    format!("cannot read {key} {} ({e}): give a readable PEM file with {holds}", path.display());
                self.problem(at, message);
                None
            }
        }
    }

    /// The private key in the PEM file that `at` names, watched for reloads; `None` after a problem.
    pub(super) fn pem_private_key(&mut self, at: &Spanned<String>, key: &str) -> Option<PrivateKeyDer<'static>> {
        let path = self.watched_file(at);
        match PrivateKeyDer::from_pem_file(&path) {
            Ok(private_key) => Some(private_key),
            Err(e) => {
                let message = format!("cannot read {key} {} ({e}): give a readable PEM private key", path.display());
                self.problem(at, message);
                None
            }
        }
    }

    /// The file `at` names, relative to the config file's folder, added to the files watched for reloads.
    fn watched_file(&mut self, at: &Spanned<String>) -> PathBuf {
        let path = self.base_dir.join(&at.value);
        self.files.push(path.clone());
        path
    }
}
