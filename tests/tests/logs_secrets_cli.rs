//! `logs --until` (also with `-f`), `logs --details` and `secret ls --format`, end to end
//! through the `aac` binary on the private containerd.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use aac_tests::cli::{aac, text};
use aac_tests::IMAGE;

const LONG: Duration = Duration::from_secs(60);

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (containerd, runc and CNI)");
    false
}

/// `aac ARGS` must fail with 125 and one clear line that contains `want`.
fn refused(args: &[&str], want: &str) {
    let out = aac().run(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(125), "aac {args:?}: {err}");
    assert!(err.contains(want), "aac {args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "aac {args:?}: {err}");
}

#[test]
fn logs_details_show_the_named_labels_and_env() {
    if !root() {
        return;
    }
    let a = aac();
    let name = "ls-details";
    let _ = a.run(&["rm", "-f", name]);
    a.ok(&[
        "run",
        "--name",
        name,
        "-l",
        "team=blue",
        "-l",
        "other=x",
        "-e",
        "STAGE=pre prod",
        "--log-opt",
        "labels=team,missing",
        "--log-opt",
        "env=STAGE",
        IMAGE,
        "sh",
        "-c",
        "echo one; echo two",
    ]);
    // docker's shape: the attributes by key, query-escaped, then a space and the line
    assert_eq!(
        a.ok(&["logs", "--details", name]),
        "STAGE=pre+prod,team=blue one\nSTAGE=pre+prod,team=blue two\n"
    );
    // without --details the lines are as written
    assert_eq!(a.ok(&["logs", name]), "one\ntwo\n");
    a.ok(&["rm", name]);

    // nothing named: an empty attribute list, so each line starts with a space
    a.ok(&["run", "--name", name, IMAGE, "echo", "plain"]);
    assert_eq!(a.ok(&["logs", "--details", name]), " plain\n");
    a.ok(&["rm", name]);

    refused(
        &["run", "--rm", "--log-opt", "labels=", IMAGE, "true"],
        "--log-opt",
    );
}

#[test]
fn logs_until_bounds_plain_and_followed_output() {
    if !root() {
        return;
    }
    let a = aac();
    let name = "ls-until";
    let _ = a.run(&["rm", "-f", name]);
    a.ok(&[
        "run",
        "-d",
        "--name",
        name,
        IMAGE,
        "sh",
        "-c",
        "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.2; done",
    ]);
    a.wait_for(name, LONG, "some output", |_| {
        a.ok(&["logs", name]).lines().count() >= 3
    });

    // -f --until T (T a little ahead): follows, then ends by itself once T has passed
    let start = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let until = format!("{:.3}", start + 2.0);
    let mut child = a
        .command(&["logs", "-f", "-t", "--until", &until, name])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LONG;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("logs -f --until {until} did not end");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "{status:?}");
    let limit = aac_runtime::logs::parse_time_arg(&until, SystemTime::now()).unwrap();
    let started =
        aac_runtime::logs::parse_time_arg(&format!("{start:.3}"), SystemTime::now()).unwrap();
    let times: Vec<SystemTime> = out
        .lines()
        .map(|l| {
            let ts = l.split_whitespace().next().unwrap();
            aac_runtime::logs::parse_time_arg(ts, SystemTime::now()).unwrap()
        })
        .collect();
    assert!(!times.is_empty(), "{out}");
    // nothing after T, and it did follow: lines written after it started are there
    assert!(times.iter().all(|t| *t <= limit), "{out}");
    assert!(times.iter().any(|t| *t > started), "{out}");

    // plain --until: the lines up to a line's own time, not one after
    let all = a.ok(&["logs", "-t", name]);
    let third = all.lines().nth(2).unwrap();
    let ts = third.split_whitespace().next().unwrap();
    let upto = a.ok(&["logs", "--until", ts, name]);
    assert_eq!(upto, "line0\nline1\nline2\n");
    a.ok(&["rm", "-f", name]);
}

#[test]
fn secret_ls_takes_templates_and_never_shows_values() {
    if !root() {
        return;
    }
    let a = aac();
    let name = "ls-fmt-secret";
    let _ = a.run(&["secret", "rm", "-f", name]);
    let out = a
        .command(&[
            "secret",
            "create",
            name,
            "--from-env",
            "token=LS_FMT_VALUE",
            "--from-env",
            "user=LS_FMT_USER",
        ])
        .env("LS_FMT_VALUE", "canary-ls-fmt-8842")
        .env("LS_FMT_USER", "bob")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let rows = a.ok(&[
        "secret",
        "ls",
        "--format",
        "{{.Name}} {{.Version}} {{.Keys}}",
    ]);
    assert!(
        rows.lines().any(|l| l == format!("{name} 1 token,user")),
        "{rows}"
    );
    // the template sees what `secret inspect` holds
    let inspect: serde_json::Value =
        serde_json::from_str(&a.ok(&["secret", "inspect", name])).unwrap();
    let updated = inspect[0]["updated"].as_str().unwrap().to_string();
    let rows = a.ok(&[
        "secret",
        "ls",
        "--format",
        "{{if eq .Name \"ls-fmt-secret\"}}{{.UpdatedAt}}{{end}}",
    ]);
    assert_eq!(rows.trim(), updated);
    // table: docker's headings, cells aligned
    let table = a.ok(&["secret", "ls", "--format", "table {{.Name}}\t{{.Keys}}"]);
    let mut lines = table.lines();
    let head = lines.next().unwrap();
    assert!(head.starts_with("NAME") && head.contains("KEYS"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(name) && l.ends_with("token,user")),
        "{table}"
    );
    // json stays
    let json: serde_json::Value =
        serde_json::from_str(&a.ok(&["secret", "ls", "--format", "json"])).unwrap();
    assert!(json.as_array().unwrap().iter().any(|s| s["name"] == name));
    // values never
    for f in ["{{json .}}", "table", "json"] {
        let out = a.ok(&["secret", "ls", "--format", f]);
        assert!(!out.contains("canary-ls-fmt-8842"), "{f}: {out}");
    }
    refused(&["secret", "ls", "--format", "{{.Value}}"], "Value");
    a.ok(&["secret", "rm", name]);
}
