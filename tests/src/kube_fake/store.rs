//! The fake's storage: every object as raw JSON, keyed by group/resource,
//! namespace and name, with one resourceVersion counter shared by all kinds
//! (the apiserver's are etcd revisions, one sequence for everything).
//!
//! Each write is also an event in a per-resource history, which plays the
//! apiserver's watch cache: a WATCH from a resourceVersion replays the events
//! after it, and a LIST at an exact resourceVersion undoes them. The history
//! keeps the last `history_limit` events of each resource; once an event
//! newer than a client's resourceVersion has been dropped, that version has
//! expired (410), which is how the recorded server behaved once 152 writes
//! pushed its window past the version.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One write, as the history and the watchers see it.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub group_resource: String,
    pub namespace: String,
    pub kind: EventType,
    /// The object after the write; for a delete, its last state carrying the
    /// deletion's resourceVersion.
    pub object: Value,
    /// The object before the write (None for a create).
    pub prev: Option<Value>,
}

/// A resourceVersion that the history no longer covers: `oldest` is the
/// newest version that was dropped.
#[derive(Debug, Clone, Copy)]
pub struct Expired {
    pub oldest: u64,
}

type Key = (String, String, String);

pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    history: HashMap<String, VecDeque<Arc<Event>>>,
    dropped_up_to: HashMap<String, u64>,
    last_rv: HashMap<String, u64>,
    history_limit: usize,
    tx: broadcast::Sender<Arc<Event>>,
}

/// Events a slow watcher may fall behind before it is ended with a 410.
const WATCH_BUFFER: usize = 8192;

fn key(gr: &str, ns: &str, name: &str) -> Key {
    (gr.to_string(), ns.to_string(), name.to_string())
}

impl Store {
    pub fn new(first_rv: u64, history_limit: usize) -> Store {
        Store {
            rv: first_rv,
            objects: BTreeMap::new(),
            history: HashMap::new(),
            dropped_up_to: HashMap::new(),
            last_rv: HashMap::new(),
            history_limit: history_limit.max(1),
            tx: broadcast::channel(WATCH_BUFFER).0,
        }
    }

    /// The newest resourceVersion handed out.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// The resourceVersion of the last write to one resource (what the
    /// apiserver's cache answers a `resourceVersion=0` LIST with).
    pub fn last_rv(&self, gr: &str) -> u64 {
        self.last_rv.get(gr).copied().unwrap_or(self.rv)
    }

    pub fn get(&self, gr: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&key(gr, ns, name))
    }

    /// Current objects of one resource, in key order (namespace, then name),
    /// optionally in one namespace.
    pub fn list(&self, gr: &str, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .range(key(gr, "", "")..)
            .take_while(|((g, _, _), _)| g == gr)
            .filter(|((_, n, _), _)| ns.is_none_or(|ns| n == ns))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Stores `obj` (created or replaced), stamping the next
    /// resourceVersion; records and broadcasts the event.
    pub fn write(&mut self, gr: &str, ns: &str, name: &str, obj: Value) -> Value {
        let prev = self.objects.get(&key(gr, ns, name)).cloned();
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.commit(gr, ns, name, obj, kind, prev)
    }

    /// Removes an object; `last` is its final state (the DELETED event's
    /// object), which gets the deletion's resourceVersion.
    pub fn remove(&mut self, gr: &str, ns: &str, name: &str, last: Value) -> Value {
        let prev = self.objects.get(&key(gr, ns, name)).cloned();
        self.commit(gr, ns, name, last, EventType::Deleted, prev)
    }

    fn commit(
        &mut self,
        gr: &str,
        ns: &str,
        name: &str,
        mut object: Value,
        kind: EventType,
        prev: Option<Value>,
    ) -> Value {
        self.rv += 1;
        let rv = self.rv;
        let k = key(gr, ns, name);
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        if kind == EventType::Deleted {
            self.objects.remove(&k);
        } else {
            self.objects.insert(k, object.clone());
        }
        let event = Arc::new(Event {
            rv,
            group_resource: gr.to_string(),
            namespace: ns.to_string(),
            kind,
            object: object.clone(),
            prev,
        });
        let h = self.history.entry(gr.to_string()).or_default();
        h.push_back(event.clone());
        while h.len() > self.history_limit {
            if let Some(old) = h.pop_front() {
                self.dropped_up_to.insert(gr.to_string(), old.rv);
            }
        }
        self.last_rv.insert(gr.to_string(), rv);
        let _ = self.tx.send(event);
        object
    }

    fn check(&self, gr: &str, rv: u64) -> Result<(), Expired> {
        match self.dropped_up_to.get(gr) {
            Some(&d) if d > rv => Err(Expired { oldest: d }),
            _ => Ok(()),
        }
    }

    /// The events of one resource after `rv`, oldest first.
    pub fn events_since(&self, gr: &str, rv: u64) -> Result<Vec<Arc<Event>>, Expired> {
        self.check(gr, rv)?;
        Ok(self
            .history
            .get(gr)
            .into_iter()
            .flatten()
            .filter(|e| e.rv > rv)
            .cloned()
            .collect())
    }

    /// One resource's objects as they were at `rv`, in key order.
    pub fn list_at(&self, gr: &str, rv: u64) -> Result<Vec<Value>, Expired> {
        let later = self.events_since(gr, rv)?;
        let mut state: BTreeMap<(String, String), Value> = self
            .list(gr, None)
            .into_iter()
            .map(|o| ((ns_of(&o), name_of(&o)), o))
            .collect();
        for e in later.iter().rev() {
            let k = (e.namespace.clone(), name_of(&e.object));
            match &e.prev {
                Some(p) => state.insert(k, p.clone()),
                None => state.remove(&k),
            };
        }
        Ok(state.into_values().collect())
    }

    /// A receiver of every later event; take it under the same lock as the
    /// history read so no event falls between them.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Drops every resource's history: any resourceVersion older than now
    /// has expired (a test's way to force a 410 without 100 writes).
    pub fn expire_history(&mut self) {
        for (gr, h) in self.history.iter_mut() {
            if let Some(last) = h.back() {
                self.dropped_up_to.insert(gr.clone(), last.rv);
            }
            h.clear();
        }
    }
}

pub fn name_of(o: &Value) -> String {
    o["metadata"]["name"].as_str().unwrap_or("").to_string()
}

pub fn ns_of(o: &Value) -> String {
    o["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string()
}
