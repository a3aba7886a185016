//! TLS settings of a [`Client`](crate::Client): the CA that signs the API's
//! certificate and the client certificate the API authenticates.
//!
//! TLS is rustls with the aws-lc-rs provider. Without a CA the platform's
//! trust store is used; with one, only that CA is trusted (as Krake's
//! `client_ca`).

use std::path::Path;

use crate::error::{Error, Result};

/// PEM material for TLS. Build it from files with [`TlsOptions::from_files`]
/// or from memory with the builders.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// The CA certificate(s) to trust, PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate (chain), PEM.
    pub client_cert_pem: Option<Vec<u8>>,
    /// The client certificate's private key, PEM.
    pub client_key_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field(
                "client_cert_pem",
                &self.client_cert_pem.as_ref().map(Vec::len),
            )
            .field(
                "client_key_pem",
                &self.client_key_pem.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

impl TlsOptions {
    /// Options from PEM files, as krakectl's `tls.client_ca`, `tls.client_cert`
    /// and `tls.client_key` name them.
    pub fn from_files(
        ca: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<Self> {
        Ok(TlsOptions {
            ca_pem: ca.map(read).transpose()?,
            client_cert_pem: client_cert.map(read).transpose()?,
            client_key_pem: client_key.map(read).transpose()?,
        })
    }

    /// Trust only the CA(s) in `pem`.
    #[must_use]
    pub fn ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Authenticate with this certificate and key.
    #[must_use]
    pub fn identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.client_cert_pem = Some(cert_pem.into());
        self.client_key_pem = Some(key_pem.into());
        self
    }

    /// Applies the options to a reqwest client builder.
    pub(crate) fn apply(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder> {
        builder = builder.tls_backend_rustls();
        if let Some(pem) = &self.ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|source| Error::Tls {
                    what: "CA certificate".to_owned(),
                    source,
                })?;
            builder = builder.tls_certs_only(certs);
        }
        match (&self.client_cert_pem, &self.client_key_pem) {
            (Some(cert), Some(key)) => {
                let mut pem = cert.clone();
                pem.push(b'\n');
                pem.extend_from_slice(key);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|source| Error::Tls {
                    what: "client certificate and key".to_owned(),
                    source,
                })?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::IncompleteIdentity);
            }
        }
        Ok(builder)
    }
}
