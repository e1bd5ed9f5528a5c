//! The OCI spec builder: what each agent setting becomes, and every spec against the official
//! runtime-spec JSON schema.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aac_runtime::agent::*;
use aac_runtime::cgroups::{CgroupDriver, CgroupPlan};
use aac_runtime::image_config::ImageConfig;
use aac_runtime::spec::builder::{self, HostLimits, SpecContext};
use serde_json::Value;

/// Reference files carried with the tests (tests/data).
fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data")
}

/// Validate `spec` against config-schema.json of the OCI runtime spec.
pub fn assert_schema_valid(spec: &Value) {
    let dir = data_dir().join("oci-runtime-spec-schema");
    let path = dir.join("config-schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let base = format!("file://{}", std::fs::canonicalize(&path).unwrap().display());
    let validator = jsonschema::options()
        .with_base_uri(base)
        .build(&schema)
        .expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(spec)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "spec violates the OCI schema:\n{}",
        errors.join("\n")
    );
}

fn host() -> HostLimits {
    HostLimits {
        nofile_hard: 20_000,
        cgroup_v2: false,
    }
}

fn build_json(agent: &Agent, image: Option<&ImageConfig>) -> Value {
    let host = host();
    let cgroup = CgroupPlan::under(CgroupDriver::Cgroupfs, "c0ffee");
    let ctx = SpecContext {
        container_id: "c0ffee",
        name: "my-agent",
        image,
        host: &host,
        cgroup: &cgroup,
        volumes_dir: Path::new("/var/lib/aac/volumes"),
        netns_path: None,
        extra_mounts: Vec::new(),
        terminal: false,
    };
    let spec = builder::build(agent, &ctx).expect("spec builds");
    let v: Value = serde_json::from_str(&builder::to_json(&spec).unwrap()).unwrap();
    assert_schema_valid(&v);
    v
}

fn base_agent() -> Agent {
    let mut a = Agent::for_image("my-agent", "my-agent:latest");
    a.spec.command = vec!["/bin/agent".into(), "--serve".into()];
    a
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn mount<'a>(spec: &'a Value, dest: &str) -> Option<&'a Value> {
    spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["destination"] == dest)
}

#[test]
fn defaults_are_docker_like_and_explicit() {
    let v = build_json(&base_agent(), None);
    assert_eq!(v["ociVersion"], "1.0.2-dev");
    assert_eq!(v["hostname"], "my-agent");
    assert_eq!(v["root"]["path"], "rootfs");
    assert_eq!(v["root"]["readonly"], false);
    let p = &v["process"];
    assert_eq!(strs(&p["args"]), ["/bin/agent", "--serve"]);
    assert_eq!(p["cwd"], "/");
    assert_eq!(p["user"]["uid"], 0);
    assert_eq!(p["noNewPrivileges"], true);
    let caps = &p["capabilities"];
    let eff = strs(&caps["effective"]);
    assert_eq!(eff.len(), 14, "{eff:?}");
    assert!(eff.contains(&"CAP_NET_BIND_SERVICE".to_string()));
    assert!(!eff.contains(&"CAP_SYS_ADMIN".to_string()));
    assert_eq!(strs(&caps["bounding"]), eff);
    assert_eq!(strs(&caps["permitted"]), eff);
    assert!(strs(&caps["inheritable"]).is_empty());
    assert!(strs(&caps["ambient"]).is_empty());
    // rlimits never above the host's hard limit
    let rl = &p["rlimits"][0];
    assert_eq!(rl["type"], "RLIMIT_NOFILE");
    assert_eq!(rl["hard"], 20_000);
    assert_eq!(rl["soft"], 20_000);
    let env = strs(&p["env"]);
    assert!(env.iter().any(|e| e.starts_with("PATH=/usr/local/sbin")));
    assert!(env.contains(&"HOSTNAME=my-agent".to_string()));
    let l = &v["linux"];
    assert_eq!(l["cgroupsPath"], "/aac/c0ffee");
    let ns: Vec<&str> = l["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network"]);
    assert!(strs(&l["maskedPaths"]).contains(&"/proc/kcore".to_string()));
    assert!(strs(&l["readonlyPaths"]).contains(&"/proc/sys".to_string()));
    assert_eq!(l["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    for dest in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ] {
        assert!(mount(&v, dest).is_some(), "missing mount {dest}");
    }
    assert!(strs(&mount(&v, "/sys").unwrap()["options"]).contains(&"ro".to_string()));
    assert!(mount(&v, "/tmp").is_none());
    // no resource limits unless asked
    assert!(l["resources"]["memory"].get("limit").is_none());
    assert!(l["resources"]["cpu"].get("quota").is_none());
    assert!(l["resources"].get("pids").is_none());
}

