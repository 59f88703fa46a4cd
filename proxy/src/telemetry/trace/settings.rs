//! What turns tracing on and how: the `OTEL_*` environment, a MeshConfig's
//! `tracing`, and how the two combine.

use std::time::Duration;
use weft_mesh::config::policy::MeshTracing;

pub(crate) use weft_mesh::config::policy::OtlpProtocol as Protocol;

/// What the environment says, read once at start.
#[derive(Clone, Debug)]
pub(crate) struct Env {
    pub(crate) disabled: bool,
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`: used as it is.
    pub(crate) traces_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: a base (HTTP adds `/v1/traces`).
    pub(crate) endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`, sent with every export.
    pub(crate) headers: Vec<(String, String)>,
    /// `OTEL_EXPORTER_OTLP_[TRACES_]CERTIFICATE`: the PEM roots an https
    /// collector is verified with (the system's when unset).
    pub(crate) certificate: Option<String>,
    /// `OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE` and `_CLIENT_KEY`:
    /// what the proxy presents to an https collector that asks for it.
    pub(crate) client_certificate: Option<String>,
    pub(crate) client_key: Option<String>,
    /// `OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION`: `gzip` or `none`, as given.
    pub(crate) compression: Option<String>,
    /// `OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT`: how long one export may take.
    pub(crate) otlp_timeout: Duration,
    pub(crate) protocol: Option<Protocol>,
    /// `OTEL_TRACES_SAMPLER` is set: the SDK reads it itself.
    pub(crate) sampler_set: bool,
    pub(crate) service_name_set: bool,
    pub(crate) queue_size: usize,
    pub(crate) max_batch: usize,
    pub(crate) schedule_delay: Duration,
    pub(crate) export_timeout: Duration,
}

/// The specification's defaults, with nothing set.
impl Default for Env {
    fn default() -> Env {
        Env {
            disabled: false,
            traces_endpoint: None,
            endpoint: None,
            headers: Vec::new(),
            certificate: None,
            client_certificate: None,
            client_key: None,
            compression: None,
            otlp_timeout: Duration::from_millis(10_000),
            protocol: None,
            sampler_set: false,
            service_name_set: false,
            queue_size: 2048,
            max_batch: 512,
            schedule_delay: Duration::from_millis(5000),
            export_timeout: Duration::from_millis(30_000),
        }
    }
}

impl Env {
    pub(crate) fn read() -> Env {
        let d = Env::default();
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let ms = |k: &str, d: u64| {
            Duration::from_millis(var(k).and_then(|v| v.trim().parse().ok()).unwrap_or(d))
        };
        let n = |k: &str, d: usize| {
            var(k)
                .and_then(|v| v.trim().parse().ok())
                .filter(|n| *n > 0)
                .unwrap_or(d)
        };
        // The traces-only variable, else the one for every signal.
        let signal = |name: &str| {
            var(&format!("OTEL_EXPORTER_OTLP_TRACES_{name}"))
                .or_else(|| var(&format!("OTEL_EXPORTER_OTLP_{name}")))
        };
        let queue_size = n("OTEL_BSP_MAX_QUEUE_SIZE", d.queue_size);
        Env {
            disabled: var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
                || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none"),
            traces_endpoint: var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            endpoint: var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            headers: signal("HEADERS")
                .map(|h| parse_headers(&h))
                .unwrap_or_default(),
            certificate: signal("CERTIFICATE"),
            client_certificate: signal("CLIENT_CERTIFICATE"),
            client_key: signal("CLIENT_KEY"),
            compression: signal("COMPRESSION"),
            otlp_timeout: match var("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
                Some(_) => ms("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", 10_000),
                None => ms("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000),
            },
            protocol: signal("PROTOCOL").and_then(|p| Protocol::parse(&p)),
            sampler_set: var("OTEL_TRACES_SAMPLER").is_some(),
            service_name_set: var("OTEL_SERVICE_NAME").is_some()
                || var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
                    a.split(',')
                        .any(|kv| kv.trim_start().starts_with("service.name="))
                }),
            queue_size,
            max_batch: n("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", d.max_batch).min(queue_size),
            schedule_delay: ms("OTEL_BSP_SCHEDULE_DELAY", 5000),
            export_timeout: ms("OTEL_BSP_EXPORT_TIMEOUT", 30_000),
        }
    }

    /// The environment names the collector.
    pub(crate) fn endpoint_set(&self) -> bool {
        self.traces_endpoint.is_some() || self.endpoint.is_some()
    }
}

