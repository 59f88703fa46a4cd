//! The injector's flags on `serve` and what every injected Pod gets,
//! resolved from them (checked once, at start).

use super::quantity;
use std::net::SocketAddr;
use std::time::Duration;

/// The injector's flags on `serve` (each also read from `WEFT_<FLAG>`).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct InjectorArgs {
    /// Serve the sidecar-injection webhook (HTTPS, `POST /inject`) here;
    /// needs --kubernetes. Off when not given.
    #[arg(long, env = "WEFT_WEBHOOK")]
    pub(crate) webhook: Option<SocketAddr>,
    /// The image of injected sidecars (it holds `weft-proxy`).
    #[arg(long, env = "WEFT_PROXY_IMAGE", default_value = DEFAULT_IMAGE)]
    pub(crate) proxy_image: String,
    /// The sidecar's CPU request, unless the Pod's `weft.dev/proxy-cpu` says.
    #[arg(long, env = "WEFT_PROXY_CPU", default_value = "50m")]
    pub(crate) proxy_cpu: String,
    /// The sidecar's memory request, unless the Pod's `weft.dev/proxy-memory` says.
    #[arg(long, env = "WEFT_PROXY_MEMORY", default_value = "64Mi")]
    pub(crate) proxy_memory: String,
    /// The sidecar's CPU limit (none by default: a throttled proxy slows
    /// every request of its Pod).
    #[arg(long, env = "WEFT_PROXY_CPU_LIMIT")]
    pub(crate) proxy_cpu_limit: Option<String>,
    /// The sidecar's memory limit (an empty value: none).
    #[arg(long, env = "WEFT_PROXY_MEMORY_LIMIT", default_value = "256Mi")]
    pub(crate) proxy_memory_limit: String,
    /// The control plane URL sidecars dial. Default:
    /// `https://weft-control-plane.<--namespace>.svc:15012`.
    #[arg(long, env = "WEFT_PROXY_CONTROL_PLANE")]
    pub(crate) proxy_control_plane: Option<String>,
    /// How often the webhook configuration's caBundle is checked (a
    /// `helm upgrade` resets it).
    #[arg(long, env = "WEFT_CA_BUNDLE_INTERVAL", default_value = "30s", value_parser = parse_dur)]
    pub(crate) ca_bundle_interval: Duration,
}

const DEFAULT_IMAGE: &str = concat!("ghcr.io/weft-mesh/weft:", env!("CARGO_PKG_VERSION"));

fn parse_dur(s: &str) -> Result<Duration, String> {
    weft_mesh::config::duration::parse_duration(s)
}

/// The Service the chart puts in front of the control plane.
pub(crate) const SERVICE: &str = "weft-control-plane";
/// The config stream's port on that Service.
const CONFIG_PORT: u16 = 15012;

/// What every injected Pod gets, resolved from the flags.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) proxy_image: String,
    pub(crate) cpu: String,
    pub(crate) memory: String,
    pub(crate) cpu_limit: Option<String>,
    pub(crate) memory_limit: Option<String>,
    /// The control plane URL sidecars dial.
    pub(crate) control_plane: String,
    pub(crate) trust_domain: String,
    /// The mesh CA root, PEM (`WEFT_CONTROL_PLANE_CA_PEM`).
    pub(crate) ca_pem: String,
    /// Recorded in `weft.dev/injected`.
    pub(crate) version: String,
}

impl InjectorArgs {
    /// The settings for a control plane in `namespace`, or what is wrong
    /// with the flags.
    pub(crate) fn settings(
        &self,
        namespace: &str,
        trust_domain: &str,
        ca_pem: &str,
    ) -> Result<Settings, String> {
        let quantity = |flag: &str, v: &str| {
            quantity::parse(v)
                .map(|_| v.trim().to_string())
                .map_err(|e| format!("--{flag}: {e}"))
        };
        let optional = |flag: &str, v: Option<&str>| match v.map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => quantity(flag, v).map(Some),
        };
        if self.proxy_image.trim().is_empty() {
            return Err("--proxy-image: empty".into());
        }
        let control_plane = match &self.proxy_control_plane {
            Some(url) if url.starts_with("https://") => url.clone(),
            Some(url) => {
                return Err(format!(
                    "--proxy-control-plane {url:?}: not an https:// URL"
                ))
            }
            None => format!("https://{SERVICE}.{namespace}.svc:{CONFIG_PORT}"),
        };
        Ok(Settings {
            proxy_image: self.proxy_image.trim().to_string(),
            cpu: quantity("proxy-cpu", &self.proxy_cpu)?,
            memory: quantity("proxy-memory", &self.proxy_memory)?,
            cpu_limit: optional("proxy-cpu-limit", self.proxy_cpu_limit.as_deref())?,
            memory_limit: optional("proxy-memory-limit", Some(&self.proxy_memory_limit))?,
            control_plane,
            trust_domain: trust_domain.to_string(),
            ca_pem: ca_pem.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }
}
