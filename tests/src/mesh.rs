//! Mesh identities for tests: certificates minted by the project's own CA
//! code and written as the files `weft-proxy --identity-dir` reads; and,
//! for the key exchange between sidecars, mesh peers without ML-KEM and a
//! relay that reads the group a handshake settled on off the wire.

use crate::{ProxyBuilder, TempDir};
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, HandshakeKind, NamedGroup, RootCertStore, ServerConfig};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_mesh::identity::ca::CertificateAuthority;
use weft_mesh::identity::csr::WorkloadKey;
use weft_mesh::identity::verify::SpiffeServerVerifier;
use weft_mesh::identity::{Identity, SpiffeId};

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64(der);
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}

/// Writes `cert.pem`, `key.pem` (issued by `issuer`) and `ca.pem` (`trust`)
/// for `id` into a fresh directory.
pub fn mint(issuer: &CertificateAuthority, trust: &CertificateAuthority, id: &str) -> TempDir {
    let id = SpiffeId::parse(id).unwrap();
    let wk = WorkloadKey::generate(&id).unwrap();
    let cert = issuer.sign_csr(wk.csr_pem(), &id).unwrap();
    let identity = wk.into_identity(vec![cert.der.clone()]);
    let dir = TempDir::new("identity");
    std::fs::write(dir.path().join("cert.pem"), &cert.pem).unwrap();
    std::fs::write(
        dir.path().join("key.pem"),
        pem("PRIVATE KEY", identity.key.secret_der()),
    )
    .unwrap();
    std::fs::write(dir.path().join("ca.pem"), trust.cert_pem()).unwrap();
    dir
}

pub fn with_identity(b: ProxyBuilder, dir: &TempDir) -> ProxyBuilder {
    b.arg("--identity-dir")
        .arg(dir.path().display().to_string())
}

/// `id`'s key and a certificate for it from `ca`, in memory.
pub fn identity(ca: &CertificateAuthority, id: &str) -> Identity {
    let id = SpiffeId::parse(id).unwrap();
    let wk = WorkloadKey::generate(&id).unwrap();
    let cert = ca.sign_csr(wk.csr_pem(), &id).unwrap();
    wk.into_identity(vec![cert.der])
}

/// The mesh's crypto provider with X25519 as its only key exchange group:
/// a peer built without ML-KEM.
pub fn classical_provider() -> Arc<CryptoProvider> {
    Arc::new(CryptoProvider {
        kx_groups: vec![aws_lc_rs::kx_group::X25519],
        ..aws_lc_rs::default_provider()
    })
}

fn roots(ca: &CertificateAuthority) -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    Arc::new(roots)
}

/// A caller without ML-KEM: TLS 1.3 offering X25519 only, presenting `who`
/// (issued by `ca`), checking that the server is `expected`, ALPN
/// `http/1.1`.
pub fn classical_client(ca: &CertificateAuthority, who: &str, expected: &str) -> Arc<ClientConfig> {
    let provider = classical_provider();
    let verifier = SpiffeServerVerifier::new(
        roots(ca),
        SpiffeId::parse(expected).unwrap(),
        provider.signature_verification_algorithms,
    );
    let me = identity(ca, who);
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(me.cert_chain, me.key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What one side saw of a handshake: the key exchange group, and whether it
/// took a `HelloRetryRequest`.
pub type Kx = (Option<NamedGroup>, Option<HandshakeKind>);

/// A mesh peer without ML-KEM in front of a plaintext server: terminates
/// TLS 1.3 (X25519 only, `who`'s certificate, a client certificate from
/// `ca` required, ALPN `h2` then `http/1.1`) and relays the plaintext to
/// `app`, noting each handshake's key exchange.
pub struct ClassicalPeer {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Kx>>>,
}

impl ClassicalPeer {
    pub async fn start(ca: &CertificateAuthority, who: &str, app: SocketAddr) -> ClassicalPeer {
        let provider = classical_provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca), provider.clone())
            .build()
            .unwrap();
        let me = identity(ca, who);
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(me.cert_chain, me.key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, log) = (acceptor.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let conn = tls.get_ref().1;
                    let kx = (
                        conn.negotiated_key_exchange_group().map(|g| g.name()),
                        conn.handshake_kind(),
                    );
                    log.lock().unwrap().push(kx);
                    if let Ok(mut app) = TcpStream::connect(app).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut app).await;
                    }
                });
            }
        });
        ClassicalPeer { addr, seen }
    }

    /// The key exchange of every handshake so far, in order.
    pub fn handshakes(&self) -> Vec<Kx> {
        self.seen.lock().unwrap().clone()
    }
}

/// What a TLS 1.3 ServerHello, sent in the clear, says of the key
/// exchange: the selected group, and whether it is a `HelloRetryRequest`
/// (asking the client for a share of that group) rather than a ServerHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub group: NamedGroup,
    pub retry: bool,
}

/// The `random` that marks a ServerHello as a HelloRetryRequest
/// (RFC 8446, 4.1.3).
const RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// Reads a server's first TLS record: a handshake record holding a
/// ServerHello with a `key_share` extension, or `None`.
pub fn server_hello(record: &[u8]) -> Option<Hello> {
    let u16_at = |b: &[u8], i: usize| Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
    // Record header: type 22 (handshake), version, length.
    if *record.first()? != 22 {
        return None;
    }
    let body = record.get(5..5 + u16_at(record, 3)? as usize)?;
    // Handshake header: type 2 (ServerHello), 24-bit length.
    if *body.first()? != 2 {
        return None;
    }
    // legacy_version (2), random (32), legacy_session_id (1 + n),
    // cipher_suite (2), legacy_compression_method (1), extensions (2 + n).
    let random = body.get(6..38)?;
    let mut i = 38 + 1 + *body.get(38)? as usize + 2 + 1;
    let end = i + 2 + u16_at(body, i)? as usize;
    i += 2;
    while i + 4 <= end {
        let (kind, len) = (u16_at(body, i)?, u16_at(body, i + 2)? as usize);
        if kind == 0x0033 {
            return Some(Hello {
                group: NamedGroup::from(u16_at(body, i + 4)?),
                retry: random == RETRY_RANDOM,
            });
        }
        i += 4 + len;
    }
    None
}

/// A TCP relay to `to` that reads, from each connection's first record from
/// the server, what its TLS ServerHello selected: the group two peers
/// settled on, seen from outside both.
pub struct Tap {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Option<Hello>>>>,
}

impl Tap {
    pub async fn start(to: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(to).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        let _ = sw.shutdown().await;
                    });
                    // The whole first record: its 5-byte header, then its length.
                    let mut first = Vec::new();
                    let mut buf = [0u8; 4096];
                    while first.len() < 5
                        || first.len() < 5 + u16::from_be_bytes([first[3], first[4]]) as usize
                    {
                        match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => first.extend_from_slice(&buf[..n]),
                        }
                    }
                    log.lock().unwrap().push(server_hello(&first));
                    if cw.write_all(&first).await.is_ok() {
                        let _ = tokio::io::copy(&mut sr, &mut cw).await;
                    }
                    let _ = cw.shutdown().await;
                    let _ = up.await;
                });
            }
        });
        Tap { addr, seen }
    }

    /// The ServerHello of every connection relayed so far, in order (`None`
    /// for one whose first server record was not a ServerHello).
    pub fn hellos(&self) -> Vec<Option<Hello>> {
        self.seen.lock().unwrap().clone()
    }
}
