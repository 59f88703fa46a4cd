//! RBAC as the apiserver enforces it with `--authorization-mode=RBAC`:
//! Roles and ClusterRoles stored like any object, bound to ServiceAccounts,
//! users and groups by RoleBindings (in their namespace) and
//! ClusterRoleBindings (everywhere). A request is allowed when one bound
//! rule names its verb, API group, resource (`resource/subresource` for a
//! subresource) and, for verbs on one object, its name. `system:masters`
//! is never limited. Every authenticated user may create the self reviews
//! (`system:basic-user`). Nothing else is pre-installed: the control
//! plane's documented rules are the only ones its ServiceAccount has.

use super::auth::User;
use super::errors::ApiError;
use super::router::Target;
use super::State;
use serde_json::Value;

fn has(list: &Value, want: &str) -> bool {
    list.as_array()
        .into_iter()
        .flatten()
        .any(|v| v == "*" || v == want)
}

fn subject_matches(s: &Value, user: &User) -> bool {
    let name = s["name"].as_str().unwrap_or("");
    match s["kind"].as_str() {
        Some("ServiceAccount") => {
            user.name
                == format!(
                    "system:serviceaccount:{}:{name}",
                    s["namespace"].as_str().unwrap_or("")
                )
        }
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        _ => false,
    }
}

fn rule_allows(rule: &Value, verb: &str, group: &str, resource: &str, name: Option<&str>) -> bool {
    if !has(&rule["verbs"], verb)
        || !has(&rule["apiGroups"], group)
        || !has(&rule["resources"], resource)
    {
        return false;
    }
    match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => name.is_some_and(|n| names.iter().any(|x| x == n)),
        _ => true,
    }
}

/// Allows the request or answers the apiserver's 403.
pub fn authorize(state: &State, user: &User, verb: &str, t: &Target) -> Result<(), ApiError> {
    if user.is_master() {
        return Ok(());
    }
    let r = &t.resource;
    let self_review = verb == "create"
        && matches!(
            r.plural.as_str(),
            "selfsubjectreviews" | "selfsubjectaccessreviews" | "selfsubjectrulesreviews"
        );
    if self_review && !user.anonymous() {
        return Ok(());
    }
    let resource = match &t.subresource {
        Some(s) => format!("{}/{s}", r.plural),
        None => r.plural.clone(),
    };
    let ns = t.namespace.as_deref();
    if allowed(
        state,
        user,
        verb,
        &r.group,
        &resource,
        ns,
        t.name.as_deref(),
    ) {
        return Ok(());
    }
    Err(ApiError::forbidden(
        r,
        t.name.as_deref(),
        &user.name,
        verb,
        &resource,
        t.namespace.as_deref(),
    ))
}

/// Whether RBAC lets `user` do `verb` on `resource` (`plural` or
/// `plural/subresource`) of `group`, in `namespace` (None: cluster-wide),
/// on the object `name` when the verb names one.
pub fn allowed(
    state: &State,
    user: &User,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    if user.is_master() {
        return true;
    }
    let store = state.store();
    let mut bindings: Vec<(Value, String)> = store
        .list("clusterrolebindings.rbac.authorization.k8s.io", None)
        .into_iter()
        .map(|b| (b, String::new()))
        .collect();
    if let Some(ns) = namespace {
        for b in store.list("rolebindings.rbac.authorization.k8s.io", Some(ns)) {
            bindings.push((b, ns.to_string()));
        }
    }
    bindings.iter().any(|(b, ns)| {
        let bound = b["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| subject_matches(s, user));
        let role_name = b["roleRef"]["name"].as_str().unwrap_or("");
        let role = match b["roleRef"]["kind"].as_str() {
            Some("Role") => store.get("roles.rbac.authorization.k8s.io", ns, role_name),
            _ => store.get("clusterroles.rbac.authorization.k8s.io", "", role_name),
        };
        bound
            && role.is_some_and(|role| {
                role["rules"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|rule| rule_allows(rule, verb, group, resource, name))
            })
    })
}
