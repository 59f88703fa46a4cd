//! File mode: the config files (`--config`), watched; every edit that
//! changes their text goes through the pipeline like any other change.

use crate::pipeline::Pipeline;
use std::path::PathBuf;
use std::sync::Arc;
use weft_mesh::config::files::FileWatch;

/// How `/config` and the log name config from these files.
pub(crate) fn source(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    format!("file: {}", names.join(", "))
}

/// Applies each edit, for the life of the process. `files` was taken
/// before the first load, so an edit landing in between is not missed.
pub(crate) async fn run(pipeline: Arc<Pipeline>, mut files: FileWatch) {
    let source = source(files.paths());
    loop {
        files.changed().await;
        let loaded = weft_mesh::config::load_paths(files.paths());
        let _ = pipeline.apply(&source, loaded);
    }
}
