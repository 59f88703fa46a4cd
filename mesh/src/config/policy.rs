//! `weft.dev/v1alpha1` `TrafficPolicy`, `AuthorizationPolicy` and `MeshConfig`.
//!
//! Every default lives in `config/defaults.rs`; absent fields here stay `None`
//! so `/config` shows what the user wrote, not what we filled in.

use super::duration::Dur;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default)]
    pub group: Option<String>,
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TrafficPolicySpec {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub load_balancer: Option<LoadBalancer>,
    #[serde(default)]
    pub connect_timeout: Option<Dur>,
    #[serde(default)]
    pub retry: Option<Retry>,
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub panic_threshold: Option<u32>,
    #[serde(default)]
    pub tls: Option<Tls>,
    #[serde(default)]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default)]
    pub rate_limit: Option<super::rate_limit::RateLimit>,
    pub fault: Option<super::fault::Fault>,
    pub hedge: Option<super::hedge::Hedge>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    #[default]
    PeakEWMA,
    Random,
    RingHash,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoadBalancer {
    #[serde(default)]
    pub policy: LbPolicy,
    #[serde(default)]
    pub hash_on: Option<HashOn>,
}

/// What RingHash hashes: exactly one of the three.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HashOn {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    #[serde(default, rename = "sourceIP")]
    pub source_ip: Option<bool>,
}

/// A failure a retry policy retries (`retryOn`), named as in the files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryCondition {
    /// The connection could not be made (the request never left).
    ConnectFailure,
    /// HTTP/2 REFUSED_STREAM, or a pooled connection closed before the
    /// request was written: the upstream did not process it.
    RefusedStream,
    /// The connection or stream broke after the request went out.
    Reset,
    /// 502, 503 or 504 (and timeouts).
    GatewayError,
    /// Any 5xx (and timeouts).
    FiveXx,
    /// A status listed in `codes`.
    RetriableStatusCodes,
    /// gRPC status UNAVAILABLE (14).
    Unavailable,
    /// gRPC status CANCELLED (1).
    Cancelled,
    /// gRPC status DEADLINE_EXCEEDED (4).
    DeadlineExceeded,
    /// gRPC status RESOURCE_EXHAUSTED (8).
    ResourceExhausted,
}

impl RetryCondition {
    /// Every condition, in the order the docs list them.
    pub const ALL: [RetryCondition; 10] = [
        RetryCondition::ConnectFailure,
        RetryCondition::RefusedStream,
        RetryCondition::Unavailable,
        RetryCondition::Cancelled,
        RetryCondition::DeadlineExceeded,
        RetryCondition::ResourceExhausted,
        RetryCondition::Reset,
        RetryCondition::GatewayError,
        RetryCondition::FiveXx,
        RetryCondition::RetriableStatusCodes,
    ];

    /// The name written in `retryOn`.
    pub fn name(self) -> &'static str {
        match self {
            RetryCondition::ConnectFailure => "connect-failure",
            RetryCondition::RefusedStream => "refused-stream",
            RetryCondition::Reset => "reset",
            RetryCondition::GatewayError => "gateway-error",
            RetryCondition::FiveXx => "5xx",
            RetryCondition::RetriableStatusCodes => "retriable-status-codes",
            RetryCondition::Unavailable => "unavailable",
            RetryCondition::Cancelled => "cancelled",
            RetryCondition::DeadlineExceeded => "deadline-exceeded",
            RetryCondition::ResourceExhausted => "resource-exhausted",
        }
    }

    /// The condition of that name.
    pub fn parse(name: &str) -> Option<RetryCondition> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for RetryCondition {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RetryCondition".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = RetryCondition::ALL.iter().map(|c| c.name()).collect();
        schemars::json_schema!({
            "type": "string",
            "enum": names,
        })
    }
}

