//! Kubernetes name rules (DNS-1123 labels and subdomains, DNS-1035 labels, label keys and
//! values, port names) and turning other text into valid names.

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Dot-separated DNS-1123 labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A DNS-1123 label that starts with a letter (Service names).
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

/// A DNS-1123 label made from `s`: lower case, every other character a `-`, runs of `-`
/// folded, trimmed to 63 characters; `fallback` when nothing is left.
pub fn dns1123_label(s: &str, fallback: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out = out.trim_matches('-').to_string();
    if out.len() > 63 {
        out.truncate(63);
        out = out.trim_end_matches('-').to_string();
    }
    if out.is_empty() {
        fallback.to_string()
    } else {
        out
    }
}

/// A DNS-1123 subdomain made from `s` (dots kept between valid labels).
pub fn dns1123_subdomain(s: &str, fallback: &str) -> String {
    let labels: Vec<String> = s
        .split('.')
        .filter(|l| !l.is_empty())
        .map(|l| dns1123_label(l, ""))
        .filter(|l| !l.is_empty())
        .collect();
    let mut out = labels.join(".");
    if out.len() > 253 {
        out.truncate(253);
        out = out.trim_end_matches(['-', '.']).to_string();
    }
    if out.is_empty() {
        fallback.to_string()
    } else {
        out
    }
}

/// A DNS-1035 label made from `s`: like [`dns1123_label`], with `a-` in front of a leading
/// digit.
pub fn dns1035_label(s: &str, fallback: &str) -> String {
    let l = dns1123_label(s, fallback);
    if l.starts_with(|c: char| c.is_ascii_digit()) {
        let mut p = format!("a-{l}");
        if p.len() > 63 {
            p.truncate(63);
            p = p.trim_end_matches('-').to_string();
        }
        p
    } else {
        l
    }
}

/// A label value: empty, or at most 63 of `[A-Za-z0-9._-]` starting and ending alphanumeric.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// A label or annotation key: `[prefix/]name`, the prefix a DNS-1123 subdomain, the name at
/// most 63 of `[A-Za-z0-9._-]` starting and ending alphanumeric.
pub fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if !is_dns1123_subdomain(p) {
            return false;
        }
    }
    !name.is_empty() && is_label_value(name)
}

/// A ConfigMap or Secret key: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
pub fn is_config_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A ConfigMap or Secret key made from `s`.
pub fn config_key(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(253);
    if out.is_empty() || out == "." || out == ".." {
        out = format!("key{out}");
    }
    out
}

/// An IANA service name, as container port names must be: at most 15 of `[a-z0-9-]`, at least
/// one letter, no leading, trailing or doubled `-`.
pub fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        for good in ["a", "chatbot", "my-agent-2", &"a".repeat(63)] {
            assert!(is_dns1123_label(good), "{good}");
        }
        for bad in ["", "A", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
        assert!(is_dns1123_subdomain("agent-secrets.v1"));
        assert!(!is_dns1123_subdomain("agent_secrets"));
        assert!(is_dns1035_label("a1"));
        assert!(!is_dns1035_label("1a"));
    }

    #[test]
    fn sanitising() {
        assert_eq!(dns1123_label("My_Agent.v2", "x"), "my-agent-v2");
        assert_eq!(dns1123_label("__", "x"), "x");
        assert_eq!(dns1123_label(&"a-".repeat(40), "x").len(), 63);
        assert!(is_dns1123_label(&dns1123_label(&"a-".repeat(40), "x")));
        assert_eq!(
            dns1123_subdomain("Agent_Secrets.Prod", "x"),
            "agent-secrets.prod"
        );
        assert_eq!(dns1035_label("1bot", "x"), "a-1bot");
        assert_eq!(dns1123_label("OPENAI_API_KEY", "x"), "openai-api-key");
        assert_eq!(config_key("a b/c"), "a_b_c");
        assert_eq!(config_key(".."), "key..");
    }

    #[test]
    fn label_keys_values_ports() {
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(is_qualified_name("team"));
        assert!(!is_qualified_name("a/b/c"));
        assert!(!is_qualified_name("bad key"));
        assert!(is_label_value(""));
        assert!(is_label_value("1.0.0"));
        assert!(!is_label_value("1.0.0+build"));
        assert!(is_port_name("tcp-8080"));
        assert!(!is_port_name("8080"));
        assert!(!is_port_name("a--b"));
        assert!(!is_port_name("this-is-too-long-name"));
    }
}
