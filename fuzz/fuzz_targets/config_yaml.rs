//! The config loader (`mesh/src/config/` `load_sources`): YAML text to
//! validated resources, or errors that name `file:line:column`. Whatever
//! the text, it answers one or the other without panicking, and every error
//! points into a file it was given, at a line the file has.
//!
//! Input: UTF-8 text; a NUL byte starts another file (up to three).

#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_mesh::config::load_sources;

/// How many lines YAML sees in `text`: LF, CRLF and a CR alone break lines.
fn yaml_lines(text: &str) -> u32 {
    let breaks =
        text.matches('\n').count() + text.matches('\r').count() - text.matches("\r\n").count();
    breaks as u32 + 1
}

/// What a load came to, positions and all, for comparing two loads.
fn outcome(sources: Vec<(String, String)>) -> Result<Vec<String>, Vec<(u32, u32, String)>> {
    match load_sources(sources) {
        Ok(set) => Ok(set
            .backends
            .iter()
            .map(|r| r.key())
            .chain(set.http_routes.iter().map(|r| r.key()))
            .chain(set.grpc_routes.iter().map(|r| r.key()))
            .chain(set.traffic_policies.iter().map(|r| r.key()))
            .chain(set.authorization_policies.iter().map(|r| r.key()))
            .chain(set.mesh_configs.iter().map(|r| r.key()))
            .collect()),
        Err(e) => Err(e
            .0
            .into_iter()
            .map(|e| (e.line, e.column, e.path))
            .collect()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sources: Vec<(String, String)> = text
        .splitn(3, '\0')
        .enumerate()
        .map(|(i, t)| (format!("f{i}.yaml"), t.to_owned()))
        .collect();
    match load_sources(sources.clone()) {
        Ok(set) => {
            assert_eq!(set.sources, sources);
            let count = set.http_routes.len()
                + set.grpc_routes.len()
                + set.backends.len()
                + set.traffic_policies.len()
                + set.authorization_policies.len()
                + set.mesh_configs.len();
            assert!(
                count <= text.matches("kind").count(),
                "resources from nowhere"
            );
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without a reason");
            for e in &errors.0 {
                let (_, file) = sources
                    .iter()
                    .find(|(name, _)| *name == e.file)
                    .unwrap_or_else(|| panic!("an error in no file given: {e}"));
                let lines = yaml_lines(file);
                assert!(e.line <= lines, "{e}: the file has {lines} lines");
                let _ = e.to_string();
            }
        }
    }
    // Lines broken by CR alone, or by CRLF, read as lines broken by LF.
    if !text.contains('\r') && text.contains('\n') {
        let by_lf = outcome(sources.clone());
        for eol in ["\r", "\r\n"] {
            let other = sources
                .iter()
                .map(|(n, t)| (n.clone(), t.replace('\n', eol)))
                .collect();
            assert_eq!(outcome(other), by_lf, "with {eol:?} for line breaks");
        }
    }
});
