//! Line and column of every key and value in a multi-document YAML text, by document and
//! field path (`spec.template.spec.containers[0].image`), for `play`'s warnings.
//!
//! serde_yaml keeps no positions, so the text is read a second time with yaml-rust2's marked
//! event parser, the way aac-agent indexes an agent.yaml; here each document has its own index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aac_agent::Location;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LineCol {
    line: usize,
    column: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    key: Option<LineCol>,
    value: LineCol,
}

/// Positions of every document of one text.
#[derive(Debug, Clone, Default)]
pub struct DocPositions {
    file: Option<PathBuf>,
    docs: Vec<HashMap<String, Entry>>,
}

impl DocPositions {
    /// Index `src`; text yaml-rust2 cannot read yields what was read before the problem.
    pub fn from_str(src: &str, file: Option<&Path>) -> DocPositions {
        let mut b = Builder::default();
        let mut parser = Parser::new_from_str(src);
        if let Err(e) = parser.load(&mut b, true) {
            tracing::debug!("position index incomplete: {e}");
        }
        DocPositions {
            file: file.map(Path::to_path_buf),
            docs: b.docs,
        }
    }

    /// Number of documents seen.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Where the key naming `path` in document `doc` is (its value for list items and the
    /// root); the nearest ancestor that is in the text when it is not.
    pub fn key(&self, doc: usize, path: &str) -> Option<Location> {
        self.find(doc, path, true)
    }

    /// Where the value at `path` is, falling back like [`DocPositions::key`].
    pub fn value(&self, doc: usize, path: &str) -> Option<Location> {
        self.find(doc, path, false)
    }

    fn find(&self, doc: usize, path: &str, key: bool) -> Option<Location> {
        let entries = self.docs.get(doc)?;
        let mut p = Some(path);
        let mut exact = true;
        while let Some(cur) = p {
            if let Some(e) = entries.get(cur) {
                let lc = if key || !exact {
                    e.key.unwrap_or(e.value)
                } else {
                    e.value
                };
                return Some(Location {
                    file: self.file.clone(),
                    line: lc.line,
                    column: lc.column,
                });
            }
            exact = false;
            p = parent(cur);
        }
        None
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

/// `base.key`, or `key` at the root. Keys with dots are written as they are: paths are only
/// used to find positions and name fields in messages.
pub fn join_key(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

pub fn join_index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

enum Frame {
    Mapping {
        path: String,
        key: Option<(String, LineCol)>,
        first: bool,
    },
    Sequence {
        path: String,
        next: usize,
    },
    Skip,
}

#[derive(Default)]
struct Builder {
    docs: Vec<HashMap<String, Entry>>,
    stack: Vec<Frame>,
    skip_depth: usize,
    in_doc: bool,
}

impl Builder {
    fn entries(&mut self) -> &mut HashMap<String, Entry> {
        if self.docs.is_empty() {
            self.docs.push(HashMap::new());
        }
        let last = self.docs.len() - 1;
        &mut self.docs[last]
    }

    fn node(&mut self, at: LineCol, key_text: Option<&str>) -> Option<String> {
        let top = self.stack.pop();
        let (path, frame) = match top {
            None => {
                self.entries().entry(String::new()).or_insert(Entry {
                    key: None,
                    value: at,
                });
                (Some(String::new()), None)
            }
            Some(Frame::Skip) => (None, Some(Frame::Skip)),
            Some(Frame::Sequence { path, next }) => {
                let p = join_index(&path, next);
                self.entries().insert(
                    p.clone(),
                    Entry {
                        key: None,
                        value: at,
                    },
                );
                (
                    Some(p),
                    Some(Frame::Sequence {
                        path,
                        next: next + 1,
                    }),
                )
            }
            Some(Frame::Mapping { path, key, first }) => match key {
                None => {
                    if first {
                        if let Some(e) = self.entries().get_mut(path.as_str()) {
                            if (at.line, at.column) < (e.value.line, e.value.column) {
                                e.value = at;
                            }
                        }
                    }
                    let k = key_text.unwrap_or("?").to_string();
                    (
                        None,
                        Some(Frame::Mapping {
                            path,
                            key: Some((k, at)),
                            first: false,
                        }),
                    )
                }
                Some((k, key_at)) => {
                    let p = join_key(&path, &k);
                    self.entries().entry(p.clone()).or_insert(Entry {
                        key: Some(key_at),
                        value: at,
                    });
                    (
                        Some(p),
                        Some(Frame::Mapping {
                            path,
                            key: None,
                            first,
                        }),
                    )
                }
            },
        };
        if let Some(f) = frame {
            self.stack.push(f);
        }
        path
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
            Event::DocumentStart => {
                self.docs.push(HashMap::new());
                self.stack.clear();
                self.in_doc = true;
            }
            Event::DocumentEnd => {
                self.stack.clear();
                self.in_doc = false;
            }
            Event::Scalar(text, ..) => {
                self.node(at, Some(&text));
            }
            Event::Alias(_) => {
                self.node(at, Some("*"));
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                if self.is_key_position() {
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
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_indexed_apart() {
        let src = "a: 1\nb:\n  - x: 2\n---\n# two\nkind: Service\nspec:\n  ports: [{port: 80}]\n";
        let p = DocPositions::from_str(src, None);
        assert_eq!(p.len(), 2);
        let l = p.value(0, "b[0].x").unwrap();
        assert_eq!((l.line, l.column), (3, 8));
        let l = p.key(1, "kind").unwrap();
        assert_eq!((l.line, l.column), (6, 1));
        let l = p.value(1, "spec.ports[0].port").unwrap();
        assert_eq!((l.line, l.column), (8, 18));
        // missing: nearest ancestor's key
        let l = p.value(1, "spec.ports[0].targetPort").unwrap();
        assert_eq!((l.line, l.column), (8, 11));
    }

    #[test]
    fn odd_text_does_not_panic() {
        for src in [
            "",
            "---\n---\n",
            "? [a]\n: b\n",
            "a: [\n",
            "- - -\n",
            "&x a: *x\n",
        ] {
            let _ = DocPositions::from_str(src, None);
        }
    }
}
