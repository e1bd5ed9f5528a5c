//! `aac kube` from the command line: `generate` (output to stdout or a file, warnings and
//! errors with file:line:column, exit codes; the conversion itself is tested in aac-kube), and
//! `play`/`down` end to end against the private containerd: replicas answer, probes drive
//! health, Secrets reach /run/secrets, the round trip through generate, nothing left after
//! `down`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aac_tests::cli::{bin, text};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn aac(args: &[&str]) -> Output {
    Command::new(bin("aac"))
        .args(args)
        .env("AAC_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn generate_writes_the_manifests() {
    let chatbot = repo().join("examples/chatbot");
    let out = aac(&["kube", "generate", &chatbot.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    for kind in [
        "kind: ConfigMap",
        "kind: PersistentVolumeClaim",
        "kind: Deployment",
        "kind: Service",
        "kind: HorizontalPodAutoscaler",
        "kind: NetworkPolicy",
    ] {
        assert!(yaml.contains(kind), "no {kind}:\n{yaml}");
    }
    assert!(!yaml.contains("kind: CiliumNetworkPolicy"));
    assert!(yaml.contains("# NOT ENFORCED: the allowed hosts"));
    // warnings point into the agent.yaml
    let err = text(&out.stderr);
    let file = chatbot.join("agent.yaml");
    assert!(
        err.lines().any(
            |l| l.starts_with(&format!("aac: warning: {}:48:", file.display()))
                && l.contains("spec.volumes[0]: the bind mount")
        ),
        "{err}"
    );
    // to a file, with Cilium's policy
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("chatbot.yaml");
    let out = aac(&[
        "kube",
        "generate",
        &chatbot.join("agent.yaml").to_string_lossy(),
        "-o",
        &f.to_string_lossy(),
        "--fqdn-policy",
        "cilium",
        "--host-path",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let yaml = std::fs::read_to_string(&f).unwrap();
    assert!(yaml.contains("kind: CiliumNetworkPolicy"));
    assert!(yaml.contains("matchName: api.openai.com"));
    assert!(yaml.contains("hostPath:"));
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

#[test]
fn generate_errors_are_one_clear_line_and_exit_125() {
    let dir = tempfile::tempdir().unwrap();
    // nothing there
    let out = aac(&[
        "kube",
        "generate",
        &dir.path().join("nope").to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("aac: ") && err.contains("no agent.yaml there"),
        "{err}"
    );
    // an invalid agent: file:line:column and field
    let bad = dir.path().join("agent.yaml");
    std::fs::write(
        &bad,
        "apiVersion: agent.dev/v1\nkind: Agent\nmetadata: {name: x}\nspec:\n  ports: [{container: 70000}]\n",
    )
    .unwrap();
    let out = aac(&["kube", "generate", &bad.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:5:23: spec.ports[0].container: 70000 is not a port",
            bad.display()
        )),
        "{err}"
    );
    // a configMap volume whose file is missing: the field and where it is
    std::fs::write(
        &bad,
        "apiVersion: agent.dev/v1\nkind: Agent\nmetadata: {name: x}\nspec:\n  image: x\n  volumes:\n    - {source: ./missing.conf, target: /etc/x.conf, type: configMap}\n",
    )
    .unwrap();
    let out = aac(&["kube", "generate", &bad.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:7:16: spec.volumes[0].source: cannot read",
            bad.display()
        )),
        "{err}"
    );
    // --include-secrets of a secret the store does not have: says which, writes nothing
    let f = dir.path().join("out.yaml");
    let out = Command::new(bin("aac"))
        .args([
            "kube",
            "generate",
            &repo().join("examples/chatbot").to_string_lossy(),
            "--include-secrets",
            "-o",
            &f.to_string_lossy(),
        ])
        .env("AAC_LOG", "warn")
        .env("AAC_DATA_DIR", dir.path().join("data"))
        .env("AAC_RUN_DIR", dir.path().join("run"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("no such secret: agent-secrets"),
        "{}",
        text(&out.stderr)
    );
    assert!(!f.exists());
    // a bad flag value: clap's usage error
    let out = aac(&["kube", "generate", ".", "--fqdn-policy", "calico"]);
    assert_ne!(out.status.code(), Some(0));
}

// ---- kube play / down, end to end (root: containerd, runc, CNI) ----

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use aac_tests::cli::{aac as aac_env, free_port, Aac};
use aac_tests::{leftovers, IMAGE};

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (containerd, runc and CNI)");
    false
}

/// `GET path` on `addr`; the whole answer.
fn http_get(addr: (&str, u16), path: &str) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut b = String::new();
    s.read_to_string(&mut b)?;
    Ok(b)
}

fn line_of(src: &str, needle: &str) -> usize {
    src.lines().position(|l| l.contains(needle)).unwrap() + 1
}

fn health(a: &Aac, name: &str) -> String {
    a.inspect(name)["State"]["Health"]["Status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn names_in_ps(a: &Aac) -> String {
    a.ok(&["ps", "-a"])
}

/// What `play` of `file` (id `file_id`) may leave: records, names, the play folder, and
/// containerd's containers/snapshots/leases.
fn assert_nothing_left(a: &Aac, names: &[&str], ids: &[String]) {
    let ps = names_in_ps(a);
    for n in names {
        assert!(
            !ps.split_whitespace().any(|w| w == *n),
            "{n} still listed:\n{ps}"
        );
        assert!(!a.data_dir.join("names").join(n).exists(), "name {n} kept");
    }
    let records = a.record_ids();
    for id in ids {
        assert!(!records.contains(id), "record {id} kept");
    }
    let kube = a.data_dir.join("kube");
    let left: Vec<_> = std::fs::read_dir(&kube)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|p| {
            let played = std::fs::read_to_string(p.join("played.json")).unwrap_or_default();
            !names.iter().any(|n| played.contains(&format!("\"{n}\"")))
        }),
        "play folders kept: {left:?}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = aac_tests::client().await;
        for id in ids {
            assert_eq!(leftovers(&c, id).await, Default::default(), "{id}");
        }
    });
}

fn ids_of(a: &Aac, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| a.inspect(n)["Id"].as_str().unwrap().to_string())
        .collect()
}

