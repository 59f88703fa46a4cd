//! The resources in force: what the source (files today) loaded and the
//! proxy's own loader validated, the version derived from their text, and
//! the catalog each proxy's scoped snapshot is cut from.

use crate::scope::Catalog;
use std::path::PathBuf;

/// The resources in force: the files, validated with the proxy's own
/// loader, the version derived from their text, and the catalog each
/// proxy's scoped snapshot is cut from.
pub(crate) struct Resources {
    pub(crate) version: String,
    pub(crate) files: Vec<String>,
    pub(crate) catalog: Catalog,
}

/// Loads and validates the files. The version is a hash of their text (the
/// first 16 hex digits of SHA-256), in path order.
pub(crate) fn load(paths: &[PathBuf]) -> Result<Resources, String> {
    let set = weft_mesh::config::load_paths(paths).map_err(|e| e.to_string())?;
    let mut all = String::new();
    let mut files = Vec::new();
    for (name, text) in &set.sources {
        files.push(name.clone());
        all.push_str(text);
        all.push('\0');
    }
    Ok(Resources {
        version: crate::scope::version_of(&all),
        files,
        catalog: Catalog::new(set),
    })
}
