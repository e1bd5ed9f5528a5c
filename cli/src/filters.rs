//! `ps --filter KEY=VALUE`, docker's keys: the same key given twice matches either value,
//! different keys must all match.

use std::collections::BTreeMap;

use aac_runtime::engine::{Container, Engine};
use anyhow::anyhow;

use crate::exit::{CliError, CliResult};
use crate::shape;

const KEYS: &[&str] = &[
    "id", "name", "status", "label", "ancestor", "health", "exited", "network", "backend",
];
const STATUSES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];
const HEALTH: &[&str] = &["starting", "healthy", "unhealthy", "none"];

#[derive(Debug, Default)]
pub struct PsFilters {
    by_key: BTreeMap<String, Vec<String>>,
}

impl PsFilters {
    pub fn parse(args: &[String]) -> CliResult<PsFilters> {
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for a in args {
            let Some((k, v)) = a.split_once('=') else {
                return Err(CliError::aac(anyhow!(
                    "--filter {a:?}: expected KEY=VALUE (keys: {})",
                    KEYS.join(", ")
                )));
            };
            let k = k.trim().to_ascii_lowercase();
            if !KEYS.contains(&k.as_str()) {
                return Err(CliError::aac(anyhow!(
                    "--filter {a:?}: unknown key {k:?} (keys: {})",
                    KEYS.join(", ")
                )));
            }
            let bad = |allowed: &[&str]| {
                CliError::aac(anyhow!(
                    "--filter {a:?}: {v:?} is not one of {}",
                    allowed.join(", ")
                ))
            };
            match k.as_str() {
                "status" if !STATUSES.contains(&v) => return Err(bad(STATUSES)),
                "health" if !HEALTH.contains(&v) => return Err(bad(HEALTH)),
                "exited" if v.parse::<i32>().is_err() => {
                    return Err(CliError::aac(anyhow!(
                        "--filter {a:?}: {v:?} is not an exit code"
                    )))
                }
                _ => {}
            }
            by_key.entry(k).or_default().push(v.to_string());
        }
        Ok(PsFilters { by_key })
    }

    /// A status or exit filter looks at stopped containers too (docker's rule).
    pub fn implies_all(&self) -> bool {
        self.by_key.contains_key("status") || self.by_key.contains_key("exited")
    }

    pub fn matches(&self, engine: &Engine, c: &Container) -> bool {
        self.by_key
            .iter()
            .all(|(k, vals)| vals.iter().any(|v| one(engine, c, k, v)))
    }
}

fn one(engine: &Engine, c: &Container, key: &str, v: &str) -> bool {
    let rec = &c.rec;
    match key {
        "id" => rec.id.starts_with(v),
        // docker matches names as a regular expression, unanchored; a plain substring is
        // what scripts use, and `^name$` anchors work too.
        "name" => name_matches(&rec.name, v),
        "status" => shape::state_word(c) == v,
        "health" => shape::health_word(c) == v,
        "exited" => {
            c.status.phase == aac_runtime::status::Phase::Exited
                && c.status.exit_code.map(|e| e.to_string()).as_deref() == Some(v)
        }
        "label" => {
            let labels = &rec.agent.metadata.labels;
            match v.split_once('=') {
                Some((lk, lv)) => labels.get(lk).is_some_and(|x| x == lv),
                None => labels.contains_key(v),
            }
        }
        "ancestor" => rec
            .image
            .as_deref()
            .is_some_and(|img| image_matches(img, v)),
        "network" => {
            engine
                .attachment(c)
                .map(|a| a.network)
                .unwrap_or_else(|| rec.agent.spec.network.mode.to_string())
                == v
        }
        "backend" => rec.backend.to_string() == v,
        _ => false,
    }
}

/// `^` and `$` anchors, else a substring.
fn name_matches(name: &str, pat: &str) -> bool {
    let (start, p) = match pat.strip_prefix('^') {
        Some(p) => (true, p),
        None => (false, pat),
    };
    let (end, p) = match p.strip_suffix('$') {
        Some(p) => (true, p),
        None => (false, p),
    };
    match (start, end) {
        (true, true) => name == p,
        (true, false) => name.starts_with(p),
        (false, true) => name.ends_with(p),
        (false, false) => name.contains(p),
    }
}

/// `busybox` matches `busybox`, `busybox:latest`, `docker.io/library/busybox:latest`.
fn image_matches(image: &str, want: &str) -> bool {
    let norm = |s: &str| -> String {
        let s = s
            .strip_prefix("docker.io/library/")
            .or_else(|| s.strip_prefix("docker.io/"))
            .unwrap_or(s);
        let last = s.rsplit('/').next().unwrap_or(s);
        if last.contains(':') || s.contains('@') {
            s.to_string()
        } else {
            format!("{s}:latest")
        }
    };
    image == want || norm(image) == norm(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_images() {
        assert!(name_matches("web-1", "web"));
        assert!(name_matches("web-1", "^web-1$"));
        assert!(!name_matches("web-1", "^eb"));
        assert!(image_matches("docker.io/library/busybox:latest", "busybox"));
        assert!(image_matches("busybox:latest", "busybox:latest"));
        assert!(!image_matches("busybox:1", "busybox"));
    }

    #[test]
    fn bad_filters_are_refused() {
        assert!(PsFilters::parse(&["nope".into()]).is_err());
        assert!(PsFilters::parse(&["color=red".into()]).is_err());
        assert!(PsFilters::parse(&["status=sleepy".into()]).is_err());
        assert!(PsFilters::parse(&["status=exited".into()])
            .unwrap()
            .implies_all());
    }
}
