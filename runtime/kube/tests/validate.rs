//! Every generated manifest (all example agents and the agents of tests/data, with and
//! without `--fqdn-policy cilium`, with and without secrets and host paths) validated by
//! `kubernetes-validate --strict` against Kubernetes 1.30 and the newest version it ships,
//! failing on any warning; CiliumNetworkPolicies (no schema there) against the fields of
//! Cilium's CRD; and the checks no schema makes (aac_kube::check). Secret values come from
//! aac's own secrets store, as with `aac kube generate --include-secrets`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use aac_kube::check::{consistency, documents};
use aac_kube::local::StoreSecrets;
use aac_kube::{generate, to_yaml, FqdnPolicy, Manifest, Options};
use aac_runtime::secrets::{SecretValue, Store, WriteMode};

/// The version tests/run.sh installs.
const KUBERNETES_VALIDATE: &str = "1.37.0";

/// aac's own secrets store (in a temporary folder), as `aac kube generate` reads it.
fn store() -> (tempfile::TempDir, StoreSecrets) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::at(dir.path().join("secrets"));
    for (name, keys) in [
        ("agent-secrets", &[("openai-api-key", "sk-test")][..]),
        ("tokens", &[("api", "t")]),
        ("tls", &[("tls.crt", "c"), ("tls.key", "k")]),
        ("Team_Tokens", &[("token", "x")]),
    ] {
        let values = keys
            .iter()
            .map(|(k, v)| (k.to_string(), SecretValue::new(v.as_bytes().to_vec())))
            .collect();
        store.write(name, values, WriteMode::Create).unwrap();
    }
    (dir, StoreSecrets(store))
}

/// Every variant of every agent: (label, manifests).
fn variants() -> Vec<(String, Vec<Manifest>)> {
    let (_dir, store) = store();
    let mut out = Vec::new();
    for (label, agent) in common::agents() {
        for (suffix, fqdn, secrets, host_path) in [
            ("", FqdnPolicy::None, false, false),
            ("-cilium", FqdnPolicy::Cilium, false, false),
            ("-cilium-secrets-hostpath", FqdnPolicy::Cilium, true, true),
        ] {
            let opts = Options {
                fqdn_policy: fqdn,
                include_secrets: secrets,
                host_path,
                secrets: &store,
                ..Options::default()
            };
            let g = generate(&agent, &opts).unwrap_or_else(|e| panic!("{label}{suffix}: {e}"));
            out.push((format!("{label}{suffix}"), g.manifests));
        }
    }
    out
}

fn python_ok(args: &[&str]) -> Option<String> {
    let out = Command::new("python3").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `python3 -m kubernetes_validate`, installing the pinned version with pip when missing.
/// None (the test then says why it skips) only when pip cannot install it.
fn kubernetes_validate() -> Option<String> {
    let installed = || python_ok(&["-m", "kubernetes_validate", "--version"]);
    if let Some(v) = installed() {
        return Some(v);
    }
    let pinned = format!("kubernetes-validate=={KUBERNETES_VALIDATE}");
    let pip = |extra: &[&str]| {
        let mut args = vec![
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ];
        args.extend_from_slice(extra);
        args.push(&pinned);
        python_ok(&args)
    };
    if pip(&["--break-system-packages"]).is_none() {
        pip(&[]);
    }
    installed()
}

#[test]
fn manifests_pass_kubernetes_validate_strict() {
    let Some(version) = kubernetes_validate() else {
        println!(
            "skipped: kubernetes-validate is not installed and pip could not install kubernetes-validate=={KUBERNETES_VALIDATE} (is PyPI reachable?)"
        );
        return;
    };
    let newest = python_ok(&[
        "-c",
        "from kubernetes_validate.utils import latest_version; print(latest_version())",
    ])
    .unwrap_or(version);
    assert_ne!(
        newest.trim_start_matches('v'),
        "1.30.0",
        "two versions wanted"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    for (label, manifests) in variants() {
        // Kubernetes' own kinds; Cilium's has its own check below
        let kube: Vec<Manifest> = manifests
            .into_iter()
            .filter(|m| m.kind != "CiliumNetworkPolicy")
            .collect();
        kinds.extend(kube.iter().map(|m| m.kind.clone()));
        let f = dir.path().join(format!("{}.yaml", label.replace('/', "_")));
        std::fs::write(&f, to_yaml(&kube)).unwrap();
        files.push(f);
    }
    // every kind generate writes is in the set validated
    for k in [
        "ConfigMap",
        "Secret",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(k), "no {k} validated");
    }
    for k8s in ["1.30.0", newest.as_str()] {
        let out = Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "-k", k8s])
            .args(&files)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let bad: Vec<&str> = text.lines().filter(|l| !l.starts_with("INFO ")).collect();
        assert!(
            out.status.success() && bad.is_empty(),
            "kubernetes-validate --strict -k {k8s}:\n{}",
            bad.join("\n")
        );
        let passed = text
            .lines()
            .filter(|l| l.contains(" passed for resource "))
            .count();
        let docs: usize = files
            .iter()
            .map(|f| {
                documents(&std::fs::read_to_string(f).unwrap())
                    .unwrap()
                    .len()
            })
            .sum();
        assert_eq!(passed, docs, "every document validated against {k8s}");
    }
}

