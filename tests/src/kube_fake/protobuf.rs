//! Request bodies in the apiserver's protobuf encoding
//! (`application/vnd.kubernetes.protobuf`), for the kinds a client writes
//! that way in the tests: Secrets and ConfigMaps (helm keeps its releases
//! in them, written by a typed client that prefers protobuf). The body is
//! the `k8s\0` magic and a `runtime.Unknown` holding the object's type and
//! its encoded message; it is turned into the JSON object the rest of the
//! fake handles. Answers stay JSON (such clients accept it too).

use serde_json::{json, Map, Value};

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// One field of a message: its number and value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(b: &[u8], at: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or("truncated varint")?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

fn fields(b: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let key = varint(b, &mut at)?;
        let (num, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((num, Field::Varint(varint(b, &mut at)?))),
            2 => {
                let len = usize::try_from(varint(b, &mut at)?).map_err(|e| e.to_string())?;
                let end = at
                    .checked_add(len)
                    .filter(|e| *e <= b.len())
                    .ok_or("truncated field")?;
                out.push((num, Field::Bytes(&b[at..end])));
                at = end;
            }
            1 => at += 8,
            5 => at += 4,
            w => return Err(format!("unsupported wire type {w}")),
        }
    }
    if at > b.len() {
        return Err("truncated fixed field".into());
    }
    Ok(out)
}

fn text(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|e| e.to_string())
}

/// A `map<string, ...>` entry: key 1, value 2.
fn entry(b: &[u8]) -> Result<(String, &[u8]), String> {
    let (mut k, mut v) = (String::new(), &[][..]);
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = text(x)?,
            (2, Field::Bytes(x)) => v = x,
            _ => {}
        }
    }
    Ok((k, v))
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut m = Map::new();
    let (mut labels, mut annotations) = (Map::new(), Map::new());
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(x)) => {
                m.insert("name".into(), text(x)?.into());
            }
            (2, Field::Bytes(x)) => {
                m.insert("generateName".into(), text(x)?.into());
            }
            (3, Field::Bytes(x)) => {
                m.insert("namespace".into(), text(x)?.into());
            }
            (6, Field::Bytes(x)) => {
                m.insert("resourceVersion".into(), text(x)?.into());
            }
            (11, Field::Bytes(x)) => {
                let (k, v) = entry(x)?;
                labels.insert(k, text(v)?.into());
            }
            (12, Field::Bytes(x)) => {
                let (k, v) = entry(x)?;
                annotations.insert(k, text(v)?.into());
            }
            _ => {}
        }
    }
    if !labels.is_empty() {
        m.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        m.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(Value::Object(m))
}

/// Decodes a protobuf body of `kind` into its JSON form.
pub fn decode(body: &[u8], kind: &str) -> Result<Value, String> {
    let unknown = body.strip_prefix(b"k8s\0").ok_or("no protobuf magic")?;
    let (mut api_version, mut got_kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(unknown)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm)? {
                    match (n, f) {
                        (1, Field::Bytes(x)) => api_version = text(x)?,
                        (2, Field::Bytes(x)) => got_kind = text(x)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    if got_kind != kind || !matches!(kind, "Secret" | "ConfigMap") {
        return Err(format!("protobuf {got_kind} is not handled here"));
    }
    let mut obj = json!({"apiVersion": api_version, "kind": kind});
    let (mut data, mut strings) = (Map::new(), Map::new());
    for (n, f) in fields(raw)? {
        match (kind, n, f) {
            (_, 1, Field::Bytes(x)) => obj["metadata"] = object_meta(x)?,
            ("Secret", 2, Field::Bytes(x)) | ("ConfigMap", 3, Field::Bytes(x)) => {
                let (k, v) = entry(x)?;
                data.insert(k, super::util::b64_std(v).into());
            }
            ("Secret", 3, Field::Bytes(x)) => obj["type"] = text(x)?.into(),
            ("Secret", 4, Field::Bytes(x)) | ("ConfigMap", 2, Field::Bytes(x)) => {
                let (k, v) = entry(x)?;
                strings.insert(k, text(v)?.into());
            }
            ("Secret", 5, Field::Varint(v)) | ("ConfigMap", 4, Field::Varint(v)) => {
                obj["immutable"] = (v != 0).into()
            }
            _ => {}
        }
    }
    match kind {
        "Secret" => {
            if !data.is_empty() {
                obj["data"] = Value::Object(data);
            }
            if !strings.is_empty() {
                obj["stringData"] = Value::Object(strings);
            }
        }
        _ => {
            if !strings.is_empty() {
                obj["data"] = Value::Object(strings);
            }
            if !data.is_empty() {
                obj["binaryData"] = Value::Object(data);
            }
        }
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `k8s\0` Unknown holding a Secret `s` with one label, one data key
    /// and a type, as client-go encodes it.
    fn secret() -> Vec<u8> {
        fn field(n: u8, b: &[u8]) -> Vec<u8> {
            let mut v = vec![(n << 3) | 2, b.len() as u8];
            v.extend_from_slice(b);
            v
        }
        let label = [field(1, b"owner"), field(2, b"helm")].concat();
        let meta = [field(1, b"s"), field(3, b"ns"), field(11, &label)].concat();
        let data = [field(1, b"k"), field(2, b"\x00\xff")].concat();
        let raw = [
            field(1, &meta),
            field(2, &data),
            field(3, b"helm.sh/release.v1"),
        ]
        .concat();
        let tm = [field(1, b"v1"), field(2, b"Secret")].concat();
        [b"k8s\0".to_vec(), field(1, &tm), field(2, &raw)].concat()
    }

    #[test]
    fn a_secret_decodes() {
        let v = decode(&secret(), "Secret").unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
                   "metadata": {"name": "s", "namespace": "ns", "labels": {"owner": "helm"}},
                   "data": {"k": "AP8="}})
        );
        assert!(decode(&secret(), "ConfigMap").is_err());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let whole = secret();
        for n in 0..whole.len() {
            let _ = decode(&whole[..n], "Secret");
        }
        assert!(decode(
            b"k8s\0\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            "Secret"
        )
        .is_err());
    }
}
