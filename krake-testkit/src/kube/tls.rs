//! The certificates of one fake: its own CA, a server certificate for
//! `127.0.0.1`/`localhost`, a client certificate the CA signed, and a
//! second, unrelated CA for the wrong-CA kubeconfig.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;

use super::FakeError;

/// PEM material for kubeconfigs, and the server's TLS configuration.
#[derive(Debug)]
pub(crate) struct Pki {
    /// The CA that signed the server and client certificates (PEM).
    pub ca_pem: String,
    /// The CA's private key (PKCS#8 PEM), for fakes that issue client
    /// certificates this cluster trusts (`krake_testkit::openstack`).
    pub ca_key_pem: String,
    /// A CA that signed nothing here (PEM).
    pub wrong_ca_pem: String,
    /// The client certificate (PEM), CN `krake-testkit`, O `system:masters`.
    pub client_cert_pem: String,
    /// The client key (PKCS#8 PEM).
    pub client_key_pem: String,
    /// The server's TLS configuration: client certificates optional.
    pub server: Arc<ServerConfig>,
}

fn tls_err(e: impl std::fmt::Display) -> FakeError {
    FakeError::Tls(e.to_string())
}

fn ca_params(name: &str) -> Result<CertificateParams, FakeError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

impl Pki {
    /// Generates everything afresh.
    pub(crate) fn generate() -> Result<Self, FakeError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());

        let ca_key = KeyPair::generate().map_err(tls_err)?;
        let ca_params = ca_params("krake-testkit-fake-kube-ca")?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(tls_err)?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca_params, ca_key);

        let wrong_key = KeyPair::generate().map_err(tls_err)?;
        let wrong_cert = self::ca_params("krake-testkit-fake-kube-ca")?
            .self_signed(&wrong_key)
            .map_err(tls_err)?;

        let server_key = KeyPair::generate().map_err(tls_err)?;
        let mut server_params = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "::1".to_string(),
        ])
        .map_err(tls_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        server_params.distinguished_name = dn;
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .map_err(tls_err)?;

        let client_key = KeyPair::generate().map_err(tls_err)?;
        let mut client_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "krake-testkit");
        dn.push(DnType::OrganizationName, "system:masters");
        client_params.distinguished_name = dn;
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params
            .signed_by(&client_key, &issuer)
            .map_err(tls_err)?;

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone()).map_err(tls_err)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(tls_err)?;
        let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(tls_err)?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];

        Ok(Self {
            ca_pem: ca_cert.pem(),
            ca_key_pem,
            wrong_ca_pem: wrong_cert.pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            server: Arc::new(server),
        })
    }
}
