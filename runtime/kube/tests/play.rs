//! `aac kube play`'s conversion of Kubernetes YAML written by people: what runs here, and a
//! warning with file:line for every field that does not.

mod common;

use std::path::Path;
use std::time::Duration;

use aac_agent::*;
use aac_kube::{play, PlayOptions};

fn opts() -> PlayOptions {
    PlayOptions {
        config_dir: "/var/lib/aac/kube/configmaps".into(),
    }
}

fn web() -> (aac_kube::Play, String) {
    let src = std::fs::read_to_string(common::data().join("play/web.yaml")).unwrap();
    let p = play(&src, Some(Path::new("web.yaml")), &opts()).unwrap_or_else(|e| panic!("{e}"));
    let warnings = p
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    (p, warnings)
}

fn line_of(src: &str, needle: &str) -> usize {
    src.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn deployment_becomes_agents() {
    let (p, _) = web();
    let names: Vec<&str> = p
        .agents
        .iter()
        .map(|a| a.agent.metadata.name.as_str())
        .collect();
    assert_eq!(names, ["web-web", "web-sidecar", "job-runner"]);
    let web = &p.agents[0];
    // the HPA governs: min 2, max 8; Deployment's 3 replicas start
    assert_eq!(web.replicas, 3);
    let s = &web.agent.spec;
    let sc = s.scaling.as_ref().unwrap();
    assert_eq!((sc.min_replicas, sc.max_replicas), (Some(2), Some(8)));
    assert_eq!(sc.metrics.len(), 1);
    assert_eq!(
        s.autoscaling.as_ref().unwrap().scale_down_delay,
        Some(Duration::from_secs(120))
    );
    assert_eq!(s.image.as_deref(), Some("nginx:1.27"));
    // env: value, ConfigMap key (into spec.config), Secret key (the local store), pod name
    let env: Vec<(&str, &EnvSource)> = s
        .environment
        .iter()
        .map(|e| (e.name.as_str(), &e.source))
        .collect();
    assert_eq!(env.len(), 4, "{env:?}");
    assert_eq!(env[1].1, &EnvSource::Config { key: None });
    assert_eq!(decode::render_config_value(&s.config["LOG_LEVEL"]), "debug");
    assert_eq!(
        env[2].1,
        &EnvSource::Secret {
            secret_name: "web-secrets".into(),
            secret_key: "db-password".into()
        }
    );
    assert_eq!(
        env[3].1,
        &EnvSource::Value {
            value: "web".into()
        }
    );
    // the Service publishes 80 -> the port named http; 9090 is only exposed
    let ports: Vec<(u16, Option<u16>)> = s.ports.iter().map(|p| (p.container, p.host)).collect();
    assert_eq!(ports, [(8080, Some(80)), (9090, None)]);
    // probes: readiness by name, liveness makes it restart; Kubernetes' timing defaults
    let h = s.health_check.as_ref().unwrap();
    assert_eq!(
        h.probe,
        Probe::Http {
            path: "/healthz".into(),
            port: 8080,
            scheme: HttpScheme::Http
        }
    );
    assert_eq!(h.interval, Duration::from_secs(5));
    assert_eq!(h.timeout, Duration::from_secs(1));
    assert_eq!(h.retries, 3);
    assert_eq!(h.start_period, Duration::from_secs(2));
    assert_eq!(h.on_unhealthy, OnUnhealthy::Restart);
    // limits, Kubernetes units (128k is 128000 bytes)
    assert_eq!(s.resources.limits.cpu, Some(MilliCpu(1000)));
    assert_eq!(s.resources.requests.memory, Some(Bytes(128_000)));
    // security from pod and container
    assert_eq!(s.security.run_as_user, Some(1000));
    assert!(s.security.read_only_root_filesystem && s.security.no_new_privileges);
    assert_eq!(s.security.capabilities.add, ["NET_BIND_SERVICE"]);
    // volumes: the configMap key as a file, an emptyDir as a volume of its own, the claim
    let v: Vec<(&str, &str, VolumeType)> = s
        .volumes
        .iter()
        .map(|v| (v.source.as_str(), v.target.as_str(), v.kind))
        .collect();
    assert_eq!(
        v,
        [
            (
                "/var/lib/aac/kube/configmaps/web-settings/site.conf",
                "/etc/nginx/conf.d/site.conf",
                VolumeType::ConfigMap
            ),
            ("web-web-cache", "/var/cache/nginx", VolumeType::Volume),
            ("web-data", "/data", VolumeType::Volume),
        ]
    );
    assert!(p
        .volumes
        .iter()
        .any(|v| v.name == "web-web-cache" && v.ephemeral));
    assert!(p
        .volumes
        .iter()
        .any(|v| v.name == "web-data" && !v.ephemeral));
    // the secret volume: a file under /run/secrets
    assert_eq!(
        s.secrets,
        [SecretRef {
            name: "token".into(),
            from: "secret".into(),
            secret_name: "web-secrets".into(),
            secret_key: "api-token".into()
        }]
    );
    // objects to create
    let sec = &p.secrets[0];
    assert_eq!(sec.data["api-token"], b"token");
    assert_eq!(sec.data["db-password"], b"s3cr3t");
    assert!(!format!("{sec:?}").contains("s3cr3t"));
    assert_eq!(p.config_maps[0].data["LOG_LEVEL"], b"debug");
    // the bare pod: restart on failure, the startup probe as its health check
    let job = &p.agents[2].agent.spec;
    assert_eq!(
        job.restart_policy,
        RestartPolicy::OnFailure { max_retries: None }
    );
    assert_eq!(
        job.health_check.as_ref().unwrap().probe,
        Probe::Command(vec!["cat".into(), "/tmp/started".into()])
    );
}

#[test]
fn every_unsupported_field_is_named_with_its_line() {
    let (_, w) = web();
    let src = std::fs::read_to_string(common::data().join("play/web.yaml")).unwrap();
    for (needle, what) in [
        ("namespace: shop", "namespaces"),
        ("strategy:", "rollouts"),
        ("nodeSelector:", "not supported"),
        ("imagePullPolicy: Always", "IfNotPresent"),
        ("fieldPath: spec.nodeName", "left unset"),
        ("nvidia.com/gpu", "not supported"),
        ("httpHeaders", "not supported"),
        ("lifecycle:", "not supported"),
        ("mountPath: /etc/tokens", "/run/secrets"),
        ("name: unused", "not mounted"),
        ("nfs: {server", "not supported"),
        ("sessionAffinity", "not supported"),
        ("nodePort: 30080", "node port"),
        ("grpc:", "gRPC"),
        ("kind: StatefulSet", "not supported"),
        ("type: Pods", "not supported"),
        ("policies:", "stabilization windows only"),
        ("      containers:", "2 containers become 2 agents"),
        ("claimName: web-data", "not in the file"),
        ("livenessProbe:", "differs from the readiness probe"),
        ("startupProbe:", "a startup probe alone"),
    ] {
        let needle_line = needle.lines().next().unwrap();
        let line = if needle.contains('\n') {
            src.find(needle)
                .map(|i| src[..i].lines().count() + 1)
                .unwrap()
        } else {
            line_of(&src, needle_line)
        };
        let hit = w
            .lines()
            .any(|l| l.starts_with(&format!("web.yaml:{line}:")) && l.contains(what));
        assert!(
            hit,
            "no warning at web.yaml:{line} ({needle_line}) saying {what:?}:\n{w}"
        );
    }
}

#[test]
fn errors_name_file_line_and_field() {
    let e = |src: &str| {
        play(src, Some(Path::new("k.yaml")), &opts())
            .unwrap_err()
            .to_string()
    };
    // YAML syntax
    assert!(
        e("kind: [\n").starts_with("k.yaml:2:1: "),
        "{}",
        e("kind: [\n")
    );
    // a selector that does not pick the template, a missing image, a bad quantity, a
    // ConfigMap that is not there: all at once
    let msg = e("apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: y}}
    spec:
      containers:
        - name: c
          resources: {limits: {memory: lots}}
          env:
            - name: A
              valueFrom: {configMapKeyRef: {name: missing, key: k}}
");
    let lines: Vec<&str> = msg.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("k.yaml:5:13: Deployment/bad spec.selector: does not select")),
        "{msg}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "k.yaml:10:11: Deployment/bad spec.template.spec.containers[0].image: is required"
        )),
        "{msg}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("k.yaml:11:40: ")
                && l.contains("\"lots\" is not a memory quantity")),
        "{msg}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("k.yaml:14:44: ")
            && l.contains("ConfigMap missing is not in the file")),
        "{msg}"
    );
    // nothing to run
    assert!(e("# only a comment\n").contains("no Kubernetes objects"));
    // not objects
    assert!(e("- a\n- b\n").contains("a Kubernetes object is a mapping"));
    assert!(e("apiVersion: v1\nmetadata: {name: x}\n").contains("needs apiVersion and kind"));
}

