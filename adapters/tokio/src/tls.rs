//! TLS for the RPC transports (`wss://{ip:port}/ws` and `https://{ip:port}/`), on rustls with
//! the ring provider (docs/protocol.md §11).
//!
//! * A server ([`TlsServerConfig`]) has a certificate chain and key and **requires** a client
//!   certificate signed by a given CA (mutual TLS; a client without one, or with one from
//!   another CA, fails the handshake). An optional hook ([`TlsServerConfig::verify_client`])
//!   then accepts or rejects each client by its certificate, like the `verifyClient` of
//!   grenache-nodejs-ws: a rejected WebSocket upgrade is answered `401 Forbidden` (as Node's
//!   `cb(false, 401, 'Forbidden')`), a rejected HTTPS request `401` with body `Forbidden`.
//! * Handlers see the client's certificate as [`CertInfo`] in [`crate::Request::cert`], with
//!   the SHA-1 fingerprint formatted as Node's `getPeerCertificate().fingerprint`
//!   (`AA:BB:…`, uppercase, colon-separated).
//! * A client ([`TlsClientConfig`]) trusts a CA and presents a client certificate. Dests are
//!   IPs, so the server certificate must carry the IP in its subjectAltName (as Node's
//!   default `rejectUnauthorized: true`); no SNI is sent for an IP.
//!
//! Tested against Node's `secure` mode of grenache-nodejs-ws 1.0.0 and grenache-nodejs-http
//! 1.0.2 both ways (adapters/tokio/tests/tls.rs), fingerprints included. The deprecated
//! grenache-nodejs-ws-tls is not among the pinned Node packages; its wire is the same.
//!
//! Not done here: Node's `rejectUnauthorized: false` (no verification), and a server that
//! serves clients without a certificate. Pub/Sub has no TLS in Node either.

use std::fmt;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
/// The rustls this crate is built with, for [`TlsServerConfig::from_rustls`] and
/// [`TlsClientConfig::from_rustls`]: build those configurations with these types, so that no
/// second, mismatched rustls version is needed.
pub use tokio_rustls::rustls;

/// A peer certificate as handlers and the [`TlsServerConfig::verify_client`] hook see it.
#[derive(Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// SHA-1 of the DER certificate as Node prints `getPeerCertificate().fingerprint`:
    /// uppercase hex pairs separated by `:`, e.g. `E1:63:C1:…:76` (59 characters).
    pub fingerprint: String,
    /// The certificate itself (DER), for anything else a handler wants to check.
    pub der: Vec<u8>,
}

impl CertInfo {
    /// The information of the DER certificate `der`.
    pub fn from_der(der: &[u8]) -> Self {
        CertInfo {
            fingerprint: fingerprint(der),
            der: der.to_vec(),
        }
    }
}

impl fmt::Debug for CertInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertInfo")
            .field("fingerprint", &self.fingerprint)
            .field("der_len", &self.der.len())
            .finish()
    }
}

/// Node's `fingerprint` of a DER certificate: SHA-1, uppercase hex pairs joined by `:`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = sha1_smol::Sha1::from(der).digest().bytes();
    let pairs: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    pairs.join(":")
}

/// Why a TLS configuration could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ERR_TLS_CONFIG: {}", self.0)
    }
}

impl std::error::Error for TlsError {}

/// The hook deciding, after the handshake, whether a client (already verified against the
/// CA) may use the server.
pub type VerifyClient = Arc<dyn Fn(&CertInfo) -> bool + Send + Sync>;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{what}: no certificate in the PEM")));
    }
    Ok(certs)
}

fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError(format!("private key: {e}")))
}

