//! LIST and WATCH with the apiserver's resourceVersion semantics.
//!
//! LIST: no resourceVersion is a consistent read at the newest revision;
//! `0` is "any" (the last revision of that resource, as its watch cache
//! answers); `N` with `resourceVersionMatch=Exact` is the state at `N`
//! (410 once the history no longer covers it); `N` otherwise is "not older
//! than" (now). A version the fake has not reached waits, then 504.
//! `limit`/`continue` page in key order with the apiserver's token format
//! (`{"v":"meta.k8s.io/v1","rv":N,"start":"name\u0000"}`, base64url), and an
//! expired token is a 410 carrying a fresh token for an inconsistent
//! remainder.
//!
//! WATCH: newline-delimited events on a 200 whose headers go out at once.
//! From `N`: every later event of the resource, then live ones; from an
//! expired `N`: one ERROR event (410 Expired) and the end. Without a
//! resourceVersion or from `0`: a synthetic ADDED per object, then live
//! events (the behaviour of an apiserver whose storage supports watch
//! progress, recorded with `WatchList=false`). `sendInitialEvents=true`:
//! the same ADDED events, then a BOOKMARK annotated
//! `k8s.io/initial-events-end`. With `allowWatchBookmarks=true`, a BOOKMARK
//! every `bookmark_interval` and one 1.5 s before `timeoutSeconds` (when
//! that is at least 10 s), as observed. Selectors turn an object moving
//! into or out of the selection into ADDED or DELETED.

use super::errors::ApiError;
use super::kinds;
use super::router::{Body, Reply, Request, Target};
use super::selectors::Selector;
use super::store::{name_of, ns_of, EventType};
use super::util::{b64_decode, b64_url};
use super::State;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;

fn selectors(req: &Request, kind: &str) -> Result<(Selector, Selector), ApiError> {
    let labels =
        Selector::labels(req.q("labelSelector").unwrap_or("")).map_err(ApiError::bad_request)?;
    let fields = Selector::fields(req.q("fieldSelector").unwrap_or(""), kind)
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn item(mut o: Value, t: &Target) -> Value {
    if t.resource.custom {
        o["apiVersion"] = t.resource.api_version().into();
    } else if let Some(m) = o.as_object_mut() {
        m.remove("kind");
        m.remove("apiVersion");
    }
    o
}

fn key(o: &Value, t: &Target) -> String {
    if t.namespace.is_some() {
        name_of(o)
    } else {
        format!("{}/{}", ns_of(o), name_of(o))
    }
}

fn continue_token(rv: i64, start: &str) -> String {
    let t = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{start}\u{0}")});
    b64_url(t.to_string().as_bytes())
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "resourceVersion: Invalid value: {s:?}: must be a number"
        ))
    })
}