/// The memory limit and CPU quota a container sees in its cgroup (v1 or v2).
fn limits(a: &Aac, name: &str) -> (String, String) {
    let script = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
                  cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max";
    let out = a.ok(&["exec", name, "sh", "-c", script]);
    let mut l = out.lines().map(|s| s.trim().to_string());
    (l.next().unwrap_or_default(), l.next().unwrap_or_default())
}

const WEB: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";

#[test]
fn play_replicas_answer_and_down_leaves_nothing() {
    if !root() {
        return;
    }
    let a = aac_env();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reps.yaml");
    std::fs::write(
        &file,
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: reps}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: reps}}}}
  template:
    metadata: {{labels: {{app: reps}}}}
    spec:
      containers:
        - name: web
          image: {IMAGE}
          command: [sh, -c, '{WEB}']
          ports: [{{containerPort: 8080, name: http}}]
          resources: {{limits: {{memory: 64Mi}}}}
          terminationMessagePolicy: File
---
apiVersion: v1
kind: Service
metadata: {{name: reps}}
spec:
  selector: {{app: reps}}
  ports: [{{port: {port}, targetPort: http}}]
"#
        ),
    )
    .unwrap();
    let f = file.to_string_lossy().to_string();
    let out = a.run(&["kube", "play", &f]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let names = ["reps-1", "reps-2", "reps-3"];
    assert_eq!(text(&out.stdout).lines().collect::<Vec<_>>(), names);
    // the unsupported field is named with its line
    let err = text(&out.stderr);
    assert!(
        err.lines().any(|l| l.starts_with("aac: warning: ")
            && l.contains(&format!(
                "{f}:{}:",
                line_of(
                    &std::fs::read_to_string(&file).unwrap(),
                    "terminationMessagePolicy"
                )
            ))
            && l.contains("terminationMessagePolicy")),
        "{err}"
    );
    // one agent brought up by the scaling feature: the replicas behind the Service's one
    // host port, each answering as itself
    assert_eq!(serving_ids(port, &names), names.map(String::from).into());
    for n in names {
        assert!(
            a.inspect(n)["Config"]["Env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e == "AAC_AGENT=reps"),
            "{n} is not a replica of reps"
        );
        // the limit reached the replica's cgroup
        assert_eq!(limits(a, n).0, (64 * 1024 * 1024).to_string(), "{n}");
    }
    let group: serde_json::Value =
        serde_json::from_str(&a.ok(&["autoscale", "status", "reps", "--json"])).unwrap();
    assert_eq!(group["DesiredReplicas"], 3, "{group:#}");
    assert_eq!(group["SupervisorAlive"], true, "{group:#}");
    // played twice: refused, nothing changes
    let again = a.run(&["kube", "play", &f]);
    assert_eq!(again.status.code(), Some(125));
    assert!(
        text(&again.stderr).contains("played already"),
        "{}",
        text(&again.stderr)
    );
    let ids = ids_of(a, &names);
    let out = a.run(&["kube", "down", &f]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_nothing_left(a, &names, &ids);
    assert_no_group(a, "reps");
    assert!(
        http_get(("127.0.0.1", port), "/").is_err(),
        "port still open"
    );
    // nothing more to take down
    let out = a.run(&["kube", "down", &f]);
    assert_eq!(out.status.code(), Some(125));
}

/// A Deployment an HPA governs comes up as an autoscaled agent: the HPA's bounds and windows
/// in the supervisor, the replicas behind the Service's one port.
#[test]
fn play_hpa_runs_an_autoscaled_agent() {
    if !root() {
        return;
    }
    let a = aac_env();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hpa.yaml");
    std::fs::write(
        &file,
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: auto}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: auto}}}}
  template:
    metadata: {{labels: {{app: auto}}}}
    spec:
      containers:
        - name: web
          image: {IMAGE}
          command: [sh, -c, '{WEB}']
          ports: [{{containerPort: 8080}}]
          resources: {{requests: {{cpu: 100m}}, limits: {{cpu: 500m}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: auto}}
spec:
  selector: {{app: auto}}
  ports: [{{port: {port}, targetPort: 8080}}]
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {{name: auto}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: auto}}
  minReplicas: 1
  maxReplicas: 3
  metrics:
    - type: Resource
      resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 80}}}}
  behavior:
    scaleDown: {{stabilizationWindowSeconds: 120}}
