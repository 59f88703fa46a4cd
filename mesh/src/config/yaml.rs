//! The one module that knows which YAML library is in use (serde-saphyr).
//!
//! Everything else sees two things: documents split out of a stream with their
//! starting line, and a [`Located`] tree that maps field paths such as
//! `spec.rules[1].backendRefs[0].weight` to a line and column, so that every
//! error a user sees points at the place to fix.

use serde::de::{DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;
use std::fmt;

/// A position in a file, 1-based like editors show it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

/// A YAML error reduced to what we show: where and what.
#[derive(Debug, Clone)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// A node of a document with the position of its value, kept so validation
/// errors found after parsing can still name a line and column.
#[derive(Debug, Clone)]
pub enum Located {
    /// key, key position, value position, value
    Map(Vec<(String, Pos, Pos, Located)>),
    Seq(Vec<(Pos, Located)>),
    Scalar(String),
    Null,
}

/// One document of a multi-document stream.
#[derive(Debug, Clone)]
pub struct Document {
    /// The document's own text (without the `---` separators).
    pub text: String,
    /// Line of the file on which `text` starts, minus one (added to error lines).
    pub line_offset: u32,
    /// Position of the document's root node.
    pub pos: Pos,
    pub tree: Located,
}

struct SpannedNode(Located);

impl<'de> Deserialize<'de> for SpannedNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor).map(SpannedNode)
    }
}

struct NodeVisitor;

