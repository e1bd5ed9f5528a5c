//! Secrets end to end (issue 15), on the containerd backend and on the process backend: a
//! canary value in a secret, taken as a `/run/secrets` file and as a `from: secret` environment
//! variable, is seen inside the agent (file content, mode, owner; the variable; `exec`; an
//! update while it runs) and nowhere else: not in containerd's metadata, the bundle, any file of
//! aac's data or run folders, the output of inspect/spec/ps/logs/events, the monitor's command
//! line, environment or trace log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aac_tests::cli::{aac, text};
use aac_tests::{env, unique_id, IMAGE, NAMESPACE};

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (containerd, runc, cgroups)");
    false
}

/// Poll `f` until it returns `Some`, panicking with `what` after 20 s.
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A value nothing else contains, starting with `needle`.
fn canary(needle: &str, tag: &str) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{needle}{tag}{}x{t:x}Q", std::process::id())
}

fn sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Regular files under `dir` (no symlinks followed, no fifos or sockets opened), except those
/// under `skip`.
fn files_under(dir: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if skip.iter().any(|s| p.starts_with(s)) {
            continue;
        }
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.is_dir() {
            files_under(&p, skip, out);
        } else if m.is_file() {
            out.push(p);
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every file under `dir` (but `skip`) that holds `needle`.
fn files_holding(dir: &Path, skip: &[PathBuf], needle: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    files_under(dir, skip, &mut files);
    files
        .into_iter()
        .filter(|f| std::fs::read(f).is_ok_and(|b| contains(&b, needle)))
        .collect()
}

fn ctr(args: &[&str]) -> String {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(&env().socket)
        .args(["-n", NAMESPACE])
        .args(args)
        .output()
        .expect("running ctr");
    assert!(out.status.success(), "ctr {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// `(mode, uid, gid)` of a path inside the agent, through `aac exec` (symlinks followed).
fn stat_in(name: &str, path: &str) -> String {
    aac()
        .ok(&[
            "exec",
            name,
            "/bin/busybox",
            "stat",
            "-L",
            "-c",
            "%a %u %g",
            path,
        ])
        .trim()
        .to_string()
}

fn read_in(name: &str, path: &str) -> String {
    aac().ok(&["exec", name, "/bin/busybox", "cat", path])
}

/// The whole scenario on one backend (`runtime`: `None` for containerd, `Some("process")`).
fn canary_scenario(runtime: Option<&str>) {
    let a = aac();
    let tag = runtime.unwrap_or("ctrd");
    let secret = unique_id(&format!("canary-{tag}"));
    let name = unique_id(&format!("sec-{tag}"));
    // Every canary of this scenario starts with this (the other backend's runs beside it).
    let needle = &format!("CANARY-{tag}-");
    let file_value = canary(needle, "F");
    let env_value = canary(needle, "E");
    let new_value = canary(needle, "U");

    let work = tempfile::tempdir().unwrap();
    let fv = work.path().join("file-value");
    std::fs::write(&fv, &file_value).unwrap();
    let out = a
        .command(&[
            "secret",
            "create",
            &secret,
            "--from-file",
            &format!("token={}", fv.display()),
            "--from-env",
            "env=SECRET_SOURCE",
        ])
        .env("SECRET_SOURCE", &env_value)
        .output()
        .unwrap();
    assert!(out.status.success(), "secret create: {}", text(&out.stderr));
    std::fs::remove_file(&fv).unwrap();
    // inspect shows digests, never values.
    let meta = a.ok(&["secret", "inspect", &secret]);
    assert!(meta.contains(&sha256(&file_value)), "{meta}");
    assert!(!meta.contains(needle), "{meta}");

    let dir = work.path().join("agent");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("agent.yaml"),
        format!(
            r#"apiVersion: agent.dev/v1
kind: Agent
metadata:
  name: {name}
spec:
  image: {IMAGE}
  command: [/bin/busybox, sleep, "100000"]
  environment:
    - name: PLAIN
      value: visible
    - name: API_TOKEN
      from: secret
      secretName: {secret}
      secretKey: env
  secrets:
    - name: api-token
      from: secret
      secretName: {secret}
      secretKey: token
  security:
    runAsUser: 1000
    runAsGroup: 1000
"#
        ),
    )
    .unwrap();
    let dir_s = dir.to_string_lossy().to_string();

    let mut up = vec!["up", "-d", "--name", &name];
    if let Some(r) = runtime {
        up.extend_from_slice(&["--runtime", r]);
    }
    up.push(&dir_s);
    let out = a.command(&up).env("AAC_LOG", "trace").output().unwrap();
    assert!(
        out.status.success(),
        "up: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        !contains(&out.stderr, needle) && !contains(&out.stdout, needle),
        "aac up printed a secret at trace level"
    );
    let v = a.inspect(&name);
    let id = v["Id"].as_str().unwrap().to_string();
    let pid = v["State"]["Pid"].as_u64().unwrap();
    assert!(pid > 0, "{}", v["State"]);

    // Inside the agent: the file, its mode and owner, the variable.
    let file = "/run/secrets/api-token";
    assert_eq!(read_in(&name, file), file_value);
    assert_eq!(stat_in(&name, file), "400 1000 1000");
    let fs = a.ok(&[
        "exec",
        &name,
        "/bin/busybox",
        "stat",
        "-f",
        "-c",
        "%T",
        "/run/secrets/",
    ]);
    assert_eq!(fs.trim(), "tmpfs");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let vars: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        vars.contains(&format!("API_TOKEN={env_value}")),
        "the agent's environment lacks API_TOKEN: {:?}",
        vars.iter()
            .map(|v| v.split('=').next().unwrap_or(""))
            .collect::<Vec<_>>()
    );
    assert!(vars.contains(&"PLAIN=visible".to_string()));
    // `exec` sees the variable too (its digest, so the value is printed nowhere).
    let seen = a.ok(&[
        "exec",
        &name,
        "/bin/busybox",
        "sh",
        "-c",
        "printf %s \"$API_TOKEN\" | /bin/busybox sha256sum",
    ]);
    assert_eq!(
        seen.split_whitespace().next(),
        Some(sha256(&env_value).as_str())
    );
    // The user the agent runs as reads it; the wrapper's environment file is gone.
    let run_secrets = a.run_dir.join("containers").join(&id).join("secrets");
    assert!(
        !run_secrets.join("init").join("main").exists(),
        "the main process's environment file is still there"
    );

    // A non-root host user reads neither the store nor the agent's tmpfs.
    let store = a.data_dir.join("secrets");
    let store_files: Vec<PathBuf> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(&secret))
        .collect();
    assert!(!store_files.is_empty(), "no store file for {secret}");
    for p in store_files
        .iter()
        .chain([&store, &run_secrets.join("files").join("api-token")])
    {
        let out = Command::new("runuser")
            .args(["-u", "nobody", "--", "cat"])
            .arg(p)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "nobody read {}: {}",
            p.display(),
            text(&out.stdout)
        );
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for p in &store_files {
        assert_eq!(
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777,
            0o600,
            "{}",
            p.display()
        );
    }

    // In use: rm is refused, and the secret stays.
    let out = a.run(&["secret", "rm", &secret]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&name), "{}", text(&out.stderr));
    a.ok(&["secret", "inspect", &secret]);

    // Where the canary must not be.
    let mut outputs = vec![
        ("inspect", a.ok(&["inspect", &name])),
        (
            "inspect json",
            a.ok(&["inspect", "--format", "json", &name]),
        ),
        ("spec", a.ok(&["spec", &dir_s])),
        ("ps", a.ok(&["ps", "-a", "--no-trunc"])),
        ("logs", a.ok(&["logs", &name])),
        (
            "events",
            a.ok(&[
                "events",
                "--since",
                "0",
                "--until",
                &(SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
                    + 1)
                .to_string(),
            ]),
        ),
    ];
    if runtime.is_none() {
        outputs.push(("ctr containers info", ctr(&["containers", "info", &id])));
        outputs.push(("ctr tasks ls", ctr(&["tasks", "ls"])));
    }
    for (what, out) in &outputs {
        assert!(!out.contains(needle), "{what} shows a secret:\n{out}");
    }
    // What is looked at is what holds the agent's process: its other variable is there.
    for (what, out) in &outputs {
        if ["inspect", "spec", "ctr containers info"].contains(what) {
            assert!(out.contains("PLAIN"), "{what} lacks PLAIN:\n{out}");
        }
    }
    let monitors = aac_tests::cli::shim_pids(&id);
    assert!(!monitors.is_empty(), "no monitor for {id}");
    for m in &monitors {
        for f in ["cmdline", "environ"] {
            let b = std::fs::read(format!("/proc/{m}/{f}")).unwrap();
            assert!(!contains(&b, needle), "/proc/{m}/{f} holds a secret");
        }
    }
    // The monitor logged at trace level (so the check below means something).
    let shim_log = a.run_dir.join("containers").join(&id).join("shim.log");
    let log = std::fs::read_to_string(&shim_log).unwrap_or_default();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the monitor's log has no trace: {log}"
    );
    let skip = vec![run_secrets.clone()];
    for dir in [&a.data_dir, &a.run_dir] {
        let found = files_holding(dir, &skip, needle);
        assert!(found.is_empty(), "files holding a secret: {found:?}");
    }
    // containerd's own folders: metadata, the bundle's config.json, the task's state.
    let found = files_holding(&env().dir, &[], needle);
    assert!(
        found.is_empty(),
        "containerd's files holding a secret: {found:?}"
    );
    if runtime.is_none() {
        let bundles = files_holding(&env().dir, &[], &id);
        assert!(
            bundles.iter().any(|p| p.ends_with("config.json")),
            "no bundle config.json of {id} found under {}",
            env().dir.display()
        );
    }

    // An update reaches the file while the agent runs; the variable needs a restart.
    let nv = work.path().join("new-value");
    std::fs::write(&nv, &new_value).unwrap();
    let out = a.ok(&[
        "secret",
        "update",
        &secret,
        "--from-file",
        &format!("token={}", nv.display()),
    ]);
    std::fs::remove_file(&nv).unwrap();
    assert!(!out.contains(needle), "{out}");
    assert!(out.contains(&name), "update does not name the agent: {out}");
    eventually("the new version in the agent", || {
        (read_in(&name, file) == new_value).then_some(())
    });
    assert_eq!(stat_in(&name, file), "400 1000 1000");
    assert_eq!(a.inspect(&name)["State"]["Pid"].as_u64(), Some(pid));
    let found = files_holding(&a.data_dir, &[], &new_value);
    assert!(found.is_empty(), "files holding the new value: {found:?}");

    // A new value of the variable: listed as needing a restart, and seen after `aac restart`.
    let new_env = canary(needle, "R");
    let out = a
        .command(&[
            "secret",
            "update",
            &secret,
            "--from-env",
            "env=SECRET_SOURCE",
        ])
        .env("SECRET_SOURCE", &new_env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!said.contains(needle), "{said}");
    assert!(
        said.lines()
            .any(|l| l.contains("restart") && l.contains(&name)),
        "update does not list {name} as needing a restart: {said}"
    );
    a.ok(&["restart", "-t", "1", &name]);
    let pid2 = eventually("the restarted agent", || {
        let v = a.inspect(&name);
        let p = v["State"]["Pid"].as_u64()?;
        (v["State"]["Status"] == "running" && p != pid && p > 0).then_some(p)
    });
    let environ = std::fs::read(format!("/proc/{pid2}/environ")).unwrap();
    assert!(
        contains(&environ, &format!("API_TOKEN={new_env}\0")),
        "the restarted agent lacks the new API_TOKEN"
    );
    assert_eq!(read_in(&name, file), new_value);
    assert!(!run_secrets.join("init").join("main").exists());
    for dir in [&a.data_dir, &a.run_dir] {
        let found = files_holding(dir, &skip, needle);
        assert!(
            found.is_empty(),
            "files holding a secret after restart: {found:?}"
        );
    }

    // Removed: its tmpfs goes, then the secret may go.
    a.ok(&["rm", "-f", &name]);
    assert!(!run_secrets.exists(), "{} is left", run_secrets.display());
    a.ok(&["secret", "rm", &secret]);
    let out = a.run(&["secret", "inspect", &secret]);
    assert!(!out.status.success());
}

