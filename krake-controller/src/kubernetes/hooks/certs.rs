//! The client certificates of the hooks: with `intermediate_src` and
//! `intermediate_key_src` configured, every application gets, per hook, a
//! certificate whose subject common name is the hook's user
//! (`system:complete-hook`, `system:shutdown-hook`), signed by that
//! intermediate CA and valid for one year, so that it can call its hook on
//! an API that wants client certificates (the base roles let that user do
//! exactly `update applications/complete`, or `applications/shutdown`).
//!
//! Unlike Krake (RSA-2048), the key is ECDSA P-256. `cert.pem` holds the
//! certificate followed by the intermediate, so that a client presenting it
//! is verified by an API that trusts only the root CA.
//!
//! ```
//! use krake_controller::kubernetes::hooks::certs::HookCa;
//! # fn intermediate() -> (String, String) {
//! #     use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
//! #     let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
//! #     params.distinguished_name.push(DnType::CommonName, "intermediate");
//! #     params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
//! #     let key = KeyPair::generate().unwrap();
//! #     let cert = params.self_signed(&key).unwrap();
//! #     (cert.pem(), key.serialize_pem())
//! # }
//! let (cert_pem, key_pem) = intermediate();
//! let ca = HookCa::from_pem(&cert_pem, &key_pem, None).unwrap();
//! let issued = ca.issue("system:complete-hook").unwrap();
//! assert!(issued.cert_pem.contains("BEGIN CERTIFICATE"));
//! assert!(ca.ca_bundle().contains(cert_pem.trim()));
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use chrono::Datelike;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};

/// Why the intermediate CA cannot be used or a certificate not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The intermediate certificate or key is not usable.
    #[error("{what}: {message}")]
    Invalid {
        /// Which file or text.
        what: String,
        /// Why.
        message: String,
    },
    /// The key does not belong to the certificate.
    #[error("the key {key} does not belong to the certificate {cert}")]
    KeyMismatch {
        /// The certificate.
        cert: String,
        /// The key.
        key: String,
    },
    /// Making a certificate failed.
    #[error("cannot make a hook certificate: {0}")]
    Issue(String),
}

/// A certificate and its private key, in PEM, as kept in the application's
/// status (`complete_cert`/`complete_key`, `shutdown_cert`/`shutdown_key`).
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The certificate, followed by the intermediate that signed it.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The intermediate CA that signs the hooks' certificates
/// (`intermediate_src`, `intermediate_key_src`).
pub struct HookCa {
    issuer: Issuer<'static, KeyPair>,
    intermediate_pem: String,
    ca_bundle: String,
}

impl fmt::Debug for HookCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookCa")
            .field("intermediate_pem", &self.intermediate_pem)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

impl HookCa {
    /// Reads the intermediate CA's certificate and key, and the CA of the
    /// Krake API (`krake_ca`, put into `ca-bundle.pem` before the
    /// intermediate, as Krake does). Fails when a file cannot be read, is
    /// not PEM, or the key does not belong to the certificate.
    pub fn load(cert: &Path, key: &Path, krake_ca: Option<&Path>) -> Result<Self, CertError> {
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let krake_ca_pem = krake_ca.map(read).transpose()?;
        HookCa::parse(
            &cert_pem,
            &cert.display().to_string(),
            &key_pem,
            &key.display().to_string(),
            krake_ca_pem.as_deref(),
        )
    }

    /// As [`HookCa::load`], from PEM texts.
    pub fn from_pem(
        cert_pem: &str,
        key_pem: &str,
        krake_ca_pem: Option<&str>,
    ) -> Result<Self, CertError> {
        HookCa::parse(
            cert_pem,
            "the intermediate certificate",
            key_pem,
            "the intermediate key",
            krake_ca_pem,
        )
    }

