//! Tables drawn from Kubernetes' `pkg/controller/podautoscaler/replica_calculator_test.go`
//! (same replicas, readiness, levels, requests and targets; expected counts and utilizations
//! as there) and from the stabilization rules of `horizontal.go`.

use std::time::{Duration, SystemTime};

use super::*;

use ReplicaState::{Ignored, Ready, Unready};

struct Case {
    name: &'static str,
    current: u32,
    resource: Resource,
    /// (state, usage, request)
    replicas: Vec<(ReplicaState, Option<u64>, u64)>,
    target: u32,
    expected: Result<(u32, u32), HpaError>,
}

fn cpu(
    name: &'static str,
    current: u32,
    replicas: Vec<(ReplicaState, Option<u64>, u64)>,
    target: u32,
    expected: (u32, u32),
) -> Case {
    Case {
        name,
        current,
        resource: Resource::Cpu,
        replicas,
        target,
        expected: Ok(expected),
    }
}

fn ready(levels: &[u64], request: u64) -> Vec<(ReplicaState, Option<u64>, u64)> {
    levels.iter().map(|l| (Ready, Some(*l), request)).collect()
}

#[test]
fn replica_calculator_table() {
    const MIB: u64 = 1 << 20;
    let cases = vec![
        cpu("ScaleUp", 3, ready(&[300, 500, 700], 1000), 30, (5, 50)),
        cpu(
            "ScaleUpUnreadyLessScale",
            3,
            vec![
                (Unready, Some(300), 1000),
                (Ready, Some(500), 1000),
                (Ready, Some(700), 1000),
            ],
            30,
            (4, 60),
        ),
        cpu(
            "ScaleUpHotCpuNoScale",
            3,
            vec![
                (Unready, Some(300), 1000),
                (Ready, Some(500), 1000),
                (Unready, Some(700), 1000),
            ],
            50,
            (3, 50),
        ),
        cpu(
            "ScaleUpIgnoresFailedPods",
            2,
            vec![
                (Ready, Some(500), 1000),
                (Ready, Some(700), 1000),
                (Ignored, Some(4000), 1000),
                (Ignored, Some(7000), 1000),
            ],
            30,
            (4, 60),
        ),
        cpu(
            "ScaleDown",
            5,
            ready(&[100, 300, 500, 250, 250], 1000),
            50,
            (3, 28),
        ),
        cpu(
            "ScaleDownIgnoresUnreadyPods",
            5,
            vec![
                (Ready, Some(100), 1000),
                (Ready, Some(300), 1000),
                (Ready, Some(500), 1000),
                (Unready, Some(250), 1000),
                (Unready, Some(250), 1000),
            ],
            50,
            (2, 30),
        ),
        cpu(
            "Tolerance",
            3,
            vec![
                (Ready, Some(1010), 900),
                (Ready, Some(1030), 1000),
                (Ready, Some(1020), 1100),
            ],
            100,
            (3, 102),
        ),
        cpu(
            "MissingMetricsNoChangeEq",
            2,
            vec![(Ready, Some(1000), 1000), (Ready, None, 1000)],
            100,
            (2, 100),
        ),
        cpu(
            "MissingMetricsNoChangeGt",
            2,
            vec![(Ready, Some(1900), 1000), (Ready, None, 1000)],
            100,
            (2, 190),
        ),
        cpu(
            "MissingMetricsNoChangeLt",
            2,
            vec![(Ready, Some(600), 1000), (Ready, None, 1000)],
            100,
            (2, 60),
        ),
        cpu(
            "MissingMetricsUnreadyChange",
            3,
            vec![
                (Unready, Some(100), 1000),
                (Ready, Some(450), 1000),
                (Ready, None, 1000),
            ],
            50,
            (3, 45),
        ),
        cpu(
            "MissingMetricsUnreadyScaleUp",
            3,
            vec![
                (Unready, Some(100), 1000),
                (Ready, Some(2000), 1000),
                (Ready, None, 1000),
            ],
            50,
            (4, 200),
        ),
        cpu(
            "MissingMetricsUnreadyScaleDown",
            4,
            vec![
                (Unready, Some(100), 1000),
                (Ready, Some(100), 1000),
                (Ready, Some(100), 1000),
                (Ready, None, 1000),
            ],
            50,
            (3, 10),
        ),
        // A target above 100%: a missing replica counts as using the target on a scale-down
        // (at 100% it would have gone to 1).
        cpu(
            "MissingMetricsTargetAbove100",
            2,
            vec![(Ready, Some(300), 1000), (Ready, None, 1000)],
            150,
            (2, 30),
        ),
        Case {
            name: "MemoryReadinessDoesNotMatter",
            current: 3,
            resource: Resource::Memory,
            replicas: vec![
                (Unready, Some(600 * MIB), 1000 * MIB),
                (Ready, Some(500 * MIB), 1000 * MIB),
                (Ready, Some(700 * MIB), 1000 * MIB),
            ],
            target: 30,
            expected: Ok((6, 60)),
        },
        Case {
            name: "NoMetricsForReadyPods",
            current: 2,
            resource: Resource::Cpu,
            replicas: vec![(Unready, Some(300), 1000), (Ignored, Some(300), 1000)],
            target: 50,
            expected: Err(HpaError::NoMetrics),
        },
        Case {
            name: "NoRequests",
            current: 2,
            resource: Resource::Cpu,
            replicas: ready(&[300, 300], 0),
            target: 50,
            expected: Err(HpaError::NoRequests("cpu")),
        },
        Case {
            name: "NoReplicas",
            current: 0,
            resource: Resource::Cpu,
            replicas: vec![],
            target: 50,
            expected: Err(HpaError::NoReplicas),
        },
    ];
    for c in cases {
        let input: Vec<ReplicaMetric> = c
            .replicas
            .iter()
            .map(|(state, usage, request)| ReplicaMetric {
                state: *state,
                usage: *usage,
                request: *request,
            })
            .collect();
        let got = resource_replicas(c.current, &input, c.resource, c.target, TOLERANCE)
            .map(|p| (p.replicas, p.utilization));
        assert_eq!(got, c.expected, "case {}", c.name);
    }
}