#[test]
fn canary_containerd() {
    if !root() {
        return;
    }
    canary_scenario(None);
}

#[test]
fn canary_process() {
    if !root() {
        return;
    }
    canary_scenario(Some("process"));
}

/// `-e` values (and agent.yaml values) of variables whose names look secret are `***` in
/// `inspect` (docker's Config.Env, aac's Agent and Spec, templates) and in `aac spec`; the agent
/// still gets the real value, and other variables are shown as they are.
fn redaction_scenario(runtime: Option<&str>) {
    let a = aac();
    let tag = runtime.unwrap_or("ctrd");
    let needle = &format!("CANARY-red-{tag}-");
    let api_key = canary(needle, "K");
    let password = canary(needle, "P");
    let name = unique_id(&format!("red-{tag}"));
    let mut args = vec!["run", "-d", "--name", &name];
    if let Some(r) = runtime {
        args.extend_from_slice(&["--runtime", r]);
    }
    let e1 = format!("OPENAI_API_KEY={api_key}");
    let e2 = format!("DB_PASSWORD={password}");
    args.extend_from_slice(&["-e", &e1, "-e", &e2, "-e", "MODEL_NAME=gpt-x"]);
    if runtime.is_none() {
        args.push(IMAGE);
    }
    args.extend_from_slice(&["/bin/busybox", "sleep", "100000"]);
    a.ok(&args);
    let v = a.inspect(&name);
    let env: Vec<String> = v["Config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    for want in ["OPENAI_API_KEY=***", "DB_PASSWORD=***", "MODEL_NAME=gpt-x"] {
        assert!(env.iter().any(|e| e == want), "{want} not in {env:?}");
    }
    let agent_env = v["Agent"]["spec"]["environment"].as_array().unwrap();
    assert!(
        agent_env
            .iter()
            .any(|e| e["name"] == "OPENAI_API_KEY" && e["source"]["value"] == "***"),
        "{agent_env:?}"
    );
    for out in [
        a.ok(&["inspect", &name]),
        a.ok(&["inspect", "--format", "json", &name]),
        a.ok(&[
            "inspect",
            "--format",
            "{{.Config.Env}} {{json .Spec}}",
            &name,
        ]),
    ] {
        assert!(!out.contains(needle), "inspect shows a value:\n{out}");
        assert!(out.contains("gpt-x"), "inspect lacks MODEL_NAME:\n{out}");
    }
    // Masking is for display: the agent has the values.
    let pid = v["State"]["Pid"].as_u64().unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(contains(&environ, &e1), "the agent lacks OPENAI_API_KEY");
    a.ok(&["rm", "-f", &name]);

    // `aac spec`: a literal agent.yaml value and a `-e` value.
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("agent.yaml"),
        format!(
            "apiVersion: agent.dev/v1\nkind: Agent\nmetadata:\n  name: {name}\nspec:\n  \
             image: {IMAGE}\n  command: [/bin/busybox, true]\n  environment:\n    \
             - name: GITHUB_TOKEN\n      value: {password}\n    - name: LOG_LEVEL\n      \
             value: debug\n"
        ),
    )
    .unwrap();
    let dir = work.path().to_string_lossy().to_string();
    let out = a.run(&["spec", "-e", &e1, &dir]);
    let spec = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!spec.contains(needle), "aac spec shows a value:\n{spec}");
    for want in [
        "\"GITHUB_TOKEN=***\"",
        "\"OPENAI_API_KEY=***\"",
        "\"LOG_LEVEL=debug\"",
    ] {
        assert!(spec.contains(want), "aac spec lacks {want}:\n{spec}");
    }

    // An error quoting `NAME=VALUE` (a variable given where the image or command goes).
    let mut args = vec!["run", "--rm"];
    if let Some(r) = runtime {
        args.extend_from_slice(&["--runtime", r]);
    }
    args.push(&e1);
    let out = a.run(&args);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains(needle), "the error shows a value: {err}");
    assert!(err.contains("OPENAI_API_KEY=***"), "{err}");
}

