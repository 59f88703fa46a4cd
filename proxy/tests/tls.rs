//! Mesh mTLS over real loopback sockets: the SPIFFE verifiers, the CA and the
//! configs, exercised with tokio-rustls exactly as the proxy will use them,
//! and the key exchange they negotiate with each other and with
//! classical-only peers.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::{aws_lc_rs, CryptoProvider, SupportedKxGroup};
use rustls::pki_types::ServerName;
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, CommonState, HandshakeKind, NamedGroup, ProtocolVersion, RootCertStore,
    ServerConfig,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_mesh::identity::ca::CertificateAuthority;
use weft_mesh::identity::csr::WorkloadKey;
use weft_mesh::identity::verify::SpiffeServerVerifier;
use weft_mesh::identity::{
    client_config, crypto_provider, peer_identity, server_config, Identity, SpiffeId,
};
use x509_parser::extensions::GeneralName;

const REVIEWS: &str = "spiffe://weft.local/ns/default/sa/reviews";
const RATINGS: &str = "spiffe://weft.local/ns/default/sa/ratings";
const PRODUCTPAGE: &str = "spiffe://weft.local/ns/default/sa/productpage";

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn issue(ca: &CertificateAuthority, who: &str) -> Identity {
    let who = id(who);
    let wk = WorkloadKey::generate(&who).unwrap();
    let cert = ca.sign_csr(wk.csr_pem(), &who).unwrap();
    wk.into_identity(vec![cert.der])
}

fn issue_expired(ca: &CertificateAuthority, who: &str) -> Identity {
    let who = id(who);
    let wk = WorkloadKey::generate(&who).unwrap();
    let now = SystemTime::now();
    let day = Duration::from_secs(24 * 3600);
    let cert = ca
        .sign_csr_with_validity(wk.csr_pem(), &who, now - 2 * day, now - day)
        .unwrap();
    wk.into_identity(vec![cert.der])
}

/// What each side of one handshake saw.
struct Outcome {
    client: Result<ClientSaw, String>,
    server: Result<ServerSaw, String>,
}

#[derive(Debug)]
struct ClientSaw {
    alpn: Option<Vec<u8>>,
    version: Option<ProtocolVersion>,
    peer: Option<String>,
    kx: Kx,
}

#[derive(Debug)]
struct ServerSaw {
    peer: Option<String>,
    kx: Kx,
}

/// The key exchange group one side negotiated, and whether it took a
/// `HelloRetryRequest` to get there.
#[derive(Debug, PartialEq)]
struct Kx {
    group: Option<NamedGroup>,
    kind: Option<HandshakeKind>,
}

fn kx_of(conn: &CommonState) -> Kx {
    Kx {
        group: conn.negotiated_key_exchange_group().map(|g| g.name()),
        kind: conn.handshake_kind(),
    }
}

/// A full handshake on `group`, in one round trip.
fn full(group: NamedGroup) -> Kx {
    Kx {
        group: Some(group),
        kind: Some(HandshakeKind::Full),
    }
}

/// Runs one handshake over 127.0.0.1 and exchanges a few bytes, so that a
/// client certificate rejected after the client's side finished (TLS 1.3)
/// still surfaces as a client error.
async fn handshake(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(server);
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = peer_identity(tls.get_ref().1);
        let kx = kx_of(tls.get_ref().1);
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(ServerSaw { peer, kx })
    });
    let client_fut = async move {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        // Sidecars dial IPs; the verifier ignores this name.
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let mut tls = TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let saw = ClientSaw {
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version: conn.protocol_version(),
            peer: peer_identity(conn),
            kx: kx_of(conn),
        };
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"pong");
        Ok::<_, String>(saw)
    };
    let limit = Duration::from_secs(10);
    let client = tokio::time::timeout(limit, client_fut)
        .await
        .expect("client timed out");
    let server = tokio::time::timeout(limit, server_task)
        .await
        .expect("server timed out")
        .unwrap();
    Outcome { client, server }
}

