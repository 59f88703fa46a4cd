//! MeshConfig checks: certificate lifetime and rotation point, tracing.

use super::Validator;
use crate::config::policy::MeshConfigSpec;
use crate::config::Resource;

impl Validator<'_> {
    pub(super) fn mesh_config(&mut self, m: &Resource<MeshConfigSpec>) {
        if let Some(p) = &m.spec.rotation_percent {
            let ok = matches!(p.as_slice(), [lo, hi] if *lo >= 1 && lo <= hi && *hi <= 95);
            if !ok {
                self.errors.push(m.origin.error(
                    "spec.rotationPercent",
                    "must be [low, high] percent of the certificate lifetime, 1 <= low <= high <= 95 (e.g. [50, 70])",
                ));
            }
        }
        if let Some(t) = &m.spec.tracing {
            if t.sampling_percent
                .is_some_and(|p| !(0.0..=100.0).contains(&p))
            {
                self.errors.push(
                    m.origin
                        .error("spec.tracing.samplingPercent", "must be between 0 and 100"),
                );
            }
            let protocol = t.protocol.as_deref();
            if protocol.is_some_and(|p| crate::config::policy::OtlpProtocol::parse(p).is_none()) {
                self.errors.push(
                    m.origin
                        .error("spec.tracing.protocol", "must be grpc or http/protobuf"),
                );
            }
            if let Some(e) = &t.otlp_endpoint {
                let ok = e.strip_prefix("http://").is_some_and(|rest| {
                    !rest.is_empty() && e.parse::<http::Uri>().is_ok_and(|u| u.host().is_some())
                });
                if !ok {
                    self.errors.push(m.origin.error(
                        "spec.tracing.otlpEndpoint",
                        "must be an http:// URL of an OTLP receiver, e.g. http://otel-collector.observability:4318 (https is not supported yet)",
                    ));
                }
            }
        }
        if let Some(l) = m.spec.certificate_lifetime {
            if l.0 < std::time::Duration::from_secs(60) {
                self.errors.push(m.origin.error(
                    "spec.certificateLifetime",
                    "must be at least 1m (certificates are renewed before they expire, so shorter ones churn)",
                ));
            }
        }
    }
}
