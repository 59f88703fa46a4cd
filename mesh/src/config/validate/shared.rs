//! The checks HTTPRoute and GRPCRoute share: parents, hostnames, header
//! matches.

use super::super::route::{HeaderMatch, ParentRef, ValueMatchType};
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
}
