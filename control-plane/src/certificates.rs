//! `POST /v1/certificate`: the CA signs a CSR for the identity the caller
//! proves (its current mesh certificate, a bootstrap token, or with
//! `--kubernetes` a Pod-bound ServiceAccount token, see
//! `kubernetes::tokens`), and only that one.

use crate::body::MAX_MESSAGE;
use crate::body::{json, text, CpBody};
use crate::state::{ControlPlane, TokenRefusal};
use http::{header, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_mesh::api::{CertificateRequest, CertificateResponse};
use weft_mesh::identity::token::Tokens;
use weft_mesh::identity::SpiffeId;

/// Who is asking for a certificate: the holder of a mesh certificate (a
/// renewal, for the same identity), the workload a bootstrap token names,
/// or (with `--kubernetes`) the ServiceAccount of the Pod a projected token
/// is bound to, as a TokenReview says. On refusal, the status and why.
async fn authenticate(
    cp: &ControlPlane,
    req: &Request<Incoming>,
    identity: Option<String>,
) -> Result<SpiffeId, (StatusCode, String)> {
    let forbidden = |e: String| (StatusCode::FORBIDDEN, e);
    if let Some(id) = identity {
        return SpiffeId::parse(&id).map_err(|e| forbidden(e.to_string()));
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            forbidden(
                "no client certificate and no token (Authorization: Bearer): a bootstrap token, or with --kubernetes a projected ServiceAccount token".into(),
            )
        })?;
    let reviewer = match &cp.reviewer {
        Some(r) if !Tokens::is_bootstrap(token) => r,
        _ => {
            let claims = cp.tokens.verify(token).map_err(|e| forbidden(e.into()))?;
            return cp
                .identity_for(&claims.namespace, &claims.service_account)
                .map_err(forbidden);
        }
    };
    match reviewer.review(token).await {
        Ok(who) => {
            tracing::debug!(namespace = %who.namespace, service_account = %who.service_account, pod = %who.pod, "ServiceAccount token reviewed");
            cp.identity_for(&who.namespace, &who.service_account)
                .map_err(forbidden)
        }
        Err(TokenRefusal::Refused(e)) => Err(forbidden(e)),
        Err(TokenRefusal::Unavailable(e)) => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot check the ServiceAccount token now: {e}"),
        )),
    }
}

pub(crate) async fn certificate(
    cp: &Arc<ControlPlane>,
    req: Request<Incoming>,
    identity: Option<String>,
) -> Response<CpBody> {
    let id = match authenticate(cp, &req, identity).await {
        Ok(id) => id,
        Err((status, e)) => {
            cp.counters
                .certificate_denials
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "certificate request refused");
            return text(status, format!("{e}\n"));
        }
    };
    let body = match http_body_util::Limited::new(req.into_body(), MAX_MESSAGE)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "request too large\n"),
    };
    let creq: CertificateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("invalid request: {e}\n")),
    };
    // The CA signs only the proven identity; a CSR asking for another one
    // is refused outright rather than quietly given what was proven.
    if let Some(asked) = requested_identity(&creq.csr) {
        if asked != id.as_str() {
            cp.counters
                .certificate_denials
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(proven = %id, %asked, "certificate request refused: identity mismatch");
            return text(
                StatusCode::FORBIDDEN,
                format!("this caller is {id}; it cannot have a certificate for {asked}\n"),
            );
        }
    }
    // A MeshConfig's certificateLifetime wins over the flag.
    let ttl = cp
        .resources
        .borrow()
        .catalog
        .certificate_lifetime()
        .unwrap_or(cp.cert_ttl);
    let now = SystemTime::now();
    let not_before = now - Duration::from_secs(60);
    let not_after = now + ttl;
    match cp
        .ca
        .sign_csr_with_validity(&creq.csr, &id, not_before, not_after)
    {
        Ok(issued) => {
            cp.counters.certificates.fetch_add(1, Ordering::Relaxed);
            tracing::info!(identity = %id, ?ttl, "certificate issued");
            let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            json(
                StatusCode::OK,
                &CertificateResponse {
                    chain: issued.pem,
                    roots: cp.ca.cert_pem().to_string(),
                    not_before: secs(not_before),
                    not_after: secs(not_after),
                },
            )
        }
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            format!("cannot sign the CSR: {e}\n"),
        ),
    }
}

/// The SPIFFE ID a CSR asks for (its URI SAN), if it names one.
fn requested_identity(csr_pem: &str) -> Option<String> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).ok()?;
    csr.params.subject_alt_names.iter().find_map(|s| match s {
        rcgen::SanType::URI(u) => Some(u.as_str().to_string()),
        _ => None,
    })
}
