//! `--format`: docker's output choices. `table` (the default), `json`, or a Go template
//! subset (`{{.Names}}`, `{{.State.Status}}`, `{{json .}}`, `table {{.ID}}\t{{.Names}}`,
//! `{{range}}`, `{{if}}`, `{{with}}`, variables, pipelines and docker's template functions),
//! evaluated over the JSON shape each command prints. What is outside the subset is refused
//! with a clear error, before anything runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use serde_json::{Map, Value};

/// `--format` for commands without templates: table or json.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PlainFormat {
    #[default]
    Table,
    Json,
}

/// What `--format` asked for.
#[derive(Debug, Clone, Default)]
pub enum Format {
    /// The command's own table.
    #[default]
    Table,
    /// The command's own JSON.
    Json,
    /// A Go template, rendered once per item.
    Template(Template),
}

impl Format {
    pub fn is_json(&self) -> bool {
        matches!(self, Format::Json)
    }
}

/// Parse a `--format` value; the error is aac's one line, exit 125.
pub fn parse_arg<T: FromStr<Err = String>>(s: &str) -> crate::exit::CliResult<T> {
    s.parse::<T>()
        .map_err(|e| crate::exit::CliError::aac(anyhow::anyhow!("--format {s:?}: {e}")))
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s.trim() {
            "" | "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            _ => Template::parse(s).map(Format::Template),
        }
    }
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    /// `table TEMPLATE`: a heading line, cells aligned at tabs.
    pub table: bool,
    nodes: Vec<Node>,
}

/// Error while parsing or running a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "template: {}", self.0)
    }
}

impl std::error::Error for TemplateError {}

type TResult<T> = Result<T, TemplateError>;

fn err<T>(msg: impl Into<String>) -> TResult<T> {
    Err(TemplateError(msg.into()))
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If {
        branches: Vec<(Pipeline, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Range {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone)]
struct Pipeline {
    /// `$k, $v :=` (range) or `$x :=`.
    decl: Vec<String>,
    cmds: Vec<Vec<Arg>>,
}

#[derive(Debug, Clone)]
enum Arg {
    /// `.A.B` (empty: `.` itself).
    Field(Vec<String>),
    /// `$x.A.B` (`$` alone: the top value).
    Var(String, Vec<String>),
    Func(String),
    Lit(Value),
    /// `(pipeline).A.B`
    Sub(Box<Pipeline>, Vec<String>),
}

/// The functions this subset knows: Go's builtins and docker's additions.
const FUNCS: &[&str] = &[
    "json", "join", "split", "lower", "upper", "title", "pad", "truncate", "len", "index", "eq",
    "ne", "lt", "le", "gt", "ge", "not", "and", "or", "print", "println", "printf", "slice",
];

// ---------------------------------------------------------------- lexing and parsing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Lit(Value),
    LParen,
    RParen,
    /// `.A.B` right after `)`.
    Chain(Vec<String>),
    Pipe,
    Declare,
    Comma,
}

fn lex(src: &str) -> TResult<Vec<Tok>> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let ident = |chars: &[char], i: &mut usize| -> String {
        let start = *i;
        while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    let chain = |chars: &[char], i: &mut usize| -> TResult<Vec<String>> {
        let mut parts = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            *i += 1;
            let name = ident(chars, i);
            if name.is_empty() {
                if parts.is_empty() && (*i >= chars.len() || !chars[*i].is_alphanumeric()) {
                    // `.` alone
                    return Ok(parts);
                }
                return err(format!("bad field name in {src:?}"));
            }
            parts.push(name);
        }
        Ok(parts)
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '.' => {
                let after_paren = matches!(out.last(), Some(Tok::RParen));
                let parts = chain(&chars, &mut i)?;
                if after_paren && !parts.is_empty() {
                    out.push(Tok::Chain(parts));
                } else {
                    out.push(Tok::Field(parts));
                }
            }
            '$' => {
                i += 1;
                let name = ident(&chars, &mut i);
                let parts = chain(&chars, &mut i)?;
                out.push(Tok::Var(name, parts));
            }
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Declare);
                i += 2;
            }
            '"' => {
                i += 1;
                let mut s = String::new();
                loop {
                    match chars.get(i) {
                        None => return err(format!("unterminated string in {src:?}")),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            match chars.get(i) {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some('\\') => s.push('\\'),
                                Some('"') => s.push('"'),
                                other => {
                                    return err(format!(
                                        "unsupported escape \\{other:?} in {src:?}"
                                    ))
                                }
                            }
                        }
                        Some(&c) => s.push(c),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Tok::Lit(Value::String(s)));
            }
            '`' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != '`' {
                    i += 1;
                }
                if i >= chars.len() {
                    return err(format!("unterminated raw string in {src:?}"));
                }
                out.push(Tok::Lit(Value::String(chars[start..i].iter().collect())));
                i += 1;
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let v = if let Ok(n) = text.parse::<i64>() {
                    Value::from(n)
                } else if let Ok(f) = text.parse::<f64>() {
                    Value::from(f)
                } else {
                    return err(format!("bad number {text:?}"));
                };
                out.push(Tok::Lit(v));
            }
            c if c.is_alphabetic() || c == '_' => {
                let name = ident(&chars, &mut i);
                out.push(match name.as_str() {
                    "true" => Tok::Lit(Value::Bool(true)),
                    "false" => Tok::Lit(Value::Bool(false)),
                    "nil" => Tok::Lit(Value::Null),
                    _ => Tok::Ident(name),
                });
            }
            other => return err(format!("unexpected {other:?} in {{{{{src}}}}}")),
        }
    }
    Ok(out)
}