fn pos_of<T>(s: &Spanned<T>) -> Pos {
    Pos {
        line: s.referenced.line() as u32,
        column: s.referenced.column() as u32,
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Located;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Located, E> {
        Ok(Located::Scalar(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Located, E> {
        Ok(Located::Scalar(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Located, E> {
        Ok(Located::Scalar(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Located, E> {
        Ok(Located::Scalar(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Located, E> {
        Ok(Located::Scalar(v.to_string()))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Located, E> {
        Ok(Located::Scalar(v.to_string()))
    }
    fn visit_unit<E>(self) -> Result<Located, E> {
        Ok(Located::Null)
    }
    fn visit_none<E>(self) -> Result<Located, E> {
        Ok(Located::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Located, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = a.next_element::<Spanned<SpannedNode>>()? {
            items.push((pos_of(&item), item.value.0));
        }
        Ok(Located::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Located, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = a.next_entry::<Spanned<String>, Spanned<SpannedNode>>()? {
            entries.push((k.value.clone(), pos_of(&k), pos_of(&v), v.value.0));
        }
        Ok(Located::Map(entries))
    }
}

fn error_from(e: &serde_saphyr::Error, line_offset: u32) -> YamlError {
    let pos = e
        .location()
        .map(|l| Pos {
            line: l.line() as u32 + line_offset,
            column: l.column() as u32,
        })
        .unwrap_or_default();
    // The library's Display adds a source snippet; the first line is the message.
    let full = e.to_string();
    let first = full.lines().next().unwrap_or("invalid YAML");
    let message = match first.split_once(": ") {
        Some((head, rest)) if head.starts_with("error") || head.contains("line ") => {
            // "error: line 5 column 15: invalid u32" -> "invalid u32"
            rest.rsplit_once(": ").map(|(_, m)| m).unwrap_or(rest)
        }
        _ => first,
    };
    YamlError {
        pos,
        message: message.trim().to_owned(),
    }
}

/// Parser limits: the library's defaults guard against hostile input but
/// stop at 1,024 documents, and a mesh's resources in one file (two
/// documents a service) pass that. These still bound memory and time.
fn options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 200_000,
            max_nodes: 10_000_000,
            max_events: 40_000_000,
        },
    }
}

/// Splits a stream into documents, keeping each document's text and start line.
/// Empty documents (only comments or `---`) are dropped.
pub fn documents(input: &str) -> Result<Vec<Document>, YamlError> {
    let roots: Vec<Spanned<SpannedNode>> =
        serde_saphyr::from_multiple_with_options(input, options())
            .map_err(|e| error_from(&e, 0))?;
    // Byte offsets of each line start, to cut the text of each document.
    let line_starts = line_starts(input);
    let starts: Vec<Pos> = roots.iter().map(pos_of).collect();
    let mut docs = Vec::new();
    for (i, root) in roots.into_iter().enumerate() {
        let pos = starts[i];
        let start_line = pos.line.max(1) as usize;
        let end_line = starts
            .get(i + 1)
            .map(|p| p.line.max(1) as usize)
            .unwrap_or(line_starts.len() + 1);
        let from = line_starts
            .get(start_line - 1)
            .copied()
            .unwrap_or(input.len());
        let to = line_starts
            .get(end_line - 1)
            .copied()
            .unwrap_or(input.len())
            .max(from);
        let mut text = &input[from..to];
        // Drop the separator lines that belong to the next document.
        if let Some(cut) = last_marker(text) {
            text = &text[..cut];
        }
        if matches!(root.value.0, Located::Null) {
            continue;
        }
        docs.push(Document {
            text: text.to_owned(),
            line_offset: start_line as u32 - 1,
            pos,
            tree: root.value.0,
        });
    }
    Ok(docs)
}

/// Byte offsets at which the lines of `input` start, with line breaks
/// counted as YAML counts them (and so the positions the parser gives): LF,
/// CRLF, or a CR alone.
fn line_starts(input: &str) -> Vec<usize> {
    let b = input.as_bytes();
    std::iter::once(0)
        .chain(
            b.iter()
                .enumerate()
                .filter(|&(i, &c)| c == b'\n' || (c == b'\r' && b.get(i + 1) != Some(&b'\n')))
                .map(|(i, _)| i + 1),
        )
        .collect()
}

/// Byte index where the trailing separator of this document begins: a
/// `---` / `...` line, with the blank and column-0 comment lines around it
/// (they belong to the next document's preamble, or to nothing).
fn last_marker(text: &str) -> Option<usize> {
    let mut end = text.len();
    let mut cut = None;
    loop {
        let body = &text[..end];
        let trimmed = body.trim_end_matches(['\n', '\r']);
        if trimmed.is_empty() {
            return cut;
        }
        let line_start = trimmed.rfind(['\n', '\r']).map(|i| i + 1).unwrap_or(0);
        let line = &trimmed[line_start..];
        let is_marker = line.starts_with("---") || line.starts_with("...");
        let is_filler = line.trim().is_empty() || line.starts_with('#');
        if !(is_marker || is_filler) {
            return cut;
        }
        if is_marker {
            cut = Some(line_start);
        }
        end = line_start;
    }
}

/// Deserializes one document into `T`, reporting positions in the file's lines.
pub fn parse<T: DeserializeOwned>(doc: &Document) -> Result<T, YamlError> {
    serde_saphyr::from_str(&doc.text).map_err(|e| error_from(&e, doc.line_offset))
}

impl Located {
    /// The string at a top-level key path such as `["metadata", "name"]`.
    pub fn str_at(&self, keys: &[&str]) -> Option<&str> {
        let mut node = self;
        for k in keys {
            node = match node {
                Located::Map(entries) => entries.iter().find(|(key, ..)| key == k).map(|e| &e.3)?,
                _ => return None,
            };
        }
        match node {
            Located::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// Position of the value at a field path (`spec.rules[1].weight`); the
    /// deepest existing prefix if the path runs past what is written.
    pub(crate) fn pos_of_path(&self, root: Pos, path: &str) -> Pos {
        let mut node = self;
        let mut pos = root;
        for seg in path_segments(path) {
            let next = match (node, seg) {
                (Located::Map(entries), Seg::Key(k)) => entries
                    .iter()
                    .find(|(key, ..)| key == k)
                    .map(|(_, _, p, n)| (*p, n)),
                (Located::Seq(items), Seg::Index(i)) => items.get(i).map(|(p, n)| (*p, n)),
                _ => None,
            };
            match next {
                Some((p, n)) => {
                    pos = p;
                    node = n;
                }
                None => break,
            }
        }
        pos
    }

    /// The field path of the node written at `at` (or the nearest one before it
    /// on the same line, which is the key an "unknown field" error points at).
    pub(crate) fn path_at(&self, at: Pos) -> String {
        let mut all = Vec::new();
        collect_paths(self, "", &mut all);
        // 1. a key written exactly there (unknown-field errors point at keys);
        // 2. a value written exactly there, the deepest; 3. the last one before.
        if let Some((_, p, _)) = all.iter().find(|(p, _, is_key)| *is_key && *p == at) {
            return p.clone();
        }
        if let Some((_, p, _)) = all.iter().rev().find(|(p, _, is_key)| !*is_key && *p == at) {
            return p.clone();
        }
        all.iter()
            .filter(|(p, _, _)| *p <= at)
            .max_by_key(|(p, _, _)| *p)
            .map(|(_, path, _)| path.clone())
            .unwrap_or_default()
    }
}

fn collect_paths(node: &Located, prefix: &str, out: &mut Vec<(Pos, String, bool)>) {
    match node {
        Located::Map(entries) => {
            for (k, kp, p, n) in entries {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.push((*kp, path.clone(), true));
                out.push((*p, path.clone(), false));
                collect_paths(n, &path, out);
            }
        }
        Located::Seq(items) => {
            for (i, (p, n)) in items.iter().enumerate() {
                let path = format!("{prefix}[{i}]");
                out.push((*p, path.clone(), false));
                collect_paths(n, &path, out);
            }
        }
        _ => {}
    }
}

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn path_segments(path: &str) -> impl Iterator<Item = Seg<'_>> {
    path.split('.').filter(|s| !s.is_empty()).flat_map(|part| {
        let mut segs = Vec::new();
        let (key, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            segs.push(Seg::Key(key));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                segs.push(Seg::Index(i));
            }
        }
        segs
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = "# leading comment\nkind: A\nspec:\n  rules:\n    - weight: 1\n    - weight: 2\n# trailing\n---\n# next\n\nkind: B\nspec:\n  x: 1\n---\n";

    #[test]
    fn splits_documents_with_offsets() {
        let docs = documents(TWO).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].tree.str_at(&["kind"]), Some("A"));
        assert_eq!(docs[1].line_offset, 10);
        assert!(docs[1].text.starts_with("kind: B"));
        assert!(!docs[0].text.contains("---"));
    }

    #[test]
    fn positions_of_paths() {
        let docs = documents(TWO).unwrap();
        let d = &docs[0];
        let p = d.tree.pos_of_path(d.pos, "spec.rules[1].weight");
        assert_eq!((p.line, p.column), (6, 15));
        assert_eq!(
            d.tree.path_at(Pos {
                line: 6,
                column: 15
            }),
            "spec.rules[1].weight"
        );
        // a key position (unknown field) maps to that key
        assert_eq!(
            d.tree.path_at(Pos { line: 6, column: 7 }),
            "spec.rules[1].weight"
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let e = documents("a: 1\nb: [\n").unwrap_err();
        assert!(e.pos.line >= 2, "{e:?}");
    }

    /// Found by fuzzing (`fuzz/fuzz_targets/config_yaml.rs`): YAML takes a
    /// CR alone as a line break, and the documents were cut from the text
    /// by LF alone, so a file written with CR line breaks had its documents
    /// cut in the wrong places (read as one, or as nothing) and its errors
    /// pointed past its end.
    #[test]
    fn a_cr_alone_breaks_lines_as_yaml_says() {
        let lf = "# first\nkind: A\nspec:\n  x: 1\n---\nkind: B\nbogus: 1\n";
        for text in [
            lf.to_owned(),
            lf.replace('\n', "\r"),
            lf.replace('\n', "\r\n"),
        ] {
            let docs = documents(&text).unwrap();
            assert_eq!(docs.len(), 2, "{text:?}");
            assert_eq!(docs[1].line_offset, 5, "{text:?}");
            assert!(docs[0].text.starts_with("kind: A"), "{text:?}");
            assert!(!docs[0].text.contains("---"), "{text:?}");
            assert!(docs[1].text.starts_with("kind: B"), "{text:?}");
            let e = parse::<Strict>(&docs[1]).unwrap_err();
            assert_eq!((e.pos.line, e.pos.column), (7, 1), "{text:?}: {e:?}");
            assert!(parse::<Strict>(&docs[0]).is_ok(), "{text:?}");
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Strict {
        kind: String,
        spec: Option<serde_json::Value>,
    }

    #[test]
    fn typed_error_lines_are_file_lines() {
        let input = "kind: A\n---\nkind: B\nbogus: 1\n";
        let docs = documents(input).unwrap();
        let e = parse::<Strict>(&docs[1]).unwrap_err();
        assert_eq!(e.pos.line, 4, "{e:?}");
        assert!(e.message.contains("unknown field"), "{e:?}");
    }
}
