//! Custom objects against their CRD's structural `openAPIV3Schema`, as the
//! apiextensions apiserver treats them: on decode, unknown fields are
//! pruned (a `Warning` each, or a 400 under `fieldValidation=Strict`),
//! non-nullable nulls dropped and `default`s applied; before storing, the
//! value validations (type, enum, required, pattern, lengths, bounds, item
//! and property counts, simple formats, list-type uniqueness, allOf/anyOf/
//! oneOf/not) give the 422 `Invalid` causes with the apiserver's field
//! paths and messages. CEL rules (`x-kubernetes-validations`) are not
//! evaluated; as on the apiserver, a schema that has them adds the
//! "some validation rules were not checked" cause to a failing object.

use super::discovery::Resource;
use super::errors::{ApiError, Cause};
use super::router::Request;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// Prunes unknown fields and applies defaults to a custom object; the
/// answer is the `Warning` values for the fields dropped, or the 400 that
/// `fieldValidation=Strict` gives for them.
pub fn decode(r: &Resource, req: &Request, obj: &mut Value) -> Result<Vec<String>, ApiError> {
    let Some(schema) = r.schema.as_deref() else {
        return Ok(Vec::new());
    };
    let mut unknown = Vec::new();
    prune(schema, obj, "", true, &mut unknown);
    match req.q("fieldValidation") {
        Some("Strict") if !unknown.is_empty() => {
            let fields: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field {f:?}"))
                .collect();
            Err(ApiError::bad_request(format!(
                "{kind} in version {v:?} cannot be handled as a {kind}: strict decoding error: {}",
                fields.join(", "),
                kind = r.kind,
                v = r.version,
            )))
        }
        Some("Ignore") => Ok(Vec::new()),
        _ => Ok(unknown
            .iter()
            .map(|f| format!("299 - {:?}", format!("unknown field {f:?}")))
            .collect()),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(s: &Value, key: &str) -> bool {
    s[key] == true
}

/// Drops what the schema does not know, nulls it does not allow, and fills
/// in defaults, depth first. `root` (and embedded resources) keep
/// apiVersion, kind and metadata.
fn prune(s: &Value, v: &mut Value, path: &str, root: bool, unknown: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let props = s["properties"].as_object();
            let additional = &s["additionalProperties"];
            let keep_all = flag(s, "x-kubernetes-preserve-unknown-fields") || *additional == true;
            let embedded = root || flag(s, "x-kubernetes-embedded-resource");
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = props.and_then(|p| p.get(&k));
                match sub {
                    Some(ps) => {
                        if map[&k].is_null() && !flag(ps, "nullable") {
                            map.remove(&k);
                            continue;
                        }
                        if let Some(x) = map.get_mut(&k) {
                            prune(ps, x, &join(path, &k), false, unknown);
                        }
                    }
                    None if additional.is_object() => {
                        if let Some(x) = map.get_mut(&k) {
                            prune(additional, x, &format!("{path}[{k}]"), false, unknown);
                        }
                    }
                    None if keep_all => {}
                    None => {
                        map.remove(&k);
                        unknown.push(join(path, &k));
                    }
                }
            }
            for (k, ps) in props.into_iter().flatten() {
                if map.contains_key(k) || ps.get("default").is_none() {
                    continue;
                }
                let mut d = ps["default"].clone();
                prune(ps, &mut d, &join(path, k), false, &mut Vec::new());
                map.insert(k.clone(), d);
            }
        }
        Value::Array(items) if s["items"].is_object() => {
            for (i, x) in items.iter_mut().enumerate() {
                prune(&s["items"], x, &format!("{path}[{i}]"), false, unknown);
            }
        }
        _ => {}
    }
}