#[test]
fn resources_map_to_cgroup_settings() {
    let mut a = base_agent();
    a.spec.resources.limits.cpu = Some(MilliCpu(2000));
    a.spec.resources.limits.memory = Some(Bytes(2 << 30));
    a.spec.resources.limits.pids = Some(64);
    a.spec.resources.requests.cpu = Some(MilliCpu(500));
    a.spec.resources.requests.memory = Some(Bytes(512 << 20));
    let v = build_json(&a, None);
    let r = &v["linux"]["resources"];
    assert_eq!(r["cpu"]["quota"], 200_000);
    assert_eq!(r["cpu"]["period"], 100_000);
    assert_eq!(r["cpu"]["shares"], 512);
    assert_eq!(r["memory"]["limit"], 2i64 << 30);
    assert_eq!(r["memory"]["reservation"], 512i64 << 20);
    assert_eq!(r["pids"]["limit"], 64);
    assert_eq!(r["devices"][0]["allow"], false);
}

#[test]
fn security_settings() {
    let mut a = base_agent();
    a.spec.security.run_as_user = Some(1000);
    a.spec.security.run_as_group = Some(1001);
    a.spec.security.supplemental_groups = vec![27];
    a.spec.security.read_only_root_filesystem = true;
    a.spec.security.no_new_privileges = false;
    a.spec.security.capabilities.drop = vec!["ALL".into()];
    a.spec.security.capabilities.add = vec!["NET_BIND_SERVICE".into()];
    let v = build_json(&a, None);
    let p = &v["process"];
    assert_eq!(p["user"]["uid"], 1000);
    assert_eq!(p["user"]["gid"], 1001);
    assert_eq!(p["user"]["additionalGids"][0], 27);
    assert_eq!(p["noNewPrivileges"], false);
    assert_eq!(
        strs(&p["capabilities"]["effective"]),
        ["CAP_NET_BIND_SERVICE"]
    );
    assert_eq!(v["root"]["readonly"], true);
    assert_eq!(mount(&v, "/tmp").unwrap()["type"], "tmpfs");
    assert_eq!(mount(&v, "/run").unwrap()["type"], "tmpfs");

    let mut all = base_agent();
    all.spec.security.capabilities.add = vec!["ALL".into()];
    all.spec.security.capabilities.drop = vec!["SYS_ADMIN".into()];
    let v = build_json(&all, None);
    let eff = strs(&v["process"]["capabilities"]["effective"]);
    assert!(eff.contains(&"CAP_SYS_PTRACE".to_string()));
    assert!(!eff.contains(&"CAP_SYS_ADMIN".to_string()));

    let mut unconfined = base_agent();
    unconfined.spec.security.seccomp_profile = SeccompProfile::Unconfined;
    let v = build_json(&unconfined, None);
    assert!(v["linux"].get("seccomp").is_none());
}

#[test]
fn network_modes_choose_namespaces() {
    let mut a = base_agent();
    a.spec.network.mode = NetworkMode::Host;
    let v = build_json(&a, None);
    let has_net = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "network");
    assert!(!has_net, "host mode must share the host network namespace");

    a.spec.network.mode = NetworkMode::None;
    let v = build_json(&a, None);
    let net = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "network")
        .cloned();
    assert!(net.is_some_and(|n| n.get("path").is_none()));
}