/// `key1=value1,key2=value2`, values percent-decoded (W3C baggage format,
/// as the OTLP exporter specification asks); malformed entries are skipped.
fn parse_headers(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), percent_decode(v.trim())))
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The settings a pipeline was built from; a change rebuilds it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Settings {
    /// From a MeshConfig; `None` when the environment gives the endpoint.
    pub(crate) endpoint: Option<String>,
    pub(crate) protocol: Protocol,
    /// From a MeshConfig's `samplingPercent` (root spans; a caller's
    /// decision is followed); `None` for the environment's or the default
    /// (parent-based, always on).
    pub(crate) ratio: Option<f64>,
}

/// The settings in force for this environment and MeshConfig; `None` when
/// tracing is off.
pub(crate) fn resolve(env: &Env, mesh: Option<&MeshTracing>) -> Option<Settings> {
    if env.disabled {
        return None;
    }
    let mesh_endpoint = mesh
        .and_then(|m| m.otlp_endpoint.clone())
        .filter(|e| !e.trim().is_empty());
    if !env.endpoint_set() && mesh_endpoint.is_none() {
        return None;
    }
    let protocol = env
        .protocol
        .or_else(|| {
            mesh.and_then(|m| m.protocol.as_deref())
                .and_then(Protocol::parse)
        })
        .unwrap_or(Protocol::HttpProtobuf);
    Some(Settings {
        endpoint: if env.endpoint_set() {
            None
        } else {
            mesh_endpoint
        },
        protocol,
        ratio: match env.sampler_set {
            true => None,
            false => mesh
                .and_then(|m| m.sampling_percent)
                .map(|p| (p / 100.0).clamp(0.0, 1.0)),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env {
            queue_size: 8,
            max_batch: 4,
            schedule_delay: Duration::from_millis(10),
            export_timeout: Duration::from_secs(1),
            ..Env::default()
        }
    }

    fn mesh(endpoint: Option<&str>, protocol: Option<&str>, pct: Option<f64>) -> MeshTracing {
        MeshTracing {
            otlp_endpoint: endpoint.map(str::to_owned),
            protocol: protocol.map(str::to_owned),
            sampling_percent: pct,
        }
    }

    #[test]
    fn off_without_an_endpoint_and_when_disabled() {
        assert_eq!(resolve(&env(), None), None);
        assert_eq!(resolve(&env(), Some(&mesh(None, None, Some(5.0)))), None);
        let e = Env {
            disabled: true,
            endpoint: Some("http://c:4318".into()),
            ..env()
        };
        assert_eq!(
            resolve(&e, Some(&mesh(Some("http://c:4318"), None, None))),
            None
        );
    }

    #[test]
    fn environment_wins_over_mesh_config() {
        let m = mesh(Some("http://mesh:4317"), Some("grpc"), Some(25.0));
        let s = resolve(&env(), Some(&m)).unwrap();
        assert_eq!(s.endpoint.as_deref(), Some("http://mesh:4317"));
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.ratio, Some(0.25));
        let e = Env {
            endpoint: Some("http://c:4318".into()),
            protocol: Some(Protocol::HttpProtobuf),
            sampler_set: true,
            ..env()
        };
        let s = resolve(&e, Some(&m)).unwrap();
        assert_eq!(s.endpoint, None);
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
        assert_eq!(s.ratio, None);
        // The default protocol is the specification's: HTTP/protobuf.
        let s = resolve(&env(), Some(&mesh(Some("http://c:4318"), None, None))).unwrap();
        assert_eq!(s.protocol, Protocol::HttpProtobuf);
    }

    #[test]
    fn headers_are_percent_decoded() {
        assert_eq!(
            parse_headers("api-key=a%20b%3Dc, x-tenant = t1,bad,=v"),
            vec![
                ("api-key".to_owned(), "a b=c".to_owned()),
                ("x-tenant".to_owned(), "t1".to_owned())
            ]
        );
    }
}
