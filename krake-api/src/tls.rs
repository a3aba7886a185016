//! HTTPS with rustls, and TLS client certificates as identities.
//!
//! [`server_config`] builds a rustls server configuration from PEM files:
//! the server's certificate chain and key, and optionally a client CA. With
//! a client CA the server asks every client for a certificate, as Krake does
//! (`CERT_OPTIONAL`): a client without one still connects (and is then
//! anonymous, or 401), a certificate that the CA did not sign fails the
//! handshake.
//!
//! [`TlsListener`] plugs that into [`axum::serve()`]: it accepts TCP
//! connections, runs the handshakes concurrently (a slow client never
//! blocks the others) and hands each connection over with its [`PeerInfo`]:
//! the remote address and the verified client certificate's subject common
//! name. Serve the router with
//! `into_make_service_with_connect_info::<PeerInfo>()` and the
//! authentication middleware finds the name.
//!
//! ```no_run
//! # async fn example(router: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
//! use krake_api::tls::{PeerInfo, TlsFiles, TlsListener, server_config};
//!
//! let config = server_config(&TlsFiles {
//!     cert: "system:api-server.pem".into(),
//!     key: "system:api-server-key.pem".into(),
//!     client_ca: Some("ca.pem".into()),
//! })?;
//! let tcp = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
//! let listener = TlsListener::new(tcp, config);
//! axum::serve(listener, router.into_make_service_with_connect_info::<PeerInfo>()).await?;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::slow_clients::CutSlowClients;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot read {what} from {path}: {message}")]
    Pem {
        /// Which file (certificate, key, client CA).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the certificates or key.
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA could not be used to verify clients.
    #[error("invalid client CA: {0}")]
    ClientCa(String),
}

/// The PEM files of Krake's `tls` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// The CA whose certificates identify clients; `None` asks for none.
    pub client_ca: Option<PathBuf>,
}

fn pem_error(what: &'static str, path: &Path, message: impl ToString) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_owned(),
        message: message.to_string(),
    }
}

fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| pem_error(what, path, err))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(what, path, err))?;
    if certs.is_empty() {
        return Err(pem_error(what, path, "no certificate in the file"));
    }
    Ok(certs)
}

/// A rustls server configuration from PEM files (aws-lc-rs, TLS 1.2 and
/// 1.3, HTTP/1.1).
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let chain = certificates("the certificate", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|err| pem_error("the private key", &files.key, err))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let mut config = match &files.client_ca {
        None => builder.with_no_client_auth().with_single_cert(chain, key)?,
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("the client CA", ca)? {
                roots
                    .add(cert)
                    .map_err(|err| TlsError::ClientCa(err.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|err| TlsError::ClientCa(err.to_string()))?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain, key)?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Who is on the other end of a connection (the connect info of
/// [`TlsListener`]'s connections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The subject common name of the client's verified certificate.
    pub common_name: Option<Arc<str>>,
}

impl Connected<IncomingStream<'_, TlsListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

impl Connected<IncomingStream<'_, TcpListener>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        PeerInfo {
            remote: *stream.remote_addr(),
            common_name: None,
        }
    }
}

impl Connected<IncomingStream<'_, CutSlowClients<TlsListener>>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, CutSlowClients<TlsListener>>) -> Self {
        stream.remote_addr().clone()
    }
}

impl Connected<IncomingStream<'_, CutSlowClients<TcpListener>>> for PeerInfo {
    fn connect_info(stream: IncomingStream<'_, CutSlowClients<TcpListener>>) -> Self {
        PeerInfo {
            remote: *stream.remote_addr(),
            common_name: None,
        }
    }
}

/// The subject common name of a DER certificate.
pub fn common_name(cert: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let name = parsed.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_owned)
}

/// A listener for [`axum::serve()`] that speaks TLS; see the module docs.
#[derive(Debug)]
pub struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, PeerInfo)>,
    local: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    /// TLS over `tcp` with `config`.
    ///
    /// # Panics
    ///
    /// If called outside a tokio runtime.
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> Self {
        let local = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (sender, connections) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_loop(tcp, TlsAcceptor::from(config), sender));
        TlsListener {
            connections,
            local,
            acceptor,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = PeerInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when the listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(PeerInfo {
            remote: self.local,
            common_name: None,
        })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    sender: mpsc::Sender<(TlsStream<TcpStream>, PeerInfo)>,
) {
    loop {
        let (stream, remote) = match tcp.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait, as axum does.
                tracing::warn!(error = %err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        if sender.is_closed() {
            return;
        }
        let acceptor = acceptor.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::debug!(%remote, error = %err, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let common_name = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| common_name(cert))
                .map(Arc::from);
            let _ = sender
                .send((
                    tls,
                    PeerInfo {
                        remote,
                        common_name,
                    },
                ))
                .await;
        });
    }
}