fn parse_pipeline(toks: &[Tok], src: &str) -> TResult<Pipeline> {
    let mut pos = 0;
    let p = parse_pipe_at(toks, &mut pos, src, true)?;
    if pos != toks.len() {
        return err(format!("unexpected ')' in {{{{{src}}}}}"));
    }
    Ok(p)
}

fn parse_pipe_at(toks: &[Tok], pos: &mut usize, src: &str, top: bool) -> TResult<Pipeline> {
    let mut decl = Vec::new();
    if top {
        // `$a := ...` or `$k, $v := ...`
        let mut j = *pos;
        let mut names = Vec::new();
        while let Some(Tok::Var(n, rest)) = toks.get(j) {
            if !rest.is_empty() {
                break;
            }
            names.push(n.clone());
            j += 1;
            if toks.get(j) == Some(&Tok::Comma) {
                j += 1;
            } else {
                break;
            }
        }
        if !names.is_empty() && toks.get(j) == Some(&Tok::Declare) {
            decl = names;
            *pos = j + 1;
        }
    }
    let mut cmds = Vec::new();
    let mut cmd = Vec::new();
    while let Some(t) = toks.get(*pos) {
        *pos += 1;
        match t {
            Tok::Pipe => {
                if cmd.is_empty() {
                    return err(format!("missing command before '|' in {{{{{src}}}}}"));
                }
                cmds.push(std::mem::take(&mut cmd));
            }
            Tok::RParen => {
                if top {
                    return err(format!("unexpected ')' in {{{{{src}}}}}"));
                }
                *pos -= 1;
                break;
            }
            Tok::LParen => {
                let inner = parse_pipe_at(toks, pos, src, false)?;
                if toks.get(*pos) != Some(&Tok::RParen) {
                    return err(format!("unclosed '(' in {{{{{src}}}}}"));
                }
                *pos += 1;
                let chain = match toks.get(*pos) {
                    Some(Tok::Chain(c)) => {
                        *pos += 1;
                        c.clone()
                    }
                    _ => Vec::new(),
                };
                cmd.push(Arg::Sub(Box::new(inner), chain));
            }
            Tok::Field(f) => cmd.push(Arg::Field(f.clone())),
            Tok::Var(n, f) => cmd.push(Arg::Var(n.clone(), f.clone())),
            Tok::Lit(v) => cmd.push(Arg::Lit(v.clone())),
            Tok::Ident(name) => {
                if !FUNCS.contains(&name.as_str()) {
                    return err(format!(
                        "function {name:?} is not supported (aac knows: {})",
                        FUNCS.join(", ")
                    ));
                }
                cmd.push(Arg::Func(name.clone()));
            }
            Tok::Chain(_) | Tok::Declare | Tok::Comma => {
                return err(format!("unexpected token in {{{{{src}}}}}"))
            }
        }
    }
    if cmd.is_empty() {
        return err(format!("missing value in {{{{{src}}}}}"));
    }
    cmds.push(cmd);
    Ok(Pipeline { decl, cmds })
}

