//! Source positions of every key and value in an agent.yaml, by field path.
//!
//! `serde_yaml::Value` forgets where things were, so the same text is run through
//! `yaml-rust2`'s marked event parser, which reports a line and column for each scalar and each
//! mapping/sequence start. Paths use the same spelling as diagnostics: `metadata.name`,
//! `spec.ports[1].container`; the document root is the empty path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use crate::diagnostics::Location;

/// A line and a column, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// The mapping key naming this value (absent for sequence items and the root).
    key: Option<LineCol>,
    value: LineCol,
}

/// Field path -> where its key and its value are in the source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions {
    file: Option<PathBuf>,
    entries: HashMap<String, Entry>,
    /// Model path -> source path, for values that the model keeps somewhere else than the file
    /// wrote them (`spec.network.ports[0]` lands in `spec.ports`).
    aliases: HashMap<String, String>,
}

impl Positions {
    /// Index `src` (its first document). Text that yaml-rust2 cannot parse yields the
    /// positions read before the problem (serde_yaml reports the syntax error itself).
    pub fn from_str(src: &str, file: Option<&Path>) -> Positions {
        Self::load(src, file, false)
            .into_iter()
            .next()
            .unwrap_or_else(|| Positions {
                file: file.map(Path::to_path_buf),
                ..Positions::default()
            })
    }

    /// Index every document of a multi-document text (`---` apart), one [`Positions`] each.
    pub fn documents(src: &str, file: Option<&Path>) -> Vec<Positions> {
        Self::load(src, file, true)
    }

    fn load(src: &str, file: Option<&Path>, multi: bool) -> Vec<Positions> {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(src);
        if let Err(e) = parser.load(&mut builder, multi) {
            tracing::debug!("position index incomplete: {e}");
        }
        builder
            .docs
            .into_iter()
            .map(|entries| Positions {
                file: file.map(Path::to_path_buf),
                entries,
                aliases: HashMap::new(),
            })
            .collect()
    }

    /// The file these positions point into.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Record that the model's `model_path` was written at `source_path` in the file.
    pub fn add_alias(&mut self, model_path: impl Into<String>, source_path: impl Into<String>) {
        self.aliases.insert(model_path.into(), source_path.into());
    }

    /// The path to show for a model path: where the file wrote it.
    pub fn source_path(&self, path: &str) -> String {
        // the longest aliased prefix wins: `spec.ports[3].host` -> `spec.network.ports[0].host`
        let mut best: Option<(&str, &str)> = None;
        for (model, source) in &self.aliases {
            let longer = match best {
                Some((m, _)) => m.len() < model.len(),
                None => true,
            };
            if longer && is_prefix_path(model, path) {
                best = Some((model, source));
            }
        }
        match best {
            Some((model, source)) => format!("{source}{}", &path[model.len()..]),
            None => path.to_string(),
        }
    }

    /// Where the value at `path` is; when the path is not in the file (a missing field), the
    /// key of its nearest ancestor that is.
    pub fn value(&self, path: &str) -> Option<Location> {
        let path = self.source_path(path);
        if let Some(e) = self.entries.get(&path) {
            return Some(self.loc(e.value));
        }
        self.ancestor(&path)
    }

    /// Where the key naming `path` is (its value for sequence items); falls back like
    /// [`Positions::value`].
    pub fn key(&self, path: &str) -> Option<Location> {
        let path = self.source_path(path);
        if let Some(e) = self.entries.get(&path) {
            return Some(self.loc(e.key.unwrap_or(e.value)));
        }
        self.ancestor(&path)
    }

    /// Exact position of a value, without falling back to ancestors.
    pub fn value_exact(&self, path: &str) -> Option<LineCol> {
        self.entries.get(&self.source_path(path)).map(|e| e.value)
    }

    fn ancestor(&self, path: &str) -> Option<Location> {
        let mut p = parent(path);
        while let Some(cur) = p {
            if let Some(e) = self.entries.get(cur) {
                return Some(self.loc(e.key.unwrap_or(e.value)));
            }
            p = parent(cur);
        }
        None
    }

    fn loc(&self, lc: LineCol) -> Location {
        Location {
            file: self.file.clone(),
            line: lc.line,
            column: lc.column,
        }
    }
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> `` -> None.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    match path.rfind(['.', '[']) {
        Some(i) => Some(&path[..i]),
        None => Some(""),
    }
}

/// Is `prefix` the same path as `path` or one of its ancestors?
pub(crate) fn is_prefix_path(prefix: &str, path: &str) -> bool {
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('.') || rest.starts_with('['),
        None => false,
    }
}

