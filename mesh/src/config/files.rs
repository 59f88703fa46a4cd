//! Config from files: which files a path stands for, reading and
//! validating them, and noticing when they change.
//!
//! Both binaries read their resources this way (`weft-proxy run --config`,
//! `weft-control-plane serve --config`), so a file accepted by one is
//! accepted by the other and an edit is noticed by both alike.

use super::{load_sources, ConfigError, ConfigErrors, ConfigSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often watched files are checked. Polling (rather than inotify) also
/// sees Kubernetes ConfigMap updates, which swap a symlink, and edits
/// through editors that replace the file.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The YAML files a path stands for: the file itself, or the `*.yaml`/`*.yml`
/// files of a folder (not recursive; hidden entries such as Kubernetes'
/// `..data` links are skipped), sorted so loading is deterministic.
pub(crate) fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigErrors> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| io_error(p, &e))?;
        if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| io_error(p, &e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    !name.starts_with('.')
                        && (name.ends_with(".yaml") || name.ends_with(".yml"))
                        && f.is_file()
                })
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn io_error(p: &Path, e: &std::io::Error) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: p.display().to_string(),
        line: 0,
        column: 0,
        path: String::new(),
        message: format!("cannot read: {e}"),
    }])
}

/// Reads, parses and validates every resource under `paths`.
pub fn load_paths(paths: &[PathBuf]) -> Result<ConfigSet, ConfigErrors> {
    let files = expand_paths(paths)?;
    let mut sources = Vec::with_capacity(files.len());
    for f in &files {
        let text = std::fs::read_to_string(f).map_err(|e| io_error(f, &e))?;
        sources.push((f.display().to_string(), text));
    }
    load_sources(sources)
}

/// What files look like: names, inodes, sizes and times (the inode changes
/// when an editor or a ConfigMap swaps the file in).
type Fingerprint = Vec<(PathBuf, u64, u64, Option<SystemTime>)>;

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let files = expand_paths(paths).unwrap_or_default();
    files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
            let ino = meta.as_ref().map(|m| m.ino()).unwrap_or(0);
            let modified = meta.and_then(|m| m.modified().ok());
            (f, ino, len, modified)
        })
        .collect()
}

fn read_all(paths: &[PathBuf]) -> Vec<String> {
    expand_paths(paths)
        .unwrap_or_default()
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect()
}

/// Watches config files for edits that change their text.
///
/// Take it *before* the first load, so an edit landing between that load
/// and the first wait is still noticed (at worst the same content is
/// applied twice).
pub struct FileWatch {
    paths: Vec<PathBuf>,
    files: Fingerprint,
    text: Vec<String>,
}

impl FileWatch {
    /// Starts watching `paths` from what they hold now.
    pub fn new(paths: &[PathBuf]) -> FileWatch {
        FileWatch {
            paths: paths.to_vec(),
            files: fingerprint(paths),
            text: read_all(paths),
        }
    }

    /// The paths watched.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Waits until the files hold other text than when last seen (names,
    /// inodes, sizes and times are checked first; then the text, since
    /// times change alone on `touch` or a ConfigMap resync).
    pub async fn changed(&mut self) {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = fingerprint(&self.paths);
            if now == self.files {
                continue;
            }
            self.files = now;
            let text = read_all(&self.paths);
            if text != self.text {
                self.text = text;
                return;
            }
        }
    }

    /// Takes what the files hold now as seen (after a debounce, so edits
    /// made during it do not count as another change).
    pub fn rebase(&mut self) {
        self.files = fingerprint(&self.paths);
        self.text = read_all(&self.paths);
    }
}
