//! Certificates for TLS and mTLS tests, generated at test time.
//!
//! Checked-in certificates expire and tempt reuse of private keys; generating a fresh CA, a
//! server certificate for 127.0.0.1/localhost and a client certificate per test costs
//! milliseconds and keeps every test self-contained. The files are PEM, as Mosquitto,
//! librdkafka and rustls all read them.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

use crate::mosquitto::TlsFiles;

/// The common name of the client certificate made by [`TestCerts::generate`] (what Mosquitto's
/// `use_identity_as_username` turns into the username).
pub const CLIENT_COMMON_NAME: &str = "testkit-client";

/// A CA, a server certificate for `127.0.0.1` and `localhost`, and a client certificate, all
/// signed by the CA, as PEM files in a temp dir that is removed on drop.
///
/// Keys are ECDSA P-256 in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
#[derive(Debug)]
pub struct TestCerts {
    pub dir: TempDir,
    /// The CA certificate (trust anchor for both sides).
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TestCerts {
    /// Generates a fresh CA and certificates into a new temp dir.
    pub fn generate() -> anyhow::Result<TestCerts> {
        let dir = tempfile::Builder::new()
            .prefix("testkit-certs-")
            .tempdir()
            .context("creating a temp dir for certificates")?;

        let ca_key = KeyPair::generate().context("generating the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.distinguished_name = common_name("testkit test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("self-signing the CA certificate")?;
        let ca = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().context("generating the server key")?;
        let mut server_params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        server_params.distinguished_name = common_name("localhost");
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params
            .signed_by(&server_key, &ca)
            .context("signing the server certificate")?;

        let client_key = KeyPair::generate().context("generating the client key")?;
        let mut client_params = CertificateParams::new(Vec::<String>::new())?;
        client_params.distinguished_name = common_name(CLIENT_COMMON_NAME);
        client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params
            .signed_by(&client_key, &ca)
            .context("signing the client certificate")?;

        let path = |name: &str| dir.path().join(name);
        let certs = TestCerts {
            ca: path("ca.pem"),
            server_cert: path("server.pem"),
            server_key: path("server.key"),
            client_cert: path("client.pem"),
            client_key: path("client.key"),
            dir,
        };
        write(&certs.ca, &ca_cert.pem())?;
        write(&certs.server_cert, &server_cert.pem())?;
        write(&certs.server_key, &server_key.serialize_pem())?;
        write(&certs.client_cert, &client_cert.pem())?;
        write(&certs.client_key, &client_key.serialize_pem())?;
        Ok(certs)
    }

    /// A Mosquitto TLS listener with the server certificate; with `require_client_cert`, clients
    /// must present a certificate signed by the CA.
    pub fn mosquitto_tls(&self, require_client_cert: bool) -> TlsFiles {
        TlsFiles {
            cert_file: self.server_cert.clone(),
            key_file: self.server_key.clone(),
            client_ca: require_client_cert.then(|| self.ca.clone()),
        }
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn write(path: &Path, pem: &str) -> anyhow::Result<()> {
    fs::write(path, pem).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn openssl_verify(ca: &Path, cert: &Path, purpose: &str) -> std::process::Output {
        Command::new("openssl")
            .args(["verify", "-purpose", purpose, "-CAfile"])
            .arg(ca)
            .arg(cert)
            .output()
            .unwrap()
    }

    #[test]
    fn generated_certificates_verify_against_the_generated_ca() {
        let certs = TestCerts::generate().unwrap();
        for (cert, purpose) in [
            (&certs.server_cert, "sslserver"),
            (&certs.client_cert, "sslclient"),
        ] {
            let out = openssl_verify(&certs.ca, cert, purpose);
            assert!(
                out.status.success(),
                "{} does not verify as {purpose}: {}{}",
                cert.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for key in [&certs.server_key, &certs.client_key] {
            let text = fs::read_to_string(key).unwrap();
            assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
        }
    }

    #[test]
    fn a_certificate_does_not_verify_against_another_ca() {
        let one = TestCerts::generate().unwrap();
        let other = TestCerts::generate().unwrap();
        let out = openssl_verify(&other.ca, &one.server_cert, "sslserver");
        assert!(!out.status.success(), "verified against a foreign CA");
    }

    #[test]
    fn the_server_certificate_names_loopback_and_localhost() {
        let certs = TestCerts::generate().unwrap();
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(&certs.server_cert)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("IP Address:127.0.0.1"), "{text}");
        assert!(text.contains("DNS:localhost"), "{text}");
    }
}
