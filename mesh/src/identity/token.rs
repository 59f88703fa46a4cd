//! Bootstrap tokens: how a proxy outside Kubernetes proves which workload it
//! is before it has a certificate.
//!
//! A token names one identity (namespace and service account) and an expiry,
//! signed with HMAC-SHA256 under a key derived from the CA's private key:
//! `weft1:<namespace>:<service-account>:<expiry unix seconds>:<hex mac>`.
//! A token for one workload cannot be turned into another's (the MAC covers
//! the identity), there is no shared secret between workloads, and no state:
//! any control plane holding the same CA verifies it, and a restart loses
//! nothing. Issue one per workload with `weft-control-plane token`.

use aws_lc_rs::hmac;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "weft1";

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub namespace: String,
    pub service_account: String,
}

pub struct Tokens {
    key: hmac::Key,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() & 1 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

impl Tokens {
    /// Derives the signing key from the CA key (PEM), so every control plane
    /// sharing the CA shares it and nothing else needs distributing.
    pub fn from_ca_key(ca_key_pem: &str) -> Tokens {
        let derive = hmac::Key::new(hmac::HMAC_SHA256, b"weft bootstrap token key v1");
        let secret = hmac::sign(&derive, ca_key_pem.as_bytes());
        Tokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_ref()),
        }
    }

    /// A token for `namespace`/`service_account`, valid for `ttl`.
    pub fn issue(
        &self,
        namespace: &str,
        service_account: &str,
        ttl: Duration,
    ) -> Result<String, String> {
        if !valid_segment(namespace) || !valid_segment(service_account) {
            return Err("namespace and service account must be [A-Za-z0-9.-_]".into());
        }
        let body = format!(
            "{PREFIX}:{namespace}:{service_account}:{}",
            now_unix() + ttl.as_secs()
        );
        let mac = hmac::sign(&self.key, body.as_bytes());
        Ok(format!("{body}:{}", hex(mac.as_ref())))
    }

    /// Whether `token` has a bootstrap token's shape (`weft1:…`), as
    /// opposed to, say, a Kubernetes ServiceAccount JWT.
    pub fn is_bootstrap(token: &str) -> bool {
        token
            .strip_prefix(PREFIX)
            .is_some_and(|rest| rest.starts_with(':'))
    }

    /// The identity a token speaks for, if its MAC holds and it has not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, &'static str> {
        let (body, mac) = token.rsplit_once(':').ok_or("malformed token")?;
        let mac = unhex(mac).ok_or("malformed token")?;
        hmac::verify(&self.key, body.as_bytes(), &mac).map_err(|_| "invalid token")?;
        let parts: Vec<&str> = body.split(':').collect();
        let [PREFIX, ns, sa, expiry] = parts.as_slice() else {
            return Err("malformed token");
        };
        let expiry: u64 = expiry.parse().map_err(|_| "malformed token")?;
        if expiry <= now_unix() {
            return Err("token expired");
        }
        Ok(Claims {
            namespace: ns.to_string(),
            service_account: sa.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_one_identity() {
        let t = Tokens::from_ca_key("key one");
        let tok = t
            .issue("shop", "payments", Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            t.verify(&tok).unwrap(),
            Claims {
                namespace: "shop".into(),
                service_account: "payments".into()
            }
        );
        // Changing the named identity breaks the MAC.
        let forged = tok.replacen(":payments:", ":admin:", 1);
        assert_eq!(t.verify(&forged), Err("invalid token"));
        // Another CA's control plane does not accept it.
        assert!(Tokens::from_ca_key("key two").verify(&tok).is_err());
        // Expired.
        let old = t.issue("shop", "payments", Duration::ZERO).unwrap();
        assert_eq!(t.verify(&old), Err("token expired"));
        assert!(t.verify("garbage").is_err());
        assert!(t.issue("a:b", "c", Duration::from_secs(1)).is_err());
        // Told apart from ServiceAccount JWTs by shape alone.
        assert!(Tokens::is_bootstrap(&tok));
        assert!(!Tokens::is_bootstrap("eyJhbGciOiJSUzI1NiJ9.e30.c2ln"));
        assert!(!Tokens::is_bootstrap("weft1"));
        assert!(!Tokens::is_bootstrap("weft10:x"));
    }
}
