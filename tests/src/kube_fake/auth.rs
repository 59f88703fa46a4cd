//! Who is calling: a TLS client certificate (user = CN, groups = O, as the
//! apiserver maps them; `O=system:masters` is the admin that RBAC never
//! limits) or a bearer token the fake issued whose audience includes the
//! fake's own issuer URL. A bearer token that fails is a 401; no
//! credentials at all is `system:anonymous`, which RBAC then refuses.

use super::tokens;
use super::State;
use serde_json::{json, Value};

/// An authenticated (or anonymous) user.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: Value,
}

impl User {
    pub fn anonymous_user() -> User {
        User {
            name: "system:anonymous".into(),
            uid: None,
            groups: vec!["system:unauthenticated".into()],
            extra: Value::Null,
        }
    }

    pub fn anonymous(&self) -> bool {
        self.name == "system:anonymous"
    }

    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }

    /// `userInfo` as AdmissionReview and SelfSubjectReview carry it.
    pub fn info(&self) -> Value {
        let mut u = json!({"username": self.name, "groups": self.groups});
        if let Some(uid) = &self.uid {
            u["uid"] = uid.clone().into();
        }
        if !self.extra.is_null() {
            u["extra"] = self.extra.clone();
        }
        u
    }
}

/// The user a verified client certificate names.
pub fn from_certificate(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    groups.push("system:authenticated".into());
    let fingerprint = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    let hex: String = fingerprint
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(User {
        name: cn,
        uid: None,
        groups,
        extra: json!({"authentication.kubernetes.io/credential-id": [format!("X509SHA256={hex}")]}),
    })
}

/// The user a bearer token names, or None (401).
pub fn from_bearer(state: &State, token: &str) -> Option<User> {
    let t = tokens::validate(state, token, &[]).ok()?;
    Some(User {
        name: t.username(),
        uid: Some(t.sa_uid.clone()),
        groups: t.groups(),
        extra: t.extra(),
    })
}
