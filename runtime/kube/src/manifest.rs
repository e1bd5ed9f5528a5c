//! One Kubernetes object as `generate` makes it, and the multi-document YAML they render to.

use serde_yaml::{Mapping, Value};

/// A Kubernetes object, with the YAML comment lines written above it.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Lines of a comment written before the document (without `# `).
    pub comments: Vec<String>,
    /// The whole object: apiVersion, kind, metadata, spec/data.
    pub body: Value,
}

impl Manifest {
    /// `metadata.labels`, when there are any.
    pub fn labels(&self) -> Option<&Mapping> {
        self.body.get("metadata")?.get("labels")?.as_mapping()
    }
}

/// The manifests as one multi-document YAML text, in the order given, each preceded by its
/// comment.
pub fn to_yaml(manifests: &[Manifest]) -> String {
    let mut out = String::new();
    for (i, m) in manifests.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        for c in &m.comments {
            if c.is_empty() {
                out.push_str("#\n");
            } else {
                for line in c.lines() {
                    out.push_str("# ");
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        emit_document(&m.body, &mut out);
    }
    out
}

/// Block-style YAML that YAML 1.1 readers (Kubernetes' own, kubectl's, PyYAML) and YAML 1.2
/// readers read the same: any string that is not plainly a string is double-quoted.
///
/// serde_yaml writes YAML 1.2, where `no`, `on` or `1_000` are strings and so left unquoted,
/// while Kubernetes reads them as a boolean and a number; yaml-rust2's emitter quotes the
/// booleans but not YAML 1.1's other forms. So the few node kinds a manifest has are written
/// here, quoting on the safe side.
fn emit_document(v: &Value, out: &mut String) {
    match untag(v) {
        Value::Mapping(m) if !m.is_empty() => emit_mapping(m, 0, out),
        Value::Sequence(s) if !s.is_empty() => emit_sequence(s, 0, out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn indent(n: usize, out: &mut String) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// `first_inline`: the first key follows a list item's `- ` on the same line.
fn emit_mapping_at(m: &Mapping, at: usize, first_inline: bool, out: &mut String) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !first_inline {
            indent(at, out);
        }
        out.push_str(&scalar(k));
        out.push(':');
        emit_value(v, at, out);
    }
}

fn emit_mapping(m: &Mapping, at: usize, out: &mut String) {
    emit_mapping_at(m, at, false, out);
}

fn emit_sequence(s: &[Value], at: usize, out: &mut String) {
    for v in s {
        indent(at, out);
        out.push_str("- ");
        match untag(v) {
            Value::Mapping(m) if !m.is_empty() => emit_mapping_at(m, at + 2, true, out),
            Value::Sequence(inner) if !inner.is_empty() => {
                out.push('\n');
                emit_sequence(inner, at + 2, out);
            }
            other => {
                out.push_str(&inline(other, at + 2));
                out.push('\n');
            }
        }
    }
}

/// After `key:` at indentation `at`: a nested block, or ` scalar`.
fn emit_value(v: &Value, at: usize, out: &mut String) {
    match untag(v) {
        Value::Mapping(m) if !m.is_empty() => {
            out.push('\n');
            emit_mapping(m, at + 2, out);
        }
        // lists at the key's own indentation, as kubectl writes them
        Value::Sequence(s) if !s.is_empty() => {
            out.push('\n');
            emit_sequence(s, at, out);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other, at + 2));
            out.push('\n');
        }
    }
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

/// A scalar where a value goes: multi-line text as a literal block, else [`scalar`].
fn inline(v: &Value, at: usize) -> String {
    if let Value::String(s) = v {
        if let Some(block) = literal_block(s, at) {
            return block;
        }
    }
    scalar(v)
}

/// `|`, `|-` or `|+` and the lines indented by `at`, when the text can be written so exactly.
fn literal_block(s: &str, at: usize) -> Option<String> {
    if !s.contains('\n')
        || s.starts_with([' ', '\n', '\t'])
        || s.chars().any(|c| c.is_control() && c != '\n')
    {
        return None;
    }
    let body = s.trim_end_matches('\n');
    let (chomp, lines) = match s.len() - body.len() {
        0 => ("|-", body),
        1 => ("|", body),
        _ => ("|+", &s[..s.len() - 1]),
    };
    let mut out = String::from(chomp);
    for line in lines.split('\n') {
        out.push('\n');
        if !line.is_empty() {
            out.extend(std::iter::repeat_n(' ', at));
            out.push_str(line);
        }
    }
    Some(out)
}

fn scalar(v: &Value) -> String {
    match untag(v) {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if is_plain(s) => s.clone(),
        // a JSON string is a valid double-quoted YAML scalar
        Value::String(s) => serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()),
        Value::Mapping(_) => "{}".into(),
        Value::Sequence(_) => "[]".into(),
        Value::Tagged(_) => "null".into(),
    }
}

/// Whether `s` reads back as this same string when written plain, in YAML 1.1 and 1.2: it
/// starts with a letter or `/`, has only quiet characters, and is none of the words YAML 1.1
/// reads as something else.
pub fn is_plain(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "yes", "n", "no", "true", "false", "on", "off", "null", "nan", "inf",
    ];
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/')
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | '+' | '@' | '=')
        })
        && !WORDS.contains(&s.to_ascii_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(v: Value) -> String {
        let mut out = String::new();
        emit_document(&v, &mut out);
        out
    }

    #[test]
    fn yaml_1_1_words_and_numbers_are_quoted() {
        for s in [
            "no",
            "No",
            "yes",
            "on",
            "OFF",
            "y",
            "n",
            "true",
            "null",
            "~",
            "1_000",
            "0777",
            "1:30",
            "0x1f",
            ".inf",
            "1e3",
            "-1",
            "",
            " a",
            "a: b",
            "#x",
            "*a",
            "&a",
            "!t",
            "2001-12-14",
            "@x",
            "+1",
            "a\tb",
            "é",
        ] {
            let text = doc(Value::Mapping(
                [(Value::from("k"), Value::from(s))].into_iter().collect(),
            ));
            assert!(text.starts_with("k: \""), "{s}: {text}");
            let back: Value = serde_yaml::from_str(&text).unwrap();
            assert_eq!(back["k"], Value::from(s), "{text}");
        }
        for s in [
            "app.kubernetes.io/name",
            "RuntimeDefault",
            "a-b_c.d",
            "/health",
        ] {
            assert!(is_plain(s), "{s}");
        }
        assert!(!is_plain("nginx:1.27"));
    }

    #[test]
    fn structures_read_back() {
        let src = "a:\n  b: [1, {c: d, e: [x, y]}, [p, q], {}, []]\n  text: \"line 1\\nline 2\\n\"\n  t2: \"x\\n\\n\"\n  t3: \"no newline\\nend\"\n  t4: \" lead\\nx\"\n  empty: {}\n  n: 1.5\n  'yes': false\n";
        let v: Value = serde_yaml::from_str(src).unwrap();
        let text = doc(v.clone());
        let back: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, v, "{text}");
        assert!(
            text.contains("  text: |\n    line 1\n    line 2\n"),
            "{text}"
        );
        assert!(text.contains("  \"yes\": false\n"), "{text}");
    }
}

