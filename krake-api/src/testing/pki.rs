//! Certificates for tests, made in the test (never committed keys).

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::tls::{TlsError, TlsFiles};

/// A certificate and its private key, in PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl Issued {
    /// Certificate and key in one PEM text (what `reqwest::Identity::from_pem` takes).
    pub fn identity_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
}

/// A throw-away certificate authority.
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA called `name`.
    ///
    /// # Panics
    ///
    /// If rcgen cannot make a key or certificate (a bug).
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("a CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("a CA certificate");
        TestCa { issuer }
    }

    /// The CA certificate.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(
        &self,
        common_name: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Issued {
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("a key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("a signed certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A client certificate whose subject common name is `user`.
    pub fn client(&self, user: &str) -> Issued {
        self.issue(user, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server(&self) -> Issued {
        self.issue(
            "system:api-server",
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// Writes a server certificate, its key and this CA (as the client CA)
    /// into `dir` and returns the files.
    ///
    /// # Panics
    ///
    /// If the files cannot be written.
    pub fn server_files(&self, dir: &Path) -> TlsFiles {
        let server = self.server();
        let files = TlsFiles {
            cert: dir.join("system:api-server.pem"),
            key: dir.join("system:api-server-key.pem"),
            client_ca: Some(dir.join("ca.pem")),
        };
        std::fs::write(&files.cert, &server.cert_pem).expect("write the certificate");
        std::fs::write(&files.key, &server.key_pem).expect("write the key");
        if let Some(ca) = &files.client_ca {
            std::fs::write(ca, self.cert_pem()).expect("write the CA");
        }
        files
    }

    /// An HTTP client that trusts only this CA and presents `identity` (a
    /// certificate of this or another CA) if given.
    ///
    /// # Panics
    ///
    /// If reqwest refuses the certificates (a bug).
    pub fn http_client(&self, identity: Option<&Issued>) -> reqwest::Client {
        let root = reqwest::Certificate::from_pem(self.cert_pem().as_bytes()).expect("the CA");
        let mut builder = reqwest::Client::builder().tls_certs_only([root]);
        if let Some(identity) = identity {
            let pem = identity.identity_pem();
            builder = builder
                .identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("the identity"));
        }
        builder.build().expect("an HTTP client")
    }

    /// A rustls server configuration with a certificate of this CA, asking
    /// clients for certificates of this CA.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let dir = tempfile::tempdir().map_err(|err| TlsError::Pem {
            what: "a temporary folder",
            path: std::env::temp_dir(),
            message: err.to_string(),
        })?;
        crate::tls::server_config(&self.server_files(dir.path()))
    }
}
