//! TLS to etcd: [`EtcdTls`], the CA that signed the members' certificates
//! and the client certificate etcd asks for (`--client-cert-auth`).
//!
//! TLS is rustls with the aws-lc-rs provider (etcd-client's `tls-aws-lc`),
//! the same stack as the rest of the workspace.

use std::fmt;
use std::path::Path;

/// Why [`EtcdTls::from_files`] failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdTlsError {
    /// A file could not be read.
    #[error("cannot read the etcd {what} {path}: {source}")]
    Read {
        /// Which file (`CA certificate`, `client certificate`, `client key`).
        what: &'static str,
        /// Its path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no PEM block of the expected kind.
    #[error("the etcd {what} {path} is not PEM (no \"-----BEGIN {label}\" line)")]
    NotPem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: String,
        /// What the PEM block should be (`CERTIFICATE`, `PRIVATE KEY`).
        label: &'static str,
    },
    /// A client certificate without a key, or a key without a certificate.
    #[error(
        "an etcd client certificate needs its key and a key its certificate (got only the {given})"
    )]
    Incomplete {
        /// The one that was given.
        given: &'static str,
    },
}

/// TLS settings for `https://` etcd endpoints: the CA that signed the
/// members' server certificates and, for etcd started with
/// `--client-cert-auth`, a client certificate and key (PEM text).
///
/// Its `Debug` output leaves the key out.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdTls {
    ca_pem: String,
    client: Option<(String, String)>,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .field("client_certificate", &self.client.is_some())
            .finish()
    }
}

impl EtcdTls {
    /// TLS that trusts the CA certificates in `ca_pem` (PEM), without a
    /// client certificate.
    pub fn new(ca_pem: impl Into<String>) -> Self {
        EtcdTls {
            ca_pem: ca_pem.into(),
            client: None,
        }
    }

    /// The same, presenting the client certificate `cert_pem` with its key
    /// `key_pem` (PEM; PKCS#8, PKCS#1 or SEC1).
    #[must_use]
    pub fn with_client_certificate(
        mut self,
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> Self {
        self.client = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Reads the CA certificate and, when given, the client certificate and
    /// key from PEM files, checking that each holds PEM of its kind and that
    /// a certificate comes with its key.
    pub fn from_files(
        ca: &Path,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<Self, EtcdTlsError> {
        let ca_pem = read_pem(ca, "CA certificate", "CERTIFICATE")?;
        let tls = EtcdTls::new(ca_pem);
        match (client_cert, client_key) {
            (None, None) => Ok(tls),
            (Some(cert), Some(key)) => Ok(tls.with_client_certificate(
                read_pem(cert, "client certificate", "CERTIFICATE")?,
                read_pem(key, "client key", "PRIVATE KEY")?,
            )),
            (Some(_), None) => Err(EtcdTlsError::Incomplete {
                given: "certificate",
            }),
            (None, Some(_)) => Err(EtcdTlsError::Incomplete { given: "key" }),
        }
    }

    /// True if a client certificate is presented.
    pub fn has_client_certificate(&self) -> bool {
        self.client.is_some()
    }

    /// The etcd-client TLS options.
    pub(super) fn client_options(&self) -> etcd_client::TlsOptions {
        let mut options = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.client {
            options = options.identity(etcd_client::Identity::from_pem(cert, key));
        }
        options
    }
}

/// The text of the PEM file at `path`, which must hold a block whose label
/// ends with `label` (`PRIVATE KEY` also matches `RSA PRIVATE KEY` and
/// `EC PRIVATE KEY`).
fn read_pem(path: &Path, what: &'static str, label: &'static str) -> Result<String, EtcdTlsError> {
    let text = std::fs::read_to_string(path).map_err(|source| EtcdTlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })?;
    let pem = text.lines().any(|line| {
        line.strip_prefix("-----BEGIN ")
            .and_then(|rest| rest.strip_suffix("-----"))
            .is_some_and(|found| found.ends_with(label))
    });
    if pem {
        Ok(text)
    } else {
        Err(EtcdTlsError::NotPem {
            what,
            path: path.display().to_string(),
            label,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let key = dir.path().join("key.pem");
        let junk = dir.path().join("junk");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        std::fs::write(
            &key,
            "-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        std::fs::write(&junk, "hello").unwrap();

        let tls = EtcdTls::from_files(&ca, None, None).unwrap();
        assert!(!tls.has_client_certificate());
        let tls = EtcdTls::from_files(&ca, Some(&ca), Some(&key)).unwrap();
        assert!(tls.has_client_certificate());
        assert!(!format!("{tls:?}").contains("PRIVATE"));

        let error = EtcdTls::from_files(&junk, None, None).unwrap_err();
        assert!(error.to_string().contains("is not PEM"), "{error}");
        let error = EtcdTls::from_files(&ca, Some(&key), Some(&key)).unwrap_err();
        assert!(error.to_string().contains("client certificate"), "{error}");
        let error = EtcdTls::from_files(&ca, Some(&ca), None).unwrap_err();
        assert!(matches!(error, EtcdTlsError::Incomplete { .. }), "{error}");
        let error = EtcdTls::from_files(&dir.path().join("none"), None, None).unwrap_err();
        assert!(matches!(error, EtcdTlsError::Read { .. }), "{error}");
    }
}