pub async fn list(state: &Arc<State>, req: &Request, t: &Target) -> Result<Reply, ApiError> {
    let r = &t.resource;
    let gr = r.group_resource();
    let (labels, fields) = selectors(req, &r.kind)?;
    let rv_param = req.q("resourceVersion").unwrap_or("");
    let exact = req.q("resourceVersionMatch") == Some("Exact");
    let limit: usize = req.q("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let cont = req.q("continue").filter(|c| !c.is_empty());
    if !rv_param.is_empty() && rv_param != "0" {
        let asked = parse_rv(rv_param)?;
        let deadline = Instant::now() + state.config.future_rv_wait;
        while asked > state.store().current_rv() {
            if Instant::now() >= deadline {
                let current = state.store().last_rv(&gr);
                return Err(ApiError::too_large_resource_version(asked, current));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let store = state.store();
    let (objects, list_rv, start) = if let Some(c) = cont {
        let decoded: Value = b64_decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| {
                ApiError::bad_request("continue key is not valid: illegal base64 data")
            })?;
        let rv = decoded["rv"].as_i64().unwrap_or(-1);
        let start = decoded["start"]
            .as_str()
            .unwrap_or("")
            .trim_end_matches('\u{0}')
            .to_string();
        if rv < 0 {
            (store.list(&gr, None), store.current_rv(), Some(start))
        } else {
            match store.list_at(&gr, rv as u64) {
                Ok(o) => (o, rv as u64, Some(start)),
                Err(_) => {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                        Some(continue_token(-1, &start)),
                    ))
                }
            }
        }
    } else if rv_param == "0" {
        (store.list(&gr, None), store.last_rv(&gr), None)
    } else if exact && !rv_param.is_empty() {
        let rv = parse_rv(rv_param)?;
        match store.list_at(&gr, rv) {
            Ok(o) => (o, rv, None),
            Err(_) => {
                return Err(ApiError::expired(
                    "The resourceVersion for the provided list is too old.",
                    None,
                ))
            }
        }
    } else {
        (store.list(&gr, None), store.current_rv(), None)
    };
    drop(store);
    let mut selected: Vec<Value> = objects
        .into_iter()
        .filter(|o| t.namespace.as_deref().is_none_or(|ns| ns_of(o) == ns))
        .filter(|o| labels.matches(o) && fields.matches(o))
        .filter(|o| start.as_deref().is_none_or(|s| key(o, t).as_str() > s))
        .collect();
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if limit > 0 && selected.len() > limit && rv_param != "0" {
        let rest = selected.split_off(limit);
        let last = selected.last().map(|o| key(o, t)).unwrap_or_default();
        meta["continue"] = continue_token(list_rv as i64, &last).into();
        if labels.is_empty() && fields.is_empty() {
            meta["remainingItemCount"] = rest.len().into();
        }
    } else if r.custom {
        meta["continue"] = "".into();
    }
    let items: Vec<Value> = selected.into_iter().map(|o| item(o, t)).collect();
    Ok(Reply::json(
        200,
        json!({"kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": meta, "items": items}),
    ))
}

fn line(ty: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": ty, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

fn bookmark(t: &Target, rv: u64, initial_end: bool) -> Bytes {
    let mut o = kinds::bookmark_fields(&t.resource.kind);
    o["kind"] = t.resource.kind.clone().into();
    o["apiVersion"] = t.resource.api_version().into();
    o["metadata"] = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        o["metadata"]["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line("BOOKMARK", &o)
}

pub fn watch(state: &Arc<State>, req: &Request, t: &Target) -> Result<Reply, ApiError> {
    let r = &t.resource;
    let gr = r.group_resource();
    let (labels, fields) = selectors(req, &r.kind)?;
    let matches = move |o: &Value| labels.matches(o) && fields.matches(o);
    let bookmarks = req.q("allowWatchBookmarks") == Some("true");
    let send_initial = req.q("sendInitialEvents") == Some("true");
    if send_initial && (req.q("resourceVersionMatch") != Some("NotOlderThan") || !bookmarks) {
        return Err(ApiError::invalid(
            "ListOptions.meta.k8s.io",
            "meta.k8s.io",
            "ListOptions",
            "",
            vec![super::errors::Cause {
                reason: "FieldValueForbidden",
                message: "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks".into(),
                field: "sendInitialEvents".into(),
            }],
        ));
    }
    let timeout = req
        .q("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(state.config.default_watch_timeout);
    let rv_param = req.q("resourceVersion").unwrap_or("").to_string();
    let ns = t.namespace.clone();
    let in_ns = move |e_ns: &str| ns.as_deref().is_none_or(|n| n == e_ns);
    let mut initial: Vec<Bytes> = Vec::new();
    let mut end_after_initial = false;
    let (rx, mut last_rv) = {
        let store = state.store();
        let from_state = rv_param.is_empty() || rv_param == "0" || send_initial;
        if from_state {
            for o in store.list(&gr, None) {
                if in_ns(&ns_of(&o)) && matches(&o) {
                    initial.push(line("ADDED", &served(o, t)));
                }
            }
            let rv = store.current_rv();
            if send_initial {
                initial.push(bookmark(t, rv, true));
            }
            (store.subscribe(), rv)
        } else {
            let asked = parse_rv(&rv_param)?;
            match store.events_since(&gr, asked) {
                Ok(events) => {
                    let seen = events.last().map_or(asked, |e| e.rv);
                    for e in events {
                        if let Some((ty, obj)) =
                            visible(&e.kind, &e.object, e.prev.as_ref(), &matches)
                        {
                            if in_ns(&e.namespace) {
                                initial.push(line(ty, &served(obj.clone(), t)));
                            }
                        }
                    }
                    (store.subscribe(), seen)
                }
                Err(x) => {
                    initial.push(line("ERROR", &ApiError::watch_expired(asked, x.oldest)));
                    end_after_initial = true;
                    (store.subscribe(), asked)
                }
            }
        }
    };
    let (tx, body_rx) = mpsc::channel::<Bytes>(64);
    let state = state.clone();
    let t_kind = Target {
        resource: t.resource.clone(),
        namespace: t.namespace.clone(),
        name: None,
        subresource: None,
    };
    tokio::spawn(async move {
        for b in initial {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        if end_after_initial {
            return;
        }
        let t = t_kind;
        let start = Instant::now();
        let deadline = start + timeout;
        let interval = state.config.bookmark_interval;
        let mut next_bookmark = start + interval;
        let final_bookmark =
            (timeout >= Duration::from_secs(10)).then(|| deadline - Duration::from_millis(1500));
        let mut final_sent = false;
        let mut rx: broadcast::Receiver<Arc<super::store::Event>> = rx;
        loop {
            let mut wake = deadline.min(next_bookmark);
            if let Some(f) = final_bookmark.filter(|_| !final_sent) {
                wake = wake.min(f);
            }
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(e) => {
                        if e.group_resource != gr {
                            continue;
                        }
                        // Bookmarks only ever name a version this watch has
                        // passed, so resuming from one cannot skip an event.
                        last_rv = last_rv.max(e.rv);
                        if !in_ns(&e.namespace) {
                            continue;
                        }
                        if let Some((ty, obj)) = visible(&e.kind, &e.object, e.prev.as_ref(), &matches) {
                            if tx.send(line(ty, &served(obj.clone(), &t))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(line("ERROR", &ApiError::watch_expired(last_rv, last_rv))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return;
                    }
                    let due_final = final_bookmark.is_some_and(|f| now >= f) && !final_sent;
                    if due_final {
                        final_sent = true;
                    }
                    if now >= next_bookmark {
                        next_bookmark = now + interval;
                    }
                    // A bookmark carries the last revision of the resource this
                    // watch has seen; a watch from a version not reached yet
                    // stays silent.
                    let current = state.store().current_rv();
                    if bookmarks && current >= last_rv && tx.send(bookmark(&t, last_rv, false)).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    Ok(Reply {
        code: 200,
        content_type: Some("application/json".into()),
        headers: Vec::new(),
        body: Body::Stream(body_rx),
    })
}

fn served(mut o: Value, t: &Target) -> Value {
    o["apiVersion"] = t.resource.api_version().into();
    o
}

/// How an event looks through a selector: a modification that moves the
/// object into the selection is an ADDED, out of it a DELETED.
fn visible<'a>(
    kind: &EventType,
    object: &'a Value,
    prev: Option<&'a Value>,
    matches: &impl Fn(&Value) -> bool,
) -> Option<(&'static str, &'a Value)> {
    match kind {
        EventType::Added => matches(object).then_some(("ADDED", object)),
        EventType::Deleted => matches(object).then_some(("DELETED", object)),
        EventType::Modified => {
            let was = prev.is_some_and(matches);
            match (was, matches(object)) {
                (true, true) => Some(("MODIFIED", object)),
                (false, true) => Some(("ADDED", object)),
                (true, false) => Some(("DELETED", object)),
                (false, false) => None,
            }
        }
    }
}
