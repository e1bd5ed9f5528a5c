//! `play(generate(agent))` gives back an equivalent agent: same ports, environment, limits,
//! probes, replicas, security, volumes and the rest, for every example agent and the agents in
//! tests/data (which together use every field).

mod common;

use std::path::Path;

use aac_agent::decode::render_config_value;
use aac_agent::{Agent, EnvSource, SecretRef, VolumeType};
use aac_kube::{effective_autoscaler, generate, play, to_yaml, Options, Play, PlayOptions};
use common::Store;
use serde_yaml::Value;

const CONFIG_DIR: &str = "/var/lib/aac/kube/configmaps";

fn play_opts() -> PlayOptions {
    PlayOptions {
        config_dir: CONFIG_DIR.into(),
    }
}

/// The agent with what Kubernetes spells differently made the same: the image written out,
/// config values as the strings the environment gets, `kubernetes-secret` as `secret` (both
/// read the local store by name), configMap sources (they move to play's folder), and
/// scaling as the autoscaler it makes.
fn normal(a: &Agent) -> Agent {
    let mut a = a.clone();
    a.spec.image = Some(a.image_ref());
    a.spec.config = a
        .spec
        .config
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(render_config_value(v))))
        .collect();
    for s in &mut a.spec.secrets {
        if s.from == "kubernetes-secret" {
            s.from = "secret".into();
        }
    }
    for v in &mut a.spec.volumes {
        if v.kind == VolumeType::ConfigMap {
            v.source = String::new();
        }
    }
    a.spec.scaling = None;
    a.spec.autoscaling = None;
    a
}

fn round_trip(label: &str, agent: &Agent, opts: &Options) -> Play {
    let g = generate(agent, opts).unwrap_or_else(|e| panic!("{label}: {e}"));
    let text = to_yaml(&g.manifests);
    let p = play(&text, Some(Path::new("generated.yaml")), &play_opts())
        .unwrap_or_else(|e| panic!("{label}: play refused the output:\n{e}\n{text}"));
    assert_eq!(p.agents.len(), 1, "{label}");
    let back = &p.agents[0].agent;
    let (want, got) = (normal(agent), normal(back));
    // field by field first, for a readable failure
    let s = (&want.spec, &got.spec);
    assert_eq!(want.metadata, got.metadata, "{label}: metadata");
    assert_eq!(s.0.ports, s.1.ports, "{label}: ports");
    assert_eq!(s.0.environment, s.1.environment, "{label}: environment");
    assert_eq!(s.0.config, s.1.config, "{label}: config");
    assert_eq!(s.0.resources, s.1.resources, "{label}: resources");
    assert_eq!(s.0.health_check, s.1.health_check, "{label}: health check");
    assert_eq!(s.0.security, s.1.security, "{label}: security");
    assert_eq!(s.0.volumes, s.1.volumes, "{label}: volumes");
    assert_eq!(s.0.secrets, s.1.secrets, "{label}: secrets");
    assert_eq!(s.0.network, s.1.network, "{label}: network");
    assert_eq!(s.0.services, s.1.services, "{label}: services");
    assert_eq!(want, got, "{label}: the whole agent");
    // scaling: the same autoscaler, the same replicas to start
    assert_eq!(
        effective_autoscaler(&agent.spec),
        effective_autoscaler(&back.spec),
        "{label}: autoscaler"
    );
    let replicas = |a: &Agent| a.spec.scaling.as_ref().and_then(|s| s.replicas);
    assert_eq!(replicas(agent), replicas(back), "{label}: replicas");
    let start = match (effective_autoscaler(&agent.spec), replicas(agent)) {
        (Some(h), r) => r.unwrap_or(1).clamp(h.min_replicas, h.max_replicas),
        (None, r) => r.unwrap_or(1),
    };
    assert_eq!(p.agents[0].replicas, start, "{label}: replicas to start");
    // what play does not understand in generate's own output would be a gap between them
    for w in &p.warnings {
        let m = w.to_string();
        assert!(
            !m.contains("not supported") && !m.contains("ignored") && !m.contains("not used"),
            "{label}: play does not understand generate's output: {m}"
        );
    }
    p
}