#[test]
fn image_config_and_agent_merge_like_docker() {
    let image = ImageConfig {
        entrypoint: vec!["/entry".into()],
        cmd: vec!["serve".into()],
        env: vec!["PATH=/opt/bin".into(), "A=image".into(), "B=image".into()],
        working_dir: "/app".into(),
        user: "7:8".into(),
        ..ImageConfig::default()
    };
    let mut a = Agent::for_image("x", "x:1");
    a.spec
        .config
        .insert("model".into(), serde_yaml::Value::from("gpt-4"));
    a.spec
        .config
        .insert("temperature".into(), serde_yaml::Value::from(0.5));
    a.spec.environment = vec![
        EnvVar {
            name: "B".into(),
            source: EnvSource::Value {
                value: "agent".into(),
            },
        },
        EnvVar {
            name: "MODEL_NAME".into(),
            source: EnvSource::Config {
                key: Some("model".into()),
            },
        },
        EnvVar {
            name: "temperature".into(),
            source: EnvSource::Config { key: None },
        },
        EnvVar {
            name: "DB_PASSWORD".into(),
            source: EnvSource::Secret {
                secret_name: "db".into(),
                secret_key: "password".into(),
            },
        },
    ];
    let v = build_json(&a, Some(&image));
    let p = &v["process"];
    assert_eq!(strs(&p["args"]), ["/entry", "serve"]);
    assert_eq!(p["cwd"], "/app");
    assert_eq!(p["user"]["uid"], 7);
    assert_eq!(p["user"]["gid"], 8);
    let env = strs(&p["env"]);
    for want in [
        "PATH=/opt/bin",
        "A=image",
        "B=agent",
        "MODEL_NAME=gpt-4",
        "temperature=0.5",
    ] {
        assert!(
            env.contains(&want.to_string()),
            "{want} missing from {env:?}"
        );
    }
    // Secrets are delivered at start, never written into a spec.
    assert!(
        !env.iter().any(|e| e.starts_with("DB_PASSWORD=")),
        "{env:?}"
    );

    // args replace cmd only; command replaces entrypoint and drops the image cmd
    a.spec.args = vec!["worker".into()];
    let v = build_json(&a, Some(&image));
    assert_eq!(strs(&v["process"]["args"]), ["/entry", "worker"]);
    a.spec.command = vec!["/other".into()];
    a.spec.args.clear();
    let v = build_json(&a, Some(&image));
    assert_eq!(strs(&v["process"]["args"]), ["/other"]);
}

#[test]
fn volumes_become_mounts() {
    let mut a = base_agent();
    a.spec.volumes = vec![
        VolumeSpec {
            source: "/srv/data".into(),
            target: "/app/data".into(),
            kind: VolumeType::Bind,
            read_only: true,
            options: vec![],
        },
        VolumeSpec {
            source: "model-cache".into(),
            target: "/app/models".into(),
            kind: VolumeType::Volume,
            read_only: false,
            options: vec![],
        },
        VolumeSpec {
            source: String::new(),
            target: "/scratch".into(),
            kind: VolumeType::Tmpfs,
            read_only: false,
            options: vec!["size=64m".into()],
        },
    ];
    a.spec.security.read_only_root_filesystem = true;
    let v = build_json(&a, None);
    let bind = mount(&v, "/app/data").unwrap();
    assert_eq!(bind["source"], "/srv/data");
    assert!(strs(&bind["options"]).contains(&"ro".to_string()));
    assert_eq!(
        mount(&v, "/app/models").unwrap()["source"],
        "/var/lib/aac/volumes/model-cache"
    );
    let tmp = mount(&v, "/scratch").unwrap();
    assert_eq!(tmp["type"], "tmpfs");
    assert!(strs(&tmp["options"]).contains(&"size=64m".to_string()));
}

#[test]
fn health_and_other_fields_do_not_break_the_spec() {
    let mut a = base_agent();
    a.spec.health_check = Some(HealthCheck::with_defaults(Probe::Tcp { port: 8080 }));
    a.spec.restart_policy = RestartPolicy::Always;
    a.spec.logging.max_file = 5;
    if let Some(h) = a.spec.health_check.as_mut() {
        h.interval = Duration::from_secs(5)
    }
    let v = build_json(&a, None);
    assert_eq!(v["annotations"]["dev.agent.name"], "my-agent");
}

#[test]
fn no_command_is_an_error_not_a_panic() {
    let a = Agent::for_image("x", "x:1");
    let host = host();
    let cgroup = CgroupPlan::under(CgroupDriver::Cgroupfs, "c");
    let ctx = SpecContext {
        container_id: "c",
        name: "x",
        image: None,
        host: &host,
        cgroup: &cgroup,
        volumes_dir: Path::new("/v"),
        netns_path: None,
        extra_mounts: Vec::new(),
        terminal: false,
    };
    assert!(matches!(
        builder::build(&a, &ctx),
        Err(builder::SpecError::NoCommand)
    ));
}

#[test]
fn schema_check_can_fail() {
    let v = build_json(&base_agent(), None);
    let mut broken = v.clone();
    broken["process"]["user"]["uid"] = Value::from("root");
    broken["linux"]["namespaces"][0]["type"] = Value::from("pidz");
    let r = std::panic::catch_unwind(|| assert_schema_valid(&broken));
    assert!(r.is_err(), "an invalid spec passed the schema check");
}

