//! HTTPS to ilert: the agent checks ilert's certificate against the system's CA store, and
//! `SSL_CERT_FILE` (or `SSL_CERT_DIR`) points it at another one, as for most TLS clients on
//! Linux. The stand-in plays ilert behind a TLS listener with a test CA's certificate.

mod common;

use std::sync::Arc;

use common::run_ilagent;
use ilert_standin::StandIn;
use rumqttc::tokio_rustls::TlsAcceptor;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use testkit::TestCerts;
use tokio::net::{TcpListener, TcpStream};

/// A TLS listener on 127.0.0.1 with `certs`' server certificate that forwards what each
/// connection carries to `backend` in plain text; its port.
async fn tls_front(certs: &TestCerts, backend: u16) -> u16 {
    let chain: Vec<CertificateDer> = CertificateDer::pem_file_iter(&certs.server_cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&certs.server_key).unwrap();
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut plain) = TcpStream::connect(("127.0.0.1", backend)).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    port
}

fn stand_in_port(stand_in: &StandIn) -> u16 {
    reqwest::Url::parse(&stand_in.url())
        .unwrap()
        .port()
        .unwrap()
}

/// The stand-in behind a TLS front whose certificate the returned CA signed, and the
/// front's URL.
async fn ilert_over_https() -> (StandIn, TestCerts, String) {
    let stand_in = StandIn::start().await.unwrap();
    let certs = TestCerts::generate().unwrap();
    let port = tls_front(&certs, stand_in_port(&stand_in)).await;
    (stand_in, certs, format!("https://127.0.0.1:{port}"))
}

fn event_args(url: &str) -> Vec<String> {
    [
        "event",
        "-k",
        "il1api0123456789",
        "-s",
        "over https",
        "--timeout",
        "2s",
        "--ilert_url",
        url,
    ]
    .map(str::to_string)
    .to_vec()
}

#[tokio::test]
async fn an_event_reaches_ilert_over_https_when_ssl_cert_file_trusts_its_ca() {
    let (stand_in, certs, url) = ilert_over_https().await;
    let args = event_args(&url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ca = certs.ca.display().to_string();

    let (code, _, stderr) = run_ilagent(&args, &[("SSL_CERT_FILE", &ca)]).await;

    assert_eq!(code, Some(0), "{stderr}");
    let events = stand_in.events();
    assert_eq!(events.len(), 1, "{stderr}");
    assert_eq!(events[0]["summary"], "over https");
}

#[tokio::test]
async fn a_certificate_the_system_store_does_not_trust_is_refused_and_nothing_is_sent() {
    let (stand_in, _certs, url) = ilert_over_https().await;
    let args = event_args(&url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // A store with another CA in it: the front's certificate has an unknown issuer.
    let other = TestCerts::generate().unwrap();
    let other_ca = other.ca.display().to_string();

    let (code, _, stderr) = run_ilagent(&args, &[("SSL_CERT_FILE", &other_ca)]).await;

    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(stand_in.requests().is_empty());
}
