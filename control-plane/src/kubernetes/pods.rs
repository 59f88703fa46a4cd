//! Pods, read only for the identities of their endpoints: an EndpointSlice
//! endpoint backed by a meshed Pod (one carrying the injector's
//! `weft.dev/injected` annotation) is dialled over mTLS and must present
//! `spiffe://<trust-domain>/ns/<ns>/sa/<serviceAccountName>`; any other
//! endpoint is plaintext.
//!
//! The API server cannot project fields, and metadata-only lists lack the
//! service account and IPs, so Pods are listed whole but deserialized into
//! [`PodView`], which keeps only namespace, name, UID, service account,
//! host networking and IPs, and is trimmed further (annotations other than
//! the injection one, labels other than `weft.dev/inject`, which the
//! coverage report reads, managed fields) before it enters the store. Pods that
//! have finished (`Succeeded`, `Failed`) are left out by a field selector:
//! they keep their IPs in status after another Pod may have been given the
//! same address.
//!
//! An endpoint is matched to its Pod by `targetRef` (kind Pod, same
//! namespace unless it names one, and the same UID when both carry one);
//! without a Pod `targetRef`, by its first address among the Pods' IPs
//! (host-network Pods share their node's address and are never matched by
//! IP, nor is an address several Pods claim with different identities).
//! A `targetRef` whose Pod is not (yet) in the store gives no identity:
//! the next Pod event rebuilds the Backends.

use k8s_openapi::api::discovery::v1::Endpoint;
use kube::core::{NamespaceResourceScope, ObjectMeta, Resource};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use weft_mesh::identity::SpiffeId;

/// The annotation the injector puts on every Pod it meshed.
pub(crate) const INJECTED_ANNOTATION: &str = "weft.dev/injected";

/// The label that turns injection on (namespace, Pod) or off (Pod).
pub(crate) const INJECT_LABEL: &str = "weft.dev/inject";

/// The value of the injection label among `labels`.
pub(crate) fn inject_label(labels: &Option<BTreeMap<String, String>>) -> Option<String> {
    labels.as_ref()?.get(INJECT_LABEL).cloned()
}

/// The field selector of the Pod watch: Pods that may still run.
pub(crate) const RUNNING_PODS: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// The part of a Pod the control plane keeps.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct PodView {
    pub(crate) metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<PodViewSpec>,
    #[serde(default)]
    status: Option<PodViewStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodViewSpec {
    #[serde(default)]
    service_account_name: Option<String>,
    #[serde(default)]
    host_network: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodViewStatus {
    #[serde(default, rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(default, rename = "podIPs")]
    pod_ips: Option<Vec<PodViewIp>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct PodViewIp {
    #[serde(default)]
    ip: Option<String>,
}

impl Resource for PodView {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "Pod".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "pods".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl PodView {
    /// Drops what the translation never reads before the Pod is stored.
    pub(crate) fn trim(&mut self) {
        let m = &mut self.metadata;
        let meshed = m
            .annotations
            .as_ref()
            .and_then(|a| a.get(INJECTED_ANNOTATION))
            .cloned();
        m.annotations = meshed.map(|v| BTreeMap::from([(INJECTED_ANNOTATION.to_string(), v)]));
        // Only the injection label (for the coverage report).
        let label = inject_label(&m.labels);
        m.labels = label.map(|v| BTreeMap::from([(INJECT_LABEL.to_string(), v)]));
        m.managed_fields = None;
        m.owner_references = None;
        m.finalizers = None;
        m.generate_name = None;
    }

    /// A hash of everything the translation reads of the Pod: an update
    /// that leaves it unchanged (status conditions, restarts, labels)
    /// rebuilds nothing.
    pub(crate) fn fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let m = &self.metadata;
        (&m.namespace, &m.name, &m.uid, &m.annotations, &m.labels).hash(&mut h);
        self.service_account().hash(&mut h);
        self.spec.as_ref().and_then(|s| s.host_network).hash(&mut h);
        let mut ips: Vec<IpAddr> = self.ips().collect();
        ips.sort();
        ips.hash(&mut h);
        h.finish()
    }

    pub(crate) fn meshed(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(INJECTED_ANNOTATION))
    }

    /// The account the Pod runs as; the API server defaults it to
    /// `default`.
    fn service_account(&self) -> &str {
        self.spec
            .as_ref()
            .and_then(|s| s.service_account_name.as_deref())
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
    }

    fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        let status = self.status.as_ref();
        let listed = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| p.ip.as_deref());
        status
            .and_then(|s| s.pod_ip.as_deref())
            .into_iter()
            .chain(listed)
            .filter_map(|ip| ip.parse().ok())
    }

    /// The identity a peer must prove to be this Pod, when it is meshed.
    fn identity(&self, trust_domain: &str) -> Option<String> {
        if !self.meshed() {
            return None;
        }
        let ns = self.metadata.namespace.as_deref()?;
        match SpiffeId::new(trust_domain, ns, self.service_account()) {
            Ok(id) => Some(id.as_str().to_string()),
            Err(e) => {
                tracing::warn!(pod = ?self.metadata.name, namespace = ns, "no identity: {e}");
                None
            }
        }
    }
}

/// The Pods by name and by IP, for one translation.
pub(crate) struct Pods<'a> {
    by_name: HashMap<(&'a str, &'a str), &'a PodView>,
    by_ip: HashMap<IpAddr, Vec<&'a PodView>>,
}

impl<'a> Pods<'a> {
    pub(crate) fn new(pods: &'a [Arc<PodView>]) -> Pods<'a> {
        let mut by_name = HashMap::new();
        let mut by_ip: HashMap<IpAddr, Vec<&PodView>> = HashMap::new();
        for p in pods {
            let (Some(ns), Some(name)) =
                (p.metadata.namespace.as_deref(), p.metadata.name.as_deref())
            else {
                continue;
            };
            by_name.insert((ns, name), &**p);
            if p.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
                continue;
            }
            let mut ips: Vec<IpAddr> = p.ips().collect();
            ips.sort();
            ips.dedup();
            for ip in ips {
                by_ip.entry(ip).or_default().push(p);
            }
        }
        Pods { by_name, by_ip }
    }

    /// The identity the endpoint `e` of a slice in namespace `ns` must
    /// present, or `None` for plaintext.
    pub(crate) fn identity(&self, trust_domain: &str, ns: &str, e: &Endpoint) -> Option<String> {
        if let Some(r) = e
            .target_ref
            .as_ref()
            .filter(|r| r.kind.as_deref() == Some("Pod"))
        {
            let ns = r.namespace.as_deref().unwrap_or(ns);
            let pod = self.by_name.get(&(ns, r.name.as_deref()?))?;
            let same = match (&r.uid, &pod.metadata.uid) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            return same.then(|| pod.identity(trust_domain)).flatten();
        }
        let ip: IpAddr = e.addresses.first()?.parse().ok()?;
        let mut ids = self
            .by_ip
            .get(&ip)?
            .iter()
            .map(|p| p.identity(trust_domain));
        let first = ids.next()?;
        ids.all(|id| id == first).then_some(first).flatten()
    }
}
