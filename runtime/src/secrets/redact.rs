//! `***` for values that must not be shown: secret environment variables, and `-e` variables
//! whose names look secret (`OPENAI_API_KEY`, `DB_PASSWORD`, `GITHUB_TOKEN`, ...).

use oci_spec::runtime::Spec;

use crate::agent::{Agent, EnvSource};

/// What a redacted value shows.
pub const MASK: &str = "***";

/// Whether a variable named `name` probably holds a secret.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    const ANYWHERE: &[&str] = &[
        "SECRET",
        "TOKEN",
        "PASSWORD",
        "PASSWD",
        "PASSPHRASE",
        "CREDENTIAL",
        "PRIVATE",
        "APIKEY",
        "API_KEY",
        "ACCESS_KEY",
        "ACCESSKEY",
    ];
    const WORDS: &[&str] = &[
        "KEY",
        "AUTH",
        "PASS",
        "PWD",
        "COOKIE",
        "SESSION",
        "SIGNATURE",
    ];
    if ANYWHERE.iter().any(|w| upper.contains(w)) {
        return true;
    }
    // `PWD` alone is the shell's working folder.
    upper != "PWD"
        && upper
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|t| WORDS.contains(&t))
}

/// `KEY=***` for entries of a `KEY=VALUE` list whose key looks secret.
pub fn env_list(env: &mut [String]) {
    for e in env.iter_mut() {
        if let Some((k, v)) = e.split_once('=') {
            if looks_secret(k) && !v.is_empty() {
                *e = format!("{k}={MASK}");
            }
        }
    }
}

/// A spec as shown to users: its process's secret-looking variables masked.
pub fn spec(spec: &mut Spec) {
    if let Some(p) = spec.process_mut() {
        if let Some(mut env) = p.env().clone() {
            env_list(&mut env);
            p.set_env(Some(env));
        }
    }
}

/// An agent as shown to users: literal values of secret-looking variables masked.
pub fn agent(agent: &mut Agent) {
    for e in agent.spec.environment.iter_mut() {
        if let EnvSource::Value { value } = &mut e.source {
            if looks_secret(&e.name) && !value.is_empty() {
                *value = MASK.to_string();
            }
        }
    }
}

/// A container's record as shown to users (`aac inspect`): its agent and its spec masked.
pub fn record(rec: &mut crate::record::ContainerRecord) {
    agent(&mut rec.agent);
    spec(&mut rec.spec);
}

/// Text with `NAME=VALUE` (and `NAME: VALUE`, `"NAME":"VALUE"`) spans masked where `NAME`
/// looks secret (error messages quoting a spec, an environment).
pub fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        let (before, after) = rest.split_at(i);
        let name_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.'))
            .map_or(0, |j| j + 1);
        let name = &before[name_start..];
        out.push_str(before);
        out.push('=');
        let after = &after[1..];
        if !name.is_empty() && looks_secret(name) {
            let end = after
                .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ',' | ']' | '}'))
                .unwrap_or(after.len());
            // Usage text (`--from-file KEY=PATH`) stays as it is.
            let placeholder = matches!(
                after[..end].trim_end_matches(['`', '.', ')', ':', ';']),
                "PATH" | "VAR" | "VALUE"
            );
            if placeholder {
                out.push_str(&after[..end]);
            } else if end > 0 {
                out.push_str(MASK);
            }
            rest = &after[end..];
        } else {
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for n in [
            "OPENAI_API_KEY",
            "DB_PASSWORD",
            "GITHUB_TOKEN",
            "aws_secret_access_key",
            "KEY",
            "X_AUTH",
        ] {
            assert!(looks_secret(n), "{n}");
        }
        for n in [
            "PATH",
            "HOME",
            "PWD",
            "MODEL_NAME",
            "LOG_LEVEL",
            "KEYBOARD_LAYOUT",
        ] {
            assert!(!looks_secret(n), "{n}");
        }
    }

    #[test]
    fn masks() {
        let mut env = vec!["PATH=/bin".to_string(), "API_KEY=sk-123".to_string()];
        env_list(&mut env);
        assert_eq!(env, ["PATH=/bin", "API_KEY=***"]);
        assert_eq!(
            text("bad env [\"API_KEY=sk-1\", \"A=b\"] TOKEN=x y"),
            "bad env [\"API_KEY=***\", \"A=b\"] TOKEN=*** y"
        );
        let usage = "use --from-file KEY=PATH, --from-env KEY=VAR or `-e KEY=VALUE`";
        assert_eq!(text(usage), usage);
    }
}