"#
        ),
    )
    .unwrap();
    let f = file.to_string_lossy().to_string();
    let out = a.run(&["kube", "play", "--wait", &f]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let names = ["auto-1", "auto-2"];
    assert_eq!(text(&out.stdout).lines().collect::<Vec<_>>(), names);
    assert_eq!(serving_ids(port, &names), names.map(String::from).into());
    let g: serde_json::Value =
        serde_json::from_str(&a.ok(&["autoscale", "status", "auto", "--json"])).unwrap();
    assert_eq!(g["MinReplicas"], 1, "{g:#}");
    assert_eq!(g["MaxReplicas"], 3, "{g:#}");
    assert_eq!(g["Autoscale"]["enabled"], true, "{g:#}");
    assert_eq!(g["Autoscale"]["scaleDownWindow"], "2m", "{g:#}");
    let ids = ids_of(a, &names);
    a.ok(&["kube", "down", &f]);
    assert_nothing_left(a, &names, &ids);
    assert_no_group(a, "auto");
}

/// The bodies of `GET /` through 127.0.0.1:port until every one of `names` has answered
/// (bounded): the set of replicas that answered.
fn serving_ids(port: u16, names: &[&str]) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while names.iter().any(|n| !seen.contains(*n)) && Instant::now() < deadline {
        match http_get(("127.0.0.1", port), "/") {
            Ok(b) => {
                if let Some((_, body)) = b.split_once("\r\n\r\n") {
                    let body = body.trim();
                    if !body.is_empty() {
                        seen.insert(body.to_string());
                    }
                }
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    seen
}

/// A scaled agent's records and supervisor are gone.
fn assert_no_group(a: &Aac, name: &str) {
    assert!(
        !a.data_dir.join("agents").join(name).exists(),
        "the records of agent {name} kept"
    );
    assert!(
        !a.run_dir.join("agents").join(name).exists(),
        "the run folder of agent {name} kept"
    );
    assert_ne!(
        a.run(&["autoscale", "status", name]).status.code(),
        Some(0),
        "agent {name} still up"
    );
}

#[test]
fn play_probes_drive_health() {
    if !root() {
        return;
    }
    let a = aac_env();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("probe.yaml");
    std::fs::write(
        &file,
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: probed}}
spec:
  containers:
    - name: web
      image: {IMAGE}
      command: [sh, -c, 'mkdir -p /www && exec httpd -f -p 8080 -h /www']
      readinessProbe:
        httpGet: {{path: /ready, port: 8080}}
        periodSeconds: 1
        timeoutSeconds: 1
        failureThreshold: 2
"#
        ),
    )
    .unwrap();
    let f = file.to_string_lossy().to_string();
    a.ok(&["kube", "play", &f]);
    let name = "probed";
    // no /ready yet: the monitor's HTTP probe fails
    a.wait_for(name, Duration::from_secs(30), "unhealthy", |v| {
        v["State"]["Health"]["Status"] == "unhealthy"
    });
    // the probe is the monitor's GET, not a command in the container
    let v = a.inspect(name);
    let log = &v["State"]["Health"]["Log"];
    assert!(log.as_array().is_some_and(|l| !l.is_empty()), "{log}");
    let probe = find_key(&v, "healthCheck").expect("no healthCheck recorded")["probe"].clone();
    assert_eq!(probe["http"]["port"], 8080, "{probe}");
    assert_eq!(probe["http"]["path"], "/ready", "{probe}");
    a.ok(&["exec", name, "sh", "-c", "echo ok > /www/ready"]);
    a.wait_for(name, Duration::from_secs(30), "healthy", |v| {
        v["State"]["Health"]["Status"] == "healthy"
    });
    a.ok(&["exec", name, "rm", "/www/ready"]);
    a.wait_for(name, Duration::from_secs(30), "unhealthy again", |v| {
        v["State"]["Health"]["Status"] == "unhealthy"
    });
    assert_eq!(health(a, name), "unhealthy");
    let ids = ids_of(a, &[name]);
    a.ok(&["kube", "down", &f]);
    assert_nothing_left(a, &[name], &ids);
}

