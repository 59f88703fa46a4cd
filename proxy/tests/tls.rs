//! Mesh mTLS over real loopback sockets: the SPIFFE verifiers, the CA and the
//! configs, exercised with tokio-rustls exactly as the proxy will use them.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, ServerConfig};
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
}

#[derive(Debug)]
struct ServerSaw {
    peer: Option<String>,
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
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(ServerSaw { peer })
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