impl Serialize for RetryCondition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for RetryCondition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        RetryCondition::parse(&name).ok_or_else(|| {
            let all: Vec<&str> = Self::ALL.iter().map(|c| c.name()).collect();
            serde::de::Error::custom(format!(
                "unknown condition {name:?}; one of {}",
                all.join(", ")
            ))
        })
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retry {
    #[serde(default)]
    pub attempts: Option<u32>,
    #[serde(default)]
    pub retry_on: Option<Vec<RetryCondition>>,
    #[serde(default)]
    pub codes: Vec<u16>,
    #[serde(default)]
    pub non_idempotent: Option<bool>,
    #[serde(default)]
    pub per_try_timeout: Option<Dur>,
    #[serde(default)]
    pub backoff: Option<Backoff>,
    #[serde(default)]
    pub budget: Option<Budget>,
    /// `64KiB`, `1MiB` or a byte count.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(schema_with = "crate::config::schema::int_or_string")
    )]
    pub max_buffered_body: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backoff {
    #[serde(default)]
    pub base_interval: Option<Dur>,
    #[serde(default)]
    pub max_interval: Option<Dur>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Budget {
    #[serde(default)]
    pub percent: Option<u32>,
    #[serde(default)]
    pub min_retries_per_second: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CircuitBreaker {
    #[serde(default)]
    pub max_connections: Option<u32>,
    #[serde(default)]
    pub max_pending_requests: Option<u32>,
    #[serde(default)]
    pub max_requests: Option<u32>,
    #[serde(default)]
    pub max_retries: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutlierDetection {
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    #[serde(default)]
    pub interval: Option<Dur>,
    #[serde(default)]
    pub base_ejection_time: Option<Dur>,
    #[serde(default)]
    pub max_ejection_time: Option<Dur>,
    #[serde(default)]
    pub max_ejection_percent: Option<u32>,
    /// Also eject an endpoint whose success rate in an interval is far below
    /// its peers' (present, even `{}`, turns it on; absent: off).
    #[serde(default)]
    pub success_rate: Option<super::success_rate::SuccessRate>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheck {
    #[serde(default)]
    pub http: Option<HttpHealthCheck>,
    #[serde(default)]
    pub tcp: Option<Empty>,
    #[serde(default)]
    pub grpc: Option<GrpcHealthCheck>,
    #[serde(default)]
    pub interval: Option<Dur>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub unhealthy_threshold: Option<u32>,
    #[serde(default)]
    pub healthy_threshold: Option<u32>,
    /// Percent of the interval to randomise each check by.
    #[serde(default)]
    pub jitter_percent: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpHealthCheck {
    pub path: String,
    #[serde(default)]
    pub expected_statuses: Vec<u16>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcHealthCheck {
    #[serde(default)]
    pub service: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Empty {}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum TlsMode {
    Mutual,
    Disabled,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tls {
    pub mode: TlsMode,
}

/// Upstream connection reuse (an addition to the contract: idle expiry per destination).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionPool {
    #[serde(default)]
    pub idle_timeout: Option<Dur>,
    #[serde(default)]
    pub max_idle_per_endpoint: Option<u32>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum AuthzAction {
    Allow,
    Deny,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    pub target_ref: TargetRef,
    pub action: AuthzAction,
    #[serde(default)]
    pub rules: Vec<AuthzRule>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzRule {
    #[serde(default)]
    pub from: Option<AuthzFrom>,
    #[serde(default)]
    pub to: Option<AuthzTo>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzFrom {
    #[serde(default)]
    pub identities: Vec<String>,
    #[serde(default)]
    pub namespaces: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthzTo {
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub paths: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum InboundMode {
    Strict,
    Permissive,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshConfigSpec {
    #[serde(default)]
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub certificate_lifetime: Option<Dur>,
    #[serde(default)]
    pub rotation_percent: Option<Vec<u32>>,
    #[serde(default)]
    pub default_inbound_mode: Option<InboundMode>,
    #[serde(default)]
    pub tracing: Option<MeshTracing>,
    #[serde(default)]
    pub access_log: Option<AccessLog>,
    #[serde(default)]
    pub debug_headers: Option<crate::config::debug_headers::DebugHeaders>,
}

/// `MeshConfig.spec.accessLog`: when `enabled` is set it overrides `--access-log`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AccessLog {
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshTracing {
    /// Base URL of the OTLP receiver (`http://collector:4318`), as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (the default).
    #[serde(default)]
    pub protocol: Option<String>,
    /// Share of new traces recorded, 0 to 100 (default 100); a caller's
    /// sampling decision is always followed.
    #[serde(default)]
    pub sampling_percent: Option<f64>,
}

/// How spans travel to an OTLP receiver (`MeshTracing.protocol`, and
/// `OTEL_EXPORTER_OTLP_PROTOCOL` in the proxy's environment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

impl OtlpProtocol {
    /// `grpc` or `http/protobuf`, as OpenTelemetry spells them.
    pub fn parse(s: &str) -> Option<OtlpProtocol> {
        match s.trim() {
            "grpc" => Some(OtlpProtocol::Grpc),
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            _ => None,
        }
    }
}
