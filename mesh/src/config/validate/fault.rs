//! TrafficPolicy `fault` checks: what an abort answers, shares as
//! percentages, a delay that delays, headers that can be matched.

use super::Validator;
use crate::config::{Resource, TrafficPolicySpec};

impl Validator<'_> {
    pub(super) fn fault(&mut self, p: &Resource<TrafficPolicySpec>) {
        let Some(f) = &p.spec.fault else { return };
        let o = &p.origin;
        if f.abort.is_none() && f.delay.is_none() {
            self.err(o, "spec.fault", "set abort, delay or both");
        }
        if let Some(a) = &f.abort {
            match (a.http_status, a.grpc_status) {
                (Some(s), None) if !(200..=599).contains(&s) => self.err(
                    o,
                    "spec.fault.abort.httpStatus",
                    format!("{s} is not an HTTP status to answer with (200-599)"),
                ),
                (None, Some(s)) if !(1..=16).contains(&s) => self.err(
                    o,
                    "spec.fault.abort.grpcStatus",
                    format!("{s} is not a gRPC error status (1-16)"),
                ),
                (Some(_), Some(_)) | (None, None) => self.err(
                    o,
                    "spec.fault.abort",
                    "set exactly one of httpStatus and grpcStatus",
                ),
                _ => {}
            }
            self.percent(p, "spec.fault.abort.percent", a.percent);
        }
        if let Some(d) = &f.delay {
            if d.fixed_delay.0.is_zero() {
                self.err(o, "spec.fault.delay.fixedDelay", "must be more than 0");
            }
            self.percent(p, "spec.fault.delay.percent", d.percent);
        }
        for (i, h) in f.headers.iter().enumerate() {
            if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
                self.err(
                    o,
                    &format!("spec.fault.headers[{i}].name"),
                    format!("{:?} is not a valid header name", h.name),
                );
            }
            if let Some(v) = &h.value {
                if http::HeaderValue::from_str(v).is_err() {
                    self.err(
                        o,
                        &format!("spec.fault.headers[{i}].value"),
                        format!("{v:?} is not a valid header value"),
                    );
                }
            }
        }
    }

    fn percent(&mut self, p: &Resource<TrafficPolicySpec>, path: &str, v: Option<f64>) {
        if v.is_some_and(|x| !(0.0..=100.0).contains(&x)) {
            self.err(&p.origin, path, "must be between 0 and 100");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{load_sources, ConfigError};

    const BASE: &str = "apiVersion: weft.dev/v1alpha1
kind: Backend
metadata: {name: reviews}
spec:
  endpoints: [{address: 127.0.0.1:9}]
---
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: chaos}
spec:
  targetRef: {kind: Backend, name: reviews}
  fault:
";

    fn errors(fault: &str) -> Vec<ConfigError> {
        let text = format!("{BASE}{fault}");
        match load_sources(vec![("mesh.yaml".into(), text)]) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }

    /// The only error, with the 1-based line of `needle` in the fault text.
    fn only(fault: &str, needle: &str) -> (ConfigError, u32) {
        let errs = errors(fault);
        assert_eq!(errs.len(), 1, "{errs:?}");
        let line = format!("{BASE}{fault}")
            .lines()
            .position(|l| l.contains(needle))
            .expect("needle") as u32
            + 1;
        (errs.into_iter().next().expect("one"), line)
    }

    #[test]
    fn a_full_fault_is_accepted() {
        let ok = "    abort: {httpStatus: 503, percent: 12.5}
    delay: {fixedDelay: 200ms, percent: 50}
    headers:
      - name: x-weft-fault
        value: \"on\"
      - name: x-test
";
        assert_eq!(errors(ok), vec![]);
        assert_eq!(errors("    abort: {grpcStatus: 14}\n"), vec![]);
        assert_eq!(errors("    delay: {fixedDelay: 1s}\n"), vec![]);
    }

    #[test]
    fn a_fault_must_do_something() {
        let (e, line) = only("    headers: [{name: x}]\n", "headers");
        assert_eq!(e.path, "spec.fault");
        assert_eq!(e.line, line, "{e}");
        assert!(e.message.contains("abort, delay"), "{e}");
    }

    #[test]
    fn abort_needs_exactly_one_valid_status() {
        let (e, line) = only("    abort: {httpStatus: 99}\n", "httpStatus: 99");
        assert_eq!(e.path, "spec.fault.abort.httpStatus");
        assert_eq!((e.line, e.column), (line, 25), "{e}");
        assert_eq!(
            e.to_string(),
            format!("mesh.yaml:{line}:25: spec.fault.abort.httpStatus: 99 is not an HTTP status to answer with (200-599)")
        );
        let (e, _) = only("    abort: {grpcStatus: 0}\n", "grpcStatus");
        assert_eq!(e.path, "spec.fault.abort.grpcStatus");
        let (e, _) = only("    abort: {grpcStatus: 17}\n", "grpcStatus");
        assert_eq!(e.path, "spec.fault.abort.grpcStatus");
        let (e, _) = only("    abort: {httpStatus: 503, grpcStatus: 14}\n", "abort");
        assert_eq!(e.path, "spec.fault.abort");
        let (e, _) = only("    abort: {percent: 5}\n", "abort");
        assert!(e.message.contains("exactly one"), "{e}");
    }

    #[test]
    fn percents_and_delays_are_checked() {
        let (e, line) = only(
            "    abort:\n      httpStatus: 503\n      percent: 100.5\n",
            "percent: 100.5",
        );
        assert_eq!(e.path, "spec.fault.abort.percent");
        assert_eq!((e.line, e.column), (line, 16), "{e}");
        let (e, _) = only("    delay: {fixedDelay: 1s, percent: -1}\n", "delay");
        assert_eq!(e.path, "spec.fault.delay.percent");
        let (e, _) = only("    delay: {fixedDelay: 0s}\n", "delay");
        assert_eq!(e.path, "spec.fault.delay.fixedDelay");
        // Serde's own checks keep their positions too.
        let (e, _) = only("    delay: {fixedDelay: soon}\n", "delay");
        assert_eq!(e.path, "spec.fault.delay.fixedDelay");
        let (e, _) = only("    delay: {percent: 5}\n", "delay");
        assert!(e.message.contains("fixedDelay"), "{e}");
    }

    #[test]
    fn headers_must_be_valid() {
        let (e, line) = only(
            "    abort: {httpStatus: 503}\n    headers:\n      - name: \"bad header\"\n",
            "bad header",
        );
        assert_eq!(e.path, "spec.fault.headers[0].name");
        assert_eq!(e.line, line, "{e}");
        let (e, _) = only(
            "    abort: {httpStatus: 503}\n    headers:\n      - {name: x, value: \"a\\nb\"}\n",
            "name: x",
        );
        assert_eq!(e.path, "spec.fault.headers[0].value");
    }
}
