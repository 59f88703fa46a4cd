//! The shape of the code, checked: layers point one way. No import cycle
//! between the top-level modules of a crate, nor between its files; no
//! source file over 600 lines outside tests; and one TLS crypto provider
//! in the whole build (aws-lc-rs: `ring` has no ML-KEM, see the README's
//! post-quantum paragraph).
//!
//! Imports are read from `crate::`, `super::`, `self::` and child-module
//! paths in each file (its `#[cfg(test)] mod tests` left out), and each
//! path is resolved to the deepest module file that exists, so
//! `crate::h1::client::Conn` points at `h1/client/mod.rs` and
//! `super::Asks` at the parent's file. Re-exports (`pub use`) are naming,
//! not dependence, and are not counted: a folder's `mod.rs` may present
//! its children's items while they use the types it defines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: [&str; 3] = ["mesh/src", "proxy/src", "control-plane/src"];
const MAX_LINES: usize = 600;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, as (module path, file).
fn files(dir: &Path) -> Vec<(Vec<String>, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(dir).expect("under src");
                let mut parts: Vec<String> = rel
                    .iter()
                    .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
                    .collect();
                if matches!(
                    parts.last().map(String::as_str),
                    Some("mod" | "lib" | "main")
                ) {
                    parts.pop();
                }
                out.push((parts, p));
            }
        }
    }
    out.sort();
    out
}

/// A file's text without its test module (the part after
/// `#[cfg(test)] mod tests`), its re-exports and its plain comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read");
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    let mut out = Vec::new();
    let mut in_reexport = false;
    for l in text.lines() {
        let t = l.trim_start();
        // Plain comments are prose; doc comments' links are references.
        if t.starts_with("//") && !t.starts_with("///") && !t.starts_with("//!") {
            continue;
        }
        if !in_reexport
            && (t.starts_with("pub use ")
                || t.starts_with("pub(crate) use ")
                || t.starts_with("pub(super) use "))
        {
            in_reexport = true;
        }
        if in_reexport {
            in_reexport = !t.contains(';');
            continue;
        }
        out.push(l);
    }
    out.join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The module paths (as written) that `code` refers to: `crate::a::b`,
/// `super::x`, `self::y`, and `child::z` for each child module named in
/// `children`, with `{a, b::c}` groups expanded. A child path is returned
/// as `self::child::z`.
fn paths(code: &str, children: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let roots: Vec<String> = ["crate", "super", "self"]
        .iter()
        .map(|s| s.to_string())
        .chain(children.iter().cloned())
        .collect();
    for name in &roots {
        let root = format!("{name}::");
        let root = root.as_str();
        let mut from = 0;
        while let Some(i) = code[from..].find(root) {
            let start = from + i;
            from = start + root.len();
            // Only a path's first segment starts it (`super::super::x` is
            // read from its first `super`; `a::crate_x` is no path).
            if code[..start].ends_with(|c: char| is_ident(c) || c == ':') {
                continue;
            }
            let head = root.trim_end_matches("::").to_string();
            let rest = &code[from..];
            let mut prefix = match ["crate", "super", "self"].contains(&head.as_str()) {
                true => vec![head],
                false => vec!["self".to_string(), head],
            };
            let mut r = rest;
            loop {
                let seg: String = r.chars().take_while(|c| is_ident(*c)).collect();
                if seg.is_empty() {
                    break;
                }
                prefix.push(seg.clone());
                r = &r[seg.len()..];
                if let Some(next) = r.strip_prefix("::") {
                    r = next;
                } else {
                    break;
                }
            }
            if let Some(group) = r.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    let mut p = prefix.clone();
                    p.extend(
                        item.split("::")
                            .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
                            .filter(|s| !s.is_empty() && s != "self" && s != "*"),
                    );
                    out.push(p);
                }
            }
            out.push(prefix);
        }
    }
    out
}

/// Resolves a written path, from the file of module `here`, to the deepest
/// existing module.
fn resolve(
    here: &[String],
    path: &[String],
    modules: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    // `self::` is relative to the module itself, `super::` to its parent.
    let mut base: Vec<String> = here.to_vec();
    let mut segs = path.iter().peekable();
    match segs.peek().map(|s| s.as_str()) {
        Some("crate") => {
            base.clear();
            segs.next();
        }
        Some("self") => {
            segs.next();
        }
        Some("super") => {
            while segs.peek().map(|s| s.as_str()) == Some("super") {
                segs.next();
                base.pop()?;
            }
        }
        _ => return None,
    }
    let mut full = base;
    full.extend(segs.cloned());
    while !full.is_empty() {
        if modules.contains(&full) {
            return Some(full);
        }
        full.pop();
    }
    None
}