#[test]
fn redaction_containerd() {
    if !root() {
        return;
    }
    redaction_scenario(None);
}

#[test]
fn redaction_process() {
    if !root() {
        return;
    }
    redaction_scenario(Some("process"));
}

/// What a failed `up` must not leave: a record, a name, a run folder, a containerd container.
fn nothing_left(name: &str, records_before: &[String]) {
    let a = aac();
    let mut after = a.record_ids();
    after.retain(|id| !records_before.contains(id));
    assert!(after.is_empty(), "records left: {after:?}");
    assert!(
        !a.data_dir.join("names").join(name).exists(),
        "the name {name} is taken"
    );
    let out = a.run(&["inspect", name]);
    assert!(!out.status.success(), "{name} exists");
    for id in &after {
        assert!(!a.run_dir.join("containers").join(id).exists());
    }
    assert!(
        !a.data_dir.join("agents").join(name).exists(),
        "the group {name} is left"
    );
    let listed = ctr(&["containers", "ls", "-q"]);
    for id in &after {
        assert!(!listed.contains(id.as_str()), "containerd has {id}");
    }
}

/// A missing secret, or a missing key of one, fails `aac up` with exit 125 naming the secret
/// and the agent.yaml line, before anything is created.
fn missing_scenario(runtime: Option<&str>) {
    let a = aac();
    let tag = runtime.unwrap_or("ctrd");
    let secret = unique_id(&format!("have-{tag}"));
    let missing = unique_id(&format!("none-{tag}"));
    let work = tempfile::tempdir().unwrap();
    let v = work.path().join("v");
    std::fs::write(&v, "x").unwrap();
    a.ok(&[
        "secret",
        "create",
        &secret,
        "--from-file",
        &format!("token={}", v.display()),
    ]);
    let name = unique_id(&format!("miss-{tag}"));
    // (what the agent.yaml holds after the command, the line of the bad field, what the error
    // names)
    let cases: Vec<(String, usize, Vec<String>)> = vec![
        (
            format!(
                "  environment:\n    - name: OK\n      value: x\n    - name: API_TOKEN\n      \
                 from: secret\n      secretName: {missing}\n      secretKey: token\n"
            ),
            13,
            vec![missing.clone(), "spec.environment[1].secretName".into()],
        ),
        (
            format!(
                "  environment:\n    - name: API_TOKEN\n      from: secret\n      \
                 secretName: {secret}\n      secretKey: nokey\n"
            ),
            12,
            vec![
                secret.clone(),
                "nokey".into(),
                "token".into(),
                "spec.environment[0].secretKey".into(),
            ],
        ),
        (
            format!(
                "  secrets:\n    - name: api\n      from: kubernetes-secret\n      \
                 secretName: {missing}\n      secretKey: token\n"
            ),
            11,
            vec![missing.clone(), "spec.secrets[0].secretName".into()],
        ),
        (
            // A scaled agent: no replica, no group.
            format!(
                "  scaling:\n    replicas: 2\n  environment:\n    - name: API_TOKEN\n      \
                 from: secret\n      secretName: {missing}\n      secretKey: token\n"
            ),
            13,
            vec![missing.clone(), "spec.environment[0].secretName".into()],
        ),
        (
            // The shorthand: the secret named like the variable.
            format!("  environment:\n    - name: {missing}\n      from: secret\n"),
            9,
            vec![missing.clone(), "spec.environment[0].name".into()],
        ),
    ];
    for (body, line, names) in cases {
        let file = work.path().join("agent.yaml");
        std::fs::write(
            &file,
            format!(
                "apiVersion: agent.dev/v1\nkind: Agent\nmetadata:\n  name: {name}\nspec:\n  \
                 image: {IMAGE}\n  command: [/bin/busybox, sleep, \"100\"]\n{body}"
            ),
        )
        .unwrap();
        let before = a.record_ids();
        let dir = work.path().to_string_lossy().to_string();
        let mut args = vec!["up", "-d"];
        if let Some(r) = runtime {
            args.extend_from_slice(&["--runtime", r]);
        }
        args.push(&dir);
        let out = a.run(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{body}: {err}");
        let at = format!("{}:{line}:", file.display());
        assert!(err.contains(&at), "{body}: the error lacks {at}: {err}");
        for n in &names {
            assert!(
                err.contains(n.as_str()),
                "{body}: the error lacks {n}: {err}"
            );
        }
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        nothing_left(&name, &before);
    }
    a.ok(&["secret", "rm", &secret]);
}

#[test]
fn missing_secret_containerd() {
    if !root() {
        return;
    }
    missing_scenario(None);
}

#[test]
fn missing_secret_process() {
    if !root() {
        return;
    }
    missing_scenario(Some("process"));
}

/// aac as a user who is not root, process backend: no tmpfs can be mounted, so the secrets
/// live on the run folder's tmpfs; files and environment still reach the agent, an update
/// replaces the version (the old one is removed) and `rm` removes everything the user's
/// agent had (its folders are 0500).
#[test]
fn rootless_process_backend() {
    if !root() {
        return;
    }
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let user = "aac-secrets-t";
    if !Command::new("id")
        .arg(user)
        .output()
        .unwrap()
        .status
        .success()
    {
        let out = Command::new("useradd")
            .args(["-M", "-r", "-s", "/usr/sbin/nologin", user])
            .output()
            .unwrap();
        assert!(out.status.success(), "useradd: {}", text(&out.stderr));
    }
    let uid = nix::unistd::User::from_name(user).unwrap().unwrap().uid;
    let shm = Path::new("/dev/shm");
    let tmpfs = nix::sys::statfs::statfs(shm)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if !tmpfs {
        eprintln!("skipped: /dev/shm is not a tmpfs");
        return;
    }
    let run = tempfile::tempdir_in(shm).unwrap();
    let data = tempfile::tempdir().unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    for d in [run.path(), data.path(), agent_dir.path()] {
        nix::unistd::chown(d, Some(uid), None).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let as_user = |args: &[&str], stdin: Option<&str>| {
        let mut c = Command::new("runuser");
        c.args(["-u", user, "--", "env", "-i", "PATH=/usr/bin:/bin"])
            .arg(format!("AAC_RUN_DIR={}", run.path().display()))
            .arg(format!("AAC_DATA_DIR={}", data.path().display()))
            .arg(format!(
                "AAC_SHIM={}",
                aac_tests::cli::bin("aac-shim").display()
            ))
            .arg(format!("HOME={}", data.path().display()))
            .arg("CONTAINERD_ADDRESS=/nonexistent/containerd.sock")
            .arg(aac_tests::cli::bin("aac"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            let _ = input.write_all(s.as_bytes());
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "aac {args:?} as {user}: {}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    struct Remove<'a>(&'a dyn Fn(&[&str], Option<&str>) -> String);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    (self.0)(&["rm", "-f", "rl"], None)
                }));
            }
        }
    }
    let _remove = Remove(&as_user);

    let needle = "CANARY-rootless-";
    let value = canary(needle, "F");
    let new_value = canary(needle, "U");
    as_user(
        &["secret", "create", "rls", "--from-file", "token=-"],
        Some(&value),
    );
    std::fs::write(
        agent_dir.path().join("agent.yaml"),
        "apiVersion: agent.dev/v1\nkind: Agent\nmetadata:\n  name: rl\nspec:\n  \
         command: [/bin/busybox, sleep, \"100000\"]\n  environment:\n    - name: API_TOKEN\n      \
         from: secret\n      secretName: rls\n      secretKey: token\n  secrets:\n    \
         - name: tok\n      from: secret\n      secretName: rls\n      secretKey: token\n",
    )
    .unwrap();
    nix::unistd::chown(&agent_dir.path().join("agent.yaml"), Some(uid), None).unwrap();
    let dir = agent_dir.path().to_string_lossy().to_string();
    as_user(&["up", "-d", "--runtime", "process", &dir], None);
    let v: serde_json::Value = serde_json::from_str(&as_user(&["inspect", "rl"], None)).unwrap();
    let id = v[0]["Id"].as_str().unwrap().to_string();
    let pid = v[0]["State"]["Pid"].as_u64().unwrap();
    assert!(pid > 0);
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(contains(&environ, &format!("API_TOKEN={value}\0")));
    let inside = format!("/proc/{pid}/root/run/secrets/tok");
    assert_eq!(std::fs::read_to_string(&inside).unwrap(), value);
    let m = std::fs::metadata(&inside).unwrap();
    assert_eq!((m.mode() & 0o777, m.uid()), (0o400, uid.as_raw()));
    let secrets = run.path().join("containers").join(&id).join("secrets");
    let versions = |d: &Path| {
        std::fs::read_dir(d.join("files"))
            .unwrap()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("..") && n != "..data"
            })
            .count()
    };
    assert_eq!(versions(&secrets), 1);

    as_user(
        &["secret", "update", "rls", "--from-file", "token=-"],
        Some(&new_value),
    );
    eventually("the new version", || {
        (std::fs::read_to_string(&inside).ok()? == new_value).then_some(())
    });
    assert_eq!(versions(&secrets), 1, "the previous version is left");
    for d in [run.path(), data.path()] {
        let found = files_holding(d, std::slice::from_ref(&secrets), needle);
        assert!(found.is_empty(), "files holding a secret: {found:?}");
    }

    as_user(&["rm", "-f", "rl"], None);
    assert!(!secrets.exists(), "{} is left", secrets.display());
    as_user(&["secret", "rm", "rls"], None);
}
