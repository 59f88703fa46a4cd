//! `weft-control-plane`: the mesh's certificate authority and config server.
//!
//! `serve` reads resources from `--config` (the same YAML and validation as
//! the proxy) and/or a Kubernetes cluster (`--kubernetes`: Services and
//! EndpointSlices), signs workload certificates, and streams each connected proxy
//! its config over HTTP/2 + TLS 1.3. `token` issues a bootstrap token that
//! lets one workload obtain its first certificate. `crds` prints Weft's
//! CustomResourceDefinitions. `check` verifies an installed mesh against
//! `KUBECONFIG`.

#![warn(unreachable_pub)]

mod admin;
mod body;
mod ca;
mod certificates;
mod check;
mod crds;
mod inject;
mod kubernetes;
mod resources;
mod scope;
mod server;
mod sources;
mod state;
mod watch;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "weft-control-plane", version, about = "Weft control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    weft_mesh::config::duration::parse_duration(s)
}

#[derive(Subcommand)]
enum Command {
    /// Serve the config stream and the certificate authority.
    Serve {
        /// Resource files or folders (the same YAML the proxy accepts); watched.
        #[arg(long, env = "WEFT_CONFIG")]
        config: Vec<PathBuf>,
        /// Read Services, EndpointSlices and Pods from Kubernetes
        /// (in-cluster credentials, or KUBECONFIG). With --config too, a file's Backend
        /// overrides the Service of the same namespace and name.
        #[arg(long, env = "WEFT_KUBERNETES")]
        kubernetes: bool,
        /// The control plane's own namespace (Kubernetes mode: where its
        /// CA Secret and status Lease live). Default: the namespace of the
        /// in-cluster ServiceAccount, else `weft-system`.
        #[arg(long, env = "WEFT_NAMESPACE")]
        namespace: Option<String>,
        /// How long the status Lease (`weft-control-plane-status`) is held
        /// without renewal: a stopped status writer is replaced after it.
        #[arg(long, env = "WEFT_STATUS_LEASE", default_value = "15s", value_parser = parse_dur)]
        status_lease: Duration,
        /// Directory holding the mesh CA (`ca.pem`, `ca-key.pem`); generated
        /// there on first start. Required without --kubernetes; with it the
        /// CA lives in Secret `weft-ca` in --namespace, unless this is given
        /// (then the directory wins and the Secret is not touched).
        #[arg(long, env = "WEFT_CA_DIR")]
        ca_dir: Option<PathBuf>,
        /// Trust domain of the mesh.
        #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "weft.local")]
        trust_domain: String,
        /// Where proxies connect (TLS 1.3; HTTP/2).
        #[arg(long, env = "WEFT_LISTEN", default_value = "0.0.0.0:15012")]
        listen: SocketAddr,
        /// Admin endpoint: /live /ready /proxies /config /metrics.
        #[arg(long, env = "WEFT_ADMIN", default_value = "127.0.0.1:15014")]
        admin: SocketAddr,
        /// Lifetime of workload certificates.
        #[arg(long, env = "WEFT_CERT_TTL", default_value = "24h", value_parser = parse_dur)]
        cert_ttl: Duration,
        /// Log format: text or json.
        #[arg(long, env = "WEFT_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        /// Log filter (tracing syntax).
        #[arg(long, env = "WEFT_LOG_LEVEL", default_value = "info")]
        log_level: String,
        #[command(flatten)]
        inject: Box<inject::InjectorArgs>,
    },
    /// Print a bootstrap token for one workload identity.
    Token {
        /// The CA directory `serve` uses (the token is signed with a key
        /// derived from the CA key).
        #[arg(long, env = "WEFT_CA_DIR")]
        ca_dir: PathBuf,
        #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "weft.local")]
        trust_domain: String,
        #[arg(long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        service_account: String,
        /// How long the token may be used to obtain a first certificate.
        #[arg(long, default_value = "24h", value_parser = parse_dur)]
        ttl: Duration,
    },
    /// Print Weft's CustomResourceDefinitions (weft.dev/v1alpha1) as YAML.
    Crds,
    /// Check an installed mesh against the current KUBECONFIG: one line per
    /// finding, ✓ or ✗ with the fix; exit code 1 on any ✗.
    Check {
        /// The control plane's namespace.
        #[arg(long, env = "WEFT_NAMESPACE", default_value = "weft-system")]
        namespace: String,
        /// Output: text (a line per finding) or json (one document).
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Check { namespace, output } => {
            let format = if output == "json" {
                check::OutputFormat::Json
            } else {
                check::OutputFormat::Text
            };
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(check::run(namespace, format)),
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Crds => match crds::render() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("crds: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Token {
            ca_dir,
            trust_domain,
            namespace,
            service_account,
            ttl,
        } => {
            let ca = match ca::load_or_generate(&ca_dir, &trust_domain) {
                Ok((ca, _)) => ca,
                Err(e) => {
                    eprintln!("ca: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match weft_mesh::identity::token::Tokens::from_ca_key(ca.key_pem()).issue(
                &namespace,
                &service_account,
                ttl,
            ) {
                Ok(t) => {
                    println!("{t}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve {
            config,
            kubernetes,
            namespace,
            status_lease,
            ca_dir,
            trust_domain,
            listen,
            admin,
            cert_ttl,
            log_format,
            log_level,
            inject,
        } => {
            let _ = weft_mesh::process::init_logging(&log_format, &log_level);
            if config.is_empty() && !kubernetes {
                tracing::error!("nothing to serve: pass --config PATH and/or --kubernetes");
                return ExitCode::from(2);
            }
            if ca_dir.is_none() && !kubernetes {
                tracing::error!("--ca-dir is required without --kubernetes (the CA lives there)");
                return ExitCode::from(2);
            }
            if inject.webhook.is_some() && !kubernetes {
                tracing::error!("--webhook needs --kubernetes (the injector serves a cluster)");
                return ExitCode::from(2);
            }
            if let Err(e) = inject.settings("", &trust_domain, "") {
                tracing::error!("{e}");
                return ExitCode::from(2);
            }
            let mut inputs = resources::Inputs::default();
            if let Err(e) = inputs.load_files(&config) {
                eprintln!("{e}");
                tracing::error!("invalid config at startup; not starting");
                return ExitCode::FAILURE;
            }
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async move {
                let cluster = if kubernetes {
                    match kubernetes::Source::start(trust_domain.clone(), namespace, status_lease).await {
                        Ok(s) => Some(s),
                        Err(e) => {
                            tracing::error!("{e}");
                            return ExitCode::FAILURE;
                        }
                    }
                } else {
                    None
                };
                let status = cluster.as_ref().map(|c| c.status.clone());
                let api = match tokio::net::TcpListener::bind(listen).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("cannot listen on {listen}: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let mut admin_l = match tokio::net::TcpListener::bind(admin).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!("cannot listen on admin {admin}: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                let webhook_l = match inject.webhook {
                    Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => Some(l),
                        Err(e) => {
                            tracing::error!("cannot listen on webhook {addr}: {e}");
                            return ExitCode::FAILURE;
                        }
                    },
                    None => None,
                };
                let local = |l: &tokio::net::TcpListener| {
                    l.local_addr().map(|a| a.to_string()).unwrap_or_default()
                };
                let (api_addr, admin_addr) = (local(&api), local(&admin_l));
                let webhook_addr = webhook_l.as_ref().map(local).unwrap_or_default();
                // While the CA Secret is fetched (a missing permission is
                // retried), the admin endpoint already says why.
                let early_admin = match (&cluster, &ca_dir) {
                    (Some(c), None) => match admin::serve_starting(admin_l, c.status.clone()) {
                        Ok((l, task)) => {
                            tracing::info!(admin = %admin_addr, "waiting for the CA Secret");
                            admin_l = l;
                            Some(task)
                        }
                        Err(e) => {
                            tracing::error!("admin endpoint: {e}");
                            return ExitCode::FAILURE;
                        }
                    },
                    _ => None,
                };
                let ca = certificate_authority(ca_dir.as_deref(), cluster.as_ref(), &trust_domain);
                let ca = match ca.await {
                    Ok(ca) => ca,
                    Err(e) => {
                        tracing::error!("ca: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                if let Some(task) = early_admin {
                    task.abort();
                }
                let reviewer = cluster
                    .as_ref()
                    .map(|c| -> Box<dyn state::TokenReviewer> {
                        let status = c.status.clone();
                        Box::new(kubernetes::tokens::Reviewer::new(c.client.clone(), status))
                    });
                let cp = match state::ControlPlane::new(
                    ca,
                    trust_domain,
                    cert_ttl,
                    inputs,
                    status.clone(),
                    reviewer,
                ) {
                    Ok(cp) => cp,
                    Err(e) => {
                        tracing::error!("cannot start: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                tokio::spawn(admin::serve(cp.clone(), admin_l));
                // The webhook needs no cluster state: it serves at once.
                if let (Some(l), Some(cluster)) = (webhook_l, &cluster) {
                    let started = inject
                        .settings(&cluster.namespace, &cp.trust_domain, cp.ca.cert_pem())
                        .and_then(|s| {
                            inject::start(s, l, cp.clone(), cluster, inject.ca_bundle_interval)
                        });
                    if let Err(e) = started {
                        tracing::error!("injector: {e}");
                        return ExitCode::FAILURE;
                    }
                    tracing::info!(webhook = %webhook_addr, "sidecar injector serving");
                }
                // The cluster is read in full before proxies are served, so
                // none is told a Service does not exist while it is still
                // being listed; meanwhile the admin endpoint answers (/ready
                // 503, /config says why, e.g. a missing permission).
                if let (Some(cluster), Some(status)) = (&cluster, &status) {
                    tracing::info!(admin = %admin_addr, "waiting for the first list of the cluster");
                    tokio::select! {
                        _ = cluster.synced() => {}
                        _ = weft_mesh::process::shutdown_signal() => {
                            tracing::info!("shutting down");
                            return ExitCode::SUCCESS;
                        }
                    }
                    cluster.apply(&cp);
                    status.synced.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                tracing::info!(
                    listen = %api_addr,
                    admin = %admin_addr,
                    webhook = %webhook_addr,
                    version = %cp.resources.borrow().version,
                    "weft-control-plane serving"
                );
                if !config.is_empty() {
                    tokio::spawn(sources::watch_files(cp.clone(), config));
                }
                let release = cluster.as_ref().map(|c| c.release.clone());
                if let Some(cluster) = cluster {
                    tokio::spawn(cluster.feed(cp.clone()));
                }
                {
                    // The serving certificate is re-issued at half its life.
                    let cp = cp.clone();
                    tokio::spawn(async move {
                        loop {
                            tokio::time::sleep(cert_ttl / 2).await;
                            if let Err(e) = cp.refresh_serving_cert() {
                                tracing::error!("serving certificate: {e}");
                            }
                        }
                    });
                }
                tokio::select! {
                    _ = server::serve_api(cp, api) => {}
                    _ = weft_mesh::process::shutdown_signal() => tracing::info!("shutting down"),
                }
                if let Some(r) = release {
                    // Another replica writes status at once, not a Lease later.
                    let _ = tokio::time::timeout(Duration::from_secs(2), r.release()).await;
                }
                ExitCode::SUCCESS
            })
        }
    }
}

/// The mesh CA: from `--ca-dir` when given, else (with `--kubernetes`) from
/// Secret `weft-ca` in the control plane's namespace, whose root is then
/// published as ConfigMap `weft-ca-root`.
async fn certificate_authority(
    ca_dir: Option<&std::path::Path>,
    cluster: Option<&kubernetes::Source>,
    trust_domain: &str,
) -> Result<ca::CertificateAuthority, String> {
    match (ca_dir, cluster) {
        (Some(dir), cluster) => {
            let (ca, created) = ca::load_or_generate(dir, trust_domain)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            tracing::info!(dir = %dir.display(), created, "certificate authority ready");
            if let Some(c) = cluster {
                tracing::info!(
                    "--ca-dir given: the CA is the directory's; Secret {}/{} is neither read nor written",
                    c.namespace,
                    kubernetes::ca_secret::SECRET
                );
                *weft_mesh::process::lock(&c.status.ca) =
                    Some(format!("--ca-dir {}", dir.display()));
            }
            Ok(ca)
        }
        (None, Some(c)) => {
            let (ca, origin) = kubernetes::ca_secret::load_or_create(
                &c.client,
                &c.namespace,
                trust_domain,
                &c.status,
            )
            .await?;
            tracing::info!(
                secret = kubernetes::ca_secret::SECRET,
                namespace = %c.namespace,
                ?origin,
                "certificate authority ready"
            );
            kubernetes::ca_secret::publish_root(
                c.client.clone(),
                c.namespace.clone(),
                ca.cert_pem().to_string(),
                c.status.clone(),
            );
            Ok(ca)
        }
        (None, None) => Err("no CA: pass --ca-dir (or --kubernetes)".into()),
    }
}
