//! Problems found in an agent description, each pointing at its source.

use std::fmt;
use std::path::PathBuf;

/// Where a value came from in an agent.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: Option<PathBuf>,
    /// 1-based.
    pub line: usize,
    /// 1-based.
    pub column: usize,
}

/// One problem: `agent.yaml:12:7: spec.ports[1].container: 70000 is not a port (1-65535)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub location: Option<Location>,
    /// Field path (`spec.ports[1].container`) or flag (`--publish`).
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            location: None,
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn at(mut self, location: Option<Location>) -> Self {
        self.location = location;
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            if let Some(file) = &loc.file {
                write!(f, "{}:", file.display())?;
            }
            write!(f, "{}:{}: ", loc.line, loc.column)?;
        }
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found, in source order; never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Source order; problems without a position last.
pub fn sort(diags: &mut [Diagnostic]) {
    diags.sort_by_key(|d| match &d.location {
        Some(l) => (0, l.line, l.column),
        None => (1, 0, 0),
    });
}
