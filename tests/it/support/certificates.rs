//! Private certificate authorities made with rcgen for the upstream TLS tests: the CA's PEM for hookgate's
//! `tls.ca_file`, server configurations for an HTTPS upstream (optionally requiring a client certificate),
//! and client certificates for `tls.client_cert_file`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A throwaway certificate authority.
pub struct PrivateCa {
    /// Its certificate, PEM, as an operator would put it in `ca_file`.
    pub pem: String,
    der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl PrivateCa {
    /// A CA of its own name (two CAs must differ in name, or one's certificates would look like the
    /// other's with a bad signature rather than of an unknown issuer).
    pub fn new(name: &str) -> PrivateCa {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        PrivateCa { pem: certificate.pem(), der: certificate.der().clone(), issuer: Issuer::new(params, key) }
    }

    /// Writes the CA's certificate to `path` (atomically: a file watcher sees one change).
    pub fn write_to(&self, path: &Path) {
        write_atomically(path, &self.pem);
    }

    /// A certificate for `127.0.0.1` signed by this CA, and its key.
    fn issue(&self, name: &str) -> (CertificateDer<'static>, KeyPair, String) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        (certificate.der().clone(), key, certificate.pem())
    }

    /// An HTTPS server's configuration: a certificate for 127.0.0.1 signed by this CA; with `clients_of`,
    /// a client certificate signed by that CA is required.
    pub fn server_config(&self, clients_of: Option<&PrivateCa>) -> Arc<rustls::ServerConfig> {
        let (der, key, _) = self.issue("upstream");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match clients_of {
            None => builder.with_no_client_auth(),
            Some(client_ca) => {
                let mut roots = rustls::RootCertStore::empty();
                roots.add(client_ca.der.clone()).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Arc::new(builder.with_single_cert(vec![der, self.der.clone()], key).unwrap())
    }

    /// A client certificate signed by this CA, written to `dir` as `client.pem` and `client.key`.
    pub fn client_certificate(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert_file, key_file) = (dir.join("client.pem"), dir.join("client.key"));
        self.certificate_files("hookgate", &cert_file, &key_file);
        (cert_file, key_file)
    }

    /// A certificate for `127.0.0.1` named `name`, signed by this CA, written (PEM) to `cert_file` and its
    /// key to `key_file`: for a server of another program, such as PostgreSQL.
    pub fn certificate_files(&self, name: &str, cert_file: &Path, key_file: &Path) {
        let (_, key, pem) = self.issue(name);
        std::fs::write(cert_file, pem).unwrap();
        std::fs::write(key_file, key.serialize_pem()).unwrap();
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so a watcher never reads half a file.
pub fn write_atomically(path: &Path, text: &str) {
    let temporary = path.with_extension("tmp-write");
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}
