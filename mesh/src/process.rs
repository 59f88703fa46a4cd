//! Process plumbing both binaries share: logging with a level that can be
//! changed at run time, the signals that stop them, and a poison-tolerant
//! lock.

use std::sync::Arc;

/// Changes the log filter at run time (the admin `/log-level` endpoint);
/// returns the filter now in force, or why `wanted` is not one.
pub type LogLevelSetter = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;

/// Sets up logging to stderr, `text` or `json`, filtered by `level`
/// (tracing's syntax: `info`, `debug`, `weft_proxy=debug,...`).
pub fn init_logging(format: &str, level: &str) -> LogLevelSetter {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{reload, EnvFilter};
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    if format == "json" {
        registry.with(fmt.json().flatten_event(true)).init();
    } else {
        use std::io::IsTerminal;
        registry
            .with(
                fmt.with_target(false)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .init();
    }
    Arc::new(move |wanted: &str| {
        let f =
            EnvFilter::try_new(wanted).map_err(|e| format!("invalid log level {wanted:?}: {e}"))?;
        handle.reload(f).map_err(|e| e.to_string())?;
        Ok(wanted.to_owned())
    })
}

/// Resolves on SIGTERM or Ctrl-C (both binaries stop on these).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Locks a mutex, carrying on if a panicking holder poisoned it: the state
/// behind these locks (operator-facing status and bookkeeping in both
/// binaries) stays valid whatever a holder was doing.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
