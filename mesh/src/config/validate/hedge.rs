//! `TrafficPolicy.spec.hedge` checks: exactly one of delay / percentile,
//! in range, and a bounded number of hedges.

use super::Validator;
use crate::config::defaults;
use crate::config::policy::TrafficPolicySpec;
use crate::config::Resource;

impl Validator<'_> {
    pub(super) fn hedge(&mut self, p: &Resource<TrafficPolicySpec>) {
        let Some(h) = &p.spec.hedge else {
            return;
        };
        let o = &p.origin;
        match (&h.delay, h.percentile) {
            (Some(_), Some(_)) => self.err(
                o,
                "spec.hedge.percentile",
                "set either delay or percentile, not both",
            ),
            (None, None) => self.err(
                o,
                "spec.hedge",
                "set one of delay (e.g. 50ms) or percentile (e.g. 95)",
            ),
            (Some(d), None) if d.0.is_zero() => self.err(
                o,
                "spec.hedge.delay",
                "must be more than 0 (a hedge with no delay doubles every request)",
            ),
            (None, Some(pc)) if !(pc > 0.0 && pc < 100.0) => self.err(
                o,
                "spec.hedge.percentile",
                "must be above 0 and below 100 (e.g. 95)",
            ),
            _ => {}
        }
        if let Some(n) = h.max_hedges {
            if !(1..=defaults::HEDGE_MAX_HEDGES_LIMIT).contains(&n) {
                self.err(
                    o,
                    "spec.hedge.maxHedges",
                    format!("must be 1-{}", defaults::HEDGE_MAX_HEDGES_LIMIT),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{load_sources, ConfigError};

    fn errors(hedge: &str) -> Vec<ConfigError> {
        let text = format!(
            "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: svc}}\nspec:\n  endpoints: [{{address: \"127.0.0.1:1\"}}]\n---\napiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: svc}}\nspec:\n  targetRef: {{kind: Backend, name: svc}}\n  hedge:\n{hedge}"
        );
        match load_sources(vec![("mesh.yaml".into(), text)]) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }

    fn one(hedge: &str) -> String {
        let e = errors(hedge);
        assert_eq!(e.len(), 1, "{e:?}");
        e[0].to_string()
    }

    #[test]
    fn good_settings_load() {
        assert!(errors("    delay: 50ms\n").is_empty());
        assert!(errors("    percentile: 95\n    maxHedges: 3\n").is_empty());
        assert!(errors("    percentile: 99.9\n    maxHedges: 1\n").is_empty());
    }

    #[test]
    fn exactly_one_of_delay_and_percentile() {
        assert_eq!(
            one("    delay: 50ms\n    percentile: 95\n"),
            "mesh.yaml:14:17: spec.hedge.percentile: set either delay or percentile, not both"
        );
        assert_eq!(
            one("    maxHedges: 2\n"),
            "mesh.yaml:13:5: spec.hedge: set one of delay (e.g. 50ms) or percentile (e.g. 95)"
        );
    }

    #[test]
    fn values_out_of_range_point_at_the_field() {
        assert_eq!(
            one("    delay: 0s\n"),
            "mesh.yaml:13:12: spec.hedge.delay: must be more than 0 (a hedge with no delay doubles every request)"
        );
        for pc in ["0", "100", "-5", "250"] {
            let e = one(&format!("    percentile: {pc}\n"));
            assert!(
                e.starts_with("mesh.yaml:13:17: spec.hedge.percentile: must be above 0"),
                "{e}"
            );
        }
        for n in ["0", "4"] {
            assert_eq!(
                one(&format!("    delay: 10ms\n    maxHedges: {n}\n")),
                "mesh.yaml:14:16: spec.hedge.maxHedges: must be 1-3"
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = one("    delay: 10ms\n    maxHedge: 2\n");
        assert!(e.starts_with("mesh.yaml:14:5: spec.hedge.maxHedge"), "{e}");
    }
}
