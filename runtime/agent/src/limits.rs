//! Bounds on the shape of an agent.yaml, checked before serde_yaml builds a value.
//!
//! serde_yaml keeps the whole document in memory and expands every alias into a copy of its
//! anchor, so a small file can nest 100,000 levels deep or hold an "alias bomb" (anchors
//! referring to anchors, each doubling the size). yaml-rust2's event parser reads the text
//! once, lazily and without recursion, so it can count the nesting depth and how many values
//! the document has once every alias is expanded, and stop at the first limit passed.

use yaml_rust2::parser::{Event, Parser};

/// The deepest nesting of mappings and lists accepted (agent.yaml needs about 8).
pub const MAX_DEPTH: usize = 64;
/// The most values (scalars, mappings, lists) the document may have with every alias
/// expanded.
pub const MAX_VALUES: u64 = 100_000;

/// A limit passed, with the line and column (1-based) where it happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LimitError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Check `src` against [`MAX_DEPTH`] and [`MAX_VALUES`]. Syntax errors are left to serde_yaml,
/// which reports them with their position.
pub fn check(src: &str) -> Result<(), LimitError> {
    check_with(src, MAX_DEPTH, MAX_VALUES)
}

pub fn check_with(src: &str, max_depth: usize, max_values: u64) -> Result<(), LimitError> {
    flow_depth(src, max_depth)?;
    let mut parser = Parser::new_from_str(src);
    let mut depth = 0usize;
    let mut values = 0u64;
    // anchor id -> the number of values it stands for (aliases inside it expanded)
    let mut anchor_sizes: std::collections::HashMap<usize, u64> = Default::default();
    // open collections: (anchor id, the value count when it opened)
    let mut open: Vec<(usize, u64)> = Vec::new();
    loop {
        let (event, mark) = match parser.next_token() {
            Ok(e) => e,
            Err(_) => return Ok(()),
        };
        let at = |message: String| LimitError {
            line: mark.line(),
            column: mark.col() + 1,
            message,
        };
        match event {
            Event::StreamEnd => return Ok(()),
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                depth += 1;
                if depth > max_depth {
                    return Err(at(format!(
                        "the document nests deeper than {max_depth} levels"
                    )));
                }
                values += 1;
                open.push((anchor, values - 1));
            }
            Event::MappingEnd | Event::SequenceEnd => {
                depth = depth.saturating_sub(1);
                if let Some((anchor, start)) = open.pop() {
                    if anchor != 0 {
                        anchor_sizes.insert(anchor, values - start);
                    }
                }
            }
            Event::Scalar(_, _, anchor, _) => {
                values += 1;
                if anchor != 0 {
                    anchor_sizes.insert(anchor, 1);
                }
            }
            Event::Alias(id) => {
                values = values.saturating_add(anchor_sizes.get(&id).copied().unwrap_or(1));
            }
            _ => {}
        }
        if values > max_values {
            return Err(at(format!(
                "the document holds more than {max_values} values once its aliases are \
                 expanded (an alias bomb?)"
            )));
        }
    }
}

/// A quick lexical pass over flow collections (`[[[[...`): yaml-rust2's scanner looks ahead
/// to the end of every open flow collection that might be a mapping key, so deep flow nesting
/// costs it quadratic time before the first event arrives. Brackets in comments and quoted
/// scalars do not count; one missed (in a block scalar, say) only leaves the work to the
/// event pass.
fn flow_depth(src: &str, max_depth: usize) -> Result<(), LimitError> {
    #[derive(PartialEq)]
    enum State {
        Plain,
        Single,
        Double { escaped: bool },
        Comment,
    }
    let mut state = State::Plain;
    let mut depth = 0usize;
    let (mut line, mut column) = (1usize, 0usize);
    // the last character on this line that was not a space ('\n' at a line's start), and
    // whether a space (or the line's start) came right before
    let mut last = '\n';
    let mut after_space = true;
    for c in src.chars() {
        column += 1;
        match state {
            State::Comment => {
                if c == '\n' {
                    state = State::Plain;
                }
            }
            State::Single => {
                if c == '\'' {
                    state = State::Plain;
                }
            }
            State::Double { escaped } => {
                state = match c {
                    _ if escaped => State::Double { escaped: false },
                    '\\' => State::Double { escaped: true },
                    '"' => State::Plain,
                    _ => State::Double { escaped: false },
                };
            }
            State::Plain => {
                let starts_scalar = matches!(last, '\n' | ':' | '-' | '[' | '{' | ',' | '?');
                match c {
                    '#' if after_space => state = State::Comment,
                    '\'' if starts_scalar => state = State::Single,
                    '"' if starts_scalar => state = State::Double { escaped: false },
                    '[' | '{' => {
                        depth += 1;
                        if depth > max_depth {
                            return Err(LimitError {
                                line,
                                column,
                                message: format!(
                                    "the document nests deeper than {max_depth} levels"
                                ),
                            });
                        }
                    }
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
        }
        match c {
            '\n' => {
                line += 1;
                column = 0;
                last = '\n';
                after_space = true;
            }
            ' ' | '\t' => after_space = true,
            _ => {
                last = c;
                after_space = false;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_documents_pass() {
        check("a: 1\nb: [1, 2, {c: d}]\nx: &x {k: v}\ny: *x\n").unwrap();
        check("").unwrap();
        check("a: [unclosed").unwrap(); // serde_yaml reports the syntax error
                                        // brackets in quotes and comments do not nest
        let quoted = format!(
            "a: '{0}'\nb: \"{0}\\\" {0}\"\n# {0}\nc: it's {0}\n",
            "[".repeat(100)
        );
        assert!(check(&quoted).is_err(), "a plain scalar's brackets count");
        let quoted = format!("a: '{0}'\nb: \"{0}\\\" {0}\"\n# {0}\n", "[".repeat(100));
        check(&quoted).unwrap();
    }

    #[test]
    fn deep_nesting_is_refused_early() {
        let deep = "[".repeat(100_000);
        let e = check(&deep).unwrap_err();
        assert_eq!(e.message, "the document nests deeper than 64 levels");
        assert_eq!((e.line, e.column), (1, 65));
        let e = check(&format!("a:\n  b: {}", "{x: ".repeat(50_000))).unwrap_err();
        assert_eq!((e.line, e.column), (2, 6 + 4 * 64));
        // block nesting, found by the event pass
        let e = check(&"- ".repeat(100_000)).unwrap_err();
        assert_eq!(e.message, "the document nests deeper than 64 levels");
        let mut block = String::new();
        for i in 0..100 {
            block.push_str(&" ".repeat(i));
            block.push_str("a:\n");
        }
        assert!(check(&block).is_err());
        check(&format!("{}{}", "[".repeat(64), "]".repeat(64))).unwrap();
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let names = ["b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let mut prev = "a";
        for n in names {
            bomb.push_str(&format!(
                "{n}: &{n} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = n;
        }
        let e = check(&bomb).unwrap_err();
        assert!(e.message.contains("alias bomb"), "{e}");
        // a few aliases of a small anchor are fine
        check("a: &a [1, 2]\nb: [*a, *a, *a]\n").unwrap();
    }
}
