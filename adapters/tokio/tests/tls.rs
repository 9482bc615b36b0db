//! Mutual TLS on both RPC transports (Rust client ↔ Rust worker over `wss://` and
//! `https://`), with certificates generated here by rcgen: a CA, a server certificate for
//! 127.0.0.1, two client certificates from that CA, and a rogue CA with its own client.
//!
//! What it shows: the worker's handler sees the client certificate's SHA-1 fingerprint in
//! Node's format; a client without a certificate, or with one from another CA, is refused;
//! the `verify_client` hook can refuse a client the CA accepted; and the client refuses a
//! server whose certificate it cannot verify.
//!
//! With Node (grenache-nodejs-ws 1.0.0 and grenache-nodejs-http 1.0.2 in `secure` mode,
//! through two Node grapes): a Node client calls a Rust worker and a Rust client calls a Node
//! worker over `wss://` and `https://`; the fingerprints computed by Rust and by Node's
//! `getPeerCertificate().fingerprint` are compared. (grenache-nodejs-ws-tls, deprecated, is
//! not among the pinned packages: its wire is the same as ws 1.0.0 `secure`.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use grenache_tokio::rpc::{http, ws, ServerConfig};
use grenache_tokio::tls::{fingerprint, CertInfo, TlsClientConfig, TlsServerConfig};
use grenache_tokio::{Link, LinkConfig, Request, RpcError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};

struct Pem {
    cert: String,
    key: String,
    der: Vec<u8>,
}

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

