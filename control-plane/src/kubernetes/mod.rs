//! The Kubernetes source (`serve --kubernetes`): watches the API server
//! and feeds what it reads into the same pipeline as the files.
//!
//! kube-rs runtime watchers keep reflector stores of Services,
//! EndpointSlices (`discovery.k8s.io/v1`), Pods (trimmed to what
//! endpoint identities need, see [`pods`]) in every namespace, and
//! Namespaces (their injection label, for [`coverage`]): they list,
//! then watch from the list's resourceVersion with bookmarks, resume from
//! the last version seen when a watch ends, and relist on 410 Gone (the
//! store is swapped whole when a relist completes, so a relist never shows
//! a half-empty cluster). After any change settles, [`translate`] turns the
//! stores into Backend documents and `sources` loads them with the files.
//!
//! Routes and Weft resources are watched too ([`objects`]), loaded one by
//! one with everything else, and their status written back ([`status`])
//! by the replica holding the status Lease ([`lease`]).
//!
//! Credentials: in-cluster (the Pod's ServiceAccount) or `KUBECONFIG`, as
//! `kube::Config::infer` finds them. Reads need `list` and `watch` on
//! `services`, `endpointslices.discovery.k8s.io`, `pods` and `namespaces`,
//! cluster-wide
//! (and on the route, ReferenceGrant and Weft kinds; status writes need
//! `update`/`patch` on their `/status` and the Lease's Role, see the
//! README); a refusal is logged with the resource's name and shown on
//! `/config`, and the watch keeps retrying with backoff.

pub(crate) mod ca_secret;
mod coverage;
mod lease;
mod objects;
mod pods;
mod status;
pub(crate) mod tokens;
mod translate;
mod watch_error;

use crate::resources::Generated;
use crate::sources;
use crate::state::{ControlPlane, KubernetesStatus as Status};
use coverage::NamespaceView;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use objects::{Objects, Refusals};
use pods::PodView;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch as channel, Notify};
use weft_mesh::process::lock;

/// Changes settle this long before the Backends are rebuilt (a rollout
/// touches many slices at once).
const DEBOUNCE: Duration = Duration::from_millis(100);

/// The watched cluster.
pub(crate) struct Source {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    pods: Store<PodView>,
    namespaces: Store<NamespaceView>,
    objects: Objects,
    /// Whether this replica holds the status Lease.
    leader: channel::Receiver<bool>,
    /// Gives the status Lease up on shutdown.
    pub(crate) release: lease::Release,
    trust_domain: String,
    /// The control plane's own namespace.
    pub(crate) namespace: String,
    /// The API client (for the CA Secret and TokenReviews).
    pub(crate) client: Client,
    changed: Arc<Notify>,
    pub(crate) status: Arc<Status>,
}

impl Source {
    /// Connects with in-cluster credentials or `KUBECONFIG` and starts the
    /// watches; meshed endpoints get identities in `trust_domain`.
    /// `namespace` is the control plane's own (see [`own_namespace`]).
    /// The status Lease is held for `lease_duration`.
    pub(crate) async fn start(
        trust_domain: String,
        namespace: Option<String>,
        lease_duration: Duration,
    ) -> Result<Source, String> {
        let config = kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes credentials (in-cluster or KUBECONFIG): {e}"))?;
        tracing::info!(cluster = %config.cluster_url, "reading Services, EndpointSlices, Pods and Namespaces");
        let namespace = own_namespace(namespace);
        let client = Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
        let cfg = watcher::Config::default();
        let changed = Arc::new(Notify::new());
        let status = Arc::new(Status::default());
        let (services, writer) = reflector::store();
        watch(
            Api::<Service>::all(client.clone()),
            cfg.clone(),
            writer,
            "services",
            trim_managed_fields,
            |_| None,
            &changed,
            &status,
        );
        let (slices, writer) = reflector::store();
        watch(
            Api::<EndpointSlice>::all(client.clone()),
            cfg.clone(),
            writer,
            "endpointslices.discovery.k8s.io",
            trim_managed_fields,
            |_| None,
            &changed,
            &status,
        );
        let (pods, writer) = reflector::store();
        watch(
            Api::<PodView>::all(client.clone()),
            cfg.clone().fields(pods::RUNNING_PODS),
            writer,
            "pods",
            PodView::trim,
            |p| Some(p.fingerprint()),
            &changed,
            &status,
        );
        let (namespaces, writer) = reflector::store();
        watch(
            Api::<NamespaceView>::all(client.clone()),
            cfg,
            writer,
            "namespaces",
            NamespaceView::trim,
            |_| None,
            &changed,
            &status,
        );
        let objects = Objects::start(&client, &changed, &status);
        let (leader, release) = lease::start(
            client.clone(),
            namespace.clone(),
            lease_duration,
            status.clone(),
        );
        Ok(Source {
            services,
            slices,
            pods,
            namespaces,
            objects,
            leader,
            release,
            trust_domain,
            namespace,
            client,
            changed,
            status,
        })
    }

