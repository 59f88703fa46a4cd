//! What a mesh mTLS handshake costs: full handshakes between the mesh's own
//! client and server configs (`weft_mesh::identity`), one after another over
//! loopback TCP in one process, client and server on two threads.
//!
//!     cargo run --release -p weft-tests --example handshake
//!
//! Each handshake is a fresh TCP connection and a full TLS 1.3 handshake
//! (session resumption off on the client) with certificates both ways,
//! then one byte each way, which is also where the server's session tickets
//! go out, as they do between sidecars. Per variant it prints the
//! negotiated group, the wall time per handshake (the latency one
//! connection sees, with client and server working in turn) and the CPU
//! time per handshake (both sides together, from `getrusage`), median of
//! `ROUNDS` [5] rounds of `HANDSHAKES` [1000] after 100 unmeasured ones.
//!
//! Variants: `mesh` (the mesh configs as the sidecars use them) and
//! `x25519` (the same server, a client offering only X25519: the classical
//! cost on the same provider). It only uses the mesh's public API, so the
//! same file measures an older build too.

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_mesh::identity::ca::CertificateAuthority;
use weft_mesh::identity::csr::WorkloadKey;
use weft_mesh::identity::verify::SpiffeServerVerifier;
use weft_mesh::identity::{client_config, crypto_provider, server_config, Identity, SpiffeId};

const REVIEWS: &str = "spiffe://weft.local/ns/default/sa/reviews";
const PRODUCTPAGE: &str = "spiffe://weft.local/ns/default/sa/productpage";
const WARMUP: usize = 100;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn issue(ca: &CertificateAuthority, who: &str) -> Identity {
    let who = SpiffeId::parse(who).unwrap();
    let key = WorkloadKey::generate(&who).unwrap();
    let cert = ca.sign_csr(key.csr_pem(), &who).unwrap();
    key.into_identity(vec![cert.der])
}

/// A client like the mesh's, but offering only X25519.
fn x25519_client(ca: &CertificateAuthority, me: &Identity) -> ClientConfig {
    let mut provider: CryptoProvider = (*crypto_provider()).clone();
    provider
        .kx_groups
        .retain(|g| g.name() == rustls::NamedGroup::X25519);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let verifier = SpiffeServerVerifier::new(
        Arc::new(roots),
        SpiffeId::parse(REVIEWS).unwrap(),
        provider.signature_verification_algorithms,
    );
    ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(me.cert_chain.clone(), me.key.clone_key())
        .unwrap()
}

/// Accepts `n` connections, each: full handshake, one byte in, one out.
fn serve(listener: TcpListener, config: Arc<ServerConfig>, n: usize) {
    for _ in 0..n {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_nodelay(true).unwrap();
        let conn = ServerConnection::new(config.clone()).unwrap();
        let mut tls = StreamOwned::new(conn, tcp);
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).unwrap();
        tls.write_all(&b).unwrap();
        tls.flush().unwrap();
    }
}

/// One handshake as a client; returns the group it negotiated.
fn connect(addr: SocketAddr, config: &Arc<ClientConfig>) -> String {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_nodelay(true).unwrap();
    let name = ServerName::IpAddress(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let conn = ClientConnection::new(config.clone(), name).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    tls.read_exact(&mut b).unwrap();
    assert_eq!(
        tls.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Full),
        "not a full handshake"
    );
    let group = tls.conn.negotiated_key_exchange_group().unwrap().name();
    format!("{group:?}")
}

fn cpu_time() -> Duration {
    // SAFETY: rusage is plain integers (all zeroes is a valid value), and
    // getrusage only writes into the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// `n` handshakes; returns (group, wall µs, CPU µs) per handshake.
fn round(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>, n: usize) -> (String, f64, f64) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = server.clone();
    let acceptor = std::thread::spawn(move || serve(listener, server, n));
    let (wall, cpu) = (Instant::now(), cpu_time());
    let mut group = String::new();
    for _ in 0..n {
        group = connect(addr, client);
    }
    acceptor.join().unwrap();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    (group, per(wall.elapsed()), per(cpu_time() - cpu))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let (rounds, n) = (env_or("ROUNDS", 5), env_or("HANDSHAKES", 1000));
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let trust = ca.trust_bundle();
    let server = server_config(&issue(&ca, REVIEWS), &trust).unwrap();
    let me = issue(&ca, PRODUCTPAGE);
    let mut mesh =
        (*client_config(&me, &trust, SpiffeId::parse(REVIEWS).unwrap()).unwrap()).clone();
    let mut x25519 = x25519_client(&ca, &me);
    mesh.resumption = Resumption::disabled();
    x25519.resumption = Resumption::disabled();
    let variants = [("mesh", Arc::new(mesh)), ("x25519", Arc::new(x25519))];
    println!("{rounds} rounds of {n} full mTLS handshakes per variant, medians");
    println!("variant  group            wall µs/hs  CPU µs/hs  handshakes/s");
    for (name, client) in &variants {
        round(&server, client, WARMUP);
        let (mut walls, mut cpus, mut group) = (Vec::new(), Vec::new(), String::new());
        for _ in 0..rounds {
            let (g, wall, cpu) = round(&server, client, n);
            walls.push(wall);
            cpus.push(cpu);
            group = g;
        }
        let (wall, cpu) = (median(walls.clone()), median(cpus.clone()));
        println!(
            "{name:<8} {group:<16} {wall:>11.1} {cpu:>10.1} {:>13.0}",
            1e6 / wall
        );
        let show = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>();
        println!(
            "         per round: wall {:?} CPU {:?}",
            show(&walls),
            show(&cpus)
        );
    }
}
