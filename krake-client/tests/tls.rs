//! Client TLS: a CA to trust and a client certificate, against a small
//! rustls server (certificates made here with rcgen) that terminates TLS,
//! requires a client certificate signed by the CA, and forwards to a real
//! API server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use krake_api::testing::TestServer;
use krake_client::{Api, Client, Error, ListParams, TlsOptions};
use krake_data::kinds::kubernetes::Application;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

struct Pki {
    ca_pem: String,
    server_cert: CertificateDer<'static>,
    server_key: PrivateKeyDer<'static>,
    client_cert_pem: String,
    client_key_pem: String,
    ca_der: CertificateDer<'static>,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "krake test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &ca).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "system:admin");
    let client_cert = client_params.signed_by(&client_key, &ca).unwrap();

    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server_cert: server_cert.der().clone(),
        server_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
        client_cert_pem: client_cert.pem(),
        client_key_pem: client_key.serialize_pem(),
    }
}

/// A TLS front requiring a client certificate, forwarding to `backend`.
async fn tls_front(pki: &Pki, backend: std::net::SocketAddr) -> String {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![pki.server_cert.clone()], pki.server_key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut upstream) = tokio::net::TcpStream::connect(backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    url
}

fn backend_address(server: &TestServer) -> std::net::SocketAddr {
    server.url().trim_start_matches("http://").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_and_client_certificate_reach_the_api() {
    let server = TestServer::embedded().await;
    let pki = pki();
    let url = tls_front(&pki, backend_address(&server)).await;

    let tls = TlsOptions::default()
        .ca(pki.ca_pem.clone())
        .identity(pki.client_cert_pem.clone(), pki.client_key_pem.clone());
    let client = Client::builder(&url).tls(tls).build().unwrap();
    assert_eq!(client.version().await.unwrap(), "1.0.1");
    let apps: Api<Application> = Api::namespaced(client, "testing");
    assert!(
        apps.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // The same material from files, as krakectl's config names them.
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca = write("ca.pem", &pki.ca_pem);
    let cert = write("client.pem", &pki.client_cert_pem);
    let key = write("client-key.pem", &pki.client_key_pem);
    let tls = TlsOptions::from_files(Some(&ca), Some(&cert), Some(&key)).unwrap();
    let client = Client::builder(&url).tls(tls).build().unwrap();
    assert_eq!(client.version().await.unwrap(), "1.0.1");
    let missing = TlsOptions::from_files(Some(&dir.path().join("nope.pem")), None, None);
    assert!(matches!(missing, Err(Error::Io { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_client_certificate_or_ca_the_connection_fails() {
    let server = TestServer::embedded().await;
    let pki = pki();
    let url = tls_front(&pki, backend_address(&server)).await;

    // The server demands a client certificate.
    let client = Client::builder(&url)
        .tls(TlsOptions::default().ca(pki.ca_pem.clone()))
        .build()
        .unwrap();
    let err = client.version().await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");

    // The platform's trust store does not know the test CA.
    let client = Client::builder(&url)
        .tls(
            TlsOptions::default().identity(pki.client_cert_pem.clone(), pki.client_key_pem.clone()),
        )
        .build()
        .unwrap();
    let err = client.version().await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");

    // Garbage is refused when building.
    let err = Client::builder(&url)
        .tls(TlsOptions::default().identity("not pem", "not pem"))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
}