#[test]
fn every_agent_round_trips() {
    for (label, agent) in common::agents() {
        round_trip(&label, &agent, &Options::default());
        let host_path = Options {
            host_path: true,
            ..Options::default()
        };
        round_trip(&format!("{label} --host-path"), &agent, &host_path);
    }
}

#[test]
fn config_map_volumes_carry_the_files() {
    let agents = common::agents();
    let (_, full) = agents.iter().find(|(l, _)| l == "data/full.yaml").unwrap();
    let p = round_trip("full", full, &Options::default());
    let back = &p.agents[0].agent;
    let vols: Vec<_> = back
        .spec
        .volumes
        .iter()
        .filter(|v| v.kind == VolumeType::ConfigMap)
        .collect();
    assert_eq!(vols.len(), 2);
    // a file: the ConfigMap's key under play's folder; a folder: the ConfigMap's folder
    let data = common::data().join("agents");
    let file_cm = p
        .config_maps
        .iter()
        .find(|c| vols[0].source == c.dir.join("app.conf").to_string_lossy())
        .expect("the app.conf ConfigMap");
    assert_eq!(
        file_cm.data["app.conf"],
        std::fs::read(data.join("app.conf")).unwrap()
    );
    let dir_cm = p
        .config_maps
        .iter()
        .find(|c| vols[1].source == c.dir.to_string_lossy())
        .expect("the conf.d ConfigMap");
    assert_eq!(
        dir_cm.data["a.conf"],
        std::fs::read(data.join("conf.d/a.conf")).unwrap()
    );
    // binary content goes through binaryData unchanged
    assert_eq!(
        dir_cm.data["b.bin"],
        std::fs::read(data.join("conf.d/b.bin")).unwrap()
    );
    assert!(file_cm.dir.starts_with(CONFIG_DIR));
}

#[test]
fn sanitised_names_come_back() {
    let agents = common::agents();
    let (_, full) = agents.iter().find(|(l, _)| l == "data/full.yaml").unwrap();
    let g = generate(full, &Options::default()).unwrap();
    // Kubernetes names are valid, the agent's own name travels in an annotation
    assert!(g
        .manifests
        .iter()
        .all(|m| aac_kube::names::is_dns1123_subdomain(&m.name)));
    assert!(g
        .warnings
        .iter()
        .any(|w| w.path == "metadata.name" && w.message.contains("full-agent-v2")));
    let p = play(&to_yaml(&g.manifests), None, &play_opts()).unwrap();
    assert_eq!(p.agents[0].agent.metadata.name, "full_agent.v2");
    // a secret name Kubernetes cannot take is referenced as its sanitised form, and says so
    let (_, iso) = agents
        .iter()
        .find(|(l, _)| l == "data/isolated.yaml")
        .unwrap();
    let g = generate(iso, &Options::default()).unwrap();
    assert!(g
        .warnings
        .iter()
        .any(|w| w.message.contains("\"team-tokens\"")));
}