/// The example agents' specs, byte for byte. `AAC_UPDATE_GOLDEN=1` rewrites them after a
/// deliberate change; review the diff.
#[test]
fn golden_specs_of_the_examples() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let image = ImageConfig {
        cmd: vec!["/usr/local/bin/agent".into()],
        ..ImageConfig::default()
    };
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let dir = entry.unwrap().path();
        let file = dir.join("agent.yaml");
        if !file.exists() {
            continue;
        }
        let mut agent = load_file(&file).unwrap_or_else(|d| panic!("{}: {d}", file.display()));
        // Host paths differ per checkout: make bind sources relative to the example again.
        let canonical = std::fs::canonicalize(&dir).unwrap();
        for v in &mut agent.spec.volumes {
            let src = Path::new(&v.source);
            if let Some(rel) = src
                .strip_prefix(&dir)
                .ok()
                .or_else(|| src.strip_prefix(&canonical).ok())
            {
                v.source = format!("<example>/{}", rel.display());
            }
        }
        let spec = build_json(&agent, Some(&image));
        let got = serde_json::to_string_pretty(&spec).unwrap() + "\n";
        let golden = dir.join("spec.golden.json");
        if std::env::var_os("AAC_UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &got).unwrap();
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|_| {
            panic!("{} missing: run with AAC_UPDATE_GOLDEN=1", golden.display())
        });
        assert_eq!(got, want, "{} differs from its golden spec", dir.display());
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} examples found");
}

#[test]
fn systemd_driver_gives_a_slice_prefix_name_cgroups_path() {
    let host = HostLimits {
        cgroup_v2: true,
        ..host()
    };
    let cgroup = CgroupPlan::under(
        CgroupDriver::Systemd {
            slice: "system.slice".into(),
        },
        "c0ffee",
    );
    let ctx = SpecContext {
        container_id: "c0ffee",
        name: "my-agent",
        image: None,
        host: &host,
        cgroup: &cgroup,
        volumes_dir: Path::new("/var/lib/aac/volumes"),
        netns_path: None,
        extra_mounts: Vec::new(),
        terminal: false,
    };
    let spec = builder::build(&base_agent(), &ctx).expect("spec builds");
    let v: Value = serde_json::from_str(&builder::to_json(&spec).unwrap()).unwrap();
    assert_schema_valid(&v);
    assert_eq!(v["linux"]["cgroupsPath"], "system.slice:aac:c0ffee");
    if nix::unistd::geteuid().is_root() {
        assert_eq!(
            cgroup.fs_path.as_deref(),
            Some("/system.slice/aac-c0ffee.scope")
        );
    }
    assert!(cgroup.systemd());
}

#[test]
fn without_a_cgroup_there_are_no_resources_and_the_limits_are_named() {
    let mut a = base_agent();
    a.spec.resources.limits.memory = Some(aac_runtime::agent::Bytes(64 << 20));
    a.spec.resources.limits.pids = Some(32);
    let host = host();
    let cgroup = CgroupPlan::none("no delegation here");
    let ctx = SpecContext {
        container_id: "c0ffee",
        name: "my-agent",
        image: None,
        host: &host,
        cgroup: &cgroup,
        volumes_dir: Path::new("/var/lib/aac/volumes"),
        netns_path: None,
        extra_mounts: Vec::new(),
        terminal: false,
    };
    let spec = builder::build(&a, &ctx).expect("spec builds");
    let v: Value = serde_json::from_str(&builder::to_json(&spec).unwrap()).unwrap();
    assert_schema_valid(&v);
    assert!(v["linux"].get("cgroupsPath").is_none(), "{}", v["linux"]);
    assert!(v["linux"].get("resources").is_none(), "{}", v["linux"]);
    let named: Vec<String> = cgroup
        .not_enforced(spec.linux().as_ref().and_then(|l| l.resources().as_ref()))
        .iter()
        .map(ToString::to_string)
        .collect();
    // The spec has no resources left, so the plan is asked about the agent's own.
    assert!(named.is_empty());
    let plan_named = cgroup.not_enforced(Some(&builder::resources_of(&a).expect("resources")));
    let text: Vec<String> = plan_named.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("memory limit not enforced: no delegation here")),
        "{text:?}"
    );
    assert!(text.iter().any(|t| t.contains("pids limit")), "{text:?}");
}