/// A Secret in the played file goes into aac's secrets store and reaches the agent through
/// the normal delivery, on both backends: a volume's items become files in /run/secrets (0400,
/// read-only), `secretKeyRef` becomes an environment variable of the agent's process; a
/// Secret the file only references is the store's own. The value is in no bundle config.json,
/// record, log or output; `down` removes the store secret `play` made, not the one that was
/// there before.
#[test]
fn play_secret_reaches_a_file_and_an_env_var() {
    if !root() {
        return;
    }
    let a = aac_env();
    let dir = tempfile::tempdir().unwrap();
    let canary = format!("canary-{}-value", std::process::id());
    let shared = format!("shared-{}", std::process::id());
    let shared_value = format!("shared-{}-value", std::process::id());
    let vf = dir.path().join("v");
    std::fs::write(&vf, &shared_value).unwrap();
    a.ok(&[
        "secret",
        "create",
        &shared,
        "--from-file",
        &format!("v={}", vf.display()),
    ]);
    for runtime in ["containerd", "process"] {
        let file = dir.path().join(format!("secret-{runtime}.yaml"));
        let pod = format!("sec-{runtime}");
        std::fs::write(
            &file,
            format!(
                r#"apiVersion: v1
kind: Secret
metadata: {{name: api}}
stringData:
  token: {canary}
  unused: not-delivered
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings}}
data:
  mode: fast
---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}}}
spec:
  containers:
    - name: agent
      image: {IMAGE}
      command: [sleep, '300']
      env:
        - name: MODE
          valueFrom: {{configMapKeyRef: {{name: settings, key: mode}}}}
        - name: TOKEN
          valueFrom: {{secretKeyRef: {{name: api, key: token}}}}
        - name: SHARED
          valueFrom: {{secretKeyRef: {{name: {shared}, key: v}}}}
      volumeMounts:
        - {{name: api, mountPath: /run/secrets, readOnly: true}}
  volumes:
    - name: api
      secret:
        secretName: api
        items: [{{key: token, path: api-token}}]