#[test]
fn lists_and_odd_documents() {
    let src = "apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata: {name: one}
    spec:
      containers: [{name: c, image: busybox}]
      hostAliases: []
---
---
";
    let p = play(src, Some(Path::new("l.yaml")), &opts()).unwrap();
    assert_eq!(p.agents[0].agent.metadata.name, "one");
    assert!(
        p.warnings.iter().any(|w| w
            .to_string()
            .starts_with("l.yaml:9:7: Pod/one spec.hostAliases")),
        "{:?}",
        p.warnings
    );
    for odd in [
        "",
        "~",
        "[]",
        "? [a]\n: b\n",
        "a: &x [*x]\n",
        "kind: Pod\napiVersion: v1\nmetadata: {name: p}\nspec: 5\n",
        "---\n- - -\n",
    ] {
        let _ = play(odd, None, &opts());
    }
}

/// Broken variants of a generated file (each line left out, the text cut anywhere) give
/// errors or warnings, never a panic.
#[test]
fn damaged_files_never_panic() {
    let agents = common::agents();
    let (_, full) = agents.iter().find(|(l, _)| l == "data/full.yaml").unwrap();
    let opts_g = aac_kube::Options {
        fqdn_policy: aac_kube::FqdnPolicy::Cilium,
        ..aac_kube::Options::default()
    };
    let text = aac_kube::to_yaml(&aac_kube::generate(full, &opts_g).unwrap().manifests);
    let lines: Vec<&str> = text.lines().collect();
    for i in 0..lines.len() {
        let mut l = lines.clone();
        l.remove(i);
        let _ = play(&l.join("\n"), None, &opts());
    }
    for cut in (0..text.len()).step_by(97) {
        if text.is_char_boundary(cut) {
            let _ = play(&text[..cut], None, &opts());
        }
    }
}