/// `base` + key -> `base.key`; the root's children have no leading dot.
pub fn join_key(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

/// `base` + index -> `base[i]`.
pub fn join_index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

enum Frame {
    Mapping {
        path: String,
        /// Set between a key and its value.
        key: Option<(String, LineCol)>,
        /// No key seen yet: a block mapping's start mark is at its first `:`, so the first
        /// key moves the mapping's position back to where it begins.
        first: bool,
    },
    Sequence {
        path: String,
        next: usize,
    },
    /// A mapping or sequence used as a mapping key: its contents are not indexed.
    Skip,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// One index per document.
    docs: Vec<HashMap<String, Entry>>,
    /// Depth inside a complex key.
    skip_depth: usize,
}

impl Builder {
    /// A node starts at `mark`: work out its path (None when it is a key or not indexed).
    fn node(&mut self, at: LineCol, key_text: Option<&str>) -> Option<String> {
        // The current document's index (a text without a document start still has one).
        if self.docs.is_empty() {
            self.docs.push(HashMap::new());
        }
        let entries = self.docs.last_mut()?;
        match self.stack.last_mut() {
            None => {
                entries.entry(String::new()).or_insert(Entry {
                    key: None,
                    value: at,
                });
                Some(String::new())
            }
            Some(Frame::Skip) => None,
            Some(Frame::Sequence { path, next }) => {
                let p = join_index(path, *next);
                *next += 1;
                entries.insert(
                    p.clone(),
                    Entry {
                        key: None,
                        value: at,
                    },
                );
                Some(p)
            }
            Some(Frame::Mapping { path, key, first }) => match key.take() {
                None => {
                    // this node is a key
                    *key = Some((key_text.unwrap_or("?").to_string(), at));
                    if std::mem::take(first) {
                        if let Some(e) = entries.get_mut(path.as_str()) {
                            if (at.line, at.column) < (e.value.line, e.value.column) {
                                e.value = at;
                            }
                        }
                    }
                    None
                }
                Some((k, key_at)) => {
                    let p = join_key(path, &k);
                    // the first occurrence of a duplicated key keeps its place
                    entries.entry(p.clone()).or_insert(Entry {
                        key: Some(key_at),
                        value: at,
                    });
                    Some(p)
                }
            },
        }
    }

    fn is_key_position(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Mapping { key: None, .. }))
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let at = LineCol {
            line: mark.line(),
            column: mark.col() + 1,
        };
        if self.skip_depth > 0 {
            match ev {
                Event::MappingStart(..) | Event::SequenceStart(..) => self.skip_depth += 1,
                Event::MappingEnd | Event::SequenceEnd => {
                    self.skip_depth -= 1;
                    if self.skip_depth == 0 {
                        self.stack.pop();
                    }
                }
                _ => {}
            }
            return;
        }
        match ev {
            Event::Scalar(text, ..) => {
                self.node(at, Some(&text));
            }
            Event::Alias(_) => {
                self.node(at, Some("*"));
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                if self.is_key_position() {
                    // complex key: remember a placeholder key and skip its contents
                    self.node(at, Some("?"));
                    self.stack.push(Frame::Skip);
                    self.skip_depth = 1;
                    return;
                }
                let path = self.node(at, None);
                self.stack.push(match path {
                    None => Frame::Skip,
                    Some(path) if is_map => Frame::Mapping {
                        path,
                        key: None,
                        first: true,
                    },
                    Some(path) => Frame::Sequence { path, next: 0 },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::DocumentStart => {
                self.docs.push(HashMap::new());
                self.stack.clear();
            }
            Event::DocumentEnd => self.stack.clear(),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "\
apiVersion: agent.dev/v1
metadata:
  name: demo
spec:
  ports:
    - container: 8080
    - {container: 9090, host: 1}
  command: [a, \"b\"]
";

    fn lc(p: &Positions, path: &str) -> (usize, usize) {
        let l = p.value(path).unwrap();
        (l.line, l.column)
    }

    #[test]
    fn values_and_keys() {
        let p = Positions::from_str(SRC, None);
        assert_eq!(lc(&p, "apiVersion"), (1, 13));
        assert_eq!(lc(&p, "metadata.name"), (3, 9));
        let k = p.key("metadata.name").unwrap();
        assert_eq!((k.line, k.column), (3, 3));
        assert_eq!(lc(&p, "spec.ports[0].container"), (6, 18));
        assert_eq!(lc(&p, "spec.ports[1].host"), (7, 31));
        assert_eq!(lc(&p, "spec.command[1]"), (8, 16));
        // missing: falls back to the nearest ancestor's key
        assert_eq!(lc(&p, "spec.ports[1].protocol"), (7, 7));
        assert_eq!(lc(&p, "metadata.version"), (2, 1));
    }

    #[test]
    fn aliases_rewrite_paths() {
        let mut p = Positions::from_str(SRC, None);
        p.add_alias("spec.ports[5]", "spec.ports[1]");
        assert_eq!(p.source_path("spec.ports[5].host"), "spec.ports[1].host");
        assert_eq!(p.source_path("spec.ports[50]"), "spec.ports[50]");
        assert_eq!(lc(&p, "spec.ports[5].host"), (7, 31));
    }

    #[test]
    fn complex_keys_and_garbage_do_not_panic() {
        for src in [
            "? [a, b]\n: c\nd: e\n",
            "a: [\n",
            "&x a: *x\n",
            "- - - -\n",
            "",
        ] {
            let _ = Positions::from_str(src, None);
        }
        let p = Positions::from_str("? [a, b]\n: c\nd: e\n", None);
        assert_eq!(lc(&p, "d"), (3, 4));
    }

    #[test]
    fn parents() {
        assert_eq!(parent("a.b[2].c"), Some("a.b[2]"));
        assert_eq!(parent("a.b[2]"), Some("a.b"));
        assert_eq!(parent("a"), Some(""));
        assert_eq!(parent(""), None);
        assert!(is_prefix_path("spec.ports[1]", "spec.ports[1].host"));
        assert!(!is_prefix_path("spec.ports[1]", "spec.ports[10]"));
    }
}