"#
            ),
        )
        .unwrap();
        let f = file.to_string_lossy().to_string();
        let out = a.run(&["kube", "play", "--runtime", runtime, &f]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        // one container: the agent is named after the pod
        assert_eq!(text(&out.stdout).trim(), pod);
        let name = pod.clone();
        // the Secret is in the store under a name of the file's own
        let stored: Vec<String> = a
            .ok(&["secret", "ls", "-q"])
            .lines()
            .filter(|l| l.starts_with("kube.") && l.ends_with(".api"))
            .map(str::to_string)
            .collect();
        assert_eq!(stored.len(), 1, "{runtime}: {stored:?}");
        // the item is a file at its path in the mount, the other key is not delivered
        let got = a.ok(&["exec", &name, "cat", "/run/secrets/api-token"]);
        assert_eq!(got, canary, "{runtime}");
        let ls = a.ok(&["exec", &name, "ls", "/run/secrets"]);
        assert_eq!(
            ls.split_whitespace().collect::<Vec<_>>(),
            ["api-token"],
            "{runtime}"
        );
        let mode = a.ok(&[
            "exec",
            &name,
            "stat",
            "-L",
            "-c",
            "%a",
            "/run/secrets/api-token",
        ]);
        assert_eq!(mode.trim(), "400", "{runtime}");
        // read-only inside
        let w = a.run(&["exec", &name, "sh", "-c", "echo x > /run/secrets/api-token"]);
        assert_ne!(w.status.code(), Some(0), "{runtime}: secret writable");
        // the agent's own process has the variables
        let env = a.ok(&[
            "exec",
            &name,
            "sh",
            "-c",
            "tr '\\0' '\\n' < /proc/1/environ",
        ]);
        let env: Vec<&str> = env.lines().collect();
        assert!(env.contains(&"MODE=fast"), "{runtime}: {env:?}");
        assert!(
            env.contains(&format!("TOKEN={canary}").as_str()),
            "{runtime}: {env:?}"
        );
        assert!(
            env.contains(&format!("SHARED={shared_value}").as_str()),
            "{runtime}: {env:?}"
        );
        // the value is in no record, spec, log, event or output of aac: only on the
        // agent's secrets tmpfs
        let id = ids_of(a, &[&name]);
        let inspect = a.ok(&["inspect", &name]);
        assert!(!inspect.contains(&canary), "{runtime}: value in inspect");
        let tmpfs = a.run_dir.join("containers").join(&id[0]).join("secrets");
        for root in [&a.data_dir, &a.run_dir] {
            for hit in grep_files(root, &canary) {
                assert!(
                    hit.starts_with(&tmpfs),
                    "{runtime}: value in {}",
                    hit.display()
                );
            }
        }
        if runtime == "containerd" {
            // containerd's bundle of the container: its config.json holds no value
            let bundles: Vec<PathBuf> = files_named(&aac_tests::env().dir, "config.json")
                .into_iter()
                .filter(|p| p.to_string_lossy().contains(&id[0]))
                .collect();
            assert!(!bundles.is_empty(), "no bundle config.json for {}", id[0]);
            for b in &bundles {
                let spec = std::fs::read_to_string(b).unwrap();
                assert!(spec.contains("/run/secrets"), "{}", b.display());
                assert!(!spec.contains(&canary) && !spec.contains(&shared_value));
            }
            assert!(grep_files(&aac_tests::env().dir, &canary).is_empty());
        }
        // exported again, the Secret is referenced by the file's name (not inlined, not a
        // host path)
        let gen = a.ok(&["kube", "generate", &name]);
        assert!(
            gen.contains("- secret:") && gen.contains("name: api\n") && !gen.contains("kube."),
            "{gen}"
        );
        assert!(!gen.contains(&canary) && !gen.contains("hostPath"), "{gen}");
        a.ok(&["kube", "down", &f]);
        assert_nothing_left(a, &[&name], &id);
        assert!(grep_files(&a.data_dir, &canary).is_empty());
        assert!(grep_files(&a.run_dir, &canary).is_empty());
        // the store secret play made is gone; the one that was there before stays
        assert_ne!(
            a.run(&["secret", "inspect", &stored[0]]).status.code(),
            Some(0)
        );
        a.ok(&["secret", "inspect", &shared]);
    }
    a.ok(&["secret", "rm", &shared]);
}

