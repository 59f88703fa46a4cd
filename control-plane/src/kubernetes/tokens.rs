//! Workload identity from the cluster: a sidecar's projected
//! ServiceAccount token (audience `weft`), checked with a `TokenReview`
//! (`authentication.k8s.io/v1`), names the one identity the CA will sign
//! for it, `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
//!
//! The API server checks the signature, expiry, audience and that the
//! ServiceAccount and the Pod the token is bound to still exist; this
//! module asks for the audience `weft` and then requires what the answer
//! must say for the token to prove a running Pod: `authenticated`, the
//! audience `weft` among `status.audiences`, a ServiceAccount username, and
//! the bound Pod's name and UID in `user.extra` (present only when the
//! API server validated the binding). A token without a Pod binding (a
//! long-lived Secret token, a plain TokenRequest) is refused.
//!
//! Reviews are not cached: a sidecar presents its token only for a first
//! certificate (renewals are proven by the current certificate), so a
//! review is one API call per Pod start, and every review sees a Pod
//! deletion at once.

use crate::state::{KubernetesStatus, TokenRefusal, TokenReviewer, TokenSubject};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use kube::{Api, Client};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// The audience sidecar tokens are projected for (CONTRACT.md).
pub(crate) const AUDIENCE: &str = "weft";

/// The permission a review needs, as the admin page names it.
pub(crate) const PERMISSION: &str = "create tokenreviews.authentication.k8s.io (cluster-wide)";

const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";

/// Longest wait for the API server's answer.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends TokenReviews with the control plane's own credentials.
pub(crate) struct Reviewer {
    api: Api<TokenReview>,
    status: Arc<KubernetesStatus>,
}

impl Reviewer {
    pub(crate) fn new(client: Client, status: Arc<KubernetesStatus>) -> Reviewer {
        Reviewer {
            api: Api::all(client),
            status,
        }
    }

    /// Reviews `token` for the audience `weft`.
    async fn review_now(&self, token: &str) -> Result<TokenSubject, TokenRefusal> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(vec![AUDIENCE.to_string()]),
            },
            ..Default::default()
        };
        let answer = tokio::time::timeout(
            REVIEW_TIMEOUT,
            self.api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| TokenRefusal::Unavailable("the TokenReview timed out".into()))?;
        match answer {
            Ok(r) => {
                self.status.granted(PERMISSION);
                check(r.status.as_ref())
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                let message = format!(
                    "forbidden to {PERMISSION}: grant the control plane's ServiceAccount create on tokenreviews.authentication.k8s.io ({})",
                    s.message
                );
                tracing::error!("{message}");
                self.status.missing(PERMISSION, &message);
                Err(TokenRefusal::Unavailable(message))
            }
            Err(e) => Err(TokenRefusal::Unavailable(format!("TokenReview: {e}"))),
        }
    }
}

impl TokenReviewer for Reviewer {
    fn review<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<TokenSubject, TokenRefusal>> + Send + 'a>> {
        Box::pin(self.review_now(token))
    }
}

/// What the review must say for the token to prove a Pod's identity.
pub(crate) fn check(status: Option<&TokenReviewStatus>) -> Result<TokenSubject, TokenRefusal> {
    let refused = |m: String| Err(TokenRefusal::Refused(m));
    let Some(status) = status else {
        return refused("the TokenReview came back without a status".into());
    };
    if status.authenticated != Some(true) {
        let why = status.error.as_deref().unwrap_or("not authenticated");
        return refused(format!("the ServiceAccount token was refused: {why}"));
    }
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.iter().any(|a| a == AUDIENCE) {
        return refused(format!(
            "the ServiceAccount token is not for the audience {AUDIENCE:?} (the API server answered {audiences:?})"
        ));
    }
    let user = status.user.as_ref();
    let username = user.and_then(|u| u.username.as_deref()).unwrap_or("");
    let Some((namespace, service_account)) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
    else {
        return refused(format!("{username:?} is not a ServiceAccount"));
    };
    let extra = |key: &str| {
        user.and_then(|u| u.extra.as_ref())
            .and_then(|e| e.get(key))
            .and_then(|v| v.first())
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let (Some(pod), Some(_uid)) = (extra(POD_NAME), extra(POD_UID)) else {
        return refused(format!(
            "the token of {username} is not bound to a Pod (use a projected serviceAccountToken volume)"
        ));
    };
    Ok(TokenSubject {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        pod,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;
    use std::collections::BTreeMap;

    fn ok() -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(vec!["weft".into()]),
            error: None,
            user: Some(UserInfo {
                username: Some("system:serviceaccount:shop:reviews".into()),
                extra: Some(BTreeMap::from([
                    (POD_NAME.to_string(), vec!["reviews-0".to_string()]),
                    (POD_UID.to_string(), vec!["6a1c".to_string()]),
                ])),
                ..Default::default()
            }),
        }
    }

    fn refused(s: &TokenReviewStatus) -> String {
        match check(Some(s)) {
            Err(TokenRefusal::Refused(m)) => m,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn a_bound_service_account_token_names_its_account() {
        assert_eq!(
            check(Some(&ok())),
            Ok(TokenSubject {
                namespace: "shop".into(),
                service_account: "reviews".into(),
                pod: "reviews-0".into()
            })
        );
    }

    #[test]
    fn anything_less_is_refused_with_the_reason() {
        let mut s = ok();
        s.authenticated = None;
        s.error = Some("service account token has expired".into());
        assert!(refused(&s).contains("has expired"));

        let mut s = ok();
        s.audiences = Some(vec!["https://kubernetes.default.svc".into()]);
        assert!(refused(&s).contains("audience"));
        s.audiences = None;
        assert!(refused(&s).contains("audience"));

        for name in [
            "admin",
            "system:serviceaccount:shop",
            "system:serviceaccount::x",
            "system:serviceaccount:a:b:c",
        ] {
            let mut s = ok();
            s.user.as_mut().unwrap().username = Some(name.into());
            assert!(refused(&s).contains("not a ServiceAccount"), "{name}");
        }

        let mut s = ok();
        s.user
            .as_mut()
            .unwrap()
            .extra
            .as_mut()
            .unwrap()
            .remove(POD_UID);
        assert!(refused(&s).contains("not bound to a Pod"));
        let mut s = ok();
        s.user.as_mut().unwrap().extra = None;
        assert!(refused(&s).contains("not bound to a Pod"));
        assert!(matches!(check(None), Err(TokenRefusal::Refused(_))));
    }
}
