//! The first check: the API server answers `/version` with these
//! credentials, and its Kubernetes version is one Weft supports (native
//! sidecars need 1.29+; Weft is tested on 1.30 to 1.36).

use super::cluster::Cluster;
use super::report::Line;
use serde_json::Value;

/// The oldest and newest supported minor versions of Kubernetes 1.x.
pub(crate) const SUPPORTED: (u32, u32) = (30, 36);

/// One line; `false` when the API is not reachable (nothing else can run).
pub(crate) async fn check(cluster: &Cluster) -> (Line, bool) {
    let what = format!("Kubernetes API at {}", cluster.url);
    match cluster.get("/version").await {
        Ok(v) => (judge(&what, &v), true),
        Err(e) => (
            Line::fail(
                "api",
                what,
                format!("not reachable: {e}"),
                "check the current context (kubectl config current-context; kubectl version) and KUBECONFIG",
            ),
            false,
        ),
    }
}

fn judge(what: &str, v: &Value) -> Line {
    let (lo, hi) = SUPPORTED;
    let git = v["gitVersion"].as_str().unwrap_or("unknown").to_string();
    let major = v["major"].as_str().unwrap_or("");
    // Some distributions answer a minor like "30+".
    let minor: Option<u32> = v["minor"]
        .as_str()
        .and_then(|m| m.trim_end_matches('+').parse().ok());
    let supported = format!("Weft supports 1.{lo} to 1.{hi}");
    match (major, minor) {
        ("1", Some(m)) if (lo..=hi).contains(&m) => Line::ok(
            "api",
            format!("{what} reachable, Kubernetes {git} (supported: 1.{lo} to 1.{hi})"),
        ),
        ("1", Some(m)) if m < lo => Line::fail(
            "api",
            format!("{what}: Kubernetes {git}"),
            format!("too old: {supported}"),
            format!("upgrade the cluster to Kubernetes 1.{lo} or later"),
        ),
        ("1", Some(_)) => Line::fail(
            "api",
            format!("{what}: Kubernetes {git}"),
            format!("newer than tested: {supported}"),
            "use a Weft release that supports this Kubernetes version",
        ),
        _ => Line::fail(
            "api",
            format!("{what}: Kubernetes {git}"),
            format!(
                "/version does not say which version (major {major:?}, minor {:?})",
                v["minor"]
            ),
            "check that KUBECONFIG points at a Kubernetes API server",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn line(major: &str, minor: &str) -> Line {
        judge(
            "API",
            &json!({"major": major, "minor": minor, "gitVersion": format!("v{major}.{minor}.1")}),
        )
    }

    #[test]
    fn versions_inside_the_range_pass_and_others_say_which_way() {
        assert!(line("1", "30").ok);
        assert!(line("1", "36").ok);
        assert!(line("1", "33+").ok);
        assert_eq!(
            line("1", "29").text(),
            "✗ API: Kubernetes v1.29.1: too old: Weft supports 1.30 to 1.36 — fix: upgrade the cluster to Kubernetes 1.30 or later"
        );
        assert!(line("1", "37")
            .why
            .unwrap()
            .starts_with("newer than tested"));
        assert!(!line("2", "0").ok);
        assert!(!judge("API", &json!({})).ok);
    }
}
