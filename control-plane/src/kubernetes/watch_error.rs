//! Watch errors in words an operator can act on, shared by every watcher
//! of the Kubernetes source.

use kube::runtime::watcher;

/// The API status code of a watch error, if it has one.
pub(crate) fn code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::WatchError(s) => Some(s.code),
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    }
}

/// A watch error in words an operator can act on.
pub(crate) fn describe(what: &str, e: &watcher::Error) -> String {
    match code(e) {
        Some(410) => format!("watch of {what} expired (410 Gone); relisting"),
        Some(403) => format!(
            "forbidden to list/watch {what}: grant the control plane's ServiceAccount list and watch on it ({e})"
        ),
        Some(401) => format!("the API server refused our credentials reading {what} ({e})"),
        _ => format!("reading {what}: {e}; retrying"),
    }
}
