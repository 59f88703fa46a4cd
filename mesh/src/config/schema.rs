//! OpenAPI schemas of the resource types, for the CustomResourceDefinitions
//! the control plane prints: the same Rust types the file loader reads are
//! the one definition of every field (only with the `schema` feature).
//!
//! The types derive `schemars::JsonSchema`; [`structural`] rewrites what
//! schemars emits (JSON Schema 2020-12) into a Kubernetes *structural*
//! schema: everything inlined (no `$ref`), every node typed, optional
//! values without the `null` alternative, unit enums as `enum` lists,
//! no `additionalProperties` beside `properties` and no defaults (the
//! loader applies defaults, so `/config` shows what was written).
//!
//! Types with their own (de)serialization implement `JsonSchema` beside
//! it, next to that code (durations, retry conditions).

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value};

/// For `#[schemars(schema_with = ...)]` on a field written either as a
/// number or as a string (`maxBufferedBody: 65536` or `64KiB`).
pub fn int_or_string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "x-kubernetes-int-or-string": true })
}

/// The structural schema of `T`, as a JSON value.
pub fn structural<T: JsonSchema>() -> Value {
    let mut settings = schemars::generate::SchemaSettings::draft2020_12();
    settings.inline_subschemas = true;
    settings.meta_schema = None;
    let schema = settings.into_generator().into_root_schema_for::<T>();
    let mut v = schema.to_value();
    rewrite(&mut v);
    v
}

/// Formats Kubernetes knows; others (`uint16`, ...) are left out, the
/// bounds schemars sets beside them stay.
const KNOWN_FORMATS: &[&str] = &["int32", "int64", "float", "double", "byte", "date-time"];

fn rewrite(v: &mut Value) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    for key in ["$schema", "title", "default", "$defs", "examples"] {
        obj.remove(key);
    }
    if obj.get("additionalProperties") == Some(&Value::Bool(false)) {
        obj.remove("additionalProperties");
    }
    // `T | null` (an Option): keep T.
    if let Some(Value::Array(types)) = obj.get("type") {
        let kept: Vec<Value> = types
            .iter()
            .filter(|t| t.as_str() != Some("null"))
            .cloned()
            .collect();
        if kept.len() == 1 {
            obj.insert("type".into(), kept[0].clone());
        }
    }
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(alts)) = obj.get(key) else {
            continue;
        };
        let alts: Vec<Value> = alts
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) != Some("null"))
            .cloned()
            .collect();
        obj.remove(key);
        if alts.len() == 1 {
            merge_into(obj, alts.into_iter().next().unwrap_or_default());
        } else if let Some(names) = unit_variants(&alts) {
            // A unit enum whose variants carry doc comments.
            obj.insert("type".into(), "string".into());
            obj.insert("enum".into(), Value::Array(names));
            let docs: Vec<String> = alts
                .iter()
                .filter_map(|a| {
                    let c = a.get("const")?.as_str()?;
                    let d = a.get("description")?.as_str()?;
                    Some(format!("`{c}`: {d}"))
                })
                .collect();
            if !docs.is_empty() {
                let head = obj
                    .get("description")
                    .and_then(Value::as_str)
                    .map(|d| format!("{d}\n"))
                    .unwrap_or_default();
                obj.insert(
                    "description".into(),
                    format!("{head}{}", docs.join("\n")).into(),
                );
            }
        } else {
            obj.insert(key.into(), Value::Array(alts));
        }
    }
    // An optional enum lists `null` among its values.
    if let Some(Value::Array(values)) = obj.get_mut("enum") {
        values.retain(|v| !v.is_null());
    }
    if let Some(c) = obj.remove("const") {
        obj.insert("enum".into(), Value::Array(vec![c]));
    }
    if let Some(f) = obj.get("format").and_then(Value::as_str) {
        if !KNOWN_FORMATS.contains(&f) {
            obj.remove("format");
        }
    }
    for (key, child) in obj.iter_mut() {
        match (key.as_str(), child) {
            // A map of field names to schemas, not a schema itself.
            ("properties", Value::Object(props)) => props.values_mut().for_each(rewrite),
            ("enum", _) => {}
            (_, child @ Value::Object(_)) => rewrite(child),
            (_, Value::Array(items)) => items.iter_mut().for_each(rewrite),
            _ => {}
        }
    }
}

/// The names of alternatives that are each one string constant.
fn unit_variants(alts: &[Value]) -> Option<Vec<Value>> {
    alts.iter()
        .map(|a| {
            let c = a.get("const").or_else(|| {
                a.get("enum")
                    .and_then(Value::as_array)
                    .filter(|e| e.len() == 1)
                    .and_then(|e| e.first())
            })?;
            c.is_string().then(|| c.clone())
        })
        .collect()
}

/// Adds `from`'s keys to `into`; a description already there wins (the
/// field's doc comment over its type's).
fn merge_into(into: &mut Map<String, Value>, from: Value) {
    if let Value::Object(from) = from {
        for (k, v) in from {
            into.entry(k).or_insert(v);
        }
    }
}
