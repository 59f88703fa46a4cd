//! `weft-proxy run`: start listeners, load config, serve until SIGTERM.

use crate::admin::{self, Admin};
use crate::body::pace::Pace;
use crate::control_plane::{ControlPlane, Credential, Settings, TrustSource};
use crate::drain::Drain;
use crate::listen::{self, Direction};
use crate::pipeline::Pipeline;
use crate::probes::{self, app::AppProbes};
use crate::proxy::{Proxy, ProxyOptions};
use crate::telemetry::metrics::Metrics;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use weft_mesh::config::files::FileWatch;
use weft_mesh::config::policy::InboundMode;
use weft_mesh::process::{init_logging, shutdown_signal, LogLevelSetter};

/// Flags of `weft-proxy run`; each also reads `WEFT_<FLAG>` from the environment.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Config file, or folder of *.yaml files (file mode; watched and hot-reloaded).
    #[arg(long, env = "WEFT_CONFIG", value_name = "PATH")]
    pub config: Vec<PathBuf>,
    /// Control plane URL (mesh mode): `https://host:port`. Config and the
    /// mesh certificate then come from it.
    #[arg(long, env = "WEFT_CONTROL_PLANE", value_name = "URL")]
    pub control_plane: Option<String>,
    /// Mesh mode: PEM trust anchors (the mesh CA) to verify the control plane.
    #[arg(long, env = "WEFT_CONTROL_PLANE_CA", value_name = "PATH")]
    pub control_plane_ca: Option<PathBuf>,
    /// Mesh mode: the same trust anchors as PEM text (the injector sets
    /// `WEFT_CONTROL_PLANE_CA_PEM`); instead of `--control-plane-ca`.
    #[arg(
        long,
        env = "WEFT_CONTROL_PLANE_CA_PEM",
        value_name = "PEM",
        conflicts_with = "control_plane_ca",
        allow_hyphen_values = true,
        hide_env_values = true
    )]
    pub control_plane_ca_pem: Option<String>,
    /// Mesh mode: the token that proves this workload's identity for its
    /// first certificate (`weft-control-plane token`).
    #[arg(long, env = "WEFT_BOOTSTRAP_TOKEN", hide_env_values = true)]
    pub bootstrap_token: Option<String>,
    /// Mesh mode in Kubernetes: a projected ServiceAccount token (audience
    /// `weft`) that proves this Pod's identity when it has no valid
    /// certificate; re-read on every use, as the kubelet rotates it.
    #[arg(long, env = "WEFT_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Mesh mode: the trust domain of the mesh.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "weft.local")]
    pub trust_domain: String,
    /// Mesh mode: the service account this workload runs as (its identity);
    /// defaults to `--service`.
    #[arg(long, env = "WEFT_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    /// Mesh mode: how this instance is listed at the control plane
    /// (default: host name and process id).
    #[arg(long, env = "WEFT_PROXY_NAME")]
    pub proxy_name: Option<String>,
    /// Where the local app's outgoing traffic arrives.
    #[arg(long, env = "WEFT_OUTBOUND", default_value = "127.0.0.1:15001")]
    pub outbound: SocketAddr,
    /// Where traffic for the local app arrives.
    #[arg(long, env = "WEFT_INBOUND", default_value = "0.0.0.0:15006")]
    pub inbound: SocketAddr,
    /// The local app the inbound side forwards to.
    #[arg(long, env = "WEFT_APP", default_value = "127.0.0.1:8080")]
    pub app: SocketAddr,
    /// Admin endpoint.
    #[arg(long, env = "WEFT_ADMIN", default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,
    /// Probe listener (plain HTTP/1.1; `0.0.0.0:15020` in a pod): serves
    /// only `/ready` and the app's probes of `--app-probes`. Off unless given.
    #[arg(long, env = "WEFT_PROBES", value_name = "ADDR")]
    pub probes: Option<SocketAddr>,
    /// The app's own HTTP probes, as JSON keyed by the path the kubelet
    /// calls on `--probes` (the injector writes it): `{"/app-health/web/readyz":
    /// {"port": 8080, "path": "/healthz", "scheme": "HTTP", "headers": [..],
    /// "timeoutSeconds": 1}}`.
    #[arg(
        long,
        env = "WEFT_APP_PROBES",
        value_name = "JSON",
        requires = "probes"
    )]
    pub app_probes: Option<String>,
    /// The service this sidecar fronts.
    #[arg(long, env = "WEFT_SERVICE")]
    pub service: Option<String>,
    /// The namespace of this sidecar; bare service names resolve in it.
    #[arg(long, env = "WEFT_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Mesh identity: a directory with `cert.pem` (leaf chain), `key.pem` and
    /// `ca.pem` (trust bundle). Turns on mTLS (inbound termination, outbound to
    /// endpoints that name an identity).
    #[arg(long, env = "WEFT_IDENTITY_DIR")]
    pub identity_dir: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "WEFT_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Log filter (tracing syntax: info, debug, weft_proxy=debug,...).
    #[arg(long, env = "WEFT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Worker threads. One is the sidecar default: a sidecar shares its pod's CPU.
    #[arg(long, env = "WEFT_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// How long in-flight requests may finish after SIGTERM.
    #[arg(long, env = "WEFT_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_dur)]
    pub shutdown_grace: Duration,
    /// A client must send its whole request head within this time (0 disables).
    #[arg(long, env = "WEFT_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_dur)]
    pub header_read_timeout: Duration,
    /// Largest accepted request head, in bytes (larger gets 431).
    #[arg(long, env = "WEFT_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// Most connections each listener holds at once; past it new ones are
    /// closed at once.
    #[arg(long, env = "WEFT_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: u32,
    /// Most requests in flight on each listener (to the end of the response
    /// body); past it, 503 `overloaded`.
    #[arg(long, env = "WEFT_MAX_REQUESTS", default_value_t = 4096)]
    pub max_requests: u32,
    /// A request body that sends nothing for this long is cut off: 408 (0 disables).
    #[arg(long, env = "WEFT_REQUEST_BODY_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_dur)]
    pub request_body_idle_timeout: Duration,
    /// Least bytes per second a request body must come at while it is
    /// coming (pauses aside), judged every `--request-body-rate-window`; 0 disables.
    #[arg(long, env = "WEFT_REQUEST_BODY_MIN_RATE", default_value_t = 16)]
    pub request_body_min_rate: u64,
    /// How often a request body's rate is judged.
    #[arg(long, env = "WEFT_REQUEST_BODY_RATE_WINDOW", default_value = "10s", value_parser = parse_dur)]
    pub request_body_rate_window: Duration,
    /// Wait this long for a client's first bytes before treating it as opaque TCP.
    #[arg(long, env = "WEFT_DETECT_TIMEOUT", default_value = "1s", value_parser = parse_dur)]
    pub detect_timeout: Duration,
    /// Close upstream connections idle this long (a TrafficPolicy may override).
    #[arg(long, env = "WEFT_POOL_IDLE_TIMEOUT", default_value = "55s", value_parser = parse_dur)]
    pub pool_idle_timeout: Duration,
    /// DNS server for `Backend.spec.dns` (default: the system resolver).
    #[arg(long, env = "WEFT_DNS_SERVER")]
    pub dns_server: Option<SocketAddr>,
    /// Access log, one line per request (a MeshConfig's `accessLog` overrides).
    #[arg(long, env = "WEFT_ACCESS_LOG", default_value = "off", value_parser = ["off", "on"])]
    pub access_log: String,
    /// Inbound mode: `strict` refuses plaintext inbound connections (needs
    /// `--identity-dir`); a MeshConfig's `defaultInboundMode` overrides.
    #[arg(long, env = "WEFT_INBOUND_MODE", default_value = "permissive", value_parser = ["permissive", "strict"])]
    pub inbound_mode: String,
    /// How many failed or degraded requests the admin `/failures` keeps
    /// (0 turns it off).
    #[arg(long, env = "WEFT_FAILURES_KEPT", default_value_t = 256)]
    pub failures_kept: usize,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    weft_mesh::config::duration::parse_duration(s)
}

