//! A wire-level fake Kubernetes API server for the control plane's tests.
//!
//! No API server can run here, so the tests talk to this one: it speaks
//! HTTPS (client certificates or bearer tokens, with a kubeconfig written
//! for either), serves discovery from the documents recorded from
//! kube-apiserver v1.36.2, and keeps every object as raw JSON with one
//! resourceVersion counter, answering LIST, WATCH and writes the way the
//! recorded server did. `README.md` beside this file lists what it
//! implements, which answers are checked against recordings
//! (`tests/tests/kube_fake_wire.rs`), and what it leaves out.

mod admin;
mod admission;
mod api;
mod auth;
mod builtin;
pub mod client;
mod crds;
mod discovery;
mod errors;
mod fields;
mod kinds;
mod listwatch;
mod openapi;
mod patch;
mod protobuf;
mod proxy;
mod rbac;
pub mod replay;
pub mod replayer;
mod reviews;
mod router;
mod schema;
mod selectors;
mod server;
mod service_ips;
mod store;
mod tokens;
mod util;
mod webhook_config;

pub use client::{Credentials, FakeClient, FakeResponse};
pub use crds::Crd;
pub use discovery::fixtures_dir;
pub use util::{b64_decode, b64_std};

use router::{Body, Reply};
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Timings and limits; the defaults are the recorded server's.
#[derive(Debug, Clone)]
pub struct Config {
    /// How often a watch with `allowWatchBookmarks=true` gets a BOOKMARK
    /// (60 s, as recorded; tests shorten it).
    pub bookmark_interval: Duration,
    /// A WATCH without `timeoutSeconds` ends after this.
    pub default_watch_timeout: Duration,
    /// How long a LIST at a future resourceVersion waits before its 504
    /// (about 3 s, as recorded).
    pub future_rv_wait: Duration,
    /// Events of each resource kept for WATCH and exact LIST; older
    /// versions have expired (410).
    pub history_limit: usize,
    /// Custom resource definitions served besides the recorded Gateway API.
    pub crds: Vec<Crd>,
    /// Whether the Gateway API CRDs of the recording server (HTTPRoute,
    /// GRPCRoute, ReferenceGrant v1.6.1) are installed; false is a cluster
    /// without them, where a test installs CRDs itself.
    pub gateway_api: bool,
    /// The Service ClusterIP range (`--service-cluster-ip-range`):
    /// 10.0.0.0/24 as on the recording server; larger for scale tests.
    pub service_cidr: (Ipv4Addr, u8),
}

impl Default for Config {
    fn default() -> Config {
        Config {
            bookmark_interval: Duration::from_secs(60),
            default_watch_timeout: Duration::from_secs(1800),
            future_rv_wait: Duration::from_secs(3),
            history_limit: 100,
            crds: Vec::new(),
            gateway_api: true,
            service_cidr: (Ipv4Addr::new(10, 0, 0, 0), 24),
        }
    }
}

