//! Every meshed pod's proxy is connected and up to date: the Running pods
//! carrying the `weft.dev/injected` annotation (or a `weft-proxy`
//! container) are matched by namespace and name (the injector sets
//! `WEFT_PROXY_NAME` to the pod's name) against the admin `/proxies` of
//! every running control plane replica — each proxy holds one watch on
//! one replica, so all are asked, each through the API server's pod
//! proxy (`pods/<pod>:15014/proxy/...`). A proxy is up to date when it
//! acknowledged its current snapshot, cut from the replica's current
//! config version (`/config`).

use super::cluster::{encode, ns_name, Cluster, Failure};
use super::deployment::NAME;
use super::report::Line;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

const CHECK: &str = "proxies";
/// The control plane's admin port (CONTRACT).
pub(crate) const ADMIN_PORT: u16 = 15014;
/// A proxy lagging may be applying a push right now: ask once more after this.
const SETTLE: Duration = Duration::from_secs(2);

/// What one replica says of one proxy.
#[derive(Debug, Clone)]
struct Seen {
    replica: String,
    /// The replica's config version.
    version: String,
    proxy: Value,
}

/// Whether `pod` is meshed.
pub(crate) fn meshed(pod: &Value) -> bool {
    let injected = pod["metadata"]["annotations"]
        .get("weft.dev/injected")
        .is_some();
    let sidecar = ["initContainers", "containers"].iter().any(|k| {
        pod["spec"][k]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"] == "weft-proxy")
    });
    injected || sidecar
}

pub(crate) async fn check(cluster: &Cluster) -> Vec<Line> {
    let pods = match cluster.list("/api/v1/pods").await {
        Ok(p) => p,
        Err(e) => {
            return vec![Line::fail(
                CHECK,
                "meshed pods",
                format!("cannot list pods: {e}"),
                "run check as a user who may list pods in every namespace",
            )]
        }
    };
    let meshed: Vec<&Value> = pods.iter().filter(|p| meshed(p)).collect();
    let (running, other): (Vec<&Value>, Vec<&Value>) = meshed
        .into_iter()
        .partition(|p| p["status"]["phase"] == "Running");
    let not_checked = if other.is_empty() {
        String::new()
    } else {
        format!("; {} not Running, not checked", other.len())
    };
    if running.is_empty() {
        return vec![Line::ok(
            CHECK,
            format!("no meshed pod running{not_checked} (label a namespace weft.dev/inject=enabled, then restart its workloads)"),
        )];
    }
    let mut seen = match ask_replicas(cluster).await {
        Ok(s) => s,
        Err(line) => return vec![line],
    };
    let mut problems: Vec<(&Value, String)> = running
        .iter()
        .filter_map(|p| problem(p, &seen).map(|why| (*p, why)))
        .collect();
    if !problems.is_empty() {
        tokio::time::sleep(SETTLE).await;
        if let Ok(again) = ask_replicas(cluster).await {
            seen = again;
            problems = running
                .iter()
                .filter_map(|p| problem(p, &seen).map(|why| (*p, why)))
                .collect();
        }
    }
    if problems.is_empty() {
        return vec![Line::ok(
            CHECK,
            format!(
                "all {} meshed pods' proxies connected and up to date{not_checked}",
                running.len()
            ),
        )];
    }
    problems
        .into_iter()
        .map(|(pod, why)| {
            let ns = pod["metadata"]["namespace"].as_str().unwrap_or("?");
            let name = pod["metadata"]["name"].as_str().unwrap_or("?");
            Line::fail(
                CHECK,
                format!("proxy of pod {}", ns_name(pod)),
                why,
                format!("see its log: kubectl -n {ns} logs {name} -c weft-proxy; restart the pod if it stays so"),
            )
        })
        .collect()
}

/// Why the proxy of `pod` is not connected and up to date, if it is not.
fn problem(pod: &Value, seen: &HashMap<(String, String), Vec<Seen>>) -> Option<String> {
    let key = (
        pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        pod["metadata"]["name"].as_str().unwrap_or("").to_string(),
    );
    let Some(views) = seen.get(&key) else {
        return Some("not connected to the control plane".into());
    };
    let mut why = None;
    for s in views {
        let p = &s.proxy;
        let (acked, current) = (&p["acked"], &p["current"]);
        if !current.is_string() || acked != current {
            let nack = &p["last_nack"];
            let rejected = if nack.is_object() && nack["version"] == *current {
                format!(
                    ", it rejected it: {}",
                    nack["reason"].as_str().unwrap_or("")
                )
            } else {
                String::new()
            };
            why = Some(format!(
                "connected to {}, acknowledged config {} but the current one is {}{rejected}",
                s.replica,
                acked.as_str().unwrap_or("none"),
                current.as_str().unwrap_or("not yet cut")
            ));
        } else if p["resources"] != s.version.as_str() {
            why = Some(format!(
                "connected to {}, its config is cut from version {} but the control plane is at {}",
                s.replica,
                p["resources"].as_str().unwrap_or("none"),
                s.version
            ));
        } else {
            return None;
        }
    }
    why
}

