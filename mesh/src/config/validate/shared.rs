//! The checks HTTPRoute and GRPCRoute share: parents, hostnames, header
//! matches, mirrors.

use super::super::route::{BackendRef, Filter, HeaderMatch, ParentRef, ValueMatchType};
use super::super::Origin;
use super::{is_dns_name, Validator};

impl Validator<'_> {
    /// A route's `parentRefs` and `hostnames` (HTTPRoute and GRPCRoute alike).
    pub(super) fn parents(&mut self, o: &Origin, parent_refs: &[ParentRef], hostnames: &[String]) {
        if parent_refs.is_empty() {
            self.err(
                o,
                "spec.parentRefs",
                "a route needs at least one parentRef (the service it takes over)",
            );
        }
        for (i, p) in parent_refs.iter().enumerate() {
            if let Some(k) = &p.kind {
                if k != "Service" && k != "Backend" {
                    self.err(
                        o,
                        &format!("spec.parentRefs[{i}].kind"),
                        format!("kind {k:?} is not supported (Service or Backend)"),
                    );
                }
            }
        }
        for (i, h) in hostnames.iter().enumerate() {
            let bare = h.strip_prefix("*.").unwrap_or(h);
            if !is_dns_name(bare) {
                self.err(
                    o,
                    &format!("spec.hostnames[{i}]"),
                    format!("{h:?} is not a valid hostname"),
                );
            }
        }
    }

    /// The `headers[]` of the match at `mp`.
    pub(super) fn header_matches(&mut self, o: &Origin, mp: &str, headers: &[HeaderMatch]) {
        for (hi, h) in headers.iter().enumerate() {
            if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
                self.err(
                    o,
                    &format!("{mp}.headers[{hi}].name"),
                    format!("{:?} is not a valid header name", h.name),
                );
            }
            if h.kind == ValueMatchType::RegularExpression {
                if let Err(e) = regex::Regex::new(&h.value) {
                    self.err(
                        o,
                        &format!("{mp}.headers[{hi}].value"),
                        format!("invalid regular expression: {e}"),
                    );
                }
            }
        }
    }

    /// `RequestMirror` filters of the rule at `rp`: on the rule only (one),
    /// to a Backend that exists, with a sane share.
    pub(super) fn mirrors(
        &mut self,
        o: &Origin,
        rp: &str,
        route_ns: &str,
        filters: &[Filter],
        backend_refs: &[BackendRef],
    ) {
        let mut seen = false;
        for (fi, f) in filters.iter().enumerate() {
            let Some(m) = &f.request_mirror else { continue };
            let fp = format!("{rp}.filters[{fi}].requestMirror");
            if std::mem::replace(&mut seen, true) {
                self.err(o, &fp, "one RequestMirror per rule is supported");
            }
            let b = &m.backend_ref;
            self.backend_ref(
                o,
                &format!("{fp}.backendRef"),
                route_ns,
                &b.kind,
                &b.name,
                &b.namespace,
            );
            if b.weight.is_some() || !b.filters.is_empty() {
                self.err(
                    o,
                    &format!("{fp}.backendRef"),
                    "a mirror's backendRef takes no weight or filters",
                );
            }
            if m.percent.is_some_and(|p| p > 100) {
                self.err(o, &format!("{fp}.percent"), "percent must be 0-100");
            }
            if m.percent.is_some() && m.fraction.is_some() {
                self.err(o, &fp, "only one of percent or fraction may be set");
            }
            if let Some(fr) = &m.fraction {
                if fr.denominator == 0 || fr.numerator > fr.denominator {
                    self.err(
                        o,
                        &format!("{fp}.fraction"),
                        "numerator must be at most denominator, and denominator more than 0",
                    );
                }
            }
        }
        for (bi, b) in backend_refs.iter().enumerate() {
            for (fi, f) in b.filters.iter().enumerate() {
                if f.request_mirror.is_some() {
                    self.err(
                        o,
                        &format!("{rp}.backendRefs[{bi}].filters[{fi}].type"),
                        "RequestMirror is supported on a rule's filters, not a backendRef's",
                    );
                }
            }
        }
    }
}
