//! What happened to a container: written by its monitor, read by `aac ps`, `inspect`, `wait`.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// Lifecycle phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Recorded, not started yet.
    #[default]
    Created,
    Running,
    /// Exited and waiting for its restart back-off to pass.
    Restarting,
    Exited,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    #[default]
    Starting,
    Healthy,
    Unhealthy,
}

impl std::fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HealthStatus::Starting => "health: starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        })
    }
}

/// One health probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeResult {
    pub start: String,
    pub end: String,
    pub healthy: bool,
    /// Exit code of a command probe (0 healthy); for other probes 0 or 1.
    pub exit_code: i32,
    /// HTTP status of an http probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Output or error text, cut to [`MAX_PROBE_OUTPUT`] bytes.
    pub output: String,
}

/// Probe output kept per result.
pub const MAX_PROBE_OUTPUT: usize = 4096;
/// Probe results kept.
pub const PROBE_HISTORY: usize = 5;

/// Health as `inspect` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: HealthStatus,
    pub failing_streak: u32,
    /// The last [`PROBE_HISTORY`] results, oldest first.
    pub log: Vec<ProbeResult>,
}

impl Health {
    /// Record a probe result with docker's rules: a success makes the container healthy; a
    /// failure during the start period does not count; `retries` consecutive failures after it
    /// make it unhealthy. Returns the new status when it changed.
    pub fn record(
        &mut self,
        result: ProbeResult,
        in_start_period: bool,
        retries: u32,
    ) -> Option<HealthStatus> {
        let before = self.status;
        if result.healthy {
            self.failing_streak = 0;
            self.status = HealthStatus::Healthy;
        } else if !in_start_period {
            self.failing_streak += 1;
            if self.failing_streak >= retries.max(1) {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.log.push(result);
        if self.log.len() > PROBE_HISTORY {
            let extra = self.log.len() - PROBE_HISTORY;
            self.log.drain(..extra);
        }
        (self.status != before).then_some(self.status)
    }
}

/// Everything the monitor records about a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub phase: Phase,
    /// Host PID of the container's main process while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The memory limit killed it.
    #[serde(default)]
    pub oom_killed: bool,
    /// Why it could not start or run, when aac knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub restart_count: u32,
    /// `aac stop`/`kill` ended it: restart policies do not apply.
    #[serde(default)]
    pub stopped_by_user: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Log lines dropped because the log could not be written (e.g. a full disk).
    #[serde(default)]
    pub log_dropped_lines: u64,
    /// PID of the aac-shim monitoring it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor_pid: Option<u32>,
}

/// Parse a time written by [`crate::logs::format_time`].
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()
}

/// docker's "About a minute", "5 seconds", "3 hours".
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".to_string(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".to_string(),
        7200..=172_799 => format!("{} hours", s / 3600),
        172_800..=1_209_599 => format!("{} days", s / 86400),
        1_209_600..=5_183_999 => format!("{} weeks", s / 604_800),
        5_184_000..=63_071_999 => format!("{} months", s / 2_592_000),
        _ => format!("{} years", s / 31_536_000),
    }
}

impl ContainerStatus {
    /// The STATUS column of `aac ps`: `Up 5 seconds (healthy)`, `Exited (1) 3 minutes ago`.
    pub fn describe(&self, now: SystemTime) -> String {
        let since = |t: &Option<String>| {
            t.as_deref()
                .and_then(parse_time)
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or_default()
        };
        match self.phase {
            Phase::Created => "Created".to_string(),
            Phase::Running => {
                let mut s = format!("Up {}", human_duration(since(&self.started_at)));
                if let Some(h) = &self.health {
                    s.push_str(&format!(" ({})", h.status));
                }
                s
            }
            Phase::Restarting => format!(
                "Restarting ({}) {} ago",
                self.exit_code.unwrap_or(0),
                human_duration(since(&self.finished_at))
            ),
            Phase::Exited => format!(
                "Exited ({}) {} ago",
                self.exit_code.unwrap_or(0),
                human_duration(since(&self.finished_at))
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::format_time;

    fn result(healthy: bool) -> ProbeResult {
        ProbeResult {
            start: String::new(),
            end: String::new(),
            healthy,
            exit_code: if healthy { 0 } else { 1 },
            http_status: None,
            output: String::new(),
        }
    }

    #[test]
    fn health_follows_docker_rules() {
        let mut h = Health::default();
        // failures in the start period do not count
        assert_eq!(h.record(result(false), true, 2), None);
        assert_eq!(h.failing_streak, 0);
        assert_eq!(h.record(result(true), true, 2), Some(HealthStatus::Healthy));
        assert_eq!(h.record(result(false), false, 2), None);
        assert_eq!(h.failing_streak, 1);
        assert_eq!(
            h.record(result(false), false, 2),
            Some(HealthStatus::Unhealthy)
        );
        for _ in 0..10 {
            h.record(result(false), false, 2);
        }
        assert_eq!(h.log.len(), PROBE_HISTORY);
        assert_eq!(
            h.record(result(true), false, 2),
            Some(HealthStatus::Healthy)
        );
        assert_eq!(h.failing_streak, 0);
    }

    #[test]
    fn ps_status_text() {
        let now = SystemTime::now();
        let st = ContainerStatus {
            phase: Phase::Running,
            started_at: Some(format_time(now - Duration::from_secs(5))),
            health: Some(Health {
                status: HealthStatus::Healthy,
                ..Health::default()
            }),
            ..ContainerStatus::default()
        };
        assert_eq!(st.describe(now), "Up 5 seconds (healthy)");
        let st = ContainerStatus {
            phase: Phase::Exited,
            exit_code: Some(1),
            finished_at: Some(format_time(now - Duration::from_secs(180))),
            ..ContainerStatus::default()
        };
        assert_eq!(st.describe(now), "Exited (1) 3 minutes ago");
    }
}