/// Every running replica's `/proxies`, keyed by (namespace, proxy name).
async fn ask_replicas(cluster: &Cluster) -> Result<HashMap<(String, String), Vec<Seen>>, Line> {
    let ns = &cluster.namespace;
    let what = "meshed pods' proxies";
    let selector = encode(&format!("app.kubernetes.io/name={NAME}"));
    let replicas = cluster
        .list(&format!(
            "/api/v1/namespaces/{ns}/pods?labelSelector={selector}"
        ))
        .await
        .map_err(|e| {
            Line::fail(
                CHECK,
                what,
                format!("cannot list the control plane's pods: {e}"),
                format!("run check as a user who may list pods in {ns}"),
            )
        })?;
    let running: Vec<&str> = replicas
        .iter()
        .filter(|p| p["status"]["phase"] == "Running")
        .filter_map(|p| p["metadata"]["name"].as_str())
        .collect();
    if running.is_empty() {
        return Err(Line::fail(
            CHECK,
            what,
            "no control plane pod is running to ask",
            format!("kubectl -n {ns} get pods -l app.kubernetes.io/name={NAME}; kubectl -n {ns} describe deployment {NAME}"),
        ));
    }
    let mut seen: HashMap<(String, String), Vec<Seen>> = HashMap::new();
    for replica in running {
        let base = format!("/api/v1/namespaces/{ns}/pods/{replica}:{ADMIN_PORT}/proxy");
        let asked = async {
            let config = cluster.get(&format!("{base}/config")).await?;
            let proxies = cluster.get(&format!("{base}/proxies")).await?;
            Ok::<_, Failure>((config, proxies))
        };
        let (config, proxies) = asked.await.map_err(|e| {
            let fix = match e {
                Failure::Forbidden(_) => {
                    format!("run check as a user who may get pods/proxy in {ns}")
                }
                _ => format!("kubectl -n {ns} logs {replica}"),
            };
            Line::fail(
                CHECK,
                what,
                format!(
                    "cannot ask control plane pod {ns}/{replica} (admin port {ADMIN_PORT}): {e}"
                ),
                fix,
            )
        })?;
        let version = config["version"].as_str().unwrap_or("").to_string();
        for p in proxies.as_array().into_iter().flatten() {
            let key = (
                p["namespace"].as_str().unwrap_or("").to_string(),
                p["name"].as_str().unwrap_or("").to_string(),
            );
            seen.entry(key).or_default().push(Seen {
                replica: replica.to_string(),
                version: version.clone(),
                proxy: p.clone(),
            });
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_is_judged_by_what_the_replicas_say() {
        let pod = json!({"metadata": {"namespace": "shop", "name": "reviews-0",
            "annotations": {"weft.dev/injected": "{}"}}});
        assert!(meshed(&pod));
        assert!(meshed(
            &json!({"spec": {"initContainers": [{"name": "weft-proxy"}]}})
        ));
        assert!(!meshed(&json!({"spec": {"containers": [{"name": "app"}]}})));
        let mut seen = HashMap::new();
        assert_eq!(
            problem(&pod, &seen).unwrap(),
            "not connected to the control plane"
        );
        let view = |acked: &str, resources: &str| Seen {
            replica: "weft-control-plane-a".into(),
            version: "7".into(),
            proxy: json!({"acked": acked, "current": "s2", "resources": resources,
                "last_nack": {"version": "s2", "reason": "bad route"}}),
        };
        seen.insert(("shop".into(), "reviews-0".into()), vec![view("s1", "7")]);
        assert_eq!(
            problem(&pod, &seen).unwrap(),
            "connected to weft-control-plane-a, acknowledged config s1 but the current one is s2, it rejected it: bad route"
        );
        seen.insert(("shop".into(), "reviews-0".into()), vec![view("s2", "6")]);
        assert!(problem(&pod, &seen).unwrap().contains("cut from version 6"));
        seen.insert(
            ("shop".into(), "reviews-0".into()),
            vec![view("s2", "6"), view("s2", "7")],
        );
        assert_eq!(problem(&pod, &seen), None);
    }
}