/// One `{{...}}` or text piece.
enum Piece {
    Text(String),
    Action(String),
}

fn split_pieces(src: &str) -> TResult<Vec<Piece>> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        if trim_next {
            text = text.trim_start().to_string();
        }
        let after = &rest[start + 2..];
        let (after, trim_prev) = match after.strip_prefix("- ") {
            Some(a) => (a, true),
            None => (after, false),
        };
        if trim_prev {
            text = text.trim_end().to_string();
        }
        out.push(Piece::Text(text));
        let Some(end) = after.find("}}") else {
            return err(format!("unclosed action (missing '}}}}') in {src:?}"));
        };
        let mut inner = &after[..end];
        trim_next = false;
        if let Some(i) = inner.strip_suffix(" -") {
            inner = i;
            trim_next = true;
        }
        out.push(Piece::Action(inner.trim().to_string()));
        rest = &after[end + 2..];
    }
    let mut text = rest.to_string();
    if trim_next {
        text = text.trim_start().to_string();
    }
    out.push(Piece::Text(text));
    Ok(out)
}

/// Where a block ended.
enum Close {
    Eof,
    End,
    Else(Option<String>),
}

fn parse_nodes(
    pieces: &mut std::iter::Peekable<std::vec::IntoIter<Piece>>,
) -> TResult<(Vec<Node>, Close)> {
    let mut nodes = Vec::new();
    while let Some(p) = pieces.next() {
        match p {
            Piece::Text(t) => {
                if !t.is_empty() {
                    nodes.push(Node::Text(t));
                }
            }
            Piece::Action(a) => {
                if a.starts_with("/*") {
                    if !a.ends_with("*/") {
                        return err("unclosed comment");
                    }
                    continue;
                }
                let (word, rest) = match a.split_once(char::is_whitespace) {
                    Some((w, r)) => (w, r.trim()),
                    None => (a.as_str(), ""),
                };
                match word {
                    "end" => return Ok((nodes, Close::End)),
                    "else" => {
                        let cond = rest.strip_prefix("if").map(|r| r.trim().to_string());
                        if cond.is_none() && !rest.is_empty() {
                            return err(format!("{{{{else {rest}}}}} is not supported"));
                        }
                        return Ok((nodes, Close::Else(cond)));
                    }
                    "if" => {
                        let mut branches = Vec::new();
                        let mut cond = rest.to_string();
                        let otherwise = loop {
                            let pipe = parse_pipeline(&lex(&cond)?, &cond)?;
                            let (body, end) = parse_nodes(pieces)?;
                            branches.push((pipe, body));
                            match end {
                                Close::End => break Vec::new(),
                                Close::Else(Some(c)) => cond = c,
                                Close::Else(None) => {
                                    let (body, end) = parse_nodes(pieces)?;
                                    expect_end(end, "if")?;
                                    break body;
                                }
                                Close::Eof => return err("{{if}} without {{end}}"),
                            }
                        };
                        nodes.push(Node::If {
                            branches,
                            otherwise,
                        });
                    }
                    "range" | "with" => {
                        let pipe = parse_pipeline(&lex(rest)?, rest)?;
                        if word == "with" && !pipe.decl.is_empty() {
                            return err("variables in {{with}} are not supported");
                        }
                        let (body, end) = parse_nodes(pieces)?;
                        let otherwise = match end {
                            Close::End => Vec::new(),
                            Close::Else(None) => {
                                let (o, end) = parse_nodes(pieces)?;
                                expect_end(end, word)?;
                                o
                            }
                            Close::Else(Some(_)) => {
                                return err(format!("{{{{else if}}}} inside {{{{{word}}}}}"))
                            }
                            Close::Eof => {
                                return err(format!("{{{{{word}}}}} without {{{{end}}}}"))
                            }
                        };
                        nodes.push(if word == "range" {
                            Node::Range {
                                pipe,
                                body,
                                otherwise,
                            }
                        } else {
                            Node::With {
                                pipe,
                                body,
                                otherwise,
                            }
                        });
                    }
                    "define" | "template" | "block" | "break" | "continue" => {
                        return err(format!("{{{{{word}}}}} is not supported"))
                    }
                    _ => {
                        let pipe = parse_pipeline(&lex(&a)?, &a)?;
                        nodes.push(Node::Action(pipe));
                    }
                }
            }
        }
    }
    Ok((nodes, Close::Eof))
}

