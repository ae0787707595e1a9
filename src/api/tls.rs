//! TLS for the REST APIs (agent and orchestrator service) and for the clients that
//! call them.
//!
//! The server side is an [`axum::serve::Listener`] over a TCP listener: handshakes run
//! in their own tasks with a deadline, so one client that opens a connection and
//! never says hello does not hold up anyone else, and `axum::serve` keeps its
//! graceful shutdown. Crypto is rustls with the `ring` provider, chosen explicitly so
//! the build never depends on which provider features other crates switch on.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate, key or CA file that cannot be used; names the file.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The certificate chain cannot be read or is not PEM.
    #[error("TLS certificate {path}: {reason}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The private key cannot be read or is not a PEM key.
    #[error("TLS key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The CA file cannot be read or holds no certificate.
    #[error("CA file {path}: {reason}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the certificate/key pair (e.g. the key does not match).
    #[error("TLS certificate {cert} with key {key}: {source}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        #[source]
        source: rustls::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration from a PEM certificate chain (leaf first) and a PEM private
/// key (PKCS#8, PKCS#1 or SEC1). HTTP/1.1 only: that is what the API speaks.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: e.to_string(),
    })?;
    let config_err = |source| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(config_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The server configuration if both files are given, `None` for plain HTTP.
pub fn optional_server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    match (cert, key) {
        (Some(c), Some(k)) => server_config(c, k).map(Some),
        _ => Ok(None),
    }
}

/// Makes `builder` trust the CA certificates in `ca_file` (PEM, one or more) on top of
/// the built-in roots: agents and orchestrators usually carry certificates of a
/// private CA.
pub fn trust_ca(
    builder: reqwest::ClientBuilder,
    ca_file: &Path,
) -> Result<reqwest::ClientBuilder, TlsError> {
    let ca_err = |reason: String| TlsError::Ca {
        path: ca_file.to_owned(),
        reason,
    };
    let pem = std::fs::read(ca_file).map_err(|e| ca_err(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| ca_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(ca_err("no CERTIFICATE block".into()));
    }
    Ok(certs
        .into_iter()
        .fold(builder, |b, c| b.add_root_certificate(c)))
}

/// A TCP listener that hands out TLS streams (see the module doc).
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Serves TLS with `config` on `tcp`.
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((stream, addr)) => {
                        let acceptor = self.acceptor.clone();
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => Some((tls, addr)),
                                Ok(Err(e)) => {
                                    tracing::debug!(%addr, error = %e, "TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!(%addr, "TLS handshake timed out");
                                    None
                                }
                            }
                        });
                    }
                    Err(e) => accept_error(e).await,
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// As axum's own TCP listener: per-connection errors are retried at once, others (out
/// of file descriptors) after a pause instead of spinning.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A CA and a `localhost` certificate it signed, made at test time.
#[cfg(test)]
pub(crate) mod test_pki {
    use std::path::{Path, PathBuf};

    /// Paths of the PEM files [`make`] wrote.
    pub struct Pki {
        pub ca: PathBuf,
        pub cert: PathBuf,
        pub key: PathBuf,
    }

    /// Writes `ca.pem`, `cert.pem`, `key.pem` into `dir`.
    pub fn make(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "migroute test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        std::fs::write(&pki.cert, cert.pem()).unwrap();
        std::fs::write(&pki.key, key.serialize_pem()).unwrap();
        pki
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let pki = test_pki::make(dir.path());
        assert!(server_config(&pki.cert, &pki.key).is_ok());
        let missing = dir.path().join("missing.pem");
        let e = server_config(&missing, &pki.key).unwrap_err();
        assert!(
            matches!(e, TlsError::Cert { ref path, .. } if *path == missing),
            "{e}"
        );
        // A certificate where the key should be.
        let e = server_config(&pki.cert, &pki.cert).unwrap_err();
        assert!(matches!(e, TlsError::Key { .. }), "{e}");
        // A key of another certificate.
        let other = tempfile::tempdir().unwrap();
        let other = test_pki::make(other.path());
        let e = server_config(&pki.cert, &other.key).unwrap_err();
        assert!(matches!(e, TlsError::Config { .. }), "{e}");
        let e = trust_ca(reqwest::Client::builder(), &pki.key).unwrap_err();
        assert!(e.to_string().contains("key.pem"), "{e}");
        assert!(optional_server_config(None, None).unwrap().is_none());
    }

    #[tokio::test]
    async fn serves_https_only_to_clients_that_trust_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = test_pki::make(dir.path());
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        let listener = TlsListener::new(tcp, server_config(&pki.cert, &pki.key).unwrap());
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        // A client that opens a connection and says nothing holds up no one.
        let _silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();

        let trusting = trust_ca(reqwest::Client::builder(), &pki.ca)
            .unwrap()
            .build()
            .unwrap();
        let url = format!("https://localhost:{port}/");
        let body = trusting
            .get(&url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "hello");

        let e = reqwest::Client::new().get(&url).send().await.unwrap_err();
        let mut why = e.to_string();
        let mut cur = std::error::Error::source(&e);
        while let Some(c) = cur {
            why.push_str(&format!(": {c}"));
            cur = c.source();
        }
        assert!(why.contains("certificate"), "{why}");
        let plain = reqwest::Client::new()
            .get(format!("http://localhost:{port}/"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        assert!(plain.is_err(), "plain http answered: {plain:?}");
    }
}