/// Strongly connected groups of more than one node (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on.insert(v);
        let g = s.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !g.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// (file graph, top-level module graph) of one crate.
fn graphs(
    src: &Path,
) -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, BTreeSet<String>>,
) {
    let all = files(src);
    let modules: BTreeSet<Vec<String>> = all.iter().map(|(m, _)| m.clone()).collect();
    let mut by_file = BTreeMap::new();
    let mut by_top = BTreeMap::new();
    for (module, path) in &all {
        if module.last().is_some_and(|m| m == "tests") {
            continue;
        }
        let name = module.join("::");
        let top = module.first().cloned().unwrap_or_default();
        let edges: &mut BTreeSet<String> = by_file.entry(name.clone()).or_default();
        let tops: &mut BTreeSet<String> = by_top.entry(top.clone()).or_default();
        let children: Vec<String> = modules
            .iter()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .filter_map(|m| m.last().cloned())
            .filter(|c| c != "tests")
            .collect();
        for p in paths(&code(path), &children) {
            let Some(target) = resolve(module, &p, &modules) else {
                continue;
            };
            let t = target.join("::");
            if t != name && !t.is_empty() {
                edges.insert(t);
            }
            if let Some(tt) = target.first() {
                if *tt != top {
                    tops.insert(tt.clone());
                }
            }
        }
        by_top.remove("");
    }
    (by_file, by_top)
}

#[test]
fn no_import_cycles() {
    let mut found = Vec::new();
    for krate in CRATES {
        let (files, tops) = graphs(&repo().join(krate));
        for c in cycles(&tops) {
            found.push(format!("{krate}: modules {}", c.join(" <-> ")));
        }
        for c in cycles(&files) {
            found.push(format!("{krate}: files {}", c.join(" <-> ")));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn no_long_files() {
    let mut long = Vec::new();
    for krate in CRATES {
        for (module, path) in files(&repo().join(krate)) {
            if module.last().is_some_and(|m| m == "tests") {
                continue;
            }
            let lines = std::fs::read_to_string(&path)
                .expect("read")
                .lines()
                .count();
            if lines > MAX_LINES {
                long.push(format!("{} ({lines} lines)", path.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

/// No crate in the build pulls in `ring`: every TLS user (rustls, rcgen,
/// and any client added later) must select the aws-lc-rs provider, or a
/// second provider would be compiled in and could be picked by default.
#[test]
fn one_crypto_provider() {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["tree", "--workspace", "--offline", "--target", "all"])
        .args(["--edges", "normal,build", "--invert", "ring"])
        .current_dir(repo())
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.trim().is_empty(), "ring is in the build:\n{tree}");
}

#[test]
fn the_checker_sees_cycles() {
    let modules: BTreeSet<Vec<String>> = [vec!["a".to_string()], vec!["a".into(), "b".into()]]
        .into_iter()
        .collect();
    let here = vec!["a".to_string(), "b".to_string()];
    assert_eq!(
        resolve(&here, &["super".into(), "Thing".into()], &modules),
        Some(vec!["a".to_string()])
    );
    assert_eq!(
        resolve(
            &[],
            &["crate".into(), "a".into(), "b".into(), "f".into()],
            &modules
        ),
        Some(here.clone())
    );
    assert_eq!(
        resolve(
            &["a".to_string()],
            &["self".into(), "b".into(), "f".into()],
            &modules
        ),
        Some(here.clone())
    );
    let p = paths(
        "use crate::{x::y, z};\nlet v = super::super::w::q(); b::f();",
        &["b".into()],
    );
    assert!(
        p.contains(&vec!["self".into(), "b".into(), "f".into()]),
        "{p:?}"
    );
    assert!(
        p.contains(&vec!["crate".into(), "x".into(), "y".into()]),
        "{p:?}"
    );
    assert!(p.contains(&vec!["crate".into(), "z".into()]), "{p:?}");
    assert!(
        p.contains(&vec![
            "super".into(),
            "super".into(),
            "w".into(),
            "q".into()
        ]),
        "{p:?}"
    );
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycles(&g), vec![vec!["a".to_string(), "b".to_string()]]);
}