fn expect_end(end: Close, word: &str) -> TResult<()> {
    match end {
        Close::End => Ok(()),
        _ => err(format!(
            "{{{{{word}}}}}: expected {{{{end}}}} after {{{{else}}}}"
        )),
    }
}

impl Template {
    /// Parse docker's way: a leading `table` asks for headings, `\t` and `\n` written as two
    /// characters mean a tab and a new line.
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut s = src.trim_start();
        let table = s.starts_with("table") && !s[5..].starts_with(|c: char| c.is_alphanumeric());
        if table {
            s = &s[5..];
        }
        let s = s
            .trim_matches(' ')
            .replace("\\t", "\t")
            .replace("\\n", "\n");
        let pieces = split_pieces(&s).map_err(|e| e.to_string())?;
        let mut it = pieces.into_iter().peekable();
        let (nodes, end) = parse_nodes(&mut it).map_err(|e| e.to_string())?;
        match end {
            Close::Eof => Ok(Template { table, nodes }),
            Close::End => Err("template: {{end}} without a block".into()),
            Close::Else(_) => Err("template: {{else}} without {{if}}/{{range}}".into()),
        }
    }

    /// Render for one value.
    pub fn render(&self, dot: &Value) -> TResult<String> {
        let mut out = String::new();
        let mut vars = vec![("".to_string(), dot.clone())];
        exec(&self.nodes, dot, &mut vars, false, &mut out)?;
        Ok(out)
    }

    /// Render the heading line: each `.Field` shows its heading from `headings` (others
    /// print nothing).
    pub fn render_heading(&self, headings: &[(&str, &str)]) -> String {
        let dot = Value::Object(
            headings
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                .collect(),
        );
        let mut out = String::new();
        let mut vars = vec![("".to_string(), dot.clone())];
        match exec(&self.nodes, &dot, &mut vars, true, &mut out) {
            Ok(()) => out,
            Err(_) => String::new(),
        }
    }

    /// Render every item docker's way: one line per item; a `table` template starts with the
    /// heading line and aligns the cells at tabs.
    pub fn render_all(&self, items: &[Value], headings: &[(&str, &str)]) -> TResult<String> {
        let mut lines = Vec::new();
        if self.table {
            lines.push(self.render_heading(headings));
        }
        for item in items {
            lines.push(self.render(item)?);
        }
        let mut out = String::new();
        if self.table {
            out = align(&lines);
        } else {
            for l in lines {
                out.push_str(&l);
                out.push('\n');
            }
        }
        Ok(out)
    }
}

