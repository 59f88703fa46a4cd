//! What `check` prints: one line per finding, `✓ <what>` or
//! `✗ <what>: <why> — fix: <what to do>`, as text while the checks run or
//! as one JSON document at the end (`--output json`).

use serde::Serialize;
use std::io::Write;

/// One finding.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct Line {
    /// Which check found it (`api`, `crds`, `deployment`, ...).
    pub(crate) check: &'static str,
    pub(crate) ok: bool,
    pub(crate) what: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) why: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fix: Option<String>,
}

impl Line {
    pub(crate) fn ok(check: &'static str, what: impl Into<String>) -> Line {
        Line {
            check,
            ok: true,
            what: what.into(),
            why: None,
            fix: None,
        }
    }

    pub(crate) fn fail(
        check: &'static str,
        what: impl Into<String>,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Line {
        Line {
            check,
            ok: false,
            what: what.into(),
            why: Some(why.into()),
            fix: Some(fix.into()),
        }
    }

    /// The line as text.
    pub(crate) fn text(&self) -> String {
        match (&self.why, &self.fix) {
            (Some(why), Some(fix)) if !self.ok => format!("✗ {}: {why} — fix: {fix}", self.what),
            _ => format!("{} {}", if self.ok { "✓" } else { "✗" }, self.what),
        }
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
}

/// Collects the lines, printing text ones as they come.
pub(crate) struct Report {
    format: Format,
    lines: Vec<Line>,
}

impl Report {
    pub(crate) fn new(format: Format) -> Report {
        Report {
            format,
            lines: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, lines: Vec<Line>) {
        for line in lines {
            if self.format == Format::Text {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}", line.text());
                let _ = out.flush();
            }
            self.lines.push(line);
        }
    }

    /// Whether every line is a ✓.
    pub(crate) fn passed(&self) -> bool {
        self.lines.iter().all(|l| l.ok)
    }

    /// Prints the JSON document (JSON format) and says whether all passed.
    pub(crate) fn finish(self) -> bool {
        let passed = self.passed();
        if self.format == Format::Json {
            let doc = serde_json::json!({"ok": passed, "checks": self.lines});
            println!("{doc}");
        }
        passed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_documented() {
        assert_eq!(Line::ok("api", "API reachable").text(), "✓ API reachable");
        assert_eq!(
            Line::fail("crds", "CRD x", "not installed", "kubectl apply -f x.yaml").text(),
            "✗ CRD x: not installed — fix: kubectl apply -f x.yaml"
        );
        let json = serde_json::to_value(Line::ok("api", "up")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"check": "api", "ok": true, "what": "up"})
        );
    }
}