fn cilium_validator() -> jsonschema::Validator {
    let path = common::data().join("cilium-networkpolicy.schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn cilium_problems(v: &jsonschema::Validator, m: &Manifest) -> Vec<String> {
    let json: serde_json::Value = serde_json::to_value(&m.body).unwrap();
    let mut problems: Vec<String> = v
        .iter_errors(&json)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    // `**` only as the prefix `**.` (Cilium reads it so since 1.19; elsewhere it is `*`)
    for rule in json["spec"]["egress"].as_array().into_iter().flatten() {
        for sel in rule["toFQDNs"].as_array().into_iter().flatten() {
            if let Some(p) = sel["matchPattern"].as_str() {
                if p.trim_start_matches("**.").contains("**") {
                    problems.push(format!("matchPattern {p}: ** only at the start"));
                }
            }
        }
    }
    problems
}

#[test]
fn cilium_policies_have_the_fields_of_ciliums_crd() {
    let v = cilium_validator();
    let mut n = 0;
    for (label, manifests) in variants() {
        for m in manifests.iter().filter(|m| m.kind == "CiliumNetworkPolicy") {
            let p = cilium_problems(&v, m);
            assert!(p.is_empty(), "{label}: {}", p.join("\n"));
            n += 1;
        }
    }
    assert!(n >= 2, "{n} CiliumNetworkPolicies checked");
    // the check can fail: a field Cilium does not have, a protocol it does not know, a
    // wildcard in the middle, a rule mixing toFQDNs and toEndpoints
    let agents = common::agents();
    let (_, full) = agents.iter().find(|(l, _)| l == "data/full.yaml").unwrap();
    let opts = Options {
        fqdn_policy: FqdnPolicy::Cilium,
        ..Options::default()
    };
    let g = generate(full, &opts).unwrap();
    let cnp = g
        .manifests
        .iter()
        .find(|m| m.kind == "CiliumNetworkPolicy")
        .unwrap();
    let broken = |f: &dyn Fn(&mut serde_yaml::Value)| {
        let mut m = cnp.clone();
        f(&mut m.body);
        cilium_problems(&v, &m)
    };
    assert!(!broken(&|b| b["spec"]["egress"][0]["toFQDN"] = "x".into()).is_empty());
    assert!(!broken(
        &|b| b["spec"]["egress"][0]["toPorts"][0]["ports"][0]["protocol"] = "ICMPX".into()
    )
    .is_empty());
    assert!(!broken(&|b| b["spec"]["egress"][1]["toFQDNs"][0] =
        serde_yaml::from_str("{matchName: 'a b'}").unwrap())
    .is_empty());
    assert!(!broken(&|b| b["spec"]["egress"][1]["toFQDNs"][0] =
        serde_yaml::from_str("{matchPattern: 'a.**.b'}").unwrap())
    .is_empty());
    assert!(!broken(
        &|b| b["spec"]["egress"][1]["toEndpoints"] = b["spec"]["egress"][0]["toEndpoints"].clone()
    )
    .is_empty());
}

#[test]
fn wildcards_and_ports_reach_cilium() {
    let agents = common::agents();
    let (_, full) = agents.iter().find(|(l, _)| l == "data/full.yaml").unwrap();
    let opts = Options {
        fqdn_policy: FqdnPolicy::Cilium,
        ..Options::default()
    };
    let g = generate(full, &opts).unwrap();
    let text = to_yaml(&g.manifests);
    let cnp = g
        .manifests
        .iter()
        .find(|m| m.kind == "CiliumNetworkPolicy")
        .unwrap();
    let egress = &cnp.body["spec"]["egress"];
    assert_eq!(egress[1]["toFQDNs"][0]["matchName"], "api.example.com");
    assert_eq!(
        egress[1]["toFQDNs"][1]["matchPattern"],
        "**.models.example.com"
    );
    assert_eq!(egress[2]["toFQDNs"][0]["matchName"], "upload.example.com");
    assert_eq!(egress[2]["toPorts"][0]["ports"][0]["port"], "443");
    assert!(!text.contains("NOT ENFORCED"));
    // without Cilium: the names are not enforced, and the output says so
    let g = generate(full, &Options::default()).unwrap();
    let text = to_yaml(&g.manifests);
    assert!(g.manifests.iter().all(|m| m.kind != "CiliumNetworkPolicy"));
    assert!(text.contains("# NOT ENFORCED: the allowed hosts (api.example.com, *.models.example.com, upload.example.com:443)"), "{text}");
}

#[test]
fn what_no_schema_checks_holds() {
    for (label, manifests) in variants() {
        let text = to_yaml(&manifests);
        let docs = documents(&text).unwrap();
        let p = consistency(&docs, label.contains("secrets"));
        assert!(p.is_empty(), "{label}:\n{}", p.join("\n"));
    }
}

type Mutation = Box<dyn Fn(&mut Vec<serde_yaml::Value>)>;

/// The checks fail on the mistakes they are for.
#[test]
fn consistency_checks_can_fail() {
    let agents = common::agents();
    let (_, chatbot) = agents
        .iter()
        .find(|(l, _)| l == "examples/chatbot")
        .unwrap();
    let docs = || {
        documents(&to_yaml(
            &generate(chatbot, &Options::default()).unwrap().manifests,
        ))
        .unwrap()
    };
    let find = |docs: &mut Vec<serde_yaml::Value>, kind: &str| {
        docs.iter().position(|d| d["kind"] == kind).unwrap()
    };
    let mutate = |f: &dyn Fn(&mut Vec<serde_yaml::Value>)| {
        let mut d = docs();
        f(&mut d);
        consistency(&d, false)
    };
    let cases: Vec<(&str, Mutation)> = vec![
        (
            "does not select the template labels",
            Box::new(move |d| {
                let i = find(d, "Deployment");
                d[i]["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "other".into();
            }),
        ),
        (
            "not a Deployment of the set",
            Box::new(move |d| {
                let i = find(d, "HorizontalPodAutoscaler");
                d[i]["spec"]["scaleTargetRef"]["name"] = "nope".into();
            }),
        ),
        (
            "is not a container port",
            Box::new(move |d| {
                let i = find(d, "Deployment");
                d[i]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
                    ["port"] = 9999.into();
            }),
        ),
        (
            "selects no Deployment",
            Box::new(move |d| {
                let i = find(d, "Service");
                d[i]["spec"]["selector"]["app.kubernetes.io/name"] = "other".into();
            }),
        ),
        (
            "target port",
            Box::new(move |d| {
                let i = find(d, "Service");
                d[i]["spec"]["ports"][0]["targetPort"] = 1.into();
            }),
        ),
        (
            "has replicas although",
            Box::new(move |d| {
                let i = find(d, "Deployment");
                d[i]["spec"]["replicas"] = 2.into();
            }),
        ),
        (
            "which is not in the set",
            Box::new(move |d| {
                let i = find(d, "PersistentVolumeClaim");
                d.remove(i);
            }),
        ),
        (
            "reads chatbot-config/model_name",
            Box::new(move |d| {
                let i = find(d, "ConfigMap");
                d.remove(i);
            }),
        ),
        (
            "NetworkPolicy chatbot-egress",
            Box::new(move |d| {
                let i = find(d, "NetworkPolicy");
                d[i]["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] = "x".into();
            }),
        ),
        (
            "not one of [\"Ingress\", \"Egress\"]",
            Box::new(move |d| {
                let i = find(d, "NetworkPolicy");
                d[i]["spec"]["policyTypes"][0] = "Egres".into();
            }),
        ),
        (
            "not a quantity",
            Box::new(move |d| {
                let i = find(d, "Deployment");
                d[i]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
                    ["memory"] = "2 GB".into();
            }),
        ),
        (
            "not one of [\"TCP\"",
            Box::new(move |d| {
                let i = find(d, "Service");
                d[i]["spec"]["ports"][0]["protocol"] = "tcp".into();
            }),
        ),
        (
            "is not an IANA service name",
            Box::new(move |d| {
                let i = find(d, "Deployment");
                d[i]["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"] =
                    "port_8080".into();
            }),
        ),
    ];
    assert!(consistency(&docs(), false).is_empty());
    for (want, f) in cases {
        let p = mutate(&*f);
        assert!(p.iter().any(|m| m.contains(want)), "no {want:?} in {p:?}");
    }
}