/// Whether the schema has CEL rules anywhere.
fn has_cel(s: &Value) -> bool {
    match s {
        Value::Object(m) => {
            m.contains_key("x-kubernetes-validations")
                || m.iter()
                    .filter(|(k, _)| k.as_str() != "default" && k.as_str() != "example")
                    .any(|(_, v)| has_cel(v))
        }
        Value::Array(a) => a.iter().any(has_cel),
        _ => false,
    }
}

/// The 422 for a custom object that breaks its schema. `status_only`: a
/// `/status` write, where only `status` is checked (paths in messages are
/// then relative to it, as the apiserver writes them).
pub fn validate(r: &Resource, obj: &Value, status_only: bool) -> Result<(), ApiError> {
    let Some(schema) = r.schema.as_deref() else {
        return Ok(());
    };
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let mut causes = Vec::new();
    let mut cx = Check {
        causes: &mut causes,
        root: "",
    };
    if status_only {
        cx.root = "status";
        if let Some(st) = obj.get("status") {
            check(&schema["properties"]["status"], st, "status", &mut cx);
        }
    } else {
        if !super::kinds::is_subdomain(name) {
            cx.causes.push(Cause::invalid(
                "metadata.name",
                &format!("{name:?}"),
                super::kinds::RFC1123_SUBDOMAIN,
            ));
        }
        check_object(schema, obj, "", true, &mut cx);
    }
    if causes.is_empty() {
        return Ok(());
    }
    if has_cel(schema) {
        causes.push(Cause {
            reason: "FieldValueInvalid",
            message: "Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation".into(),
            field: "<nil>".into(),
        });
    }
    let qualified = format!("{}.{}", r.kind, r.group);
    Err(ApiError::invalid(
        &qualified, &r.group, &r.kind, name, causes,
    ))
}

struct Check<'a> {
    causes: &'a mut Vec<Cause>,
    /// The path the messages' "in body" paths are relative to.
    root: &'a str,
}

impl Check<'_> {
    fn rel<'p>(&self, path: &'p str) -> &'p str {
        if self.root.is_empty() {
            return path;
        }
        path.strip_prefix(self.root)
            .map(|p| p.trim_start_matches('.'))
            .unwrap_or(path)
    }

    fn invalid(&mut self, path: &str, v: &Value, why: String) {
        self.causes.push(Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: {why}", show(v)),
            field: path.to_string(),
        });
    }

    fn push(&mut self, reason: &'static str, path: &str, message: String) {
        self.causes.push(Cause {
            reason,
            message,
            field: path.to_string(),
        });
    }
}

/// A value as Go's `%#v`-ish rendering in the apiserver's messages: JSON.
fn show(v: &Value) -> String {
    v.to_string()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0)
}

fn num(v: &Value) -> String {
    match v.as_i64() {
        Some(i) => i.to_string(),
        None => v.as_f64().map(|f| f.to_string()).unwrap_or_default(),
    }
}

