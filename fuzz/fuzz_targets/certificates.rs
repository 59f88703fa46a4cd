//! Certificates and CSRs from untrusted hands (`mesh/src/identity/`): the
//! SPIFFE ID of a peer's DER certificate (`verify::spiffe_id_of`), PEM
//! chains and keys as the proxy reads the control plane's answer and its
//! files, the CA signing a caller's CSR (raw, or in the JSON request the
//! control plane reads), and a CA loaded from PEM. The CA signs only the
//! identity it was told, whatever the CSR asks for.
//!
//! Flags: bits 0-1 pick the path (DER, PEM, CSR, CA).

#![no_main]

use libfuzzer_sys::fuzz_target;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::OnceLock;
use weft_fuzz::Input;
use weft_mesh::api::CertificateRequest;
use weft_mesh::identity::ca::CertificateAuthority;
use weft_mesh::identity::verify::spiffe_id_of;
use weft_mesh::identity::SpiffeId;

fn ca() -> &'static (CertificateAuthority, SpiffeId) {
    static CA: OnceLock<(CertificateAuthority, SpiffeId)> = OnceLock::new();
    CA.get_or_init(|| {
        let ca = CertificateAuthority::generate("fuzz.local").expect("a CA");
        let id = SpiffeId::new("fuzz.local", "shop", "payments").expect("an ID");
        (ca, id)
    })
}

fn sign(csr_pem: &str) {
    let (ca, id) = ca();
    if let Ok(issued) = ca.sign_csr(csr_pem, id) {
        assert_eq!(
            spiffe_id_of(&issued.der).as_ref(),
            Some(id),
            "the CA signed another identity than the one proven"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let input = Input::new(data);
    let bytes = input.bytes;
    match input.flags & 3 {
        0 => {
            if let Some(id) = spiffe_id_of(&CertificateDer::from(bytes)) {
                assert!(id.as_str().starts_with("spiffe://"));
            }
        }
        1 => {
            for cert in CertificateDer::pem_slice_iter(bytes).flatten() {
                let _ = spiffe_id_of(&cert);
            }
            let _ = PrivateKeyDer::from_pem_slice(bytes);
        }
        2 => {
            let Some(text) = input.text() else { return };
            match serde_json::from_str::<CertificateRequest>(text) {
                Ok(req) => sign(&req.csr),
                Err(_) => sign(text),
            }
        }
        _ => {
            let Some(text) = input.text() else { return };
            let (cert, key) = text.split_once('\0').unwrap_or((text, ""));
            if let Ok(ca) = CertificateAuthority::from_pem(cert, key) {
                let _ = spiffe_id_of(ca.cert_der());
            }
        }
    }
});
