//! Egress by host name (spec.network.security, `--allow-host`, `--deny-egress`) through the
//! `aac` binary on a private containerd, asserted from inside the agent.
//!
//! There is no internet here, so the tests build one: a network namespace `aacw-<pid>` joined
//! to the host by a veth pair, holding a DNS zone served by dnsmasq (A, AAAA, CNAME, a
//! one-second TTL, two names on one address, a wildcard zone and its apex), a second DNS
//! server the agent must not reach, busybox HTTP servers and a TCP echo server on its
//! addresses. Agents reach it through the host's routing; their upstream DNS is that dnsmasq.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aac_tests::cli::{aac, text, Aac};
use aac_tests::IMAGE;
use serde_json::Value;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (containerd, runc, CNI, network namespaces)");
    false
}

fn have(tool: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists())
}

/// The test internet.
struct World {
    ns: String,
    host_if: String,
    /// `10.213.N`: the world's /24.
    net: String,
    _www: tempfile::TempDir,
}

static WORLD: OnceLock<World> = OnceLock::new();
static CHILDREN: Mutex<Vec<Child>> = Mutex::new(Vec::new());
/// The namespace and host interface, known from their creation on (for the cleanup).
static MADE: Mutex<Option<(String, String)>> = Mutex::new(None);

extern "C" fn destroy_world() {
    if let Ok(mut kids) = CHILDREN.lock() {
        for c in kids.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    if let Some((ns, host_if)) = MADE.lock().ok().and_then(|m| m.clone()) {
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &host_if])
            .stderr(Stdio::null())
            .status();
    }
}

fn sh(cmd: &[&str]) {
    let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
}

impl World {
    fn ip(&self, last: u8) -> String {
        format!("{}.{last}", self.net)
    }

    /// Start `args` inside the world; it is killed when the test binary exits.
    fn spawn(&self, args: &[&str]) {
        let log = std::fs::File::create(self._www.path().join(format!(
            "{}.log",
            CHILDREN.lock().map(|k| k.len()).unwrap_or(0)
        )))
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        CHILDREN.lock().unwrap().push(child);
    }

    fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .output()
            .unwrap()
    }
}

/// Address roles in the world's /24.
const DNS: u8 = 2;
const ALLOWED: u8 = 3;
const DENIED: u8 = 4;
const EDGE: u8 = 5;
const SHORT: u8 = 6;
const WILD_SUB: u8 = 7;
const WILD_APEX: u8 = 8;
const PORTS: u8 = 9;
const OTHER_DNS: u8 = 10;