/// Files named `name` under `root`.
fn files_named(root: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && e.file_name() == name {
                out.push(e.path());
            }
        }
    }
    out
}

/// The first value under `key` anywhere in `v`.
fn find_key<'v>(v: &'v serde_json::Value, key: &str) -> Option<&'v serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m
            .get(key)
            .or_else(|| m.values().find_map(|x| find_key(x, key))),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find_key(x, key)),
        _ => None,
    }
}

/// Files under `root` whose bytes contain `needle`.
fn grep_files(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                if let Ok(b) = std::fs::read(&p) {
                    if b.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                        out.push(p);
                    }
                }
            }
        }
    }
    out
}

/// What a running scaled agent shows from outside and inside: the replicas answering on its
/// published port, and per replica its health and probe, environment, limits and secret file.
fn observe(a: &Aac, port: u16, names: &[&str]) -> Vec<String> {
    let seen = serving_ids(port, names);
    assert_eq!(
        seen.len(),
        names.len(),
        "not every replica answered on {port}: {seen:?}\n{}",
        a.run(&["autoscale", "status", "trip", "--json"])
            .stdout
            .escape_ascii()
    );
    let mut out = vec![format!("{seen:?}")];
    for n in names {
        let v = a.wait_for(n, Duration::from_secs(60), "healthy", |v| {
            v["State"]["Health"]["Status"] == "healthy"
        });
        let probe = find_key(&v, "healthCheck").expect("no healthCheck recorded")["probe"].clone();
        out.push(format!("{n} probe {probe}"));
        let env = a.ok(&[
            "exec",
            n,
            "sh",
            "-c",
            "tr '\\0' '\\n' < /proc/1/environ | sort",
        ]);
        for l in env.lines() {
            if ["GREETING=", "LEVEL=", "TOKEN="]
                .iter()
                .any(|p| l.starts_with(p))
            {
                out.push(format!("{n} env {l}"));
            }
        }
        out.push(format!("{n} limits {:?}", limits(a, n)));
        let token = a.ok(&["exec", n, "cat", "/run/secrets/trip-token"]);
        out.push(format!("{n} /run/secrets/trip-token {token}"));
    }
    out
}