/// Go's tabwriter as docker sets it up (minimum width 10, padding 3): cells end at tabs.
fn align(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines
        .iter()
        .flat_map(|l| l.split('\n'))
        .map(|l| l.split('\t').collect())
        .collect();
    let mut widths: Vec<usize> = Vec::new();
    for r in &rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            let w = c.chars().count() + 3;
            if widths.len() <= i {
                widths.push(10);
            }
            widths[i] = widths[i].max(w);
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(c);
            if i + 1 < r.len() {
                let pad = widths[i] - c.chars().count();
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------- evaluation

type Vars = Vec<(String, Value)>;

fn exec(
    nodes: &[Node],
    dot: &Value,
    vars: &mut Vars,
    lenient: bool,
    out: &mut String,
) -> TResult<()> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipe(p, dot, vars, lenient)?;
                if p.decl.is_empty() {
                    out.push_str(&print_value(&v));
                } else {
                    for d in &p.decl {
                        vars.push((d.clone(), v.clone()));
                    }
                }
            }
            Node::If {
                branches,
                otherwise,
            } => {
                let mark = vars.len();
                let mut done = false;
                for (cond, body) in branches {
                    if truthy(&eval_pipe(cond, dot, vars, lenient)?) {
                        exec(body, dot, vars, lenient, out)?;
                        done = true;
                        break;
                    }
                }
                if !done {
                    exec(otherwise, dot, vars, lenient, out)?;
                }
                vars.truncate(mark);
            }
            Node::With {
                pipe,
                body,
                otherwise,
            } => {
                let mark = vars.len();
                let v = eval_pipe(pipe, dot, vars, lenient)?;
                if truthy(&v) {
                    exec(body, &v, vars, lenient, out)?;
                } else {
                    exec(otherwise, dot, vars, lenient, out)?;
                }
                vars.truncate(mark);
            }
            Node::Range {
                pipe,
                body,
                otherwise,
            } => {
                let mark = vars.len();
                let v = eval_pipe(pipe, dot, vars, lenient)?;
                let items: Vec<(Value, Value)> = match &v {
                    Value::Array(a) => a
                        .iter()
                        .enumerate()
                        .map(|(i, x)| (Value::from(i), x.clone()))
                        .collect(),
                    Value::Object(m) => m
                        .iter()
                        .collect::<BTreeMap<_, _>>()
                        .into_iter()
                        .map(|(k, x)| (Value::String(k.clone()), x.clone()))
                        .collect(),
                    Value::Null => Vec::new(),
                    Value::Number(n) if n.as_u64().is_some() => (0..n.as_u64().unwrap_or(0))
                        .map(|i| (Value::from(i), Value::from(i)))
                        .collect(),
                    other => {
                        return err(format!("range can't iterate over {}", print_value(other)))
                    }
                };
                if items.is_empty() {
                    exec(otherwise, dot, vars, lenient, out)?;
                }
                for (k, x) in items {
                    let inner = vars.len();
                    match pipe.decl.as_slice() {
                        [] => {}
                        [v] => vars.push((v.clone(), x.clone())),
                        [kn, vn] => {
                            vars.push((kn.clone(), k));
                            vars.push((vn.clone(), x.clone()));
                        }
                        _ => return err("range: too many variables"),
                    }
                    exec(body, &x, vars, lenient, out)?;
                    vars.truncate(inner);
                }
                vars.truncate(mark);
            }
        }
    }
    Ok(())
}