/// Runs the proxy until SIGTERM/SIGINT; returns the process exit code.
pub fn run(args: RunArgs) -> i32 {
    let set_level = init_logging(&args.log_format, &args.log_level);
    let rt = if args.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft-proxy: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async_run(args, set_level))
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, String> {
    let sock = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(|e| format!("{what} {addr}: {e}"))?;
    let _ = sock.set_reuseaddr(true);
    sock.bind(addr)
        .map_err(|e| format!("cannot listen on {what} {addr}: {e}"))?;
    sock.listen(1024)
        .map_err(|e| format!("cannot listen on {what} {addr}: {e}"))
}

async fn async_run(args: RunArgs, set_level: LogLevelSetter) -> i32 {
    let app_probes = match args.app_probes.as_deref().map(AppProbes::parse) {
        None => AppProbes::default(),
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            tracing::error!("{e}; not starting");
            return 2;
        }
    };
    let control_plane = match control_plane(&args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}; not starting");
            return 2;
        }
    };
    if args.inbound_mode == "strict" && args.identity_dir.is_none() && control_plane.is_none() {
        tracing::error!(
            "--inbound-mode strict needs a mesh identity (--identity-dir); not starting"
        );
        return 1;
    }
    let mesh = match &args.identity_dir {
        None => None,
        Some(dir) => match crate::tls::mesh::MeshTls::load(dir) {
            Ok(m) => {
                tracing::info!(identity = %m.id, dir = %dir.display(), "mesh identity loaded: mTLS on");
                Some(Arc::new(m))
            }
            Err(e) => {
                tracing::error!("--identity-dir: {e}; not starting");
                return 1;
            }
        },
    };
    let source = match &control_plane {
        Some(cp) => format!("control-plane {}", cp.authority()),
        None => crate::file_watch::source(&args.config),
    };
    let lookups = control_plane
        .as_ref()
        .map(|cp| cp.lookups.clone() as Arc<dyn crate::proxy::NameLookup>);
    let proxy = Arc::new(
        Proxy::new(options(&args), Arc::new(Metrics::new()), source.clone())
            .with_mesh(mesh, control_plane.is_some())
            .with_lookups(lookups)
            .with_trace_env(crate::telemetry::trace::Env::read(), proxy_name(&args)),
    );
    // Tracing from the environment alone; a MeshConfig may add to it.
    proxy.tracing.configure(None);
    let resolver = match crate::backend::dns::resolver(args.dns_server) {
        Ok(r) => Some(Arc::new(r)),
        Err(e) => {
            tracing::warn!(error = %e, "DNS discovery unavailable");
            None
        }
    };
    let pipeline = Arc::new(Pipeline::new(proxy.clone(), resolver));
    // Config: from the files (watched from before the first load, so no
    // edit is missed), or from the control plane once this proxy has a
    // certificate to connect with.
    let config_source = match control_plane {
        None => {
            let files = FileWatch::new(&args.config);
            let first = weft_mesh::config::load_paths(&args.config);
            if let Err(errors) = pipeline.start(&source, first) {
                for e in &errors.0 {
                    eprintln!("{e}");
                }
                tracing::error!("invalid config at startup; not starting");
                return 1;
            }
            tokio::spawn(crate::file_watch::run(pipeline, files))
        }
        Some(cp) => tokio::spawn(async move {
            let identity = crate::identity::Manager::new(cp.certificates, pipeline.proxy().clone());
            let validity = identity.first().await;
            tokio::spawn(crate::control_plane::watch::run(
                cp.connector,
                cp.lookups,
                pipeline,
                cp.introduction,
            ));
            identity.renew_forever(validity).await
        }),
    };
    let listeners = async {
        let probes = match args.probes {
            Some(addr) => {
                let mut l = vec![bind("probes", addr).await?];
                l.extend(listen::twin::bind("probes", addr));
                l
            }
            None => Vec::new(),
        };
        Ok::<_, String>((
            bind("outbound", args.outbound).await?,
            bind("inbound", args.inbound).await?,
            bind("admin", args.admin).await?,
            probes,
        ))
    };
    let (outbound, inbound, admin_l, probes_l) = match listeners.await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    // The IPv6 twins an ip6tables REDIRECT delivers to (see `listen::twin`).
    let outbound6 = listen::twin::bind("outbound", args.outbound);
    let inbound6 = listen::twin::bind("inbound", args.inbound);
    let local = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let ipv6: Vec<String> = [&outbound6, &inbound6]
        .into_iter()
        .flatten()
        .chain(probes_l.iter().skip(1))
        .map(local)
        .collect();
    tracing::info!(
        outbound = %local(&outbound),
        inbound = %local(&inbound),
        admin = %local(&admin_l),
        ipv6 = %ipv6.join(","),
        probes = %probes_l.first().map(local).unwrap_or_default(),
        app_probes = app_probes.len(),
        app = %args.app,
        workers = args.workers,
        "weft-proxy serving"
    );

    let drain = Drain::new();
    let admin_state = Arc::new(Admin {
        proxy: proxy.clone(),
        set_log_level: set_level,
        log_level: std::sync::Mutex::new(args.log_level.clone()),
    });
    let evictor = {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            let mut trimmer = crate::memory::Trimmer::default();
            loop {
                tick.tick().await;
                proxy.evict_idle();
                if let Some(free) = trimmer.tick() {
                    tracing::debug!(free, "returned the allocator's free memory to the OS");
                }
            }
        })
    };
    let servers = async {
        tokio::join!(
            listen::serve(outbound, proxy.clone(), Direction::Outbound, &drain),
            listen::serve(inbound, proxy.clone(), Direction::Inbound, &drain),
            listen::twin::serve(outbound6, proxy.clone(), Direction::Outbound, &drain),
            listen::twin::serve(inbound6, proxy.clone(), Direction::Inbound, &drain),
            admin::serve(admin_l, admin_state, &drain),
            async {
                if !probes_l.is_empty() {
                    probes::serve(probes_l, proxy.clone(), app_probes, &drain).await;
                }
            },
        )
    };
    tokio::select! {
        _ = servers => {}
        _ = shutdown_signal() => {}
    }
    tracing::info!(grace = ?args.shutdown_grace, "shutting down: no new connections; finishing in-flight requests");
    config_source.abort();
    evictor.abort();
    if drain.drain(args.shutdown_grace).await {
        tracing::info!("all connections finished");
    } else {
        tracing::warn!("grace period over with connections still open; closing them");
    }
    proxy.tracing.close(Duration::from_secs(5)).await;
    0
}

