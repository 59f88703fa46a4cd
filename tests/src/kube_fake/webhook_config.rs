//! Validation of Mutating/ValidatingWebhookConfiguration objects as the
//! apiserver refuses them (their defaults are in `kinds.rs`): webhook
//! names, review versions, side effects, the client config, rules,
//! policies, the timeout and the selectors.

use super::builtin::{detail, items, required, validate_selector};
use super::errors::Cause;
use serde_json::Value;

/// Adds the reasons the apiserver would refuse the configuration.
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let mut names = Vec::new();
    for (i, w) in items(&obj["webhooks"]).enumerate() {
        let at = format!("webhooks[{i}]");
        let name = w["name"].as_str().unwrap_or("");
        if name.split('.').count() < 3 || !super::kinds::is_subdomain(name) {
            causes.push(Cause::invalid(
                format!("{at}.name"),
                &format!("{name:?}"),
                "should be a domain with at least three segments separated by dots",
            ));
        } else if names.contains(&name) {
            causes.push(detail(
                "FieldValueDuplicate",
                format!("{at}.name"),
                format!("Duplicate value: {name:?}"),
            ));
        }
        names.push(name);
        let versions: Vec<&str> = items(&w["admissionReviewVersions"])
            .filter_map(Value::as_str)
            .collect();
        if versions.is_empty() {
            causes.push(required(
                format!("{at}.admissionReviewVersions"),
                "must specify one of v1, v1beta1",
            ));
        } else if !versions.iter().any(|v| matches!(*v, "v1" | "v1beta1")) {
            causes.push(Cause::invalid(
                format!("{at}.admissionReviewVersions"),
                &w["admissionReviewVersions"].to_string(),
                "must include at least one of v1, v1beta1",
            ));
        }
        match w["sideEffects"].as_str() {
            Some("None" | "NoneOnDryRun") => {}
            None => causes.push(required(
                format!("{at}.sideEffects"),
                "must specify one of None, NoneOnDryRun",
            )),
            Some(s) => causes.push(Cause::not_supported(
                format!("{at}.sideEffects"),
                s,
                &["None", "NoneOnDryRun"],
            )),
        }
        let cc = &w["clientConfig"];
        match (cc["url"].as_str(), cc["service"].is_object()) {
            (Some(_), true) | (None, false) => causes.push(required(
                format!("{at}.clientConfig"),
                "exactly one of url or service is required",
            )),
            (Some(u), false) => {
                if !u.starts_with("https://") {
                    causes.push(Cause::invalid(
                        format!("{at}.clientConfig.url"),
                        &format!("{u:?}"),
                        "'https' is the only allowed URL scheme",
                    ));
                }
            }
            (None, true) => {
                let s = &cc["service"];
                for k in ["namespace", "name"] {
                    if s[k].as_str().is_none_or(str::is_empty) {
                        causes.push(required(
                            format!("{at}.clientConfig.service.{k}"),
                            &format!("service {k} is required"),
                        ));
                    }
                }
                if let Some(p) = s["path"].as_str().filter(|p| !p.starts_with('/')) {
                    causes.push(Cause::invalid(
                        format!("{at}.clientConfig.service.path"),
                        &format!("{p:?}"),
                        "must start with a '/'",
                    ));
                }
                if let Some(p) = s["port"].as_i64().filter(|p| !(1..=65535).contains(p)) {
                    causes.push(Cause::invalid(
                        format!("{at}.clientConfig.service.port"),
                        &p.to_string(),
                        "port is not valid: must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
        for (j, r) in items(&w["rules"]).enumerate() {
            let rat = format!("{at}.rules[{j}]");
            for k in ["operations", "apiGroups", "apiVersions", "resources"] {
                if r[k].as_array().is_none_or(Vec::is_empty) {
                    causes.push(Cause::required(format!("{rat}.{k}")));
                }
            }
            for (n, op) in items(&r["operations"]).enumerate() {
                let op = op.as_str().unwrap_or("");
                if !matches!(op, "*" | "CREATE" | "UPDATE" | "DELETE" | "CONNECT") {
                    causes.push(Cause::not_supported(
                        format!("{rat}.operations[{n}]"),
                        op,
                        &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"],
                    ));
                }
            }
            if let Some(s) = r["scope"]
                .as_str()
                .filter(|s| !matches!(*s, "*" | "Cluster" | "Namespaced"))
            {
                causes.push(Cause::not_supported(
                    format!("{rat}.scope"),
                    s,
                    &["*", "Cluster", "Namespaced"],
                ));
            }
        }
        for (k, allowed) in [
            ("failurePolicy", &["Fail", "Ignore"][..]),
            ("matchPolicy", &["Equivalent", "Exact"][..]),
            ("reinvocationPolicy", &["IfNeeded", "Never"][..]),
        ] {
            if let Some(v) = w[k].as_str().filter(|v| !allowed.contains(v)) {
                causes.push(Cause::not_supported(format!("{at}.{k}"), v, allowed));
            }
        }
        if let Some(t) = w["timeoutSeconds"]
            .as_i64()
            .filter(|t| !(1..=30).contains(t))
        {
            causes.push(Cause::invalid(
                format!("{at}.timeoutSeconds"),
                &t.to_string(),
                "the timeout value must be between 1 and 30 seconds",
            ));
        }
        for sel in ["namespaceSelector", "objectSelector"] {
            if w[sel].is_object() {
                validate_selector(&w[sel], &format!("{at}.{sel}"), causes);
            }
        }
    }
}