fn field(v: &Value, path: &[String], lenient: bool) -> TResult<Value> {
    let mut cur = v.clone();
    for name in path {
        cur = match &cur {
            Value::Object(m) => match m.get(name) {
                Some(x) => x.clone(),
                None if lenient => Value::String(String::new()),
                // A map (labels, env) has no such key: Go prints "<no value>". A record whose
                // fields are all capitalized has no such field: docker refuses.
                None if is_record(m) => {
                    return err(format!(
                        "can't evaluate field {name} (fields here: {})",
                        m.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                }
                None => Value::String("<no value>".into()),
            },
            Value::Null if lenient => Value::String(String::new()),
            Value::Null => Value::Null,
            other => {
                return err(format!(
                    "can't evaluate field {name} in {}",
                    print_value(other)
                ))
            }
        };
    }
    Ok(cur)
}

fn is_record(m: &Map<String, Value>) -> bool {
    !m.is_empty()
        && m.keys()
            .all(|k| k.chars().next().is_some_and(|c| c.is_ascii_uppercase()))
}

fn eval_arg(a: &Arg, dot: &Value, vars: &mut Vars, lenient: bool) -> TResult<Value> {
    match a {
        Arg::Field(p) => field(dot, p, lenient),
        Arg::Var(name, p) => {
            let Some((_, v)) = vars.iter().rev().find(|(n, _)| n == name) else {
                return err(format!("undefined variable ${name}"));
            };
            let v = v.clone();
            field(&v, p, lenient)
        }
        Arg::Lit(v) => Ok(v.clone()),
        Arg::Sub(p, chain) => {
            let v = eval_pipe(p, dot, vars, lenient)?;
            field(&v, chain, lenient)
        }
        Arg::Func(f) => call(f, Vec::new()),
    }
}

fn eval_pipe(p: &Pipeline, dot: &Value, vars: &mut Vars, lenient: bool) -> TResult<Value> {
    let mut prev: Option<Value> = None;
    for cmd in &p.cmds {
        let v = match &cmd[0] {
            Arg::Func(f) => {
                let mut args = Vec::new();
                for a in &cmd[1..] {
                    args.push(eval_arg(a, dot, vars, lenient)?);
                }
                if let Some(pv) = prev.take() {
                    args.push(pv);
                }
                call(f, args)?
            }
            a => {
                if cmd.len() > 1 || prev.is_some() {
                    return err("only a function takes arguments");
                }
                eval_arg(a, dot, vars, lenient)?
            }
        };
        prev = Some(v);
    }
    Ok(prev.unwrap_or(Value::Null))
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// Go's `%v` of a JSON value.
pub fn print_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(print_value).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(m) => {
            let sorted: BTreeMap<_, _> = m.iter().collect();
            format!(
                "map[{}]",
                sorted
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", print_value(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    }
}

fn cmp(a: &Value, b: &Value) -> TResult<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .zip(y.as_f64())
            .and_then(|(x, y)| x.partial_cmp(&y))
            .ok_or_else(|| TemplateError("incomparable numbers".into())),
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => err(format!(
            "incompatible types for comparison: {} and {}",
            print_value(a),
            print_value(b)
        )),
    }
}

fn arity(f: &str, args: &[Value], n: usize) -> TResult<()> {
    if args.len() != n {
        return err(format!("{f} wants {n} argument(s), got {}", args.len()));
    }
    Ok(())
}

fn as_str(f: &str, v: &Value) -> TResult<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => err(format!("{f}: {} is not a string", print_value(other))),
    }
}

fn as_int(f: &str, v: &Value) -> TResult<i64> {
    v.as_i64()
        .ok_or_else(|| TemplateError(format!("{f}: {} is not an integer", print_value(v))))
}

