//! ServiceAccount tokens: RS256 JWTs signed with the fake's own key, with
//! the claims the recorded apiserver put in them (`aud`, `exp`, `iat`,
//! `iss`, `jti`, `nbf`, `sub` and `kubernetes.io` naming the namespace, the
//! ServiceAccount and, when bound, the Pod), and their validation for bearer
//! authentication and TokenReview: signature, issuer, expiry, audience, and
//! that the ServiceAccount and bound Pod still exist with the same UIDs.

use super::util::{b64_decode, b64_url, go_quote_list, unix_now, uuid};
use super::State;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use serde_json::{json, Value};

/// The signing key and its key ID.
pub struct Signer {
    key: KeyPair,
    kid: String,
}

impl Signer {
    pub fn generate() -> Signer {
        let key = KeyPair::generate(KeySize::Rsa2048).expect("generate the token signing key");
        let digest =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.public_key().as_ref());
        Signer {
            key,
            kid: b64_url(digest.as_ref()),
        }
    }

    /// A signed JWT for `claims`.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"alg": "RS256", "kid": self.kid});
        let input = format!(
            "{}.{}",
            b64_url(header.to_string().as_bytes()),
            b64_url(claims.to_string().as_bytes())
        );
        let mut sig = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .expect("RSA signing");
        format!("{input}.{}", b64_url(&sig))
    }

    fn verify(&self, input: &str, sig: &[u8]) -> bool {
        UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            self.key.public_key().as_ref(),
        )
        .verify(input.as_bytes(), sig)
        .is_ok()
    }
}

/// What a valid token says about its bearer.
pub struct TokenUser {
    pub namespace: String,
    pub service_account: String,
    pub sa_uid: String,
    pub jti: String,
    pub pod: Option<(String, String)>,
    pub audiences: Vec<String>,
}

impl TokenUser {
    pub fn username(&self) -> String {
        format!(
            "system:serviceaccount:{}:{}",
            self.namespace, self.service_account
        )
    }

    pub fn groups(&self) -> Vec<String> {
        vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{}", self.namespace),
            "system:authenticated".into(),
        ]
    }

    pub fn extra(&self) -> Value {
        let mut e =
            json!({"authentication.kubernetes.io/credential-id": [format!("JTI={}", self.jti)]});
        if let Some((name, uid)) = &self.pod {
            e["authentication.kubernetes.io/pod-name"] = json!([name]);
            e["authentication.kubernetes.io/pod-uid"] = json!([uid]);
        }
        e
    }
}

/// Issues a token for a ServiceAccount (`sa_uid`), optionally bound to a Pod.
pub fn issue(
    state: &State,
    namespace: &str,
    sa: &str,
    sa_uid: &str,
    audiences: &[String],
    expiration_seconds: u64,
    pod: Option<(&str, &str)>,
) -> (String, u64) {
    issue_at(
        state,
        namespace,
        sa,
        sa_uid,
        audiences,
        expiration_seconds,
        pod,
        unix_now(),
    )
}

/// As [`issue`], as if issued at `now` (Unix seconds): a token issued
/// long enough ago has expired.
#[allow(clippy::too_many_arguments)]
pub fn issue_at(
    state: &State,
    namespace: &str,
    sa: &str,
    sa_uid: &str,
    audiences: &[String],
    expiration_seconds: u64,
    pod: Option<(&str, &str)>,
    now: u64,
) -> (String, u64) {
    let mut k8s = json!({"namespace": namespace, "serviceaccount": {"name": sa, "uid": sa_uid}});
    if let Some((name, uid)) = pod {
        k8s["pod"] = json!({"name": name, "uid": uid});
    }
    let exp = now + expiration_seconds;
    let claims = json!({
        "aud": audiences, "exp": exp, "iat": now, "iss": state.issuer, "jti": uuid(),
        "kubernetes.io": k8s, "nbf": now, "sub": format!("system:serviceaccount:{namespace}:{sa}"),
    });
    (state.signer.sign(&claims), exp)
}

const INVALID: &str = "invalid bearer token";

/// Validates `token` for `audiences` (the issuer when empty). The error is
/// the TokenReview `status.error` text.
pub fn validate(state: &State, token: &str, audiences: &[String]) -> Result<TokenUser, String> {
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(INVALID.into());
    }
    let decode = |s: &str| -> Option<Value> { serde_json::from_slice(&b64_decode(s).ok()?).ok() };
    let (Some(header), Some(claims)) = (decode(parts[0]), decode(parts[1])) else {
        return Err(INVALID.into());
    };
    if header["alg"] != "RS256" || claims["iss"] != state.issuer.as_str() {
        return Err(INVALID.into());
    }
    let sig = b64_decode(parts[2]).unwrap_or_default();
    if !state
        .signer
        .verify(&format!("{}.{}", parts[0], parts[1]), &sig)
    {
        return Err(format!(
            "[{INVALID}, go-jose/go-jose: error in cryptographic primitive]"
        ));
    }
    let now = unix_now();
    if claims["exp"].as_u64().is_none_or(|e| e < now) {
        return Err(format!("[{INVALID}, service account token has expired]"));
    }
    if claims["nbf"].as_u64().is_some_and(|n| n > now + 60) {
        return Err(format!(
            "[{INVALID}, service account token is not valid yet]"
        ));
    }
    let token_aud: Vec<String> = match &claims["aud"] {
        Value::String(s) => vec![s.clone()],
        v => v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
    };
    let target: Vec<String> = if audiences.is_empty() {
        vec![state.issuer.clone()]
    } else {
        audiences.to_vec()
    };
    let matched: Vec<String> = target
        .iter()
        .filter(|a| token_aud.contains(a))
        .cloned()
        .collect();
    if matched.is_empty() {
        return Err(format!(
            "[{INVALID}, token audiences {} is invalid for the target audiences {}]",
            go_quote_list(&token_aud),
            go_quote_list(&target)
        ));
    }
    let k = &claims["kubernetes.io"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let (ns, sa, sa_uid) = (
        s(&k["namespace"]),
        s(&k["serviceaccount"]["name"]),
        s(&k["serviceaccount"]["uid"]),
    );
    let invalidated = || format!("[{INVALID}, service account token has been invalidated]");
    let store = state.store();
    match store.get("serviceaccounts", &ns, &sa) {
        Some(o) if o["metadata"]["uid"] == sa_uid.as_str() => {}
        _ => return Err(invalidated()),
    }
    let pod = if k["pod"].is_object() {
        let (name, uid) = (s(&k["pod"]["name"]), s(&k["pod"]["uid"]));
        match store.get("pods", &ns, &name) {
            Some(p) if p["metadata"]["uid"] == uid.as_str() => Some((name, uid)),
            _ => return Err(invalidated()),
        }
    } else {
        None
    };
    Ok(TokenUser {
        namespace: ns,
        service_account: sa,
        sa_uid,
        jti: s(&claims["jti"]),
        pod,
        audiences: matched,
    })
}
