//! Reading the certificates `check` inspects (the webhook's `caBundle`,
//! the CA Secret's root): PEM to X.509, validity against the clock, whether
//! a private key belongs to a certificate, and dates as people read them.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::time::{SystemTime, UNIX_EPOCH};

/// What `check` needs of one certificate.
#[derive(Debug, Clone)]
pub(crate) struct Cert {
    pub(crate) der: Vec<u8>,
    pub(crate) subject: String,
    /// Unix seconds.
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
    /// basicConstraints cA.
    pub(crate) is_ca: bool,
    /// The subjectPublicKey bits.
    public_key: Vec<u8>,
}

/// Every certificate in a PEM text; an error names what is wrong.
pub(crate) fn parse_pem(pem: &[u8]) -> Result<Vec<Cert>, String> {
    let mut out = Vec::new();
    for der in CertificateDer::pem_slice_iter(pem) {
        let der = der.map_err(|e| format!("not valid PEM: {e}"))?;
        out.push(parse_der(der.as_ref())?);
    }
    if out.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(out)
}

fn parse_der(der: &[u8]) -> Result<Cert, String> {
    let (_, x509) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let is_ca = x509
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    Ok(Cert {
        der: der.to_vec(),
        subject: x509.subject().to_string(),
        not_before: x509.validity().not_before.timestamp(),
        not_after: x509.validity().not_after.timestamp(),
        is_ca,
        public_key: x509.public_key().subject_public_key.data.to_vec(),
    })
}

impl Cert {
    /// Whether `key_pem` is the private key of this certificate.
    pub(crate) fn matches_key(&self, key_pem: &str) -> Result<bool, String> {
        let key = rcgen::KeyPair::from_pem(key_pem)
            .map_err(|e| format!("not a valid private key: {e}"))?;
        Ok(key.public_key_raw() == self.public_key.as_slice())
    }

    /// Why it cannot be used now (not yet valid, expired), if so.
    pub(crate) fn invalid_now(&self, now: i64) -> Option<String> {
        if now < self.not_before {
            Some(format!("not valid before {}", date(self.not_before)))
        } else if now >= self.not_after {
            Some(format!("expired on {}", date(self.not_after)))
        } else {
            None
        }
    }

    /// Whole days left until it expires (0 when already expired).
    pub(crate) fn days_left(&self, now: i64) -> i64 {
        ((self.not_after - now) / 86_400).max(0)
    }
}

/// Standard base64 (as Secrets' `data` and `caBundle` hold bytes), decoded
/// the way the API types decode it.
pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    serde_json::from_value::<k8s_openapi::ByteString>(serde_json::Value::String(s.to_string()))
        .ok()
        .map(|b| b.0)
}

/// Now, in Unix seconds.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD` (UTC) of Unix seconds.
pub(crate) fn date(secs: i64) -> String {
    // Days to civil date (proleptic Gregorian), after H. Hinnant's algorithm.
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_mesh::identity::ca::CertificateAuthority;

    #[test]
    fn dates_read_as_calendar_days() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date(1_798_675_200), "2026-12-31");
    }

    #[test]
    fn a_root_matches_its_own_key_only() {
        let ca = CertificateAuthority::generate("weft.local").unwrap();
        let other = CertificateAuthority::generate("weft.local").unwrap();
        let certs = parse_pem(ca.cert_pem().as_bytes()).unwrap();
        assert_eq!(certs.len(), 1);
        assert!(certs[0].is_ca);
        assert!(certs[0].matches_key(ca.key_pem()).unwrap());
        assert!(!certs[0].matches_key(other.key_pem()).unwrap());
        assert!(certs[0].matches_key("junk").is_err());
        let now = now();
        assert_eq!(certs[0].invalid_now(now), None);
        assert!(certs[0].days_left(now) > 3000);
        assert!(certs[0]
            .invalid_now(certs[0].not_after)
            .unwrap()
            .starts_with("expired on "));
        assert!(parse_pem(b"hello").is_err());
    }
}