fn world() -> &'static World {
    WORLD.get_or_init(|| {
        let pid = std::process::id();
        let w = World {
            ns: format!("aacw-{pid}"),
            host_if: format!("aw{}h", pid % 100_000),
            net: format!("10.213.{}", 200 + pid % 50),
            _www: tempfile::tempdir().unwrap(),
        };
        // SAFETY: registering a plain extern "C" function.
        unsafe { libc::atexit(destroy_world) };
        let wif = format!("aw{}w", pid % 100_000);
        *MADE.lock().unwrap() = Some((w.ns.clone(), w.host_if.clone()));
        sh(&["ip", "netns", "add", &w.ns]);
        sh(&[
            "ip", "link", "add", &w.host_if, "type", "veth", "peer", "name", &wif,
        ]);
        sh(&["ip", "link", "set", &wif, "netns", &w.ns]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", w.ip(1)),
            "dev",
            &w.host_if,
        ]);
        sh(&["ip", "link", "set", &w.host_if, "up"]);
        let inside = |args: &[&str]| {
            let out = w.exec(args);
            assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        };
        inside(&["ip", "link", "set", "lo", "up"]);
        for last in 2..=10u8 {
            inside(&[
                "ip",
                "addr",
                "add",
                &format!("{}/24", w.ip(last)),
                "dev",
                &wif,
            ]);
        }
        inside(&[
            "ip",
            "-6",
            "addr",
            "add",
            "fd00:213::3/64",
            "dev",
            &wif,
            "nodad",
        ]);
        inside(&["ip", "link", "set", &wif, "up"]);
        inside(&["ip", "route", "add", "default", "via", &w.ip(1)]);

        // The zone. dnsmasq answers its own names only (`--local`), with TTLs as given.
        let n = |last| w.ip(last);
        let mut dns = vec![
            "dnsmasq".to_string(),
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--bind-interfaces".into(),
            format!("--listen-address={}", n(DNS)),
            // Its own pid file: dnsmasq replaces the file it is given.
            format!("--pid-file={}", w._www.path().join("dns.pid").display()),
            "--user=root".into(),
            "--local=/test/".into(),
            "--local-ttl=300".into(),
            format!("--host-record=allowed.test,{},fd00:213::3,300", n(ALLOWED)),
            format!("--host-record=denied.test,{},300", n(DENIED)),
            // Two names on one address: one allowed, one not.
            format!("--host-record=twin-a.test,{},300", n(ALLOWED)),
            format!("--host-record=twin-b.test,{},300", n(ALLOWED)),
            "--cname=alias.test,edge.cdn.test".into(),
            format!("--host-record=edge.cdn.test,{},300", n(EDGE)),
            format!("--host-record=short.test,{},1", n(SHORT)),
            format!("--host-record=api.wild.test,{},300", n(WILD_SUB)),
            format!("--host-record=deep.api.wild.test,{},300", n(WILD_SUB)),
            format!("--host-record=wild.test,{},300", n(WILD_APEX)),
            format!("--host-record=port.test,{},300", n(PORTS)),
        ];
        w.spawn(&dns.iter().map(String::as_str).collect::<Vec<_>>());
        // Another resolver, which would tell the agent where denied.test is.
        dns.truncate(9);
        dns[6] = format!("--listen-address={}", n(OTHER_DNS));
        dns[7] = format!(
            "--pid-file={}",
            w._www.path().join("other-dns.pid").display()
        );
        dns.push(format!("--host-record=denied.test,{},300", n(DENIED)));
        w.spawn(&dns.iter().map(String::as_str).collect::<Vec<_>>());

        // HTTP servers that say who they are.
        for (last, port, body) in [
            (ALLOWED, 8080, "allowed"),
            (DENIED, 8080, "denied"),
            (DENIED, 443, "denied-https"),
            (EDGE, 8080, "edge"),
            (SHORT, 8080, "short"),
            (WILD_SUB, 8080, "wild-sub"),
            (WILD_APEX, 8080, "wild-apex"),
            (PORTS, 8080, "port-8080"),
            (PORTS, 8081, "port-8081"),
        ] {
            let dir = w._www.path().join(format!("{last}-{port}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("index.html"), format!("{body}\n")).unwrap();
            w.spawn(&[
                "busybox",
                "httpd",
                "-f",
                "-p",
                &format!("{}:{port}", n(last)),
                "-h",
                &dir.to_string_lossy(),
            ]);
        }
        // A TCP echo server for connections that must outlive their address's TTL.
        w.spawn(&[
            "python3",
            "-c",
            "import socketserver,sys\n\
             class H(socketserver.StreamRequestHandler):\n\
             \tdef handle(self):\n\
             \t\tfor line in self.rfile:\n\
             \t\t\tself.wfile.write(line)\n\
             socketserver.ThreadingTCPServer.allow_reuse_address=True\n\
             socketserver.ThreadingTCPServer((sys.argv[1],9000),H).serve_forever()\n",
            &n(SHORT),
        ]);
        // Everything answers before a test starts.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let dig = w.exec(&["busybox", "nslookup", "allowed.test", &n(DNS)]);
            let http = w.exec(&[
                "busybox",
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{}:8081/", n(PORTS)),
            ]);
            let echo = w.exec(&[
                "python3",
                "-c",
                "import socket,sys; socket.create_connection((sys.argv[1], 9000), 1)",
                &n(SHORT),
            ]);
            if dig.status.success() && http.status.success() && echo.status.success() {
                break;
            }
            if Instant::now() > deadline {
                let mut logs = String::new();
                for e in std::fs::read_dir(w._www.path()).unwrap().flatten() {
                    if e.path().extension().is_some_and(|x| x == "log") {
                        logs += &format!(
                            "{}: {}\n",
                            e.path().display(),
                            std::fs::read_to_string(e.path()).unwrap_or_default()
                        );
                    }
                }
                panic!(
                    "the test world did not come up: {} {} {}\n{logs}",
                    text(&dig.stdout),
                    text(&http.stderr),
                    text(&echo.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        w
    })
}

fn out_text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// `aac exec NAME sh -c SCRIPT`: (exit code, stdout + stderr).
fn exec(a: &Aac, name: &str, script: &str) -> (i32, String) {
    let out = a.run(&["exec", name, "sh", "-c", script]);
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

/// GET through busybox wget inside the agent, bounded by `timeout` (busybox 1.35's `wget -T`
/// crashes).
fn get(a: &Aac, name: &str, url: &str) -> (i32, String) {
    exec(a, name, &format!("timeout 10 wget -q -O - {url} 2>&1"))
}

/// GET `/` from `host` (resolved by the agent's libc through its resolv.conf) on `port`.
fn fetch(a: &Aac, name: &str, host: &str, port: u16) -> (i32, String) {
    get(a, name, &format!("http://{host}:{port}/"))
}

fn agent_dir(yaml: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("agent.yaml"), yaml).unwrap();
    d
}

fn netns_of(a: &Aac, name: &str) -> PathBuf {
    PathBuf::from(
        a.inspect(name)["Network"]["netns"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no netns"))
            .to_string(),
    )
}

/// `nft list set inet aac_egress SET` inside the agent's namespace (from the host).
fn nft_set(ns: &Path, set: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["nft", "list", "set", "inet", "aac_egress", set])
        .output()
        .unwrap();
    text(&out.stdout) + &text(&out.stderr)
}

fn events(a: &Aac, name: &str) -> Vec<Value> {
    a.ok(&[
        "events",
        "--format",
        "json",
        "--since",
        "5m",
        "--until",
        "0s",
        "--filter",
        "type=egress-denied",
        "--filter",
        &format!("name={name}"),
    ])
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

/// After `aac rm`: no namespace, no monitor (which held the resolver), no attachment.
fn assert_gone(a: &Aac, id: &str, ns: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while (ns.exists() || !aac_tests::cli::shim_pids(id).is_empty()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!ns.exists(), "{} is left", ns.display());
    assert!(
        aac_tests::cli::shim_pids(id).is_empty(),
        "a monitor of {id} is left"
    );
    assert!(!a
        .data_dir
        .join("networks/attachments")
        .join(format!("{id}.json"))
        .exists());
    // The host's own ruleset never had the agent's table.
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(
        !text(&out.stdout).contains("aac_egress"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn allowed_hosts_from_agent_yaml_are_all_the_agent_reaches() {
    if !root() || !have("dnsmasq") || !have("nft") {
        eprintln!("skipped: needs root, dnsmasq and nft");
        return;
    }
    let w = world();
    let a = aac();
    let yaml = format!(
        "apiVersion: agent.dev/v1\nkind: Agent\nmetadata:\n  name: eg-main\nspec:\n  image: {IMAGE}\n  \
         command: [sleep, \"600\"]\n  network:\n    dns: [{dns}]\n    security:\n      \
         allowExternalConnections: false\n      allowedHosts:\n        - allowed.test\n        \
         - twin-a.test\n        - \"*.wild.test\"\n        - alias.test\n        - port.test:8080\n",
        dns = w.ip(DNS)
    );
    let dir = agent_dir(&yaml);
    let path = dir.path().to_string_lossy().to_string();
    let id = a.ok(&["up", "-d", &path]).trim().to_string();
    let name = "eg-main";

    // resolv.conf names aac's resolver only.
    let (_, resolv) = exec(a, name, "cat /etc/resolv.conf");
    let servers: Vec<&str> = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .collect();
    assert_eq!(servers, ["127.0.0.11"], "{resolv}");

    // An allowed name answers, by A and by AAAA; its address is in the allow sets.
    assert_eq!(
        fetch(a, name, "allowed.test", 8080),
        (0, "allowed\n".into())
    );
    let (code, aaaa) = exec(a, name, "nslookup -type=AAAA allowed.test");
    assert_eq!(code, 0, "{aaaa}");
    assert!(aaaa.contains("fd00:213::3"), "{aaaa}");
    let ns = netns_of(a, name);
    assert!(
        nft_set(&ns, "allow4").contains(&w.ip(ALLOWED)),
        "{}",
        nft_set(&ns, "allow4")
    );
    assert!(
        nft_set(&ns, "allow6").contains("fd00:213::3"),
        "{}",
        nft_set(&ns, "allow6")
    );

    // A name not on the list: NXDOMAIN, from the resolver.
    let (code, out) = exec(a, name, "nslookup denied.test");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("NXDOMAIN"), "{out}");
    let (code, out) = fetch(a, name, "denied.test", 8080);
    assert_ne!(code, 0);
    assert!(out.contains("bad address"), "{out}");

    // The raw address of a host not allowed: refused at once, not a timeout. Also on 443
    // (a DNS-over-HTTPS server at an address not allowed).
    for url in [
        format!("http://{}:8080/", w.ip(DENIED)),
        format!("http://{}:443/", w.ip(DENIED)),
    ] {
        // (a dropped packet would end in wget's timeout, not "Connection refused")
        let (code, out) = get(a, name, &url);
        assert_ne!(code, 0, "{url}: {out}");
        assert!(out.contains("Connection refused"), "{url}: {out}");
    }

    // Another resolver cannot be asked: the denied name stays unknown.
    let (code, out) = exec(
        a,
        name,
        &format!("nslookup denied.test {}", w.ip(OTHER_DNS)),
    );
    assert_ne!(code, 0, "{out}");
    assert!(
        !out.contains(&format!("Address: {}", w.ip(DENIED))),
        "{out}"
    );

    // Two names on one address: the allowed one resolves, the other does not.
    assert_eq!(fetch(a, name, "twin-a.test", 8080), (0, "allowed\n".into()));
    let (_, out) = exec(a, name, "nslookup twin-b.test");
    assert!(out.contains("NXDOMAIN"), "{out}");

    // A wildcard matches subdomains at any depth, never the apex.
    assert_eq!(
        fetch(a, name, "api.wild.test", 8080),
        (0, "wild-sub\n".into())
    );
    assert_eq!(
        fetch(a, name, "deep.api.wild.test", 8080),
        (0, "wild-sub\n".into())
    );
    let (_, out) = exec(a, name, "nslookup wild.test");
    assert!(out.contains("NXDOMAIN"), "{out}");
    let (_, out) = get(a, name, &format!("http://{}:8080/", w.ip(WILD_APEX)));
    assert!(out.contains("Connection refused"), "{out}");

    // A CNAME chain: the address at its end is allowed.
    assert_eq!(fetch(a, name, "alias.test", 8080), (0, "edge\n".into()));

    // An entry with a port: that port only.
    assert_eq!(fetch(a, name, "port.test", 8080), (0, "port-8080\n".into()));
    let (_, out) = fetch(a, name, "port.test", 8081);
    assert!(out.contains("Connection refused"), "{out}");

    // The agent can neither change its rules nor go around them.
    let (_, status) = exec(a, name, "grep CapEff /proc/1/status");
    let eff = u64::from_str_radix(status.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(eff & (1 << 12), 0, "CAP_NET_ADMIN in {status}");
    assert_eq!(eff & (1 << 13), 0, "CAP_NET_RAW in {status}");

    // Denials are counted in inspect and journalled.
    let v = a.wait_for(name, Duration::from_secs(10), "the denial counters", |v| {
        v["Egress"]["DeniedConnections"].as_u64().unwrap_or(0) >= 4
            && v["Egress"]["DeniedQueries"].as_u64().unwrap_or(0) >= 3
    });
    let eg = &v["Egress"];
    assert_eq!(eg["AllowExternalConnections"], false, "{eg}");
    assert_eq!(eg["AllowedHosts"][0], "allowed.test", "{eg}");
    assert_eq!(eg["AllowedHosts"][4], "port.test:8080", "{eg}");
    let evs = events(a, name);
    let has = |k: &str, v: &str| evs.iter().any(|e| e["attributes"][k] == v);
    assert!(has("host", "denied.test"), "{evs:?}");
    assert!(has("host", "wild.test"), "{evs:?}");
    assert!(has("address", &w.ip(DENIED)), "{evs:?}");
    assert!(
        evs.iter()
            .any(|e| e["attributes"]["address"] == w.ip(PORTS).as_str()
                && e["attributes"]["port"] == "8081"
                && e["attributes"]["host"] == "port.test"),
        "{evs:?}"
    );
    assert!(evs.iter().all(|e| e["id"] == id.as_str()));

    // The monitor (and with it the resolver) dies; the next command adopts the agent and
    // starts the resolver again, with the rules and counters carried on.
    let before = v["Egress"]["DeniedQueries"].as_u64().unwrap();
    let monitor = v["State"]["MonitorPid"].as_i64().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(monitor as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{monitor}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let v = a.wait_for(name, Duration::from_secs(10), "a new monitor", |v| {
        v["State"]["MonitorAlive"] == true
    });
    assert_ne!(v["State"]["MonitorPid"].as_i64().unwrap(), monitor);
    assert_eq!(
        fetch(a, name, "allowed.test", 8080),
        (0, "allowed\n".into())
    );
    let (_, out) = exec(a, name, "nslookup denied.test");
    assert!(out.contains("NXDOMAIN"), "{out}");
    let v = a.wait_for(name, Duration::from_secs(10), "counters carried on", |v| {
        v["Egress"]["DeniedQueries"].as_u64().unwrap_or(0) > before
    });
    assert!(v["Egress"]["AllowedQueries"].as_u64().unwrap() > 0);

    a.ok(&["rm", "-f", name]);
    assert_gone(a, &id, &ns);
}

#[test]
fn an_open_connection_outlives_its_address_a_new_one_does_not() {
    if !root() || !have("dnsmasq") || !have("nft") {
        eprintln!("skipped: needs root, dnsmasq and nft");
        return;
    }
    let w = world();
    let a = aac();
    let name = "eg-ttl";
    let id = a
        .ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--dns",
            &w.ip(DNS),
            "--allow-host",
            "short.test",
            IMAGE,
            "sleep",
            "600",
        ])
        .trim()
        .to_string();
    let ns = netns_of(a, name);
    // short.test has a TTL of one second: its address stays allowed 5 s (the minimum).
    let (code, out) = exec(
        a,
        name,
        "mkfifo /tmp/in || exit 1; (i=0; while [ $i -lt 40 ]; do echo ping-$i; i=$((i+1)); sleep 0.5; done) \
         >/tmp/in 2>/dev/null </dev/null & \
         nc short.test 9000 </tmp/in >/tmp/out 2>&1 & sleep 1; cat /tmp/out",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ping-0"), "{out}");
    let set = nft_set(&ns, "allow4");
    assert!(set.contains(&w.ip(SHORT)), "{set}");
    // Past the set's timeout, with no new answer for the name:
    let deadline = Instant::now() + Duration::from_secs(15);
    while nft_set(&ns, "allow4").contains(&w.ip(SHORT)) {
        assert!(Instant::now() < deadline, "{}", nft_set(&ns, "allow4"));
        std::thread::sleep(Duration::from_millis(200));
    }
    // a new connection to the address is refused at once,
    let (code, out) = get(a, name, &format!("http://{}:8080/", w.ip(SHORT)));
    assert_ne!(code, 0);
    assert!(out.contains("Connection refused"), "{out}");
    // while the open one still carries data both ways.
    let lines = |a: &Aac| exec(a, name, "cat /tmp/out").1.lines().count();
    let now = lines(a);
    std::thread::sleep(Duration::from_secs(2));
    let later = lines(a);
    assert!(
        later > now,
        "the open connection stopped: {now} then {later} lines"
    );
    // A fresh answer allows the address again.
    assert_eq!(fetch(a, name, "short.test", 8080), (0, "short\n".into()));
    a.ok(&["rm", "-f", name]);
    assert_gone(a, &id, &ns);
}

#[test]
fn deny_egress_leaves_only_the_agents_own_network() {
    if !root() || !have("dnsmasq") || !have("nft") {
        eprintln!("skipped: needs root, dnsmasq and nft");
        return;
    }
    let w = world();
    let a = aac();
    a.ok(&["network", "create", "eg-net"]);
    a.ok(&[
        "run",
        "-d",
        "--name",
        "eg-peer",
        "--network",
        "eg-net",
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /www && echo peer > /www/index.html && exec httpd -f -p 8080 -h /www",
    ]);
    // Something the host serves on all its addresses, the network's gateway among them.
    let host_srv = TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_srv.local_addr().unwrap().port();
    aac_tests::serve_http(host_srv, b"host\n");
    let gateway = a.inspect("eg-peer")["Network"]["gateway"]
        .as_str()
        .unwrap()
        .to_string();
    let script = format!(
        "for i in $(seq 1 50); do timeout 5 wget -q -O - http://eg-peer:8080/ && break; sleep 0.2; done; \
         echo ---; nslookup eg-peer; \
         echo ---; timeout 10 wget -q -O - http://{allowed}:8080/ 2>&1; \
         echo ---; nslookup allowed.test 2>&1; \
         echo ---; timeout 10 wget -q -O - http://{gateway}:{host_port}/ 2>&1; true",
        allowed = w.ip(ALLOWED)
    );
    let out = a.run(&[
        "run",
        "--rm",
        "--name",
        "eg-fenced",
        "--network",
        "eg-net",
        "--dns",
        &w.ip(DNS),
        "--deny-egress",
        IMAGE,
        "sh",
        "-c",
        &script,
    ]);
    assert!(out.status.success(), "{}", out_text(&out));
    let stdout = text(&out.stdout);
    let parts: Vec<&str> = stdout.split("---\n").collect();
    assert_eq!(parts.len(), 5, "{stdout}");
    // The other agent on the network answers, by name (hosts file and resolver).
    assert_eq!(parts[0], "peer\n", "{stdout}");
    let peer_ip = a.inspect("eg-peer")["Network"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(parts[1].contains(&peer_ip), "{stdout}");
    // Nothing outside does.
    assert!(parts[2].contains("Connection refused"), "{stdout}");
    assert!(parts[3].contains("NXDOMAIN"), "{stdout}");
    // Nor the host behind the gateway.
    assert!(parts[4].contains("Connection refused"), "{stdout}");

    // Without the policy the same agent reaches both (the test would pass for nothing
    // otherwise).
    let open = a.ok(&[
        "run",
        "--rm",
        "--network",
        "eg-net",
        IMAGE,
        "sh",
        "-c",
        &format!(
            "timeout 10 wget -q -O - http://{}:8080/; timeout 10 wget -q -O - http://{gateway}:{host_port}/",
            w.ip(ALLOWED)
        ),
    ]);
    assert_eq!(open, "allowed\nhost\n");
    a.ok(&["rm", "-f", "eg-peer"]);
    a.ok(&["network", "rm", "eg-net"]);
}

#[test]
fn policies_that_cannot_hold_are_refused() {
    if !root() {
        return;
    }
    let a = aac();
    // The agent could rewrite its rules or send around them.
    for cap in ["NET_ADMIN", "NET_RAW", "ALL"] {
        let out = a.run(&[
            "run",
            "--rm",
            "--allow-host",
            "a.test",
            "--cap-add",
            cap,
            IMAGE,
            "true",
        ]);
        assert_eq!(out.status.code(), Some(125), "{}", out_text(&out));
        assert!(
            text(&out.stderr).contains("would let the agent change or go around its egress policy"),
            "{}",
            out_text(&out)
        );
    }
    // The host's network has no room for the agent's rules.
    let out = a.run(&[
        "run",
        "--rm",
        "--deny-egress",
        "--network",
        "host",
        IMAGE,
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", out_text(&out));
    assert!(
        text(&out.stderr).contains("needs the agent's own network"),
        "{}",
        out_text(&out)
    );
    // Bad entries: one clear line each.
    let out = a.run(&["run", "--rm", "--allow-host", "api.*.test", IMAGE, "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("--allow-host: \"api.*.test\": only a leading `*.` wildcard"),
        "{}",
        out_text(&out)
    );
    // Nor does a host process sharing the host's network.
    let out = a.run(&[
        "run",
        "--rm",
        "--runtime",
        "process",
        "--network",
        "host",
        "--allow-host",
        "a.test",
        "/bin/true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", out_text(&out));
    assert!(
        text(&out.stderr).contains("needs the agent's own network"),
        "{}",
        out_text(&out)
    );
    // agent.yaml: file:line:column; `true` next to a list only warns.
    let dir = agent_dir(&format!(
        "apiVersion: agent.dev/v1\nkind: Agent\nmetadata:\n  name: eg-bad\nspec:\n  image: {IMAGE}\n  network:\n    security:\n      allowedHosts: [\"ok.test\", \"bad host\"]\n"
    ));
    let out = a.run(&["validate", &dir.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("agent.yaml:9:33: spec.network.security.allowedHosts[1]: \"bad host\" is not a host name"),
        "{}",
        out_text(&out)
    );
    let dir = agent_dir(&format!(
        "apiVersion: agent.dev/v1\nkind: Agent\nmetadata:\n  name: eg-warn\nspec:\n  image: {IMAGE}\n  network:\n    security:\n      allowExternalConnections: true\n      allowedHosts: [ok.test]\n"
    ));
    let out = a.run(&["validate", &dir.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{}", out_text(&out));
    assert!(
        text(&out.stderr).contains("agent.yaml:9:33: spec.network.security.allowExternalConnections: true, but allowedHosts is not empty"),
        "{}",
        out_text(&out)
    );
    // Nothing of the refused runs is left.
    let ps = a.ok(&["ps", "-a"]);
    assert!(!ps.contains("a.test"), "{ps}");
}

/// The process backend (run by root: its own network namespace on aac's bridge) gets the same
/// enforcement: the host's busybox stands in for the image's.
#[test]
fn the_process_backend_is_held_to_the_same_policy() {
    if !root() || !have("dnsmasq") || !have("nft") || !have("busybox") {
        eprintln!("skipped: needs root, dnsmasq, nft and busybox");
        return;
    }
    let w = world();
    let a = aac();
    let name = "eg-proc";
    let id = a
        .ok(&[
            "run",
            "-d",
            "--runtime",
            "process",
            "--name",
            name,
            "--dns",
            &w.ip(DNS),
            "--allow-host",
            "allowed.test",
            "--allow-host",
            "*.wild.test",
            "sleep",
            "600",
        ])
        .trim()
        .to_string();
    let pget = |url: &str| {
        exec(
            a,
            name,
            &format!("timeout 10 busybox wget -q -O - {url} 2>&1"),
        )
    };
    let (_, resolv) = exec(a, name, "cat /etc/resolv.conf");
    assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    assert_eq!(pget("http://allowed.test:8080/"), (0, "allowed\n".into()));
    assert_eq!(pget("http://api.wild.test:8080/"), (0, "wild-sub\n".into()));
    let (code, out) = exec(a, name, "busybox nslookup denied.test");
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("NXDOMAIN"), "{out}");
    let (_, out) = exec(a, name, "busybox nslookup wild.test");
    assert!(out.contains("NXDOMAIN"), "{out}");
    let (code, out) = pget(&format!("http://{}:8080/", w.ip(DENIED)));
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Connection refused"), "{out}");
    let (_, out) = exec(
        a,
        name,
        &format!("busybox nslookup denied.test {}", w.ip(OTHER_DNS)),
    );
    assert!(
        !out.contains(&format!("Address: {}", w.ip(DENIED))),
        "{out}"
    );
    // Its capabilities reach neither the rules nor around them.
    let (_, status) = exec(a, name, "grep CapEff /proc/1/status");
    let eff = u64::from_str_radix(status.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(eff & (1 << 12), 0, "CAP_NET_ADMIN in {status}");
    assert_eq!(eff & (1 << 13), 0, "CAP_NET_RAW in {status}");
    let (code, out) = exec(a, name, "nft list ruleset 2>&1; nft flush ruleset 2>&1");
    assert!(
        code != 0 || !out.contains("aac_egress"),
        "the agent reads or changes its rules: {out}"
    );
    let v = a.wait_for(name, Duration::from_secs(10), "the denial counters", |v| {
        v["Egress"]["DeniedConnections"].as_u64().unwrap_or(0) >= 1
            && v["Egress"]["DeniedQueries"].as_u64().unwrap_or(0) >= 2
    });
    assert_eq!(v["Backend"], "process");
    let ns = netns_of(a, name);
    // Without the policy the same agent reaches the denied host (the test would pass for
    // nothing otherwise).
    let open = a.ok(&[
        "run",
        "--rm",
        "--runtime",
        "process",
        "--dns",
        &w.ip(DNS),
        "busybox",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{}:8080/", w.ip(DENIED)),
    ]);
    assert_eq!(open, "denied\n");
    a.ok(&["rm", "-f", name]);
    assert_gone(a, &id, &ns);
}
