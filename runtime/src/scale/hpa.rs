//! The Kubernetes HPA v2 algorithm as pure functions: the replica calculator for resource
//! utilization metrics (`desired = ceil(ready x utilization / target)` with the tolerance,
//! not-ready and missing-metric handling of `replica_calculator.go`), the largest proposal
//! over metrics, the stabilization windows of `horizontal.go` and the min/max bounds.
//!
//! Nothing here reads a clock or a file: the supervisor samples the replicas' cgroups and
//! feeds the numbers in, tests feed tables.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The HPA's default tolerance: no change while the usage ratio is within 10% of 1.
pub const TOLERANCE: f64 = 0.1;
/// The HPA's default scale-down stabilization window (`scaleDownDelay`).
pub const DEFAULT_SCALE_DOWN_WINDOW: Duration = Duration::from_secs(300);

/// Which resource a metric measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resource {
    Cpu,
    Memory,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
        }
    }
}

/// What a replica is to the calculator (`groupPods` of the HPA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    /// Running and ready (healthy, or without a health check).
    Ready,
    /// Running, not ready yet (health check starting or failing): its CPU sample would
    /// mislead, so a scale-up counts it as idle and a scale-down leaves it out.
    Unready,
    /// Being deleted, failed or not started: not counted at all.
    Ignored,
}

/// One replica's input: its state, its usage (CPU millicores or memory bytes; `None` when no
/// sample could be taken) and its request in the same unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaMetric {
    pub state: ReplicaState,
    pub usage: Option<u64>,
    pub request: u64,
}

/// The calculator's answer for one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Proposal {
    pub replicas: u32,
    /// Average utilization of the ready replicas with samples, in percent of the request.
    pub utilization: u32,
    /// Their average usage (millicores or bytes).
    pub average_usage: u64,
}

/// Why no proposal could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpaError {
    #[error("no replicas to measure")]
    NoReplicas,
    #[error("no metrics from ready replicas (they may be unready)")]
    NoMetrics,
    #[error("the replicas have no {0} request")]
    NoRequests(&'static str),
    #[error("the target utilization must be above zero")]
    ZeroTarget,
}

/// Whether `ratio` is close enough to 1 to change nothing.
fn within(ratio: f64, tolerance: f64) -> bool {
    (ratio - 1.0).abs() <= tolerance
}

/// `GetResourceUtilizationRatio`: (ratio, utilization %, average usage) over `samples`
/// (usage, request). The utilization is an integer percentage, as the HPA's.
fn utilization_ratio(samples: &[(u64, u64)], target: u32) -> Result<(f64, u32, u64), HpaError> {
    let usage: u128 = samples.iter().map(|s| u128::from(s.0)).sum();
    let requests: u128 = samples.iter().map(|s| u128::from(s.1)).sum();
    if requests == 0 {
        return Err(HpaError::NoRequests("resource"));
    }
    let utilization = u32::try_from(usage * 100 / requests).unwrap_or(u32::MAX);
    let average = u64::try_from(usage / samples.len().max(1) as u128).unwrap_or(u64::MAX);
    Ok((
        f64::from(utilization) / f64::from(target),
        utilization,
        average,
    ))
}

/// The replica count one utilization metric asks for (`GetResourceReplicas`): `current`
/// replicas, their states and samples, the target utilization in percent.
pub fn resource_replicas(
    current: u32,
    replicas: &[ReplicaMetric],
    resource: Resource,
    target: u32,
    tolerance: f64,
) -> Result<Proposal, HpaError> {
    if target == 0 {
        return Err(HpaError::ZeroTarget);
    }
    if replicas.is_empty() {
        return Err(HpaError::NoReplicas);
    }
    let mut ready: Vec<(u64, u64)> = Vec::new();
    let mut unready: Vec<u64> = Vec::new();
    let mut missing: Vec<u64> = Vec::new();
    for r in replicas {
        match (r.state, r.usage) {
            (ReplicaState::Ignored, _) => {}
            (_, None) => missing.push(r.request),
            // Readiness only matters for CPU, as in the HPA.
            (ReplicaState::Unready, Some(_)) if resource == Resource::Cpu => {
                unready.push(r.request)
            }
            (_, Some(u)) => ready.push((u, r.request)),
        }
    }
    if ready.is_empty() {
        return Err(HpaError::NoMetrics);
    }
    if ready.iter().all(|s| s.1 == 0) {
        return Err(HpaError::NoRequests(resource.as_str()));
    }
    let (ratio, utilization, average_usage) = utilization_ratio(&ready, target)?;
    let keep = Proposal {
        replicas: current,
        utilization,
        average_usage,
    };
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if within(ratio, tolerance) {
            return Ok(keep);
        }
        return Ok(Proposal {
            replicas: ceil_replicas(ratio * ready.len() as f64),
            ..keep
        });
    }
    let mut all = ready.clone();
    if ratio < 1.0 {
        // On a scale-down a replica without a sample counts as using its whole request (or
        // the target, when that is above 100%).
        let fallback = u64::from(target.max(100));
        all.extend(missing.iter().map(|req| (req * fallback / 100, *req)));
    } else if ratio > 1.0 {
        // On a scale-up it counts as idle.
        all.extend(missing.iter().map(|req| (0, *req)));
    }
    if scale_up_with_unready {
        all.extend(unready.iter().map(|req| (0, *req)));
    }
    let (new_ratio, _, _) = utilization_ratio(&all, target)?;
    if within(new_ratio, tolerance)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(keep);
    }
    let replicas = ceil_replicas(new_ratio * all.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(keep);
    }
    Ok(Proposal { replicas, ..keep })
}