/// An insertion-ordered mapping under construction: apiVersion, kind, metadata, spec stay in
/// the order Kubernetes users read them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Obj(pub Mapping);

impl Obj {
    pub fn new() -> Obj {
        Obj(Mapping::new())
    }

    pub fn set(mut self, key: &str, v: impl Into<Value>) -> Obj {
        self.0.insert(Value::from(key), v.into());
        self
    }

    pub fn put(&mut self, key: &str, v: impl Into<Value>) {
        self.0.insert(Value::from(key), v.into());
    }

    pub fn opt(self, key: &str, v: Option<impl Into<Value>>) -> Obj {
        match v {
            Some(v) => self.set(key, v),
            None => self,
        }
    }

    /// Sets `key` unless `v` is an empty mapping or list.
    pub fn non_empty(self, key: &str, v: impl Into<Value>) -> Obj {
        let v = v.into();
        let empty = match &v {
            Value::Mapping(m) => m.is_empty(),
            Value::Sequence(s) => s.is_empty(),
            _ => false,
        };
        if empty {
            self
        } else {
            self.set(key, v)
        }
    }
}

impl From<Obj> for Value {
    fn from(o: Obj) -> Value {
        Value::Mapping(o.0)
    }
}

/// A mapping from string pairs.
pub(crate) fn string_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert(Value::from(k), Value::from(v));
    }
    Value::Mapping(m)
}