fn behavior(up: u64, down: u64, min: u32, max: u32) -> Behavior {
    Behavior {
        scale_up_window: Duration::from_secs(up),
        scale_down_window: Duration::from_secs(down),
        min_replicas: min,
        max_replicas: max,
    }
}

#[test]
fn largest_proposal_over_metrics_wins() {
    let now = SystemTime::now();
    let mut h = Vec::new();
    let d = decide(
        2,
        &[Some(3), None, Some(5)],
        &mut h,
        &behavior(0, 0, 1, 10),
        now,
    );
    assert_eq!((d.proposed, d.desired), (5, 5));
    // No metric at all: keep the count.
    let d = decide(4, &[None, None], &mut h, &behavior(0, 0, 1, 10), now);
    assert_eq!(d.desired, 4);
}

#[test]
fn scale_down_waits_for_the_down_window() {
    let t0 = SystemTime::now();
    let b = behavior(0, 300, 1, 10);
    let mut h = Vec::new();
    assert_eq!(decide(5, &[Some(5)], &mut h, &b, t0).desired, 5);
    // 100 s later the load is gone: the window still holds the 5.
    let d = decide(5, &[Some(2)], &mut h, &b, t0 + Duration::from_secs(100));
    assert_eq!(d.desired, 5);
    assert!(d.reason.contains("scaleDownDelay"), "{}", d.reason);
    // Once the 5 left the window, the highest recommendation in it is 2.
    let d = decide(5, &[Some(2)], &mut h, &b, t0 + Duration::from_secs(301));
    assert_eq!(d.desired, 2);
}

#[test]
fn scale_up_waits_for_the_up_window() {
    let t0 = SystemTime::now();
    let b = behavior(60, 300, 1, 10);
    let mut h = Vec::new();
    assert_eq!(decide(3, &[Some(3)], &mut h, &b, t0).desired, 3);
    let d = decide(3, &[Some(6)], &mut h, &b, t0 + Duration::from_secs(10));
    assert_eq!(d.desired, 3, "{}", d.reason);
    // Once every recommendation in the up window says 6 or more, scale up.
    let d = decide(3, &[Some(6)], &mut h, &b, t0 + Duration::from_secs(61));
    assert_eq!(d.desired, 6);
    // Without an up window, at once.
    let mut h = Vec::new();
    assert_eq!(
        decide(3, &[Some(7)], &mut h, &behavior(0, 300, 1, 10), t0).desired,
        7
    );
}

#[test]
fn bounds_apply_last() {
    let now = SystemTime::now();
    let mut h = Vec::new();
    let d = decide(2, &[Some(10)], &mut h, &behavior(0, 0, 1, 4), now);
    assert_eq!(d.desired, 4);
    assert!(d.reason.contains("maxReplicas"), "{}", d.reason);
    let mut h = Vec::new();
    let d = decide(3, &[Some(0)], &mut h, &behavior(0, 0, 2, 4), now);
    assert_eq!(d.desired, 2);
    assert!(d.reason.contains("minReplicas"), "{}", d.reason);
}

#[test]
fn history_is_pruned() {
    let t0 = SystemTime::now();
    let b = behavior(10, 20, 1, 10);
    let mut h = Vec::new();
    for i in 0..100u64 {
        decide(2, &[Some(2)], &mut h, &b, t0 + Duration::from_secs(i));
    }
    assert!(h.len() <= 22, "{}", h.len());
}