/// A routed proxy target: kind (`services`, `pods`), namespace, name, port.
type ProxyRoute = (&'static str, String, String, u16);

/// What every request handler shares.
pub struct State {
    /// Changes when CRDs are created or deleted.
    discovery: RwLock<discovery::Discovery>,
    store: Mutex<store::Store>,
    config: Config,
    /// The ServiceAccount token issuer and default audience: the fake's URL.
    issuer: String,
    signer: tokens::Signer,
    cluster_ips: Mutex<service_ips::ServiceIps>,
    /// Where webhooks naming a Service (namespace, name) are sent.
    service_routes: Mutex<std::collections::HashMap<(String, String), SocketAddr>>,
    /// Where the `proxy` subresource of a Service or Pod (kind, namespace,
    /// name, port) is forwarded.
    proxy_routes: Mutex<std::collections::HashMap<ProxyRoute, SocketAddr>>,
    /// The serving generation: a connection closes when it moves on from
    /// the one it was accepted in (a stop, or the `KubeFake` dropped).
    generation: tokio::sync::watch::Sender<u64>,
    /// Open connections (closing ones included).
    live: tokio::sync::watch::Sender<usize>,
}

impl State {
    fn discovery(&self) -> RwLockReadGuard<'_, discovery::Discovery> {
        self.discovery.read().unwrap_or_else(|p| p.into_inner())
    }

    fn discovery_mut(&self) -> RwLockWriteGuard<'_, discovery::Discovery> {
        self.discovery.write().unwrap_or_else(|p| p.into_inner())
    }

    fn store(&self) -> MutexGuard<'_, store::Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn service_routes(
        &self,
    ) -> MutexGuard<'_, std::collections::HashMap<(String, String), SocketAddr>> {
        self.service_routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn proxy_routes(&self) -> MutexGuard<'_, std::collections::HashMap<ProxyRoute, SocketAddr>> {
        self.proxy_routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn allocate_cluster_ip(&self) -> Option<String> {
        self.service_ips().allocate()
    }

    fn in_service_range(&self, ip: &str) -> bool {
        self.service_ips().contains(ip)
    }

    fn release_cluster_ip(&self, ip: &str) {
        self.service_ips().release(ip);
    }

    fn service_ips(&self) -> MutexGuard<'_, service_ips::ServiceIps> {
        self.cluster_ips.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Discovery answers, with aggregated discovery's Etag and 304.
    fn discovery_reply(&self, path: &str, accept: &str, if_none_match: &str) -> Option<Reply> {
        let (ctype, body) = self.discovery().answer(path, accept)?;
        if ctype == discovery::AGGREGATED {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA512, body.as_bytes());
            let hex: String = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
            let etag = format!("\"{hex}\"");
            let mut r = if if_none_match == etag {
                Reply {
                    code: 304,
                    content_type: None,
                    headers: Vec::new(),
                    body: Body::Empty,
                }
            } else {
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let mut r = Reply::json(200, v);
                r.content_type = Some(ctype);
                r
            };
            r.headers.push(("Cache-Control".into(), "public".into()));
            r.headers.push(("Etag".into(), etag));
            r.headers.push(("Vary".into(), "Accept".into()));
            return Some(r);
        }
        let body = match serde_json::from_str::<Value>(&body) {
            Ok(v) if ctype == "application/json" => Body::Json(v),
            _ => Body::Text(body),
        };
        Some(Reply {
            code: 200,
            content_type: Some(ctype),
            headers: Vec::new(),
            body,
        })
    }
}

/// Starts a fake with chosen settings.
#[derive(Default)]
pub struct KubeFakeBuilder {
    config: Config,
}

impl KubeFakeBuilder {
    pub fn config(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }

    /// Serves the Weft CRDs (`weft.dev/v1alpha1`) of `charts/weft/crds/weft.dev.yaml`.
    pub fn weft_crds(mut self) -> Self {
        self.config.crds.extend(Crd::weft());
        self
    }

    pub fn crd(mut self, crd: Crd) -> Self {
        self.config.crds.push(crd);
        self
    }

    /// A cluster without the recorded Gateway API CRDs (a test creates
    /// the CRDs it needs through the API).
    pub fn without_gateway_api(mut self) -> Self {
        self.config.gateway_api = false;
        self
    }

    pub async fn start(self) -> KubeFake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake API server");
        let addr = listener.local_addr().expect("local addr");
        let url = format!("https://{addr}");
        let without: &[&str] = if self.config.gateway_api {
            &[]
        } else {
            &["gateway.networking.k8s.io"]
        };
        let mut discovery = discovery::Discovery::load(&self.config.crds, without)
            .expect("load discovery documents");
        discovery.set_server_address(&addr.to_string());
        let pki = server::Pki::generate();
        let cidr = self.config.service_cidr;
        let state = Arc::new(State {
            discovery: RwLock::new(discovery),
            store: Mutex::new(store::Store::new(1, self.config.history_limit)),
            config: self.config,
            issuer: url.clone(),
            signer: tokens::Signer::generate(),
            cluster_ips: Mutex::new(service_ips::ServiceIps::new(cidr)),
            service_routes: Mutex::new(Default::default()),
            proxy_routes: Mutex::new(Default::default()),
            generation: tokio::sync::watch::channel(0).0,
            live: tokio::sync::watch::channel(0).0,
        });
        let task = tokio::spawn(server::run(state.clone(), listener, pki.server_config()));
        let dir = crate::TempDir::new("kube-fake");
        let fake = KubeFake {
            state,
            addr,
            url,
            pki,
            task: Mutex::new(Some(task)),
            dir,
        };
        fake.bootstrap().await;
        fake
    }
}

/// A running fake API server. Dropping it stops it: the listener closes and
/// so does every open connection, watches included.
pub struct KubeFake {
    state: Arc<State>,
    addr: SocketAddr,
    url: String,
    pki: server::Pki,
    /// The accept loop; None while stopped.
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    dir: crate::TempDir,
}

