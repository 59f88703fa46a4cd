//! Which Pods the mesh covers, namespace by namespace, for the admin page
//! (`/config` → `kubernetes.coverage`): an operator turning injection on
//! for a namespace sees at once which of its Pods still run without a
//! sidecar (they predate the label and need a restart), and which opted
//! out. The injector decides by the labels the contract names —
//! namespace label `weft.dev/inject=enabled`, Pod label
//! `weft.dev/inject=enabled|disabled` — and marks what it meshed with the
//! `weft.dev/injected` annotation; this module only reads them.
//!
//! Namespaces are watched for that label alone (each kept as its name and
//! that one label, see [`NamespaceView`]).

use super::pods::{inject_label, PodView, INJECT_LABEL};
use kube::core::{ClusterResourceScope, ObjectMeta, Resource};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most Pods named per namespace (the counts are whole).
const NAMED: usize = 10;

/// The part of a Namespace the control plane keeps: its name and
/// injection label.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct NamespaceView {
    pub(crate) metadata: ObjectMeta,
}

impl Resource for NamespaceView {
    type DynamicType = ();
    type Scope = ClusterResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Namespace".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "namespaces".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl NamespaceView {
    /// Keeps the name and the injection label only.
    pub(crate) fn trim(&mut self) {
        let m = &mut self.metadata;
        let label = inject_label(&m.labels);
        *m = ObjectMeta {
            name: m.name.take(),
            uid: m.uid.take(),
            resource_version: m.resource_version.take(),
            labels: label.map(|v| BTreeMap::from([(INJECT_LABEL.to_string(), v)])),
            ..ObjectMeta::default()
        };
    }
}

/// Per namespace that has injection on or any meshed Pod: its label, how
/// many Pods it runs, how many are meshed, which are not (first few) and
/// how many opted out; with the total of Pods waiting for a restart.
pub(crate) fn report(
    namespaces: &[Arc<NamespaceView>],
    pods: &[Arc<PodView>],
) -> serde_json::Value {
    #[derive(Default)]
    struct Counts {
        pods: usize,
        meshed: usize,
        opted_out: usize,
        unmeshed: Vec<String>,
    }
    let labels: BTreeMap<&str, Option<String>> = namespaces
        .iter()
        .filter_map(|n| {
            Some((
                n.metadata.name.as_deref()?,
                inject_label(&n.metadata.labels),
            ))
        })
        .collect();
    let mut by_ns: BTreeMap<&str, Counts> = BTreeMap::new();
    for p in pods {
        let (Some(ns), Some(name)) = (p.metadata.namespace.as_deref(), p.metadata.name.as_deref())
        else {
            continue;
        };
        let c = by_ns.entry(ns).or_default();
        c.pods += 1;
        if p.meshed() {
            c.meshed += 1;
        } else if inject_label(&p.metadata.labels).as_deref() == Some("disabled") {
            c.opted_out += 1;
        } else {
            c.unmeshed.push(name.to_string());
        }
    }
    let mut waiting = 0;
    let mut out = Vec::new();
    let names: std::collections::BTreeSet<&str> = labels
        .keys()
        .copied()
        .chain(by_ns.keys().copied())
        .collect();
    for ns in names {
        let label = labels.get(ns).cloned().flatten();
        let enabled = label.as_deref() == Some("enabled");
        let c = by_ns.remove(ns).unwrap_or_default();
        if !enabled && c.meshed == 0 {
            continue;
        }
        let mut unmeshed = c.unmeshed;
        unmeshed.sort();
        let not_meshed = unmeshed.len();
        if enabled {
            waiting += not_meshed;
        }
        unmeshed.truncate(NAMED);
        out.push(serde_json::json!({
            "namespace": ns,
            "injection": label.unwrap_or_else(|| "unset".into()),
            "pods": c.pods,
            "meshed": c.meshed,
            "not_meshed": not_meshed,
            "not_meshed_pods": unmeshed,
            "opted_out": c.opted_out,
        }));
    }
    serde_json::json!({"namespaces": out, "pods_to_restart": waiting})
}