#[tokio::test]
async fn mutual_tls_with_expected_identity_succeeds() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let trust = ca.trust_bundle();
    let server = server_config(&issue(&ca, REVIEWS), &trust).unwrap();
    let client = client_config(&issue(&ca, PRODUCTPAGE), &trust, id(REVIEWS)).unwrap();
    let out = handshake(client, server).await;
    let c = out.client.expect("client handshake");
    let s = out.server.expect("server handshake");
    assert_eq!(c.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(c.version, Some(ProtocolVersion::TLSv1_3));
    assert_eq!(c.peer.as_deref(), Some(REVIEWS));
    assert_eq!(s.peer.as_deref(), Some(PRODUCTPAGE));
}

#[tokio::test]
async fn http1_only_client_negotiates_http11() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let trust = ca.trust_bundle();
    let server = server_config(&issue(&ca, REVIEWS), &trust).unwrap();
    let mut client =
        (*client_config(&issue(&ca, PRODUCTPAGE), &trust, id(REVIEWS)).unwrap()).clone();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let out = handshake(Arc::new(client), server).await;
    assert_eq!(out.client.unwrap().alpn.as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn server_with_other_identity_is_rejected() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let trust = ca.trust_bundle();
    let server = server_config(&issue(&ca, RATINGS), &trust).unwrap();
    let client = client_config(&issue(&ca, PRODUCTPAGE), &trust, id(REVIEWS)).unwrap();
    let out = handshake(client, server).await;
    let err = out.client.expect_err("client must reject ratings");
    assert!(err.contains("NotValidForName"), "{err}");
    assert!(out.server.is_err());
}

/// Foreign CAs: one impersonating the mesh root's name (same trust domain,
/// so webpki finds a name match but the signature fails) and one with its
/// own name (no issuer found at all).
fn foreign_cas() -> Vec<(CertificateAuthority, &'static str)> {
    vec![
        (
            CertificateAuthority::generate("weft.local").unwrap(),
            "BadSignature",
        ),
        (
            CertificateAuthority::generate("elsewhere.example").unwrap(),
            "UnknownIssuer",
        ),
    ]
}

#[tokio::test]
async fn server_from_foreign_ca_is_rejected() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    for (foreign, why) in foreign_cas() {
        let server = server_config(&issue(&foreign, REVIEWS), &foreign.trust_bundle()).unwrap();
        let client =
            client_config(&issue(&ca, PRODUCTPAGE), &ca.trust_bundle(), id(REVIEWS)).unwrap();
        let out = handshake(client, server).await;
        let err = out.client.expect_err("client must reject foreign server");
        assert!(err.contains(why), "{err}");
        assert!(out.server.is_err());
    }
}

#[tokio::test]
async fn client_from_foreign_ca_is_rejected() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    for (foreign, why) in foreign_cas() {
        let server = server_config(&issue(&ca, REVIEWS), &ca.trust_bundle()).unwrap();
        // The client trusts the real CA (so it accepts the server) but
        // presents a certificate from the foreign one.
        let client = client_config(
            &issue(&foreign, PRODUCTPAGE),
            &ca.trust_bundle(),
            id(REVIEWS),
        )
        .unwrap();
        let out = handshake(client, server).await;
        let err = out.server.expect_err("server must reject foreign client");
        assert!(err.contains(why), "{err}");
        assert!(out.client.is_err());
    }
}

#[tokio::test]
async fn expired_server_leaf_is_rejected() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let trust = ca.trust_bundle();
    let server = server_config(&issue_expired(&ca, REVIEWS), &trust).unwrap();
    let client = client_config(&issue(&ca, PRODUCTPAGE), &trust, id(REVIEWS)).unwrap();
    let out = handshake(client, server).await;
    let err = out.client.expect_err("client must reject expired server");
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

#[tokio::test]
async fn expired_client_leaf_is_rejected() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let trust = ca.trust_bundle();
    let server = server_config(&issue(&ca, REVIEWS), &trust).unwrap();
    let client = client_config(&issue_expired(&ca, PRODUCTPAGE), &trust, id(REVIEWS)).unwrap();
    let out = handshake(client, server).await;
    let err = out.server.expect_err("server must reject expired client");
    assert!(err.to_lowercase().contains("expired"), "{err}");
    assert!(out.client.is_err());
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let trust = ca.trust_bundle();
    let server = server_config(&issue(&ca, REVIEWS), &trust).unwrap();
    let provider = crypto_provider();
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let verifier = SpiffeServerVerifier::new(
        Arc::new(roots),
        id(REVIEWS),
        provider.signature_verification_algorithms,
    );
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let out = handshake(Arc::new(client), server).await;
    let err = out.server.expect_err("server must require a client cert");
    assert!(err.contains("peer sent no certificates"), "{err}");
    assert!(out.client.is_err());
}