impl Drop for KubeFake {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
        self.state.generation.send_replace(u64::MAX);
    }
}

impl KubeFake {
    /// A fake with the recorded server's settings and no Weft CRDs.
    pub async fn start() -> KubeFake {
        KubeFake::builder().start().await
    }

    pub fn builder() -> KubeFakeBuilder {
        KubeFakeBuilder::default()
    }

    /// What the apiserver creates for itself at start: the four system
    /// namespaces and the `default/kubernetes` Service (no endpoints, as
    /// with `--endpoint-reconciler-type=none` on the recording server).
    async fn bootstrap(&self) {
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            self.create_namespace(ns, json!({})).await;
        }
        self.create(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"clusterIP": self.state.service_ips().first(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.addr.port()}]},
        }))
        .await;
        // The CRDs the fake serves from the start exist as objects too.
        let mut crds = if self.state.config.gateway_api {
            Crd::recorded_gateway_api().expect("the recorded Gateway API CRDs")
        } else {
            Vec::new()
        };
        crds.extend(self.state.config.crds.iter().cloned());
        let mut definitions: std::collections::BTreeMap<String, Value> = Default::default();
        for crd in crds {
            let d = (*crd.definition).clone();
            let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
            match definitions.get_mut(&name) {
                None => {
                    definitions.insert(name, d);
                }
                Some(have) => {
                    // Two `Crd`s of one resource: one definition serving both.
                    for mut v in d["spec"]["versions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                    {
                        let list = have["spec"]["versions"].as_array_mut();
                        if let Some(list) =
                            list.filter(|l| !l.iter().any(|x| x["name"] == v["name"]))
                        {
                            v["storage"] = false.into();
                            list.push(v);
                        }
                    }
                }
            }
        }
        for (_, d) in definitions {
            self.create(d).await;
        }
    }

    /// `https://127.0.0.1:<port>`, also the token issuer and audience.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The CA that signed the serving certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// A client certificate and key (PEM) naming `user` in `groups`.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> (String, String) {
        self.pki.client_cert(user, groups)
    }

    fn write_kubeconfig(&self, file: &str, user: &str) -> PathBuf {
        let ca = util::b64_std(self.pki.ca_pem.as_bytes());
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: fake-user\n  user:\n{user}contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake-user\ncurrent-context: fake\n",
            self.url
        );
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// A kubeconfig authenticating with a client certificate for `user` in
    /// `groups` (`admin` in `system:masters` is the unrestricted admin).
    pub fn cert_kubeconfig(&self, user: &str, groups: &[&str]) -> PathBuf {
        let (cert, key) = self.client_cert(user, groups);
        let user_part = format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            util::b64_std(cert.as_bytes()),
            util::b64_std(key.as_bytes())
        );
        self.write_kubeconfig(&format!("kubeconfig-{}", util::uuid()), &user_part)
    }

    /// The admin's kubeconfig (`CN=admin, O=system:masters`).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.cert_kubeconfig("admin", &["system:masters"])
    }

    /// A kubeconfig with a bearer token for ServiceAccount `ns/sa` (which
    /// must exist), audience the fake itself, valid for an hour.
    pub fn service_account_kubeconfig(&self, ns: &str, sa: &str) -> PathBuf {
        let token = self
            .service_account_token(ns, sa, &[], Duration::from_secs(3600), None)
            .expect("ServiceAccount token");
        self.write_kubeconfig(
            &format!("kubeconfig-{ns}-{sa}-{}", util::uuid()),
            &format!("    token: {token}\n"),
        )
    }

    /// A token for ServiceAccount `ns/sa` as TokenRequest issues it:
    /// `audiences` empty means the fake itself; `pod` binds it to a Pod
    /// in `ns` (the token dies with the Pod).
    pub fn service_account_token(
        &self,
        ns: &str,
        sa: &str,
        audiences: &[&str],
        expiration: Duration,
        pod: Option<&str>,
    ) -> Result<String, String> {
        self.token_issued_at(ns, sa, audiences, expiration, pod, util::unix_now())
    }

    /// As [`KubeFake::service_account_token`], issued `ago` in the past
    /// with a lifetime of `expiration`: when `ago` exceeds it, a token
    /// that has expired (as a kubelet's stale file would hold).
    pub fn service_account_token_issued_ago(
        &self,
        ns: &str,
        sa: &str,
        audiences: &[&str],
        expiration: Duration,
        pod: Option<&str>,
        ago: Duration,
    ) -> Result<String, String> {
        let now = util::unix_now().saturating_sub(ago.as_secs());
        self.token_issued_at(ns, sa, audiences, expiration, pod, now)
    }

    fn token_issued_at(
        &self,
        ns: &str,
        sa: &str,
        audiences: &[&str],
        expiration: Duration,
        pod: Option<&str>,
        now: u64,
    ) -> Result<String, String> {
        let store = self.state.store();
        let sa_obj = store
            .get("serviceaccounts", ns, sa)
            .ok_or_else(|| format!("no ServiceAccount {ns}/{sa}"))?;
        let sa_uid = sa_obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let pod = match pod {
            Some(p) => {
                let o = store
                    .get("pods", ns, p)
                    .ok_or_else(|| format!("no Pod {ns}/{p}"))?;
                Some((
                    p.to_string(),
                    o["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                ))
            }
            None => None,
        };
        drop(store);
        let mut auds: Vec<String> = audiences.iter().map(|s| s.to_string()).collect();
        if auds.is_empty() {
            auds.push(self.url.clone());
        }
        Ok(tokens::issue_at(
            &self.state,
            ns,
            sa,
            &sa_uid,
            &auds,
            expiration.as_secs(),
            pod.as_ref().map(|(n, u)| (n.as_str(), u.as_str())),
            now,
        )
        .0)
    }

    /// An HTTPS client for raw requests, as the admin or with other
    /// credentials.
    pub fn client(&self, creds: Credentials) -> FakeClient {
        let config = match &creds {
            Credentials::Admin => {
                let (c, k) = self.client_cert("admin", &["system:masters"]);
                self.pki.client_config(Some((&c, &k)))
            }
            Credentials::Cert(c, k) => self.pki.client_config(Some((c.as_str(), k.as_str()))),
            Credentials::Bearer(_) | Credentials::None => self.pki.client_config(None),
        };
        FakeClient::new(self.addr, config, creds)
    }

    /// Sends admission webhooks whose `clientConfig.service` names
    /// `ns/name` to `addr` (there is no cluster network); the webhook's
    /// certificate must name `<name>.<ns>.svc`, as the apiserver checks.
    pub fn route_service(&self, ns: &str, name: &str, addr: SocketAddr) {
        self.state
            .service_routes()
            .insert((ns.to_string(), name.to_string()), addr);
    }

    /// Forwards the `proxy` subresource of Service (`kind` `services`) or
    /// Pod (`pods`) `ns/name` on `port` to `addr`
    /// (`.../services/[https:]name:port/proxy/...`); a Service port not
    /// routed here goes to the address given to [`KubeFake::route_service`].
    pub fn route_proxy(&self, kind: &str, ns: &str, name: &str, port: u16, addr: SocketAddr) {
        let kind = if kind == "pods" { "pods" } else { "services" };
        self.state
            .proxy_routes()
            .insert((kind, ns.to_string(), name.to_string(), port), addr);
    }

    /// The newest resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.state.store().current_rv()
    }

    /// Stops serving, as a dying apiserver does: the listener closes (new
    /// connections are refused) and so does every open connection, watches
    /// included. The objects stay; [`KubeFake::resume`] serves them again.
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            // The listener is closed once the aborted task is gone.
            let _ = task.await;
        }
        // Then every connection accepted until now closes; none sends
        // anything more once this returns (a change made next reaches no
        // watch until it reconnects).
        self.state
            .generation
            .send_modify(|g| *g = g.saturating_add(1));
        let _ = self.state.live.subscribe().wait_for(|n| *n == 0).await;
    }

    /// Serves again on the same address after [`KubeFake::stop`].
    pub async fn resume(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .expect("bind the fake API server's address again");
        let task = tokio::spawn(server::run(
            self.state.clone(),
            listener,
            self.pki.server_config(),
        ));
        if let Some(old) = self
            .task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(task)
        {
            old.abort();
        }
    }

    /// An apiserver restart: stopped, then serving again with a fresh watch
    /// cache, so a watch resumed from a resourceVersion before the restart
    /// is told 410 Gone (as a real apiserver whose cache starts at the
    /// current etcd revision does) and its client relists.
    pub async fn restart(&self) {
        self.stop().await;
        self.expire_history();
        self.resume().await;
    }

    /// Drops every resource's event history, so any older resourceVersion
    /// is expired: the next WATCH from one gets the 410 ERROR event and an
    /// exact LIST a 410.
    pub fn expire_history(&self) {
        self.state.store().expire_history();
    }
}
