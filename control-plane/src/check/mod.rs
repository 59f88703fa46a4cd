//! `weft-control-plane check`: the pre-flight and health check of an
//! installed mesh, against the current `KUBECONFIG`. It reads the cluster
//! as the user running it (never changing anything: the only writes are
//! dry-run AdmissionReviews, one per webhook endpoint) and prints one line
//! per finding, ✓ or ✗ with the reason and the fix; the exit code is 1
//! when any line is a ✗.
//!
//! In order: the API server and its version ([`version`]), the CRDs
//! ([`definitions`]), the control plane's Deployment ([`deployment`]),
//! the injector's webhook configuration and reachability ([`webhook`]),
//! the CA Secret ([`ca_secret`]), the control plane's RBAC
//! ([`permissions`]), the meshed pods' proxies ([`proxies`]) and the
//! routes and Weft resources with failing conditions ([`conditions`]).

mod ca_secret;
mod certs;
mod cluster;
mod conditions;
mod definitions;
mod deployment;
mod permissions;
mod proxies;
mod report;
mod url_post;
mod version;
mod webhook;

use cluster::Cluster;
use report::{Format, Line, Report};
use std::process::ExitCode;

pub(crate) use report::Format as OutputFormat;

/// Runs every check; exit 0 when all pass, 1 otherwise.
pub(crate) async fn run(namespace: String, format: Format) -> ExitCode {
    let mut report = Report::new(format);
    run_all(&mut report, namespace).await;
    if report.finish() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn run_all(report: &mut Report, namespace: String) {
    let cluster = match Cluster::connect(namespace).await {
        Ok(c) => c,
        Err(e) => {
            report.add(vec![Line::fail(
                "api",
                "Kubernetes API",
                e,
                "set KUBECONFIG (or run in a pod) for the cluster to check",
            )]);
            return;
        }
    };
    let (line, reachable) = version::check(&cluster).await;
    report.add(vec![line]);
    if !reachable {
        return;
    }
    report.add(definitions::check(&cluster).await);
    report.add(vec![deployment::check(&cluster).await]);
    let secret = ca_secret::fetch(&cluster).await;
    let roots = match &secret {
        Ok(s) => ca_secret::root(s),
        Err(e) => Err(format!("CA Secret: {e}")),
    };
    let now = certs::now();
    report.add(webhook::check(&cluster, &roots, now).await);
    report.add(vec![ca_secret::check(&cluster.namespace, &secret, now)]);
    report.add(vec![permissions::check(&cluster).await]);
    report.add(proxies::check(&cluster).await);
    report.add(conditions::check(&cluster).await);
}
