//! The mesh CA's Secret (`weft-ca`): `ca.pem` a valid CA certificate
//! whose key is `ca-key.pem`, in force and not within 30 days of expiry
//! (workloads cannot renew once it lapses).

use super::certs::{self, Cert};
use super::cluster::{Cluster, Failure};
use super::report::Line;
use crate::ca::{CERT_FILE, KEY_FILE};
use crate::kubernetes::ca_secret::SECRET;
use serde_json::Value;

const CHECK: &str = "ca";
/// Warn this many days before the root expires.
pub(crate) const WARN_DAYS: i64 = 30;

/// GET the Secret (shared with the webhook check, which compares its
/// `caBundle` with the root).
pub(crate) async fn fetch(cluster: &Cluster) -> Result<Value, Failure> {
    let ns = &cluster.namespace;
    cluster
        .get(&format!("/api/v1/namespaces/{ns}/secrets/{SECRET}"))
        .await
}

/// The root certificate(s) of the Secret, when it holds readable ones.
pub(crate) fn root(secret: &Value) -> Result<Vec<Cert>, String> {
    let pem = field(secret, CERT_FILE)?;
    certs::parse_pem(pem.as_bytes()).map_err(|e| format!("{CERT_FILE}: {e}"))
}

fn field(secret: &Value, key: &str) -> Result<String, String> {
    let b64 = secret["data"][key]
        .as_str()
        .ok_or_else(|| format!("no {key} in it"))?;
    let bytes = certs::b64_decode(b64).ok_or_else(|| format!("{key} is not base64"))?;
    String::from_utf8(bytes).map_err(|_| format!("{key} is not text"))
}

pub(crate) fn check(ns: &str, secret: &Result<Value, Failure>, now: i64) -> Line {
    let what = format!("CA Secret {ns}/{SECRET}");
    let secret = match secret {
        Ok(s) => s,
        Err(Failure::NotFound) => {
            return Line::fail(
                CHECK,
                what,
                "not found",
                format!("the control plane creates it at its first start: kubectl -n {ns} logs deployment/weft-control-plane"),
            )
        }
        Err(e) => {
            return Line::fail(
                CHECK,
                what,
                format!("cannot read it: {e}"),
                format!("run check as a user who may get secrets in {ns}"),
            )
        }
    };
    let replace = format!(
        "replace the mesh CA: kubectl -n {ns} delete secret {SECRET}; kubectl -n {ns} rollout restart deployment/weft-control-plane; then restart meshed workloads"
    );
    let certs = match root(secret) {
        Ok(c) => c,
        Err(why) => return Line::fail(CHECK, what, why, replace),
    };
    let cert = &certs[0];
    if !cert.is_ca {
        return Line::fail(
            CHECK,
            what,
            format!("{CERT_FILE} is not a CA certificate ({})", cert.subject),
            replace,
        );
    }
    let key = match field(secret, KEY_FILE) {
        Ok(k) => k,
        Err(why) => return Line::fail(CHECK, what, why, replace),
    };
    match cert.matches_key(&key) {
        Ok(true) => {}
        Ok(false) => {
            return Line::fail(
                CHECK,
                what,
                format!("{KEY_FILE} is not the key of {CERT_FILE}"),
                replace,
            )
        }
        Err(e) => return Line::fail(CHECK, what, format!("{KEY_FILE}: {e}"), replace),
    }
    if let Some(why) = cert.invalid_now(now) {
        return Line::fail(CHECK, what, format!("{CERT_FILE} {why}"), replace);
    }
    let days = cert.days_left(now);
    let until = certs::date(cert.not_after);
    if days < WARN_DAYS {
        return Line::fail(
            CHECK,
            what,
            format!("{CERT_FILE} expires in {days} days ({until}), within {WARN_DAYS}"),
            replace,
        );
    }
    Line::ok(
        CHECK,
        format!("{what}: a CA certificate matching its key, valid until {until} ({days} days)"),
    )
}