fn check(s: &Value, v: &Value, path: &str, cx: &mut Check) {
    if !s.is_object() {
        return;
    }
    let rel = cx.rel(path).to_string();
    if v.is_null() && flag(s, "nullable") {
        return;
    }
    let int_or_string = flag(s, "x-kubernetes-int-or-string");
    if let Some(t) = s["type"].as_str() {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string() || (int_or_string && is_integer(v)),
            "integer" => is_integer(v) || (int_or_string && v.is_string()),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => true,
        };
        if !ok {
            let actual = Value::String(type_name(v).into());
            cx.push(
                "FieldValueTypeInvalid",
                path,
                format!(
                    "Invalid value: {}: {rel} in body must be of type {t}: {}",
                    show(&actual),
                    show(&actual)
                ),
            );
            return;
        }
    } else if int_or_string && !(is_integer(v) || v.is_string()) {
        let actual = Value::String(type_name(v).into());
        cx.push(
            "FieldValueTypeInvalid",
            path,
            format!(
                "Invalid value: {}: {rel} in body must be of type integer,string: {}",
                show(&actual),
                show(&actual)
            ),
        );
        return;
    }
    if let Some(options) = s["enum"].as_array() {
        if !options.contains(v) {
            let list: Vec<String> = options.iter().map(show).collect();
            cx.push(
                "FieldValueNotSupported",
                path,
                format!(
                    "Unsupported value: {}: supported values: {}",
                    show(v),
                    list.join(", ")
                ),
            );
        }
    }
    match v {
        Value::String(text) => check_string(s, v, text, path, &rel, cx),
        Value::Number(_) => check_number(s, v, path, &rel, cx),
        Value::Array(items) => check_array(s, v, items, path, &rel, cx),
        Value::Object(_) => check_object(s, v, path, false, cx),
        _ => {}
    }
    for sub in s["allOf"].as_array().into_iter().flatten() {
        check(sub, v, path, cx);
    }
    let passes = |sub: &Value| {
        let mut scratch = Vec::new();
        let mut inner = Check {
            causes: &mut scratch,
            root: "",
        };
        check(sub, v, path, &mut inner);
        scratch.is_empty()
    };
    if let Some(any) = s["anyOf"].as_array() {
        if !any.iter().any(passes) {
            cx.invalid(
                path,
                v,
                format!("{rel} in body must validate at least one schema (anyOf)"),
            );
        }
    }
    if let Some(one) = s["oneOf"].as_array() {
        if one.iter().filter(|x| passes(x)).count() != 1 {
            cx.invalid(
                path,
                v,
                format!("{rel} in body must validate one and only one schema (oneOf)"),
            );
        }
    }
    if s["not"].is_object() && passes(&s["not"]) {
        cx.invalid(
            path,
            v,
            format!("{rel} in body shouldn't validate the schema (not)"),
        );
    }
}

fn regex(pattern: &str) -> Option<regex::Regex> {
    static CACHE: LazyLock<Mutex<HashMap<String, Option<regex::Regex>>>> =
        LazyLock::new(Default::default);
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    cache
        .entry(pattern.to_string())
        .or_insert_with(|| regex::Regex::new(pattern).ok())
        .clone()
}

fn check_string(s: &Value, v: &Value, text: &str, path: &str, rel: &str, cx: &mut Check) {
    let len = text.chars().count() as u64;
    if let Some(max) = s["maxLength"].as_u64().filter(|m| len > *m) {
        cx.push(
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {max} bytes"),
        );
    }
    if let Some(min) = s["minLength"].as_u64().filter(|m| len < *m) {
        cx.invalid(
            path,
            v,
            format!("{rel} in body should be at least {min} chars long"),
        );
    }
    if let Some(p) = s["pattern"].as_str() {
        if regex(p).is_some_and(|re| !re.is_match(text)) {
            cx.invalid(path, v, format!("{rel} in body should match '{p}'"));
        }
    }
    if let Some(f) = s["format"].as_str() {
        if !format_ok(f, text) {
            cx.invalid(
                path,
                v,
                format!("{rel} in body must be of type {f}: {}", show(v)),
            );
        }
    }
}

/// The string formats the apiserver checks that are simple to check.
fn format_ok(format: &str, s: &str) -> bool {
    static DATE_TIME: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
        )
        .expect("date-time")
    });
    static UUID: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(
            r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        )
        .expect("uuid")
    });
    match format {
        "date-time" | "datetime" => DATE_TIME.is_match(s),
        "date" => s.len() == 10 && DATE_TIME.is_match(&format!("{s}T00:00:00Z")),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            let max = if ip.contains(':') { 128 } else { 32 };
            ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= max)
        }),
        "uuid" => UUID.is_match(s),
        "byte" => super::util::b64_decode(s).is_ok(),
        "hostname" => {
            !s.is_empty()
                && s.len() <= 253
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && !l.starts_with('-')
                        && !l.ends_with('-')
                        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
        "email" => s
            .split_once('@')
            .is_some_and(|(a, b)| !a.is_empty() && b.contains('.')),
        _ => true,
    }
}