fn call(f: &str, args: Vec<Value>) -> TResult<Value> {
    Ok(match f {
        "json" => {
            arity(f, &args, 1)?;
            Value::String(serde_json::to_string(&args[0]).unwrap_or_default())
        }
        "join" => {
            arity(f, &args, 2)?;
            let sep = as_str(f, &args[1])?;
            match &args[0] {
                Value::Array(a) => {
                    Value::String(a.iter().map(print_value).collect::<Vec<_>>().join(&sep))
                }
                Value::Null => Value::String(String::new()),
                other => return err(format!("join: {} is not a list", print_value(other))),
            }
        }
        "split" => {
            arity(f, &args, 2)?;
            let s = as_str(f, &args[0])?;
            let sep = as_str(f, &args[1])?;
            Value::Array(
                s.split(sep.as_str())
                    .map(|p| Value::String(p.into()))
                    .collect(),
            )
        }
        "lower" => {
            arity(f, &args, 1)?;
            Value::String(print_value(&args[0]).to_lowercase())
        }
        "upper" => {
            arity(f, &args, 1)?;
            Value::String(print_value(&args[0]).to_uppercase())
        }
        "title" => {
            arity(f, &args, 1)?;
            let s = print_value(&args[0]);
            let mut out = String::new();
            let mut start = true;
            for c in s.chars() {
                if start {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = !c.is_alphanumeric();
            }
            Value::String(out)
        }
        "pad" => {
            arity(f, &args, 3)?;
            let s = print_value(&args[0]);
            let l = as_int(f, &args[1])?.max(0) as usize;
            let r = as_int(f, &args[2])?.max(0) as usize;
            Value::String(format!("{}{s}{}", " ".repeat(l), " ".repeat(r)))
        }
        "truncate" => {
            arity(f, &args, 2)?;
            let s = print_value(&args[0]);
            let n = as_int(f, &args[1])?.max(0) as usize;
            Value::String(s.chars().take(n).collect())
        }
        "len" => {
            arity(f, &args, 1)?;
            Value::from(match &args[0] {
                Value::String(s) => s.len(),
                Value::Array(a) => a.len(),
                Value::Object(m) => m.len(),
                Value::Null => 0,
                other => return err(format!("len of {}", print_value(other))),
            })
        }
        "index" => {
            if args.is_empty() {
                return err("index wants at least 1 argument");
            }
            let mut cur = args[0].clone();
            for k in &args[1..] {
                cur = match (&cur, k) {
                    (Value::Array(a), k) => {
                        let i = as_int(f, k)?;
                        usize::try_from(i)
                            .ok()
                            .and_then(|i| a.get(i))
                            .cloned()
                            .ok_or_else(|| TemplateError(format!("index out of range: {i}")))?
                    }
                    (Value::Object(m), Value::String(k)) => m
                        .get(k)
                        .cloned()
                        .unwrap_or(Value::String("<no value>".into())),
                    (Value::Null, _) => Value::Null,
                    (c, k) => {
                        return err(format!(
                            "can't index {} with {}",
                            print_value(c),
                            print_value(k)
                        ))
                    }
                };
            }
            cur
        }
        "slice" => {
            if args.is_empty() || args.len() > 3 {
                return err("slice wants 1 to 3 arguments");
            }
            let idx: Vec<usize> = args[1..]
                .iter()
                .map(|a| as_int(f, a).map(|i| i.max(0) as usize))
                .collect::<TResult<_>>()?;
            match &args[0] {
                Value::String(s) => {
                    let chars: Vec<char> = s.chars().collect();
                    let lo = idx.first().copied().unwrap_or(0).min(chars.len());
                    let hi = idx.get(1).copied().unwrap_or(chars.len()).min(chars.len());
                    Value::String(chars[lo..hi.max(lo)].iter().collect())
                }
                Value::Array(a) => {
                    let lo = idx.first().copied().unwrap_or(0).min(a.len());
                    let hi = idx.get(1).copied().unwrap_or(a.len()).min(a.len());
                    Value::Array(a[lo..hi.max(lo)].to_vec())
                }
                other => return err(format!("can't slice {}", print_value(other))),
            }
        }
        "eq" => {
            if args.len() < 2 {
                return err("eq wants at least 2 arguments");
            }
            Value::Bool(args[1..].iter().any(|b| loose_eq(&args[0], b)))
        }
        "ne" => {
            arity(f, &args, 2)?;
            Value::Bool(!loose_eq(&args[0], &args[1]))
        }
        "lt" | "le" | "gt" | "ge" => {
            arity(f, &args, 2)?;
            let o = cmp(&args[0], &args[1])?;
            use std::cmp::Ordering::*;
            Value::Bool(match f {
                "lt" => o == Less,
                "le" => o != Greater,
                "gt" => o == Greater,
                _ => o != Less,
            })
        }
        "not" => {
            arity(f, &args, 1)?;
            Value::Bool(!truthy(&args[0]))
        }
        "and" => {
            if args.is_empty() {
                return err("and wants arguments");
            }
            args.iter()
                .find(|a| !truthy(a))
                .unwrap_or(&args[args.len() - 1])
                .clone()
        }
        "or" => {
            if args.is_empty() {
                return err("or wants arguments");
            }
            args.iter()
                .find(|a| truthy(a))
                .unwrap_or(&args[args.len() - 1])
                .clone()
        }
        "print" => Value::String(go_print(&args)),
        "println" => {
            Value::String(args.iter().map(print_value).collect::<Vec<_>>().join(" ") + "\n")
        }
        "printf" => {
            if args.is_empty() {
                return err("printf wants a format");
            }
            Value::String(printf(&as_str(f, &args[0])?, &args[1..])?)
        }
        other => return err(format!("function {other:?} is not supported")),
    })
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Go's `fmt.Sprint`: spaces only between operands that are not both strings.
fn go_print(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !(a.is_string() || args[i - 1].is_string()) {
            out.push(' ');
        }
        out.push_str(&print_value(a));
    }
    out
}

fn printf(fmt: &str, args: &[Value]) -> TResult<String> {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut n = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut width = String::new();
        while let Some(&d) = it.peek() {
            if d.is_ascii_digit() || d == '-' {
                width.push(d);
                it.next();
            } else {
                break;
            }
        }
        let Some(verb) = it.next() else {
            return err("printf: format ends with %");
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(n) else {
            return err("printf: too few arguments");
        };
        n += 1;
        let text = match verb {
            'v' | 's' | 'd' => print_value(arg),
            'q' => serde_json::to_string(&print_value(arg)).unwrap_or_default(),
            other => {
                return err(format!(
                    "printf: %{other} is not supported (use %v %s %d %q)"
                ))
            }
        };
        let w: i64 = width.parse().unwrap_or(0);
        let len = text.chars().count() as i64;
        if w < 0 && len < -w {
            let _ = write!(out, "{text}{}", " ".repeat((-w - len) as usize));
        } else if w > len {
            let _ = write!(out, "{}{text}", " ".repeat((w - len) as usize));
        } else {
            out.push_str(&text);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v).unwrap()
    }

    #[test]
    fn fields_and_functions() {
        let v = json!({"Names": "web", "ID": "abc", "State": {"Status": "running", "Pid": 7},
                       "Config": {"Labels": {"a": "1", "b": "2"}, "Env": ["X=1", "Y=2"]}});
        assert_eq!(r("{{.Names}}", &v), "web");
        assert_eq!(r("{{.State.Status}} {{.State.Pid}}", &v), "running 7");
        assert_eq!(r("{{json .State}}", &v), r#"{"Pid":7,"Status":"running"}"#);
        assert_eq!(r("{{join .Config.Env \",\"}}", &v), "X=1,Y=2");
        assert_eq!(r("{{.Names | upper}}", &v), "WEB");
        assert_eq!(
            r(
                "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
                &v
            ),
            "a=1;b=2;"
        );
        assert_eq!(r("{{range .Config.Env}}[{{.}}]{{end}}", &v), "[X=1][Y=2]");
        assert_eq!(
            r(
                "{{if eq .State.Status \"running\"}}up{{else}}down{{end}}",
                &v
            ),
            "up"
        );
        assert_eq!(
            r(
                "{{if .Missing}}x{{else if .Names}}y{{end}}",
                &json!({"Names": "n", "Missing": false})
            ),
            "y"
        );
        assert_eq!(r("{{with .State}}{{.Pid}}{{end}}", &v), "7");
        assert_eq!(r("{{index .Config.Labels \"b\"}}", &v), "2");
        assert_eq!(r("{{.Config.Labels.zzz}}", &v), "<no value>");
        assert_eq!(r("{{(index .Config.Env 1)}}", &v), "Y=2");
        assert_eq!(r("{{printf \"%-5s|\" .Names}}", &v), "web  |");
        assert_eq!(r("{{len .Config.Env}} {{- \" x\" -}} !", &v), "2 x!");
        assert_eq!(r("a\\tb", &v), "a\tb");
    }

    #[test]
    fn errors_are_clear() {
        let e = Template::parse("{{.Names").unwrap_err();
        assert!(e.contains("unclosed"), "{e}");
        let e = Template::parse("{{template \"x\"}}").unwrap_err();
        assert!(e.contains("not supported"), "{e}");
        let e = Template::parse("{{frobnicate .}}").unwrap_err();
        assert!(e.contains("\"frobnicate\" is not supported"), "{e}");
        let e = Template::parse("{{if .A}}x").unwrap_err();
        assert!(e.contains("without {{end}}"), "{e}");
        let t = Template::parse("{{.Nope}}").unwrap();
        let e = t.render(&json!({"Names": "x"})).unwrap_err().to_string();
        assert!(e.contains("can't evaluate field Nope"), "{e}");
    }

    #[test]
    fn table_heading_and_alignment() {
        let t = Template::parse("table {{.ID}}\\t{{.Names}}").unwrap();
        assert!(t.table);
        let out = t
            .render_all(
                &[
                    json!({"ID": "1", "Names": "a-long-name-here"}),
                    json!({"ID": "22", "Names": "b"}),
                ],
                &[("ID", "CONTAINER ID"), ("Names", "NAMES")],
            )
            .unwrap();
        assert_eq!(
            out,
            "CONTAINER ID   NAMES\n1              a-long-name-here\n22             b\n"
        );
    }
}