/// The mesh's provider offering only `groups`: a peer built without ML-KEM
/// (`X25519`), or one that speaks only NIST curves.
fn provider_with(groups: &[&'static dyn SupportedKxGroup]) -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        kx_groups: groups.to_vec(),
        ..aws_lc_rs::default_provider()
    })
}

fn roots_of(ca: &CertificateAuthority) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    Arc::new(roots)
}

/// A client like a sidecar's (TLS 1.3, the server checked by SPIFFE ID, a
/// client certificate from `ca`) that offers only `groups`.
fn client_offering(
    groups: &[&'static dyn SupportedKxGroup],
    ca: &CertificateAuthority,
    who: &str,
    expected: &str,
) -> Arc<ClientConfig> {
    let provider = provider_with(groups);
    let verifier = SpiffeServerVerifier::new(
        roots_of(ca),
        id(expected),
        provider.signature_verification_algorithms,
    );
    let me = issue(ca, who);
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(me.cert_chain, me.key)
        .unwrap();
    Arc::new(config)
}

/// A TLS 1.3 server presenting `who`'s certificate and requiring one from
/// `ca`, that accepts only `groups`.
fn server_offering(
    groups: &[&'static dyn SupportedKxGroup],
    ca: &CertificateAuthority,
    who: &str,
) -> Arc<ServerConfig> {
    let provider = provider_with(groups);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots_of(ca), provider.clone())
        .build()
        .unwrap();
    let me = issue(ca, who);
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(me.cert_chain, me.key)
        .unwrap();
    Arc::new(config)
}

/// Two sidecars' configs agree on the hybrid post-quantum group, in one
/// round trip (the client's first key share is the one the server takes).
#[tokio::test]
async fn sidecars_negotiate_hybrid_post_quantum_key_exchange() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let trust = ca.trust_bundle();
    let server = server_config(&issue(&ca, REVIEWS), &trust).unwrap();
    let client = client_config(&issue(&ca, PRODUCTPAGE), &trust, id(REVIEWS)).unwrap();
    let out = handshake(client, server).await;
    let c = out.client.expect("client handshake");
    let s = out.server.expect("server handshake");
    assert_eq!(c.kx, full(NamedGroup::X25519MLKEM768));
    assert_eq!(s.kx, full(NamedGroup::X25519MLKEM768));
    assert_eq!(s.peer.as_deref(), Some(PRODUCTPAGE));
}

/// A caller without ML-KEM (offering X25519 only) still gets through a
/// sidecar's inbound, authenticated, on X25519.
#[tokio::test]
async fn classical_only_client_negotiates_x25519() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let server = server_config(&issue(&ca, REVIEWS), &ca.trust_bundle()).unwrap();
    let client = client_offering(&[aws_lc_rs::kx_group::X25519], &ca, PRODUCTPAGE, REVIEWS);
    let out = handshake(client, server).await;
    let c = out.client.expect("client handshake");
    let s = out.server.expect("server handshake");
    assert_eq!(c.kx, full(NamedGroup::X25519));
    assert_eq!(s.kx, full(NamedGroup::X25519));
    assert_eq!(s.peer.as_deref(), Some(PRODUCTPAGE));
}

/// A sidecar dialling a server without ML-KEM (accepting X25519 only) lands
/// on X25519 without a `HelloRetryRequest`: the client sends the X25519 half
/// of its hybrid share as a share of its own.
#[tokio::test]
async fn classical_only_server_negotiates_x25519_without_a_retry() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let server = server_offering(&[aws_lc_rs::kx_group::X25519], &ca, REVIEWS);
    let client = client_config(&issue(&ca, PRODUCTPAGE), &ca.trust_bundle(), id(REVIEWS)).unwrap();
    let out = handshake(client, server).await;
    let c = out.client.expect("client handshake");
    let s = out.server.expect("server handshake");
    assert_eq!(c.kx, full(NamedGroup::X25519));
    assert_eq!(s.kx, full(NamedGroup::X25519));
    assert_eq!(c.peer.as_deref(), Some(REVIEWS));
}

