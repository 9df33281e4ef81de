//! HTTP clients for tests and tools that talk to the agent and the stand-in.
//!
//! The workspace builds reqwest with rustls and no crypto provider of its own (the agent
//! chooses ring, see its `ilert::client`), so a client can only be built once a provider is
//! installed: this does that first.

/// A reqwest client builder, with ring installed as the process's TLS crypto provider.
pub fn http_client() -> reqwest::ClientBuilder {
    // An error only says a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