#[test]
fn secrets_are_referenced_never_inlined() {
    const CANARY: &str = "canary-7f3e9b1d-value";
    let agents = common::agents();
    let (_, full) = agents.iter().find(|(l, _)| l == "data/full.yaml").unwrap();
    let store = Store::default()
        .with("tokens", "api", CANARY)
        .with("tls", "tls.crt", "CERT")
        .with("tls", "tls.key", "KEY");
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    // without include_secrets: no value, in any spelling, and no Secret object
    let g = generate(
        full,
        &Options {
            secrets: &store,
            ..Options::default()
        },
    )
    .unwrap();
    let text = to_yaml(&g.manifests);
    assert!(!text.contains(CANARY) && !text.contains(&b64(CANARY)));
    assert!(g.manifests.iter().all(|m| m.kind != "Secret"));
    assert!(text.contains("Secrets referenced, not included"));
    // with it: the values, a warning, and play gives them back
    let g = generate(
        full,
        &Options {
            include_secrets: true,
            secrets: &store,
            ..Options::default()
        },
    )
    .unwrap();
    let text = to_yaml(&g.manifests);
    assert!(text.contains(&b64(CANARY)));
    assert!(g
        .warnings
        .iter()
        .any(|w| w.message.contains("holds the values of 2 secrets")));
    let p = play(&text, None, &play_opts()).unwrap();
    let tokens = p.secrets.iter().find(|s| s.name == "tokens").unwrap();
    assert_eq!(tokens.data["api"], CANARY.as_bytes());
    // and the debug output of what play returns never shows a value
    assert!(!format!("{p:?}").contains(CANARY));
    // a secret the store lacks: an error naming it, not the value of anything
    let e = generate(
        full,
        &Options {
            include_secrets: true,
            secrets: &Store::default().with("tokens", "api", CANARY),
            ..Options::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("secret tls"), "{e}");
    assert!(!e.contains(CANARY));
}

#[test]
fn a_secret_named_only_is_the_secret_named_like_the_variable() {
    let mut a = Agent::for_image("bot", "bot:1");
    a.spec.environment.push(aac_agent::EnvVar {
        name: "OPENAI_API_KEY".into(),
        source: EnvSource::Secret {
            secret_name: String::new(),
            secret_key: String::new(),
        },
    });
    a.spec.secrets.push(SecretRef {
        name: "db-password".into(),
        from: "secret".into(),
        secret_name: String::new(),
        secret_key: String::new(),
    });
    let store =
        Store::default()
            .with("OPENAI_API_KEY", "value", "x")
            .with("db-password", "pw", "y");
    let g = generate(
        &a,
        &Options {
            secrets: &store,
            ..Options::default()
        },
    )
    .unwrap();
    let dep = g.manifests.iter().find(|m| m.kind == "Deployment").unwrap();
    let pod = &dep.body["spec"]["template"]["spec"];
    let env_ref = &pod["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"];
    assert_eq!(env_ref["name"], "openai-api-key");
    assert_eq!(env_ref["key"], "value");
    let source = &pod["volumes"][0]["projected"]["sources"][0]["secret"];
    assert_eq!(source["name"], "db-password");
    assert_eq!(source["items"][0]["key"], "pw");
    assert_eq!(source["items"][0]["path"], "db-password");
    // keys unknown: the key is assumed to be the variable's name, with a warning
    let g = generate(&a, &Options::default()).unwrap();
    assert!(g.warnings.iter().any(|w| w.path == "spec.environment[0]"
        && w.message.contains("must hold the key OPENAI_API_KEY")));
    // several keys: which one is unclear, an error naming both
    let store = Store::default()
        .with("OPENAI_API_KEY", "a", "x")
        .with("OPENAI_API_KEY", "b", "x")
        .with("db-password", "pw", "y");
    let e = generate(
        &a,
        &Options {
            secrets: &store,
            ..Options::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("secret OPENAI_API_KEY has 2 keys (a, b)"), "{e}");
}

#[test]
fn output_is_stable() {
    for (label, agent) in common::agents() {
        let a = to_yaml(&generate(&agent, &Options::default()).unwrap().manifests);
        let b = to_yaml(&generate(&agent, &Options::default()).unwrap().manifests);
        assert_eq!(a, b, "{label}");
    }
    let agents = common::agents();
    let (_, chatbot) = agents
        .iter()
        .find(|(l, _)| l == "examples/chatbot")
        .unwrap();
    let kinds: Vec<String> = generate(chatbot, &Options::default())
        .unwrap()
        .manifests
        .iter()
        .map(|m| m.kind.clone())
        .collect();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "PersistentVolumeClaim",
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "NetworkPolicy"
        ]
    );
}
