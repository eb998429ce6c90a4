//! Which certificates the XMPP and sign-in servers must present: the platform's own
//! verifier (the system's trust store, the user's added authorities, revocation where the
//! platform checks it) by default, or only the authorities in a PEM file the user names.
//! Certificate failures are typed, so the apps can say what is wrong in words.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_rustls::rustls::{self, CertificateError, ClientConfig, RootCertStore};

/// Which certificates the client trusts for the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsTrust {
    /// The platform's verifier (rustls-platform-verifier): Android's and Apple's trust
    /// stores and checks, the system's CA certificates on Linux.
    Platform,
    /// Only the CA certificates in this PEM file (a private server, or the test world).
    CaFile(PathBuf),
}

/// What is wrong with a server's certificate, in words a user can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertificateProblem {
    #[error("it is not signed by an authority this device trusts")]
    UnknownIssuer,
    #[error("it has expired (or this device's clock is wrong)")]
    Expired,
    #[error("it is not valid yet (or this device's clock is wrong)")]
    NotYetValid,
    #[error("it was issued for another name")]
    WrongName,
    #[error("it has been revoked")]
    Revoked,
    #[error("the CA file cannot be used: {0}")]
    CaFile(String),
    #[error("{0}")]
    Other(String),
}

impl CertificateProblem {
    /// The problem a TLS error describes.
    pub fn from_tls(e: &rustls::Error) -> CertificateProblem {
        match e {
            rustls::Error::InvalidCertificate(problem) => match problem {
                CertificateError::UnknownIssuer => CertificateProblem::UnknownIssuer,
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    CertificateProblem::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    CertificateProblem::NotYetValid
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => CertificateProblem::WrongName,
                CertificateError::Revoked => CertificateProblem::Revoked,
                other => CertificateProblem::Other(format!("{other:?}")),
            },
            other => CertificateProblem::Other(other.to_string()),
        }
    }
}

/// Set once the platform verifier can work: always, except on Android, where the app must
/// hand it the JVM and a Context first (`rustls_platform_verifier::android::init_*`). Until
/// then Android checks against the public web roots rather than panicking in the verifier.
static PLATFORM_READY: AtomicBool = AtomicBool::new(!cfg!(target_os = "android"));

/// The app initialised the platform verifier (Android).
pub fn platform_verifier_ready() {
    PLATFORM_READY.store(true, Ordering::SeqCst);
}

/// Builds the TLS client configuration (ring provider).
pub fn tls_config(trust: &TlsTrust) -> Result<Arc<ClientConfig>, CertificateProblem> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| CertificateProblem::Other(e.to_string()))?;
    let config = match trust {
        TlsTrust::Platform if PLATFORM_READY.load(Ordering::SeqCst) => {
            let verifier = rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| CertificateProblem::Other(e.to_string()))?;
            builder
                .dangerous()
                // The platform's own verifier, not a relaxed one: "dangerous" only because
                // rustls cannot check a verifier it did not build.
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        TlsTrust::Platform => {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsTrust::CaFile(path) => {
            let bad = |e: String| CertificateProblem::CaFile(format!("{}: {e}", path.display()));
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("no certificate in the file".into()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_errors_are_told_apart() {
        let invalid = |e| rustls::Error::InvalidCertificate(e);
        assert_eq!(
            CertificateProblem::from_tls(&invalid(CertificateError::UnknownIssuer)),
            CertificateProblem::UnknownIssuer
        );
        assert_eq!(
            CertificateProblem::from_tls(&invalid(CertificateError::Expired)),
            CertificateProblem::Expired
        );
        assert_eq!(
            CertificateProblem::from_tls(&invalid(CertificateError::NotValidForName)),
            CertificateProblem::WrongName
        );
        assert!(CertificateProblem::UnknownIssuer
            .to_string()
            .contains("not signed by an authority"));
    }

    #[test]
    fn a_ca_file_that_cannot_be_used_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for path in [empty, dir.path().join("missing.pem")] {
            let got = tls_config(&TlsTrust::CaFile(path));
            assert!(matches!(got, Err(CertificateProblem::CaFile(_))), "{got:?}");
        }
        assert!(tls_config(&TlsTrust::Platform).is_ok());
    }
}