    /// Waits for the first complete list of every watched resource.
    pub(crate) async fn synced(&self) {
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        let _ = self.pods.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        self.objects.settled().await;
    }

    /// The Backends of the cluster as it stands in the stores.
    pub(crate) fn backends(&self) -> Vec<Generated> {
        let pods = self.pods.state();
        let ids = translate::Identities {
            trust_domain: &self.trust_domain,
            pods: pods::Pods::new(&pods),
        };
        *lock(&self.status.coverage) = coverage::report(&self.namespaces.state(), &pods);
        let services = self.services.state();
        self.note_refused(translate::refused(&services));
        translate::backends(&services, &self.slices.state(), &ids)
    }

    /// Logs each Service newly left out, and shows them all on `/config`.
    fn note_refused(&self, refused: Vec<(String, String)>) {
        let mut held = lock(&self.status.refused);
        for (service, reason) in refused.iter().filter(|r| !held.contains(r)) {
            tracing::warn!(%service, "Service left out of the mesh: {reason}");
        }
        *held = refused;
    }

    /// Hands the cluster as it stands to the control plane: the Backends
    /// and the routes and Weft resources (each loaded on its own); the
    /// objects refused before loading are returned, for their status.
    pub(crate) fn apply(&self, cp: &ControlPlane) -> Refusals {
        let (docs, refused) = self.objects.documents();
        lock(&cp.inputs).set_objects(docs);
        sources::set_kubernetes(cp, self.backends());
        status::report(&self.status, &lock(&cp.inputs).rejected(), &refused);
        refused
    }

    /// Feeds every settled change to the control plane, and has the
    /// status written when this replica holds the Lease, for ever.
    pub(crate) async fn feed(self, cp: Arc<ControlPlane>) {
        let (kick, refusals) = channel::channel(Some(self.apply(&cp)));
        tokio::spawn(status::run(
            self.client.clone(),
            self.objects.stores[..objects::GRANTS].to_vec(),
            self.services.clone(),
            cp.clone(),
            refusals,
            self.leader.clone(),
            self.status.clone(),
        ));
        loop {
            self.changed.notified().await;
            tokio::time::sleep(DEBOUNCE).await;
            kick.send_replace(Some(self.apply(&cp)));
        }
    }
}

/// Where the in-cluster ServiceAccount's namespace is mounted.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The control plane's own namespace: `--namespace`, else the in-cluster
/// ServiceAccount's, else `weft-system`.
fn own_namespace(flag: Option<String>) -> String {
    flag.filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| "weft-system".to_string())
}

/// Objects are stored without their `managedFields`, which nothing reads.
fn trim_managed_fields<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// Runs one watcher into `writer`'s store, each object trimmed by `trim`
/// first, waking `changed` on every change and complete list, logging
/// errors by resource name. When `fingerprint` gives a value for an
/// object, an update whose value is unchanged wakes nothing (a Pod's
/// status churns far more often than what the translation reads of it).
#[allow(clippy::too_many_arguments)]
fn watch<K>(
    api: Api<K>,
    cfg: watcher::Config,
    writer: reflector::store::Writer<K>,
    what: &'static str,
    trim: fn(&mut K),
    fingerprint: fn(&K) -> Option<u64>,
    changed: &Arc<Notify>,
    status: &Arc<Status>,
) where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let changed = changed.clone();
    let status = status.clone();
    tokio::spawn(async move {
        let stream = watcher::watcher(api, cfg)
            .default_backoff()
            .modify(trim)
            .reflect(writer);
        let mut stream = std::pin::pin!(stream);
        // The last fingerprint of each object, by namespace/name.
        let mut seen: HashMap<(Option<String>, Option<String>), u64> = HashMap::new();
        let key = |o: &K| (o.meta().namespace.clone(), o.meta().name.clone());
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::InitDone) => {
                    let n = status.lists.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::info!(resource = what, lists = n, "listed");
                    changed.notify_one();
                }
                Ok(Event::Apply(o)) => match fingerprint(&o) {
                    Some(f) if seen.insert(key(&o), f) == Some(f) => {}
                    _ => changed.notify_one(),
                },
                Ok(Event::Delete(o)) => {
                    seen.remove(&key(&o));
                    changed.notify_one();
                }
                Ok(Event::Init) => seen.clear(),
                Ok(Event::InitApply(o)) => {
                    if let Some(f) = fingerprint(&o) {
                        seen.insert(key(&o), f);
                    }
                }
                Err(e) => {
                    status.errors.fetch_add(1, Ordering::Relaxed);
                    let message = watch_error::describe(what, &e);
                    if matches!(&e, watcher::Error::WatchError(s) if s.code == 410) {
                        tracing::info!(resource = what, "{message}");
                    } else {
                        tracing::warn!(resource = what, "{message}");
                    }
                    *lock(&status.last_error) = Some(message);
                }
            }
        }
    });
}