fn roots(ca_pem: &[u8]) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca_pem, "CA")? {
        roots
            .add(cert)
            .map_err(|e| TlsError(format!("CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// The TLS side of a worker: its certificate, the CA its clients must be signed by, and the
/// optional [`VerifyClient`] hook. Cheap to clone.
#[derive(Clone)]
pub struct TlsServerConfig {
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
    pub(crate) verify_client: Option<VerifyClient>,
}

impl TlsServerConfig {
    /// A server presenting `cert_chain_pem` (leaf first) with `key_pem` (PKCS#8, PKCS#1 or
    /// SEC1) and requiring client certificates that chain to a certificate of `client_ca_pem`.
    pub fn from_pem(
        cert_chain_pem: &[u8],
        key_pem: &[u8],
        client_ca_pem: &[u8],
    ) -> Result<Self, TlsError> {
        let provider = provider();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots(client_ca_pem)?,
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| TlsError(format!("client verifier: {e}")))?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(cert_chain_pem, "server certificate")?, key(key_pem)?)
            .map_err(|e| TlsError(format!("server certificate: {e}")))?;
        Ok(Self::from_rustls(Arc::new(config)))
    }

    /// A server with a rustls configuration built by the caller (its client verifier decides
    /// whether clients need a certificate; handlers then see `cert: None` for those without).
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> Self {
        TlsServerConfig {
            acceptor: tokio_rustls::TlsAcceptor::from(config),
            verify_client: None,
        }
    }

    /// Adds the hook that accepts (`true`) or rejects (`false`) each client by its
    /// certificate, after the CA check (Node `verifyClient`, typically a fingerprint
    /// whitelist). A client without a certificate is rejected when a hook is set.
    pub fn verify_client(
        mut self,
        hook: impl Fn(&CertInfo) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.verify_client = Some(Arc::new(hook));
        self
    }

    /// Whether the hook (if any) accepts a client presenting `cert`.
    pub(crate) fn accepts(&self, cert: Option<&CertInfo>) -> bool {
        match (&self.verify_client, cert) {
            (None, _) => true,
            (Some(hook), Some(cert)) => hook(cert),
            (Some(_), None) => false,
        }
    }
}

impl fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerConfig")
            .field("verify_client", &self.verify_client.is_some())
            .finish()
    }
}

impl PartialEq for TlsServerConfig {
    /// Equal when they are clones of one configuration.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(self.acceptor.config(), other.acceptor.config())
            && match (&self.verify_client, &other.verify_client) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
}

impl Eq for TlsServerConfig {}

/// The TLS side of a client: the CA that server certificates must chain to, and the client
/// certificate it presents. Cheap to clone.
#[derive(Clone)]
pub struct TlsClientConfig {
    pub(crate) connector: tokio_rustls::TlsConnector,
}

impl TlsClientConfig {
    /// A client trusting the certificates of `ca_pem` and presenting `client` (a certificate
    /// chain and its key, in PEM) when given.
    pub fn from_pem(ca_pem: &[u8], client: Option<(&[u8], &[u8])>) -> Result<Self, TlsError> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_root_certificates(roots(ca_pem)?);
        let config = match client {
            Some((chain, key_pem)) => builder
                .with_client_auth_cert(certs(chain, "client certificate")?, key(key_pem)?)
                .map_err(|e| TlsError(format!("client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Self::from_rustls(Arc::new(config)))
    }

    /// A client with a rustls configuration built by the caller.
    pub fn from_rustls(config: Arc<rustls::ClientConfig>) -> Self {
        TlsClientConfig {
            connector: tokio_rustls::TlsConnector::from(config),
        }
    }

    /// Opens TLS over `stream` to `dest` (`ip:port` or `host:port`).
    pub(crate) async fn connect<S>(
        &self,
        dest: &str,
        stream: S,
    ) -> Result<tokio_rustls::client::TlsStream<S>, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let host = dest
            .rsplit_once(':')
            .map_or(dest, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("invalid server name {host:?}: {e}"))?;
        self.connector
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS handshake with {dest} failed: {e}"))
    }
}

impl fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsClientConfig")
    }
}

impl PartialEq for TlsClientConfig {
    /// Equal when they are clones of one configuration.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(self.connector.config(), other.connector.config())
    }
}

impl Eq for TlsClientConfig {}

/// The certificate a TLS server connection's client presented.
pub(crate) fn peer_cert(
    connection: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> Option<CertInfo> {
    let (_, session) = connection.get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|der| CertInfo::from_der(der.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_node_formatted_sha1() {
        // sha1("abc") = a9993e364706816aba3e25717850c26c9cd0d89d
        assert_eq!(
            fingerprint(b"abc"),
            "A9:99:3E:36:47:06:81:6A:BA:3E:25:71:78:50:C2:6C:9C:D0:D8:9D"
        );
    }

    #[test]
    fn bad_pem_is_an_error() {
        assert!(TlsClientConfig::from_pem(b"not pem", None).is_err());
        assert!(TlsServerConfig::from_pem(b"", b"", b"").is_err());
    }
}