fn ceil_replicas(x: f64) -> u32 {
    let c = x.ceil();
    if c <= 0.0 {
        0
    } else if c >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        c as u32
    }
}

/// One recommendation kept for the stabilization windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recommendation {
    pub replicas: u32,
    #[serde(with = "crate::scale::time_serde")]
    pub at: SystemTime,
}

/// How the recommendations are smoothed (`behavior` of an HPA v2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behavior {
    /// Scale up only to the lowest recommendation of this window (`scaleUpDelay`; 0: at once).
    pub scale_up_window: Duration,
    /// Scale down only to the highest recommendation of this window (`scaleDownDelay`).
    pub scale_down_window: Duration,
    pub min_replicas: u32,
    pub max_replicas: u32,
}

/// The decision for one round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub current: u32,
    /// The largest proposal over the metrics, before stabilization and bounds.
    pub proposed: u32,
    pub desired: u32,
    /// `kubectl describe hpa`-style: why `desired` is what it is.
    pub reason: String,
}

/// Forget recommendations older than both windows.
pub fn prune_history(history: &mut Vec<Recommendation>, behavior: &Behavior, now: SystemTime) {
    let keep = behavior.scale_up_window.max(behavior.scale_down_window);
    history.retain(|r| now.duration_since(r.at).map(|d| d <= keep).unwrap_or(true));
}

/// `stabilizeRecommendationWithBehaviors` and the bounds: from the proposals of this round
/// (one per metric; `None` when a metric could not be computed), the history of earlier
/// recommendations (this round's is appended) and the current count, the count to run.
pub fn decide(
    current: u32,
    proposals: &[Option<u32>],
    history: &mut Vec<Recommendation>,
    behavior: &Behavior,
    now: SystemTime,
) -> Decision {
    let min = behavior.min_replicas.max(1);
    let max = behavior.max_replicas.max(min);
    let Some(proposed) = proposals.iter().flatten().copied().max() else {
        // No metric could be computed: keep the count (within the bounds).
        let desired = current.clamp(min, max);
        return Decision {
            current,
            proposed: current,
            desired,
            reason: if desired == current {
                "no metrics could be computed; keeping the current count".into()
            } else {
                format!("no metrics; {desired} is the nearest count within {min}..{max}")
            },
        };
    };
    let in_window =
        |r: &Recommendation, w: Duration| now.duration_since(r.at).map(|d| d < w).unwrap_or(true);
    let mut up = proposed;
    let mut down = proposed;
    for r in history.iter() {
        if in_window(r, behavior.scale_up_window) {
            up = up.min(r.replicas);
        }
        if in_window(r, behavior.scale_down_window) {
            down = down.max(r.replicas);
        }
    }
    history.push(Recommendation {
        replicas: proposed,
        at: now,
    });
    prune_history(history, behavior, now);
    let mut stabilized = current;
    if stabilized < up {
        stabilized = up;
    }
    if stabilized > down {
        stabilized = down;
    }
    let desired = stabilized.clamp(min, max);
    let reason = if desired != stabilized {
        if stabilized > max {
            format!("the desired count {stabilized} is more than maxReplicas {max}")
        } else {
            format!("the desired count {stabilized} is less than minReplicas {min}")
        }
    } else if proposed > current && stabilized < proposed {
        format!(
            "recent recommendations were lower: scaling up to {stabilized} of {proposed} (scaleUpDelay {})",
            humantime::format_duration(behavior.scale_up_window)
        )
    } else if proposed < current && stabilized > proposed {
        format!(
            "recent recommendations were higher: holding {stabilized} instead of {proposed} (scaleDownDelay {})",
            humantime::format_duration(behavior.scale_down_window)
        )
    } else if desired > current {
        "the metrics are above target".to_string()
    } else if desired < current {
        "all metrics below target".to_string()
    } else {
        "the metrics are within the tolerance of the target".to_string()
    };
    Decision {
        current,
        proposed,
        desired,
        reason,
    }
}

#[cfg(test)]
#[path = "hpa_tests.rs"]
mod tests;
