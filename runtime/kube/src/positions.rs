//! Line and column of every key and value in a multi-document YAML text, by document and
//! field path (`spec.template.spec.containers[0].image`), for `play`'s warnings: aac-agent's
//! index ([`Positions::documents`]), one per document.

use std::path::Path;

use aac_agent::positions::Positions;
use aac_agent::Location;

pub use aac_agent::positions::{join_index, join_key};

/// Positions of every document of one text.
#[derive(Debug, Clone, Default)]
pub struct DocPositions {
    docs: Vec<Positions>,
}

impl DocPositions {
    /// Index `src`; text yaml-rust2 cannot read yields what was read before the problem.
    pub fn from_str(src: &str, file: Option<&Path>) -> DocPositions {
        DocPositions {
            docs: Positions::documents(src, file),
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
        self.docs.get(doc)?.key(path)
    }

    /// Where the value at `path` is, falling back like [`DocPositions::key`].
    pub fn value(&self, doc: usize, path: &str) -> Option<Location> {
        self.docs.get(doc)?.value(path)
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
