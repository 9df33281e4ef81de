//! TLS for the MQTT connection: a rustls client configuration built from the PEM files of
//! `--mqtt_ca`, `--mqtt_client_cert` and `--mqtt_client_key`.
//!
//! The same code runs at start-up (an invalid file is a usage error naming the flag) and on
//! every certificate reload (an invalid file keeps the current connection), so both agree
//! on what "valid" means: every file readable, certificates and key parseable, and the key
//! belonging to the certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::tokio_rustls::rustls::pki_types::pem::PemObject;
use rumqttc::tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rumqttc::tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// Which files make up the TLS setup. `ca: None` means the system's root certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    /// Client certificate and key for mutual TLS (both or neither).
    pub client: Option<(PathBuf, PathBuf)>,
}

/// The contents of the files, read at one moment. Reloads compare snapshots to notice a
/// change, and build from the snapshot they compared, so what is checked is what is used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSnapshot {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Why the files cannot be used; each names the flag and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag}: cannot read {path}: {error}")]
    Unreadable {
        flag: &'static str,
        path: String,
        error: std::io::Error,
    },
    #[error("{flag}: {path} is not a valid PEM file: {reason}")]
    Invalid {
        flag: &'static str,
        path: String,
        reason: String,
    },
    #[error(
        "--mqtt_client_cert and --mqtt_client_key do not belong together ({cert} and {key}): {reason}"
    )]
    KeyMismatch {
        cert: String,
        key: String,
        reason: String,
    },
    #[error(
        "no system root certificates could be loaded: give the broker's CA certificate with --mqtt_ca"
    )]
    NoSystemRoots,
    #[error("cannot set up TLS: {0}")]
    Setup(String),
}

const CA_FLAG: &str = "--mqtt_ca";
const CERT_FLAG: &str = "--mqtt_client_cert";
const KEY_FLAG: &str = "--mqtt_client_key";

impl TlsFiles {
    /// Reads every file; fails naming the first one that cannot be read.
    pub fn read(&self) -> Result<TlsSnapshot, TlsError> {
        let ca = self
            .ca
            .as_deref()
            .map(|p| read_file(CA_FLAG, p))
            .transpose()?;
        let client = match &self.client {
            Some((cert, key)) => Some((read_file(CERT_FLAG, cert)?, read_file(KEY_FLAG, key)?)),
            None => None,
        };
        Ok(TlsSnapshot { ca, client })
    }

    /// Reads and checks the files and builds the client configuration from them.
    pub fn load(&self) -> Result<(TlsSnapshot, Arc<ClientConfig>), TlsError> {
        let snapshot = self.read()?;
        let config = snapshot.client_config(self)?;
        Ok((snapshot, config))
    }

    /// The files, for log lines.
    pub fn describe(&self) -> String {
        let mut names: Vec<String> = Vec::new();
        if let Some(ca) = &self.ca {
            names.push(ca.display().to_string());
        }
        if let Some((cert, key)) = &self.client {
            names.push(cert.display().to_string());
            names.push(key.display().to_string());
        }
        names.join(", ")
    }
}

impl TlsSnapshot {
    /// The rustls configuration for these contents; `files` only names them in errors.
    pub fn client_config(&self, files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
        let mut roots = RootCertStore::empty();
        match (&self.ca, &files.ca) {
            (Some(pem), Some(path)) => {
                for cert in certificates(CA_FLAG, path, pem)? {
                    roots.add(cert).map_err(|e| invalid(CA_FLAG, path, e))?;
                }
            }
            _ => {
                // Certificates the system store cannot parse are skipped, as browsers do.
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    return Err(TlsError::NoSystemRoots);
                }
            }
        }
        // One explicit provider, so the process-wide default (which is ambiguous when
        // several are compiled in) never matters.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_root_certificates(roots);
        let config = match (&self.client, &files.client) {
            (Some((cert_pem, key_pem)), Some((cert_path, key_path))) => {
                let chain = certificates(CERT_FLAG, cert_path, cert_pem)?;
                let key = PrivateKeyDer::from_pem_slice(key_pem)
                    .map_err(|e| invalid(KEY_FLAG, key_path, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::KeyMismatch {
                        cert: cert_path.display().to_string(),
                        key: key_path.display().to_string(),
                        reason: e.to_string(),
                    })?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

fn read_file(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::Unreadable {
        flag,
        path: path.display().to_string(),
        error,
    })
}

fn certificates(
    flag: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(flag, path, e))?;
    if certs.is_empty() {
        return Err(invalid(flag, path, "no certificate in it"));
    }
    Ok(certs)
}

fn invalid(flag: &'static str, path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        flag,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn generate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (
            write(dir, "ca.pem", &ca_cert.pem()),
            write(dir, "client.pem", &cert.pem()),
            write(dir, "client.key", &key.serialize_pem()),
        )
    }

    #[test]
    fn valid_files_build_a_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = generate(dir.path());
        let files = TlsFiles {
            ca: Some(ca),
            client: Some((cert, key)),
        };
        assert!(files.load().is_ok());
    }

    #[test]
    fn each_kind_of_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = generate(dir.path());
        let garbage = write(dir.path(), "garbage.pem", "not a certificate");
        let other_dir = tempfile::tempdir().unwrap();
        let (_, _, other_key) = generate(other_dir.path());
        let cases = [
            (
                TlsFiles {
                    ca: Some(dir.path().join("missing.pem")),
                    client: None,
                },
                "--mqtt_ca: cannot read",
            ),
            (
                TlsFiles {
                    ca: Some(garbage.clone()),
                    client: None,
                },
                "--mqtt_ca:",
            ),
            (
                TlsFiles {
                    ca: Some(ca.clone()),
                    client: Some((garbage.clone(), key.clone())),
                },
                "--mqtt_client_cert:",
            ),
            (
                TlsFiles {
                    ca: Some(ca.clone()),
                    client: Some((cert.clone(), garbage)),
                },
                "--mqtt_client_key:",
            ),
            (
                TlsFiles {
                    ca: Some(ca),
                    client: Some((cert, other_key)),
                },
                "do not belong together",
            ),
        ];
        for (files, expected) in cases {
            let error = files.load().unwrap_err().to_string();
            assert!(error.contains(expected), "{expected:?} not in {error:?}");
        }
    }
}
