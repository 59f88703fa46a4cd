//! The control plane's certificate authority: persistence around the signing
//! core in [`weft_mesh::identity::ca`].
//!
//! On first start the root is generated and written to `--ca-dir`; later
//! starts load it back, so workload certificates keep chaining to the same
//! trust anchor across restarts.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub(crate) use weft_mesh::identity::ca::CertificateAuthority;

/// File name of the root certificate inside the CA directory.
pub(crate) const CERT_FILE: &str = "ca.pem";
/// File name of the root private key inside the CA directory.
pub(crate) const KEY_FILE: &str = "ca-key.pem";

/// Loads the CA from `dir`, or generates one for `trust_domain` and saves it
/// there if neither file exists yet. One file without the other is an error
/// rather than a silent regeneration, which would orphan every issued cert.
pub(crate) fn load_or_generate(
    dir: &Path,
    trust_domain: &str,
) -> io::Result<(CertificateAuthority, bool)> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let cert = fs::read_to_string(&cert_path)?;
            let key = fs::read_to_string(&key_path)?;
            let ca = CertificateAuthority::from_pem(&cert, &key).map_err(io::Error::other)?;
            Ok((ca, false))
        }
        (false, false) => {
            let ca = CertificateAuthority::generate(trust_domain).map_err(io::Error::other)?;
            fs::create_dir_all(dir)?;
            write_private(&key_path, ca.key_pem())?;
            fs::write(&cert_path, ca.cert_pem())?;
            Ok((ca, true))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: found only one of {CERT_FILE} and {KEY_FILE}",
                dir.display()
            ),
        )),
    }
}

/// Writes the key readable by the owner only (0600 on Unix).
fn write_private(path: &PathBuf, contents: &str) -> io::Result<()> {
    use std::io::Write;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_mesh::identity::csr::WorkloadKey;
    use weft_mesh::identity::SpiffeId;

    #[test]
    fn generates_then_reloads_same_root() {
        let dir = std::env::temp_dir().join(format!("weft-ca-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (first, created) = load_or_generate(&dir, "weft.local").unwrap();
        assert!(created);
        let (second, created) = load_or_generate(&dir, "weft.local").unwrap();
        assert!(!created);
        assert_eq!(first.cert_der(), second.cert_der());
        // The reloaded CA can still sign.
        let id = SpiffeId::parse("spiffe://weft.local/ns/default/sa/reviews").unwrap();
        let wk = WorkloadKey::generate(&id).unwrap();
        second.sign_csr(wk.csr_pem(), &id).unwrap();
        fs::remove_file(dir.join(CERT_FILE)).unwrap();
        assert!(load_or_generate(&dir, "weft.local").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