fn check_number(s: &Value, v: &Value, path: &str, rel: &str, cx: &mut Check) {
    let Some(x) = v.as_f64() else {
        return;
    };
    if let Some(min) = s["minimum"].as_f64() {
        let exclusive = flag(s, "exclusiveMinimum");
        if x < min || (exclusive && x == min) {
            let how = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            cx.invalid(
                path,
                v,
                format!("{rel} in body should be {how} {}", num(&s["minimum"])),
            );
        }
    }
    if let Some(max) = s["maximum"].as_f64() {
        let exclusive = flag(s, "exclusiveMaximum");
        if x > max || (exclusive && x == max) {
            let how = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            cx.invalid(
                path,
                v,
                format!("{rel} in body should be {how} {}", num(&s["maximum"])),
            );
        }
    }
    if let Some(m) = s["multipleOf"].as_f64().filter(|m| *m > 0.0) {
        if (x / m).fract() != 0.0 {
            cx.invalid(
                path,
                v,
                format!(
                    "{rel} in body should be a multiple of {}",
                    num(&s["multipleOf"])
                ),
            );
        }
    }
}

fn check_array(s: &Value, v: &Value, items: &[Value], path: &str, rel: &str, cx: &mut Check) {
    let n = items.len() as u64;
    if let Some(min) = s["minItems"].as_u64().filter(|m| n < *m) {
        cx.invalid(
            path,
            v,
            format!("{rel} in body should have at least {min} items"),
        );
    }
    if let Some(max) = s["maxItems"].as_u64().filter(|m| n > *m) {
        cx.push(
            "FieldValueTooMany",
            path,
            format!("Too many: {n}: must have at most {max} items"),
        );
    }
    let keys: Vec<&str> = s["x-kubernetes-list-map-keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let list_type = s["x-kubernetes-list-type"].as_str();
    let mut seen: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let key = match list_type {
            Some("set") => Some(item.clone()),
            Some("map") if item.is_object() => {
                let mut m = Map::new();
                for k in &keys {
                    if let Some(x) = item.get(*k) {
                        m.insert(k.to_string(), x.clone());
                    }
                }
                Some(Value::Object(m))
            }
            _ => None,
        };
        if let Some(key) = key {
            if seen.contains(&key) {
                cx.push(
                    "FieldValueDuplicate",
                    &format!("{path}[{i}]"),
                    format!("Duplicate value: {}", show(&key)),
                );
            } else {
                seen.push(key);
            }
        }
        check(&s["items"], item, &format!("{path}[{i}]"), cx);
    }
}

fn check_object(s: &Value, v: &Value, path: &str, root: bool, cx: &mut Check) {
    let Some(map) = v.as_object() else {
        return;
    };
    let rel = cx.rel(path).to_string();
    for req in s["required"].as_array().into_iter().flatten() {
        if let Some(k) = req.as_str() {
            if !map.contains_key(k) {
                cx.push(
                    "FieldValueRequired",
                    &join(path, k),
                    "Required value".into(),
                );
            }
        }
    }
    let n = map.len() as u64;
    if let Some(min) = s["minProperties"].as_u64().filter(|m| n < *m) {
        cx.invalid(
            path,
            v,
            format!("{rel} in body should have at least {min} properties"),
        );
    }
    if let Some(max) = s["maxProperties"].as_u64().filter(|m| n > *m) {
        cx.push(
            "FieldValueTooMany",
            path,
            format!("Too many: {n}: must have at most {max} items"),
        );
    }
    let props = s["properties"].as_object();
    for (k, x) in map {
        if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(k)) {
            Some(ps) => check(ps, x, &join(path, k), cx),
            None if s["additionalProperties"].is_object() => {
                check(&s["additionalProperties"], x, &format!("{path}[{k}]"), cx)
            }
            None => {}
        }
    }
}
