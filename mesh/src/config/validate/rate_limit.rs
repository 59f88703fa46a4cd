//! `TrafficPolicy.spec.rateLimit` checks: at least one limit, positive
//! rates and bursts, override identities that are SPIFFE IDs named once.

use super::Validator;
use crate::config::rate_limit::RateLimit;
use crate::config::Origin;
use std::collections::HashSet;

impl Validator<'_> {
    pub(super) fn rate_limit(&mut self, o: &Origin, rl: &RateLimit) {
        const P: &str = "spec.rateLimit";
        if rl.total.is_none() && rl.identity.is_none() && rl.overrides.is_empty() {
            self.err(o, P, "set at least one of total, identity, overrides");
        }
        let limits = [("total", &rl.total), ("identity", &rl.identity)];
        for (field, limit) in limits {
            if let Some(l) = limit {
                self.rate(o, &format!("{P}.{field}"), l.requests_per_second, l.burst);
            }
        }
        let mut seen = HashSet::new();
        for (i, ov) in rl.overrides.iter().enumerate() {
            let op = format!("{P}.overrides[{i}]");
            self.rate(o, &op, ov.requests_per_second, ov.burst);
            if ov.identities.is_empty() {
                self.err(o, &format!("{op}.identities"), "list at least one identity");
            }
            for (ii, id) in ov.identities.iter().enumerate() {
                let path = format!("{op}.identities[{ii}]");
                if !id.starts_with("spiffe://") || id.len() == "spiffe://".len() {
                    self.err(
                        o,
                        &path,
                        format!("{id:?} is not a spiffe:// URI (overrides name exact identities)"),
                    );
                } else if !seen.insert(id.as_str()) {
                    self.err(
                        o,
                        &path,
                        format!("{id:?} is already named by an earlier override"),
                    );
                }
            }
        }
    }

    fn rate(&mut self, o: &Origin, path: &str, rps: u32, burst: Option<u32>) {
        if rps == 0 {
            self.err(
                o,
                &format!("{path}.requestsPerSecond"),
                "requestsPerSecond must be at least 1",
            );
        }
        if burst == Some(0) {
            self.err(o, &format!("{path}.burst"), "burst must be at least 1");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{load_sources, ConfigError};

    fn errors(rate_limit: &str) -> (String, Vec<ConfigError>) {
        let text = format!(
            "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: reviews}}\nspec:\n  endpoints: [{{address: \"127.0.0.1:9\"}}]\n---\napiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: reviews}}\nspec:\n  targetRef: {{kind: Service, name: reviews}}\n  rateLimit:\n{rate_limit}"
        );
        let errs = match load_sources(vec![("mesh.yaml".into(), text.clone())]) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        };
        (text, errs)
    }

    /// The one error, checked to point at the line holding `marker`.
    fn only(rate_limit: &str, marker: &str) -> ConfigError {
        let (text, errs) = errors(rate_limit);
        assert_eq!(errs.len(), 1, "{errs:?}");
        let e = errs.into_iter().next().unwrap();
        let line = text.lines().position(|l| l.contains(marker)).unwrap() as u32 + 1;
        assert_eq!((e.file.as_str(), e.line), ("mesh.yaml", line), "{e}");
        assert!(e.column > 1, "{e}");
        e
    }

    #[test]
    fn a_full_block_is_accepted_and_bursts_default_to_a_second() {
        let (_, errs) = errors(
            "    total: {requestsPerSecond: 100, burst: 150}\n    identity: {requestsPerSecond: 20}\n    overrides:\n      - identities: [\"spiffe://weft.local/ns/shop/sa/checkout\"]\n        requestsPerSecond: 50\n",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(crate::config::defaults::rate_limit_burst(None, 20), 20);
        assert_eq!(crate::config::defaults::rate_limit_burst(Some(5), 20), 5);
    }

    #[test]
    fn at_least_one_limit() {
        let e = only("    overrides: []\n", "overrides");
        assert_eq!(e.path, "spec.rateLimit");
        assert!(e.message.contains("at least one"), "{e}");
    }

    #[test]
    fn rates_and_bursts_are_positive() {
        let e = only("    total: {requestsPerSecond: 0}\n", "total");
        assert_eq!(e.path, "spec.rateLimit.total.requestsPerSecond");
        let e = only(
            "    identity:\n      requestsPerSecond: 5\n      burst: 0\n",
            "burst",
        );
        assert_eq!(e.path, "spec.rateLimit.identity.burst");
        assert_eq!(
            e.to_string(),
            format!(
                "mesh.yaml:{}:{}: spec.rateLimit.identity.burst: burst must be at least 1",
                e.line, e.column
            )
        );
        let (_, errs) = errors("    total: {requestsPerSecond: -1}\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "spec.rateLimit.total.requestsPerSecond");
    }

    #[test]
    fn override_identities_are_spiffe_ids_named_once() {
        let e = only(
            "    overrides:\n      - identities: [checkout]\n        requestsPerSecond: 5\n",
            "checkout",
        );
        assert_eq!(e.path, "spec.rateLimit.overrides[0].identities[0]");
        assert!(e.message.contains("spiffe://"), "{e}");
        let e = only(
            "    overrides:\n      - identities: [\"spiffe://td/a\"]\n        requestsPerSecond: 5\n      - identities:\n          - \"spiffe://td/a\"\n        requestsPerSecond: 9\n",
            "- \"spiffe://td/a\"",
        );
        assert_eq!(e.path, "spec.rateLimit.overrides[1].identities[0]");
        assert!(e.message.contains("earlier override"), "{e}");
        let e = only(
            "    overrides:\n      - identities: []\n        requestsPerSecond: 5\n",
            "identities: []",
        );
        assert_eq!(e.path, "spec.rateLimit.overrides[0].identities");
    }
}