/// Mesh connections offer and accept only X25519MLKEM768 and X25519: a peer
/// with P-256 alone is refused in either role.
#[tokio::test]
async fn peer_without_a_mesh_key_exchange_group_is_refused() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let trust = ca.trust_bundle();
    let p256: &[&'static dyn SupportedKxGroup] = &[aws_lc_rs::kx_group::SECP256R1];

    let server = server_config(&issue(&ca, REVIEWS), &trust).unwrap();
    let out = handshake(client_offering(p256, &ca, PRODUCTPAGE, REVIEWS), server).await;
    let err = out
        .server
        .expect_err("mesh server must refuse a P-256-only client");
    assert!(err.contains("NoKxGroupsInCommon"), "{err}");
    assert!(out.client.is_err());

    let client = client_config(&issue(&ca, PRODUCTPAGE), &trust, id(REVIEWS)).unwrap();
    let out = handshake(client, server_offering(p256, &ca, REVIEWS)).await;
    let err = out
        .server
        .expect_err("a P-256-only server finds no common group");
    assert!(err.contains("NoKxGroupsInCommon"), "{err}");
    assert!(out.client.is_err());
}

/// One TLS crypto provider in the workspace: rustls is built with aws-lc-rs
/// and without ring, so code that takes rustls's process-wide default (as
/// HTTPS and Kubernetes client crates do) gets the same provider as the
/// mesh. Were a dependency to enable rustls's `ring` feature as well, rustls
/// could no longer pick a default by itself and `builder()` would panic.
#[test]
fn rustls_default_provider_is_the_mesh_provider() {
    let config = ClientConfig::builder()
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    let groups = |p: &CryptoProvider| p.kx_groups.iter().map(|g| g.name()).collect::<Vec<_>>();
    let default = groups(config.crypto_provider());
    assert_eq!(default, groups(&crypto_provider()));
    assert_eq!(
        default,
        [
            NamedGroup::X25519MLKEM768,
            NamedGroup::X25519,
            NamedGroup::secp256r1,
            NamedGroup::secp384r1
        ]
    );
}

#[test]
fn csr_claiming_another_identity_gets_only_the_authorised_one() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    // A CSR that asks for an admin identity plus a DNS name and an IP.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://weft.local/ns/kube-system/sa/admin"
            .try_into()
            .unwrap(),
    ));
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "spiffe://weft.local/ns/kube-system/sa/admin",
    );
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();

    let issued = ca.sign_csr(&csr, &id(REVIEWS)).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(issued.der.as_ref()).unwrap();
    let san = cert
        .subject_alternative_name()
        .unwrap()
        .expect("SAN extension");
    assert_eq!(san.value.general_names, vec![GeneralName::URI(REVIEWS)]);
    assert!(!cert.is_ca(), "leaf must not be a CA");
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .map(str::to_string)
    };
    let subject_cn = cn(cert.subject()).unwrap();
    assert_eq!(subject_cn, "reviews.default");
    assert_ne!(
        Some(subject_cn),
        cn(cert.issuer()),
        "leaf and CA CNs must differ"
    );
    // Default lifetime is 24h (plus the clock-skew back-dating).
    let validity = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(
        (24 * 3600..=24 * 3600 + 600).contains(&validity),
        "{validity}"
    );
}

#[test]
fn ca_round_trips_through_pem() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let loaded = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    assert_eq!(loaded.cert_der(), ca.cert_der());
    // A leaf signed by the reloaded CA verifies against the original root.
    let leaf = issue(&loaded, REVIEWS);
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let parsed = rustls::server::ParsedCertificate::try_from(&leaf.cert_chain[0]).unwrap();
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &[],
        rustls::pki_types::UnixTime::now(),
        crypto_provider().signature_verification_algorithms.all,
    )
    .unwrap();
}