/// `kube generate` of an agent (replicas, a health check, env, limits, a secret as a file and
/// as a variable), then `kube play` of the output, behaves like the agent brought up by
/// `aac up`: the same replicas answering on the same published port, environment, limits,
/// probes and secrets; with secrets referenced (the store's own) and with `--include-secrets`
/// (the values go into the store under the file's name and leave with `down`).
#[test]
fn generate_then_play_behaves_like_the_agent() {
    if !root() {
        return;
    }
    let a = aac_env();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let token = format!("trip-{}-token", std::process::id());
    let tf = dir.path().join("token");
    std::fs::write(&tf, &token).unwrap();
    a.ok(&[
        "secret",
        "create",
        "trip-key",
        "--from-file",
        &format!("token={}", tf.display()),
    ]);
    let agent_yaml = dir.path().join("agent.yaml");
    std::fs::write(
        &agent_yaml,
        format!(
            r#"apiVersion: agent.dev/v1
kind: Agent
metadata: {{name: trip}}
spec:
  image: {IMAGE}
  command: [sh, -c, '{WEB}']
  environment:
    - {{name: GREETING, value: "hello there"}}
    - {{name: LEVEL, from: config, key: level}}
    - {{name: TOKEN, from: secret, secretName: trip-key, secretKey: token}}
  config:
    level: debug
  secrets:
    - {{name: trip-token, from: secret, secretName: trip-key, secretKey: token}}
  ports:
    - {{container: 8080, host: {port}}}
  resources:
    limits: {{cpu: "0.5", memory: 96Mi}}
  healthCheck:
    http: {{path: /, port: 8080}}
    interval: 1s
    timeout: 1s
    retries: 2
  scaling:
    replicas: 2
"#
        ),
    )
    .unwrap();
    let names = ["trip-1", "trip-2"];
    // the agent itself
    let up = a.ok(&["up", "-d", &agent_yaml.to_string_lossy()]);
    assert_eq!(up.lines().collect::<Vec<_>>(), names);
    let want = observe(a, port, &names);
    assert_eq!(
        want[0],
        format!(
            "{:?}",
            std::collections::BTreeSet::from(names.map(String::from))
        )
    );
    assert!(
        want.contains(&"trip-2 env GREETING=hello there".to_string()),
        "{want:?}"
    );
    assert!(
        want.contains(&format!("trip-1 env TOKEN={token}")),
        "{want:?}"
    );
    assert!(
        want.contains(&format!(
            "trip-1 limits {:?}",
            ((96 * 1024 * 1024).to_string(), "50000".to_string())
        )),
        "{want:?}"
    );
    a.ok(&["down", "trip"]);
    assert_no_group(a, "trip");

    // its manifests, secrets referenced
    let k = dir.path().join("trip.yaml");
    let ks = k.to_string_lossy().to_string();
    a.ok(&["kube", "generate", &agent_yaml.to_string_lossy(), "-o", &ks]);
    let first = std::fs::read_to_string(&k).unwrap();
    assert!(
        !first.contains("kind: Secret") && !first.contains(&token),
        "{first}"
    );
    let out = a.run(&["kube", "play", "--wait", &ks]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().collect::<Vec<_>>(), names);
    assert_eq!(observe(a, port, &names), want);
    // and generating from the played agent gives the same Deployment back
    let again = a.ok(&["kube", "generate", "trip"]);
    let deployment = |y: &str| {
        y.split("\n---\n")
            .find(|d| d.contains("kind: Deployment"))
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(deployment(&again), deployment(&first));
    let ids = ids_of(a, &names);
    a.ok(&["kube", "down", &ks]);
    assert_nothing_left(a, &names, &ids);
    assert_no_group(a, "trip");
    a.ok(&["secret", "inspect", "trip-key"]);

    // with --include-secrets: a warning, a private file holding the value
    let ki = dir.path().join("trip-secrets.yaml");
    let kis = ki.to_string_lossy().to_string();
    let out = a.run(&[
        "kube",
        "generate",
        &agent_yaml.to_string_lossy(),
        "--include-secrets",
        "-o",
        &kis,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("aac: warning: ")
            && text(&out.stderr).contains("holds the values of 1 secret"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::metadata(&ki).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let inlined = std::fs::read_to_string(&ki).unwrap();
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(token.as_bytes())
    };
    assert!(
        inlined.contains("kind: Secret") && inlined.contains(&b64),
        "{inlined}"
    );
    // the user's secret changes: the played agent takes the file's value, not the store's
    std::fs::write(&tf, "changed").unwrap();
    a.ok(&[
        "secret",
        "update",
        "trip-key",
        "--from-file",
        &format!("token={}", tf.display()),
    ]);
    let out = a.run(&["kube", "play", "--wait", &kis]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(observe(a, port, &names), want);
    let stored: Vec<String> = a
        .ok(&["secret", "ls", "-q"])
        .lines()
        .filter(|l| l.starts_with("kube.") && l.ends_with(".trip-key"))
        .map(str::to_string)
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let ids = ids_of(a, &names);
    a.ok(&["kube", "down", &kis]);
    assert_nothing_left(a, &names, &ids);
    assert_no_group(a, "trip");
    assert_ne!(
        a.run(&["secret", "inspect", &stored[0]]).status.code(),
        Some(0)
    );
    a.ok(&["secret", "rm", "trip-key"]);
}

/// A play that fails half-way (the second pod's image is missing) removes the first pod again
/// and says which object failed; env from a Secret key is refused before anything runs.
#[test]
fn failed_play_leaves_nothing() {
    if !root() {
        return;
    }
    let a = aac_env();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("half.yaml");
    std::fs::write(
        &file,
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: half-ok}}
spec:
  containers:
    - {{name: a, image: {IMAGE}, command: [sleep, '300']}}
---
apiVersion: v1
kind: Pod
metadata: {{name: half-bad}}
spec:
  containers:
    - {{name: b, image: "aac-no-such-image:1", command: [sleep, '300']}}
"#
        ),
    )
    .unwrap();
    let f = file.to_string_lossy().to_string();
    let out = a.run(&["kube", "play", &f]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("aac: Pod/half-bad (half-bad): image 'aac-no-such-image:1' not found"),
        "{err}"
    );
    assert_nothing_left(a, &["half-ok", "half-bad"], &[]);
    assert!(
        a.run(&["kube", "down", &f]).status.code() == Some(125),
        "nothing to take down"
    );

    // a Secret neither in the file nor in the store: refused before anything runs, and the
    // file's own Secret leaves the store again
    std::fs::write(
        &file,
        format!(
            r#"apiVersion: v1
kind: Secret
metadata: {{name: s}}
stringData: {{k: v}}
---
apiVersion: v1
kind: Pod
metadata: {{name: envsec}}
spec:
  containers:
    - name: a
      image: {IMAGE}
      env:
        - name: TOKEN
          valueFrom: {{secretKeyRef: {{name: s, key: k}}}}
        - name: OTHER
          valueFrom: {{secretKeyRef: {{name: kube-no-such-secret, key: k}}}}
"#
        ),
    )
    .unwrap();
    let out = a.run(&["kube", "play", &f]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("aac: Pod/envsec (envsec): ")
            && err.contains("no such secret: kube-no-such-secret"),
        "{err}"
    );
    assert_nothing_left(a, &["envsec"], &[]);
    // a scaled agent of that name is up already (not from this file): refused, and left up
    std::fs::write(
        &file,
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: taken}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: taken}}}}
  template:
    metadata: {{labels: {{app: taken}}}}
    spec:
      containers:
        - {{name: a, image: {IMAGE}, command: [sleep, '300']}}
"#
        ),
    )
    .unwrap();
    let agent = dir.path().join("agent.yaml");
    std::fs::write(
        &agent,
        format!(
            "apiVersion: agent.dev/v1\nkind: Agent\nmetadata: {{name: taken}}\nspec:\n  image: {IMAGE}\n  command: [sleep, '300']\n  scaling: {{replicas: 1}}\n"
        ),
    )
    .unwrap();
    a.ok(&["up", "-d", &agent.to_string_lossy()]);
    let out = a.run(&["kube", "play", &f]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("Deployment/taken: agent taken is already up"),
        "{}",
        text(&out.stderr)
    );
    let g: serde_json::Value =
        serde_json::from_str(&a.ok(&["autoscale", "status", "taken", "--json"])).unwrap();
    assert_eq!(g["CurrentReplicas"], 1, "{g:#}");
    a.ok(&["inspect", "taken-1"]);
    a.ok(&["down", "taken"]);
    assert_no_group(a, "taken");
    let ls = a.ok(&["secret", "ls", "-q"]);
    assert!(
        !ls.lines()
            .any(|l| l.starts_with("kube.") && l.ends_with(".s")),
        "{ls}"
    );
}