fn leaf(ca: &Ca, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> Pem {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).unwrap();
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.extended_key_usages = vec![purpose];
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_params(&ca.params, &ca.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

struct Pki {
    ca: Ca,
    server: Pem,
    alice: Pem,
    bob: Pem,
    rogue_ca: Ca,
    mallory: Pem,
    /// A server certificate from the right CA but without 127.0.0.1 in its names.
    misnamed_server: Pem,
}

fn pki() -> Pki {
    let ca = new_ca("grenache test CA");
    let rogue_ca = new_ca("rogue CA");
    let server = leaf(&ca, &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let misnamed_server = leaf(&ca, &["example.com"], ExtendedKeyUsagePurpose::ServerAuth);
    let alice = leaf(&ca, &["alice"], ExtendedKeyUsagePurpose::ClientAuth);
    let bob = leaf(&ca, &["bob"], ExtendedKeyUsagePurpose::ClientAuth);
    let mallory = leaf(&rogue_ca, &["mallory"], ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca,
        server,
        alice,
        bob,
        rogue_ca,
        mallory,
        misnamed_server,
    }
}

fn server_tls(pki: &Pki, server: &Pem) -> TlsServerConfig {
    TlsServerConfig::from_pem(
        server.cert.as_bytes(),
        server.key.as_bytes(),
        pki.ca.pem.as_bytes(),
    )
    .unwrap()
}

fn client_tls(ca_pem: &str, who: Option<&Pem>) -> TlsClientConfig {
    TlsClientConfig::from_pem(
        ca_pem.as_bytes(),
        who.map(|p| (p.cert.as_bytes(), p.key.as_bytes())),
    )
    .unwrap()
}

fn unused_link() -> Link {
    Link::new(LinkConfig::new("http://127.0.0.1:9")).unwrap()
}

/// Answers with the fingerprint of the client's certificate.
async fn whoami(req: Request) -> Result<Value, RpcError> {
    let cert = req.cert.as_deref().ok_or(RpcError::new("ERR_NO_CERT"))?;
    Ok(json!({"fingerprint": cert.fingerprint, "payload": req.payload}))
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

const T: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
enum Transport {
    Ws,
    Http,
}

/// A worker of `transport` with `tls`, answering [`whoami`]; returns its `ip:port`.
async fn worker(transport: Transport, tls: TlsServerConfig) -> (Box<dyn std::any::Any>, String) {
    let config = ServerConfig {
        tls: Some(tls),
        ..ServerConfig::default()
    };
    match transport {
        Transport::Ws => {
            let server = ws::PeerRpcServer::builder(unused_link())
                .handler(whoami)
                .config(config)
                .build();
            let addr = server.listen_on(loopback()).await.unwrap();
            (Box::new(server), addr.to_string())
        }
        Transport::Http => {
            let server = http::PeerRpcServer::builder(unused_link())
                .handler(whoami)
                .config(config)
                .build();
            let addr = server.listen_on(loopback()).await.unwrap();
            (Box::new(server), addr.to_string())
        }
    }
}

/// One request over `transport` to `dest` with the client TLS settings `tls`.
async fn call(transport: Transport, tls: TlsClientConfig, dest: &str) -> Result<Value, RpcError> {
    match transport {
        Transport::Ws => {
            let config = ws::WsClientConfig {
                tls: Some(tls),
                ..ws::WsClientConfig::default()
            };
            ws::PeerRpcClient::with_config(unused_link(), config)
                .request_to(dest, "tls_test", json!("hi"), T)
                .await
        }
        Transport::Http => {
            let config = http::HttpClientConfig {
                tls: Some(tls),
                ..http::HttpClientConfig::default()
            };
            http::PeerRpcClient::with_config(unused_link(), config)
                .request_to(dest, "tls_test", json!("hi"), T)
                .await
        }
    }
}

fn assert_node_fingerprint(text: &str, der: &[u8]) {
    assert_eq!(text, fingerprint(der));
    assert_eq!(text.len(), 59, "{text}");
    for (i, part) in text.split(':').enumerate() {
        assert!(i < 20, "{text}");
        assert_eq!(part.len(), 2, "{text}");
        assert!(
            part.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
            "{text}"
        );
    }
}

async fn mutual_tls_roundtrip(transport: Transport) {
    let pki = pki();
    let (_server, dest) = worker(transport, server_tls(&pki, &pki.server)).await;
    for who in [&pki.alice, &pki.bob] {
        let answer = call(transport, client_tls(&pki.ca.pem, Some(who)), &dest)
            .await
            .unwrap();
        assert_eq!(answer["payload"], "hi");
        assert_node_fingerprint(answer["fingerprint"].as_str().unwrap(), &who.der);
    }
}

#[tokio::test]
async fn wss_mutual_tls_gives_handlers_the_client_fingerprint() {
    mutual_tls_roundtrip(Transport::Ws).await;
}

#[tokio::test]
async fn https_mutual_tls_gives_handlers_the_client_fingerprint() {
    mutual_tls_roundtrip(Transport::Http).await;
}

async fn clients_without_a_good_certificate_are_refused(transport: Transport) {
    let pki = pki();
    let (_server, dest) = worker(transport, server_tls(&pki, &pki.server)).await;
    // No client certificate at all.
    let none = call(transport, client_tls(&pki.ca.pem, None), &dest).await;
    assert!(matches!(none, Err(RpcError::Request(_))), "{none:?}");
    // A certificate from another CA.
    let rogue = call(
        transport,
        client_tls(&pki.ca.pem, Some(&pki.mallory)),
        &dest,
    )
    .await;
    assert!(matches!(rogue, Err(RpcError::Request(_))), "{rogue:?}");
    // Plain text to the TLS port.
    let plain = match transport {
        Transport::Ws => {
            ws::PeerRpcClient::new(unused_link())
                .request_to(&dest, "tls_test", json!("hi"), T)
                .await
        }
        Transport::Http => {
            http::PeerRpcClient::new(unused_link())
                .request_to(&dest, "tls_test", json!("hi"), T)
                .await
        }
    };
    assert!(plain.is_err(), "{plain:?}");
    // The server still serves good clients afterwards.
    let good = call(transport, client_tls(&pki.ca.pem, Some(&pki.alice)), &dest).await;
    assert_eq!(good.unwrap()["payload"], "hi");
}

#[tokio::test]
async fn wss_refuses_clients_without_a_certificate_from_the_ca() {
    clients_without_a_good_certificate_are_refused(Transport::Ws).await;
}

#[tokio::test]
async fn https_refuses_clients_without_a_certificate_from_the_ca() {
    clients_without_a_good_certificate_are_refused(Transport::Http).await;
}

async fn hook_rejects(transport: Transport) {
    let pki = pki();
    let allowed = fingerprint(&pki.alice.der);
    let tls = server_tls(&pki, &pki.server)
        .verify_client(move |cert: &CertInfo| cert.fingerprint == allowed);
    let (_server, dest) = worker(transport, tls).await;
    let alice = call(transport, client_tls(&pki.ca.pem, Some(&pki.alice)), &dest).await;
    assert_node_fingerprint(
        alice.unwrap()["fingerprint"].as_str().unwrap(),
        &pki.alice.der,
    );
    let bob = call(transport, client_tls(&pki.ca.pem, Some(&pki.bob)), &dest).await;
    match (transport, bob) {
        // The upgrade is answered 401 (Node `cb(false, 401, 'Forbidden')`).
        (Transport::Ws, Err(RpcError::Request(why))) => assert!(why.contains("401"), "{why}"),
        // Every request is answered 401 `Forbidden`.
        (Transport::Http, Err(RpcError::Request(why))) => assert_eq!(why, "Forbidden"),
        (_, other) => panic!("bob was not refused: {other:?}"),
    }
}

#[tokio::test]
async fn wss_verify_client_hook_can_refuse_a_client() {
    hook_rejects(Transport::Ws).await;
}

#[tokio::test]
async fn https_verify_client_hook_can_refuse_a_client() {
    hook_rejects(Transport::Http).await;
}

async fn client_checks_the_server(transport: Transport) {
    let pki = pki();
    // A server certificate the client's CA did not sign.
    let (_a, dest) = worker(transport, server_tls(&pki, &pki.server)).await;
    let wrong_ca = call(
        transport,
        client_tls(&pki.rogue_ca.pem, Some(&pki.alice)),
        &dest,
    )
    .await;
    assert!(
        matches!(&wrong_ca, Err(RpcError::Request(why)) if why.contains("TLS handshake")),
        "{wrong_ca:?}"
    );
    // A server certificate without the destination IP.
    let (_b, dest) = worker(transport, server_tls(&pki, &pki.misnamed_server)).await;
    let misnamed = call(transport, client_tls(&pki.ca.pem, Some(&pki.alice)), &dest).await;
    assert!(
        matches!(&misnamed, Err(RpcError::Request(why)) if why.contains("TLS handshake")),
        "{misnamed:?}"
    );
}

#[tokio::test]
async fn wss_client_refuses_an_unverifiable_server() {
    client_checks_the_server(Transport::Ws).await;
}

#[tokio::test]
async fn https_client_refuses_an_unverifiable_server() {
    client_checks_the_server(Transport::Http).await;
}

// ---------------------------------------------------------------------------------------
// With Node

/// Writes ca.pem, server.pem/.key and client.pem/.key (`client`) into a fresh folder.
fn cert_dir(pki: &Pki, client: &Pem, tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("grenache-tls-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in [
        ("ca.pem", &pki.ca.pem),
        ("server.pem", &pki.server.cert),
        ("server.key", &pki.server.key),
        ("client.pem", &client.cert),
        ("client.key", &client.key),
    ] {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

fn transport_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Ws => "ws",
        Transport::Http => "http",
    }
}

async fn node_client_calls_rust_tls_worker(transport: Transport) {
    let pki = pki();
    let grapes = common::start_grapes().await;
    let t = transport_name(transport);
    let name = format!("rust_tls_{t}");
    let config = ServerConfig {
        tls: Some(server_tls(&pki, &pki.server)),
        ..ServerConfig::default()
    };
    let link = Link::new(LinkConfig::new(&grapes.a)).unwrap();
    let (_server, port): (Box<dyn std::any::Any>, u16) = match transport {
        Transport::Ws => {
            let server = ws::PeerRpcServer::builder(link)
                .handler(whoami)
                .config(config)
                .build();
            let port = server.listen(0).await.unwrap().port();
            assert!(server.start_announcing(&name));
            (Box::new(server), port)
        }
        Transport::Http => {
            let server = http::PeerRpcServer::builder(link)
                .handler(whoami)
                .config(config)
                .build();
            let port = server.listen(0).await.unwrap().port();
            assert!(server.start_announcing(&name));
            (Box::new(server), port)
        }
    };
    common::wait_visible(&grapes.b, &name, port, Duration::from_secs(20)).await;
    let dir = cert_dir(&pki, &pki.alice, &format!("rust-worker-{t}"));
    let out = common::run_node(
        "tls_client.js",
        &[
            ("GRAPE", grapes.b.clone()),
            ("TRANSPORT", t.to_string()),
            ("NAME", name.clone()),
            ("PAYLOAD", "\"hi\"".to_string()),
            ("CERTS", dir.display().to_string()),
        ],
        Duration::from_secs(30),
    )
    .await;
    let answer: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(answer["err"], Value::Null, "{answer}");
    assert_eq!(answer["data"]["payload"], "hi");
    assert_node_fingerprint(
        answer["data"]["fingerprint"].as_str().unwrap(),
        &pki.alice.der,
    );
    let _ = std::fs::remove_dir_all(dir);
}

async fn rust_client_calls_node_tls_worker(transport: Transport) {
    let pki = pki();
    let grapes = common::start_grapes().await;
    let t = transport_name(transport);
    let name = format!("node_tls_{t}");
    let port = common::free_tcp_port();
    let dir = cert_dir(&pki, &pki.alice, &format!("node-worker-{t}"));
    let _worker = common::spawn_node(
        "tls_worker.js",
        &[
            ("GRAPE", grapes.a.clone()),
            ("TRANSPORT", t.to_string()),
            ("NAME", name.clone()),
            ("PORT", port.to_string()),
            ("CERTS", dir.display().to_string()),
        ],
    );
    common::wait_visible(&grapes.b, &name, port, Duration::from_secs(20)).await;
    let link = Link::new(LinkConfig::new(&grapes.b)).unwrap();
    let tls = Some(client_tls(&pki.ca.pem, Some(&pki.bob)));
    let answer = match transport {
        Transport::Ws => {
            let config = ws::WsClientConfig {
                tls,
                ..ws::WsClientConfig::default()
            };
            ws::PeerRpcClient::with_config(link, config)
                .request(&name, json!("hi"), T)
                .await
        }
        Transport::Http => {
            let config = http::HttpClientConfig {
                tls,
                ..http::HttpClientConfig::default()
            };
            http::PeerRpcClient::with_config(link, config)
                .request(&name, json!("hi"), T)
                .await
        }
    }
    .unwrap();
    assert_eq!(answer["payload"], "hi");
    // Node's own `getPeerCertificate().fingerprint` equals ours.
    assert_node_fingerprint(answer["fingerprint"].as_str().unwrap(), &pki.bob.der);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ws_client_calls_rust_wss_worker() {
    node_client_calls_rust_tls_worker(Transport::Ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_http_client_calls_rust_https_worker() {
    node_client_calls_rust_tls_worker(Transport::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_wss_client_calls_node_ws_secure_worker() {
    rust_client_calls_node_tls_worker(Transport::Ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_https_client_calls_node_http_secure_worker() {
    rust_client_calls_node_tls_worker(Transport::Http).await;
}

#[tokio::test]
async fn https_streams_carry_the_client_fingerprint_in_their_meta() {
    use grenache_tokio::rpc::stream::{StreamOptions, StreamRequest, StreamResponder};
    let pki = pki();
    let config = ServerConfig {
        tls: Some(server_tls(&pki, &pki.server)),
        ..ServerConfig::default()
    };
    let server = http::PeerRpcServer::builder(unused_link())
        .handler(whoami)
        .stream_handler(
            |req: StreamRequest, responder: StreamResponder| async move {
                let fingerprint = req.meta.cert.as_ref().map(|c| c.fingerprint.clone());
                let body = req.body.collect(1024).await?;
                let answer = json!({
                    "fingerprint": fingerprint,
                    "body": String::from_utf8_lossy(&body),
                });
                responder
                    .reply(&req.meta.rid().cloned().unwrap_or_default(), &Ok(answer))
                    .await
            },
        )
        .config(config)
        .build();
    let dest = server.listen_on(loopback()).await.unwrap().to_string();
    let config = http::HttpClientConfig {
        tls: Some(client_tls(&pki.ca.pem, Some(&pki.alice))),
        ..http::HttpClientConfig::default()
    };
    let client = http::PeerRpcClient::with_config(unused_link(), config);
    let stream = client
        .stream_to(&dest, "tls_stream", StreamOptions::new().timeout(T))
        .await
        .unwrap();
    let rid = stream.rid.clone();
    let mut body = stream.body;
    body.send(bytes::Bytes::from_static(b"secret bytes"))
        .await
        .unwrap();
    body.finish();
    let response = stream.response.await.unwrap();
    let reply: Value = serde_json::from_slice(&response.body.collect(4096).await.unwrap()).unwrap();
    assert_eq!(reply[0], json!(rid));
    assert_eq!(reply[2]["body"], "secret bytes");
    assert_node_fingerprint(reply[2]["fingerprint"].as_str().unwrap(), &pki.alice.der);
}
