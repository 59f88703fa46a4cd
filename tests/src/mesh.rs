//! Mesh identities for tests: certificates minted by the project's own CA
//! code and written as the files `weft-proxy --identity-dir` reads.

use crate::{ProxyBuilder, TempDir};
use weft_mesh::identity::ca::CertificateAuthority;
use weft_mesh::identity::csr::WorkloadKey;
use weft_mesh::identity::SpiffeId;

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
