//! SPIFFE IDs: the names workloads authenticate each other by.

use super::Error;
use std::fmt;
use std::str::FromStr;

/// A validated mesh SPIFFE ID (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`).
///
/// A newtype so that an unchecked string can never reach a verifier or the CA:
/// the only way to get one is [`SpiffeId::parse`] (or [`SpiffeId::new`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId(String);

fn valid_trust_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

impl SpiffeId {
    /// Parses and validates a mesh SPIFFE ID; rejects anything that is not
    /// exactly `spiffe://td/ns/x/sa/y` (no port, user info, query, fragment,
    /// upper-case trust domain, empty or extra segments).
    pub fn parse(s: &str) -> Result<SpiffeId, Error> {
        let bad = |reason| Error::InvalidSpiffeId {
            id: s.to_string(),
            reason,
        };
        if s.len() > 2048 {
            return Err(bad("longer than 2048 bytes"));
        }
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| bad("must start with spiffe://"))?;
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("missing path /ns/<ns>/sa/<sa>"))?;
        if !valid_trust_domain(td) {
            return Err(bad("trust domain must be non-empty [a-z0-9.-_]"));
        }
        let segs: Vec<&str> = path.split('/').collect();
        match segs.as_slice() {
            ["ns", ns, "sa", sa] if valid_segment(ns) && valid_segment(sa) => {
                Ok(SpiffeId(s.to_string()))
            }
            ["ns", _, "sa", _] => Err(bad("namespace and service account must be [A-Za-z0-9.-_]")),
            _ => Err(bad("path must be exactly /ns/<ns>/sa/<sa>")),
        }
    }

    /// Builds the ID for a workload from its parts, validating the result.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, Error> {
        Self::parse(&format!(
            "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    /// The full URI, as written in the certificate's URI SAN.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parts(&self) -> (&str, &str, &str) {
        let rest = &self.0["spiffe://".len()..];
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut it = path.split('/');
        let ns = it.nth(1).unwrap_or("");
        let sa = it.nth(1).unwrap_or("");
        (td, ns, sa)
    }

    /// The trust domain, which names the CA whose roots must vouch for it.
    pub fn trust_domain(&self) -> &str {
        self.parts().0
    }

    /// The Kubernetes-style namespace of the workload.
    pub fn namespace(&self) -> &str {
        self.parts().1
    }

    /// The service account the workload runs as.
    pub fn service_account(&self) -> &str {
        self.parts().2
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SpiffeId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids() {
        let id = SpiffeId::parse("spiffe://weft.local/ns/default/sa/reviews").unwrap();
        assert_eq!(id.trust_domain(), "weft.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "reviews");
        assert_eq!(id.to_string(), "spiffe://weft.local/ns/default/sa/reviews");
        assert_eq!(
            SpiffeId::new("weft.local", "default", "reviews").unwrap(),
            id
        );
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "https://weft.local/ns/default/sa/reviews",
            "spiffe://",
            "spiffe://weft.local",
            "spiffe://weft.local/",
            "spiffe:///ns/default/sa/reviews",
            "spiffe://Weft.local/ns/default/sa/reviews",
            "spiffe://weft.local:443/ns/default/sa/reviews",
            "spiffe://user@weft.local/ns/default/sa/reviews",
            "spiffe://weft.local/ns/default/sa/reviews/",
            "spiffe://weft.local/ns/default/sa/reviews/extra",
            "spiffe://weft.local/ns//sa/reviews",
            "spiffe://weft.local/ns/default/sa/",
            "spiffe://weft.local/ns/default/sa/..",
            "spiffe://weft.local/ns/default/sa/reviews?x=1",
            "spiffe://weft.local/ns/default/sa/reviews#f",
            "spiffe://weft.local/sa/reviews/ns/default",
            "SPIFFE://weft.local/ns/default/sa/reviews",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