    fn parse(
        cert_pem: &str,
        cert_name: &str,
        key_pem: &str,
        key_name: &str,
        krake_ca_pem: Option<&str>,
    ) -> Result<Self, CertError> {
        let invalid = |what: &str, message: String| CertError::Invalid {
            what: what.to_owned(),
            message,
        };
        let key = KeyPair::from_pem(key_pem)
            .map_err(|err| invalid(key_name, format!("not a usable private key ({err})")))?;
        let der = pem_der(cert_pem)
            .ok_or_else(|| invalid(cert_name, "no PEM certificate in it".into()))?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|err| invalid(cert_name, format!("not a certificate ({err})")))?;
        if parsed.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
            return Err(CertError::KeyMismatch {
                cert: cert_name.to_owned(),
                key: key_name.to_owned(),
            });
        }
        if !parsed.is_ca() {
            return Err(invalid(cert_name, "not a CA certificate".into()));
        }
        let issuer = Issuer::from_ca_cert_der(&der.into(), key)
            .map_err(|err| invalid(cert_name, format!("not usable as an issuer ({err})")))?;
        let intermediate_pem = ensure_newline(cert_pem);
        let mut ca_bundle = krake_ca_pem.map(ensure_newline).unwrap_or_default();
        ca_bundle.push_str(&intermediate_pem);
        let ca = HookCa {
            issuer,
            intermediate_pem,
            ca_bundle,
        };
        // A certificate that cannot be made shows now, not at the first
        // application.
        ca.issue("system:hook-check")?;
        Ok(ca)
    }

    /// `ca-bundle.pem` of the hook's Secret: the Krake CA (if given), then
    /// the intermediate.
    pub fn ca_bundle(&self) -> &str {
        &self.ca_bundle
    }

    /// A client certificate for `user` (subject common name), valid from
    /// today for one year, signed by the intermediate.
    pub fn issue(&self, user: &str) -> Result<IssuedCert, CertError> {
        let issue = |err: rcgen::Error| CertError::Issue(err.to_string());
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(issue)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, user);
        params.distinguished_name = name;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let today = chrono::Utc::now().date_naive();
        let (year, month, day) = (today.year(), today.month() as u8, today.day() as u8);
        params.not_before = rcgen::date_time_ymd(year, month, day);
        // 29 February has no anniversary next year.
        let day_next_year = if month == 2 && day == 29 { 28 } else { day };
        params.not_after = rcgen::date_time_ymd(year + 1, month, day_next_year);
        let key = KeyPair::generate().map_err(issue)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(issue)?;
        Ok(IssuedCert {
            cert_pem: format!("{}{}", ensure_newline(&cert.pem()), self.intermediate_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

fn ensure_newline(text: &str) -> String {
    let mut text = text.trim().to_owned();
    text.push('\n');
    text
}

/// The DER of the first `CERTIFICATE` block of `text`.
fn pem_der(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let start = text.find(begin)? + begin.len();
    let stop = start + text[start..].find(end)?;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use rcgen::{BasicConstraints, CertifiedIssuer, IsCa};
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::WebPkiClientVerifier;

    use super::*;

    fn ca(name: &str, parent: Option<&CertifiedIssuer<'static, KeyPair>>) -> (String, KeyPair) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = match parent {
            Some(parent) => params.signed_by(&key, parent).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        (cert.pem(), key)
    }

    fn new_root() -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
        let mut out = Vec::new();
        let mut rest = pem;
        while let Some(der) = pem_der(rest) {
            out.push(CertificateDer::from(der));
            let end = "-----END CERTIFICATE-----";
            rest = &rest[rest.find(end).unwrap() + end.len()..];
        }
        out
    }

    /// The issued certificate verifies as a client certificate against the
    /// root that signed the intermediate (the chain is in `cert.pem`) and
    /// names the hook user.
    #[test]
    fn certificates_verify_against_the_intermediate_and_name_the_user() {
        let root = new_root();
        let (intermediate, key) = ca("intermediate", Some(&root));
        let ca = HookCa::from_pem(&intermediate, &key.serialize_pem(), Some(&root.pem())).unwrap();
        let issued = ca.issue("system:complete-hook").unwrap();
        let chain = ders(&issued.cert_pem);
        assert_eq!(chain.len(), 2, "certificate, then intermediate");

        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ders(&root.pem()).remove(0)).unwrap();
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .unwrap();
        // Against the intermediate alone as the trust anchor, too.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ders(&intermediate).remove(0)).unwrap();
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        verifier
            .verify_client_cert(&chain[0], &[], UnixTime::now())
            .unwrap();
        // Another CA's certificate does not verify.
        let other = new_root();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ders(&other.pem()).remove(0)).unwrap();
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        assert!(
            verifier
                .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
                .is_err()
        );

        let (_, parsed) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        let cn: Vec<&str> = parsed
            .subject()
            .iter_common_name()
            .map(|cn| cn.as_str().unwrap())
            .collect();
        assert_eq!(cn, ["system:complete-hook"]);
        let validity = parsed.validity();
        let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / 86_400;
        assert!((365..=366).contains(&days), "{days} days");
        // The key belongs to the certificate.
        let key = KeyPair::from_pem(&issued.key_pem).unwrap();
        assert_eq!(
            parsed.tbs_certificate.subject_pki.raw,
            key.subject_public_key_info().as_slice()
        );
        // ca-bundle.pem: the Krake CA, then the intermediate.
        assert_eq!(ders(ca.ca_bundle()).len(), 2);
        assert!(ca.ca_bundle().starts_with(root.pem().trim()));
    }

    #[test]
    fn an_unusable_intermediate_is_a_clear_error() {
        let (intermediate, key) = ca("intermediate", None);
        let (_, other_key) = ca("other", None);
        let err = HookCa::from_pem(&intermediate, &other_key.serialize_pem(), None).unwrap_err();
        assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
        let err = HookCa::from_pem("garbage", &key.serialize_pem(), None).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let err = HookCa::from_pem(&intermediate, "garbage", None).unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
        let err = HookCa::load(
            Path::new("/nonexistent/ca.pem"),
            Path::new("/nonexistent/ca-key.pem"),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