/// The settings fixed for the process, from the flags.
fn options(args: &RunArgs) -> ProxyOptions {
    ProxyOptions {
        namespace: args.namespace.clone(),
        service: args.service.clone(),
        app: args.app,
        header_read_timeout: args.header_read_timeout,
        max_header_bytes: args.max_header_bytes,
        detect_timeout: args.detect_timeout,
        max_connections: args.max_connections,
        max_requests: args.max_requests,
        body_pace: Pace::new(
            Some(args.request_body_idle_timeout).filter(|d| !d.is_zero()),
            args.request_body_min_rate,
            args.request_body_rate_window.max(Duration::from_secs(1)),
        ),
        pool_idle_timeout: args.pool_idle_timeout,
        connect_timeout: weft_mesh::config::defaults::CONNECT_TIMEOUT,
        access_log: args.access_log == "on",
        inbound_mode: if args.inbound_mode == "strict" {
            InboundMode::Strict
        } else {
            InboundMode::Permissive
        },
        failures_kept: args.failures_kept,
    }
}

/// The control plane client for mesh mode (`--control-plane`), if chosen.
fn control_plane(args: &RunArgs) -> Result<Option<ControlPlane>, String> {
    let Some(url) = &args.control_plane else {
        if args.config.is_empty() {
            return Err("nothing to serve: pass --config PATH (file mode) or --control-plane URL (mesh mode)".into());
        }
        return Ok(None);
    };
    if !args.config.is_empty() {
        return Err(
            "--config and --control-plane are exclusive: config comes from one place".into(),
        );
    }
    if args.identity_dir.is_some() {
        return Err("--identity-dir is for file mode; in mesh mode the control plane issues the certificate".into());
    }
    let credential = match (&args.bootstrap_token, &args.token_file) {
        (Some(_), Some(_)) => return Err("--bootstrap-token and --token-file are exclusive: one proves the workload's identity (a bootstrap token outside Kubernetes, the projected ServiceAccount token in it)".into()),
        (Some(t), None) => Some(Credential::Bootstrap(t.clone())),
        (None, Some(path)) => Some(Credential::TokenFile(path.clone())),
        (None, None) => None,
    };
    let ca = match (&args.control_plane_ca, &args.control_plane_ca_pem) {
        (Some(path), _) => TrustSource::File(path),
        (None, Some(pem)) => TrustSource::Pem(pem),
        (None, None) => return Err("mesh mode needs --control-plane-ca PATH or --control-plane-ca-pem PEM (the mesh CA, to verify the control plane)".into()),
    };
    let trust = crate::control_plane::read_trust(ca)?;
    let service_account = args
        .service_account
        .clone()
        .or_else(|| args.service.clone())
        .unwrap_or_else(|| "default".into());
    ControlPlane::new(Settings {
        url: url.clone(),
        trust,
        trust_domain: args.trust_domain.clone(),
        namespace: args.namespace.clone(),
        service_account,
        service: args.service.clone(),
        credential,
        name: proxy_name(args),
    })
    .map(Some)
}

/// This sidecar's name: `--proxy-name`, else `<hostname>-<pid>`.
fn proxy_name(args: &RunArgs) -> String {
    args.proxy_name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}
