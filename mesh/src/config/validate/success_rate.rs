//! `outlierDetection.successRate` checks: the numbers a sweep divides by
//! and compares with must make sense.

use super::Validator;
use crate::config::{Origin, TrafficPolicySpec};

const AT: &str = "spec.outlierDetection.successRate";

impl Validator<'_> {
    pub(super) fn success_rate(&mut self, o: &Origin, spec: &TrafficPolicySpec) {
        let Some(sr) = spec
            .outlier_detection
            .as_ref()
            .and_then(|od| od.success_rate.as_ref())
        else {
            return;
        };
        let interval = spec.outlier_detection.as_ref().and_then(|od| od.interval);
        if interval.is_some_and(|i| i.0.is_zero()) {
            self.err(
                o,
                "spec.outlierDetection.interval",
                "must be above 0 with successRate on (it is how often success rates are judged)",
            );
        }
        if sr.minimum_hosts == Some(0) {
            self.err(
                o,
                &format!("{AT}.minimumHosts"),
                "must be at least 1 (endpoints with enough requests needed to judge any)",
            );
        }
        if sr.request_volume == Some(0) {
            self.err(
                o,
                &format!("{AT}.requestVolume"),
                "must be at least 1 (requests an endpoint needs in an interval to be judged)",
            );
        }
        if let Some(f) = sr.stdev_factor {
            if !(f.is_finite() && f > 0.0) {
                self.err(
                    o,
                    &format!("{AT}.stdevFactor"),
                    format!("must be a number above 0 (e.g. 1.9), got {f}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_sources;

    fn policy(success_rate: &str) -> String {
        format!(
            "apiVersion: weft.dev/v1alpha1\nkind: Backend\nmetadata: {{name: svc}}\nspec:\n  endpoints: [{{address: \"127.0.0.1:1\"}}]\n---\napiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: svc}}\nspec:\n  targetRef: {{kind: Backend, name: svc}}\n  outlierDetection:\n    interval: 1s\n    successRate:\n{success_rate}"
        )
    }

    /// The errors of `successRate` written as `body`, as `line:column: path: message`.
    fn errors(body: &str) -> Vec<String> {
        match load_sources(vec![("p.yaml".into(), policy(body))]) {
            Ok(_) => Vec::new(),
            Err(e) => {
                e.0.iter()
                    .map(|e| format!("{}:{}: {}: {}", e.line, e.column, e.path, e.message))
                    .collect()
            }
        }
    }

    #[test]
    fn good_values_and_the_empty_block_load() {
        assert!(errors("      {}\n").is_empty());
        assert!(
            errors("      minimumHosts: 3\n      requestVolume: 10\n      stdevFactor: 1.9\n")
                .is_empty()
        );
        let set = load_sources(vec![("p.yaml".into(), policy("      stdevFactor: 2\n"))]).unwrap();
        let sr = set.traffic_policies[0]
            .spec
            .outlier_detection
            .as_ref()
            .unwrap()
            .success_rate
            .clone()
            .unwrap();
        assert_eq!(
            (sr.minimum_hosts, sr.request_volume, sr.stdev_factor),
            (None, None, Some(2.0))
        );
    }

    #[test]
    fn each_bad_value_is_reported_where_it_is_written() {
        let e = errors("      minimumHosts: 0\n      requestVolume: 0\n      stdevFactor: 0\n");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with(
                "15:21: spec.outlierDetection.successRate.minimumHosts: must be at least 1"
            ),
            "{e:?}"
        );
        assert!(
            e[1].starts_with(
                "16:22: spec.outlierDetection.successRate.requestVolume: must be at least 1"
            ),
            "{e:?}"
        );
        assert!(
            e[2].starts_with(
                "17:20: spec.outlierDetection.successRate.stdevFactor: must be a number above 0"
            ),
            "{e:?}"
        );
        let e = errors("      stdevFactor: -1.5\n");
        assert!(e.len() == 1 && e[0].starts_with("15:20: spec.outlierDetection.successRate.stdevFactor: must be a number above 0"), "{e:?}");
        // The YAML reader itself refuses non-finite numbers, at the value.
        for bad in [".nan", ".inf"] {
            let e = errors(&format!("      stdevFactor: {bad}\n"));
            assert!(e.len() == 1 && e[0].starts_with("15:20:"), "{bad}: {e:?}");
        }
        let zero = policy("      {}\n").replace("interval: 1s", "interval: 0s");
        let e = load_sources(vec![("p.yaml".into(), zero)]).unwrap_err().0;
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(
            (e[0].line, e[0].path.as_str()),
            (13, "spec.outlierDetection.interval")
        );
        let e = errors("      stdevFactr: 2\n");
        assert!(e.len() == 1 && e[0].contains("unknown field"), "{e:?}");
    }
}
