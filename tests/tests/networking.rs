//! Networking through the `aac` binary on a private containerd: network modes seen from
//! inside, published ports in every `-p` form (TCP and UDP, at 127.0.0.1 and at the host's own
//! address), host-port conflicts, DNS and hosts files, user networks, services, and that
//! teardown leaves no address, rule, namespace or record behind.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use aac_tests::cli::{aac, free_port, text, Aac};
use aac_tests::IMAGE;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (containerd, runc and CNI)");
    false
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The host's own non-loopback IPv4 address: the source address of its route to the outside
/// (the kernel's route lookup, as `ip -4 route get 1.1.1.1` shows it; no packet is sent).
fn host_address() -> Option<Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("1.1.1.1:53").ok()?;
    match s.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// The interface names in a `/proc/net/dev` listing (other lines of the text are skipped:
/// a device line is `name:` and 16 counters).
fn interfaces(proc_net_dev: &str) -> Vec<String> {
    let mut names: Vec<String> = proc_net_dev
        .lines()
        .filter_map(|l| {
            let (name, counters) = l.split_once(':')?;
            let counters: Vec<&str> = counters.split_whitespace().collect();
            (counters.len() == 16 && counters.iter().all(|c| c.parse::<u64>().is_ok()))
                .then(|| name.trim().to_string())
        })
        .collect();
    names.sort();
    names
}

/// The interface the host's default route leaves by, if any.
fn default_route_interface() -> Option<String> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    routes.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"00000000") && f.get(7) == Some(&"00000000")).then(|| f[0].to_string())
    })
}

/// One HTTP/1.0 GET of `/`.
fn http_get(ip: IpAddr, port: u16) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut b = String::new();
    s.read_to_string(&mut b)?;
    Ok(b)
}

/// GET until the answer holds `body` (panics after 20 s).
fn wait_http(ip: IpAddr, port: u16, body: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = http_get(ip, port);
        match got {
            Ok(b) if b.contains(body) => return b,
            _ if Instant::now() > deadline => {
                panic!("{ip}:{port} never answered with {body:?}: {got:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Send `msg` to `addr` over UDP until an answer comes (panics after 20 s).
fn udp_roundtrip(addr: SocketAddr, msg: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = (|| -> std::io::Result<String> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(Duration::from_millis(500)))?;
            s.send_to(msg.as_bytes(), addr)?;
            let mut buf = [0u8; 1500];
            let (n, _) = s.recv_from(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })();
        match got {
            Ok(answer) => return answer,
            Err(e) => assert!(Instant::now() < deadline, "no UDP answer from {addr}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Poll `f` until it returns true (panics with `what` after `timeout`).
fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether a host process could listen on this TCP port on all addresses.
fn tcp_port_free(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// Two consecutive TCP ports nobody listens on.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let p = free_port();
        if p < u16::MAX && tcp_port_free(p + 1) {
            return p;
        }
    }
    panic!("no two consecutive free ports");
}

fn out_text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Make sure this binary's default bridge exists (the CNI bridge plugin creates it on the
/// first attachment).
fn ensure_default_bridge(a: &Aac) {
    if !Path::new("/sys/class/net").join(&a.bridge).exists() {
        a.ok(&["run", "--rm", IMAGE, "true"]);
    }
    assert!(
        Path::new("/sys/class/net").join(&a.bridge).exists(),
        "bridge {} was not created",
        a.bridge
    );
}

/// Write `agent.yaml` into a fresh folder.
fn agent_dir(yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("agent.yaml"), yaml).unwrap();
    dir
}

fn yaml_head(name: &str) -> String {
    format!("apiVersion: agent.dev/v1\nkind: Agent\nmetadata:\n  name: {name}\nspec:\n  image: {IMAGE}\n")
}

/// The attachment record of a container, by ID.
fn attachment(a: &Aac, id: &str) -> Option<serde_json::Value> {
    let path = a
        .data_dir
        .join("networks/attachments")
        .join(format!("{id}.json"));
    std::fs::read_to_string(path)
        .ok()
        .map(|t| serde_json::from_str(&t).unwrap())
}

/// Attachment records whose container has this name.
fn attachments_named(a: &Aac, name: &str) -> Vec<serde_json::Value> {
    let Ok(dir) = std::fs::read_dir(a.data_dir.join("networks/attachments")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter(|v| v["name"] == name)
        .collect()
}

/// 64-hex-digit words in `s` (container IDs in aac's log lines).
fn ids_in(s: &str) -> Vec<String> {
    let mut ids: Vec<String> = s
        .split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() == 64)
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn iptables_save() -> Option<String> {
    let out = std::process::Command::new("iptables-save").output().ok()?;
    out.status.success().then(|| text(&out.stdout))
}

/// Everything of container `id` (address `ip`) still on the host: host-local allocations,
/// iptables rules, the namespace, the attachment record, the container's folder.
fn traces_of(a: &Aac, iptables: Option<&str>, id: &str, ip: Option<&str>) -> Vec<String> {
    let mut left = Vec::new();
    if let Ok(nets) = std::fs::read_dir(a.data_dir.join("cni/networks")) {
        for net in nets.flatten() {
            for f in std::fs::read_dir(net.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let content = std::fs::read_to_string(f.path()).unwrap_or_default();
                if content.contains(id) {
                    left.push(format!("IP allocation {}", f.path().display()));
                }
            }
        }
    }
    if let Some(rules) = iptables {
        for line in rules.lines() {
            let by_ip = ip.is_some_and(|ip| line.contains(&format!(" {ip}/32 ")));
            if line.contains(id) || by_ip {
                left.push(format!("iptables: {line}"));
            }
        }
    }
    let ns = a.run_dir.join("netns").join(id);
    if ns.exists() {
        left.push(format!("namespace {}", ns.display()));
    }
    if attachment(a, id).is_some() {
        left.push("attachment record".into());
    }
    let dir = a.data_dir.join("containers").join(id);
    if dir.exists() {
        left.push(format!("container folder {}", dir.display()));
    }
    left
}

fn assert_no_traces(a: &Aac, ids: &[(String, Option<String>)], when: &str) {
    let rules = iptables_save();
    if rules.is_none() {
        eprintln!("iptables-save is not available: the rules are not checked");
    }
    let mut left = Vec::new();
    for (id, ip) in ids {
        for t in traces_of(a, rules.as_deref(), id, ip.as_deref()) {
            left.push(format!("{}: {t}", &id[..12]));
        }
    }
    assert!(left.is_empty(), "{when}: left behind:\n{}", left.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Network modes

#[test]
fn network_modes_seen_from_inside() {
    if !root() {
        return;
    }
    let a = aac();
    ensure_default_bridge(a);

    // none: a namespace of its own with only the loopback interface, and it is up.
    let dev = a.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "cat",
        "/proc/net/dev",
    ]);
    assert_eq!(interfaces(&dev), ["lo"], "{dev}");
    let addr = a.ok(&["run", "--rm", "--network", "none", IMAGE, "ip", "addr"]);
    assert!(addr.contains("inet 127.0.0.1/8"), "{addr}");
    assert!(!addr.contains("eth0"), "{addr}");

    // bridge (the default): lo and eth0 with an address of the default network.
    let subnet = default_subnet(a);
    for args in [
        &[
            "run",
            "--rm",
            IMAGE,
            "sh",
            "-c",
            "cat /proc/net/dev; ip -4 addr show eth0",
        ][..],
        &[
            "run",
            "--rm",
            "--network",
            "bridge",
            IMAGE,
            "sh",
            "-c",
            "cat /proc/net/dev; ip -4 addr show eth0",
        ],
    ] {
        let out = a.ok(args);
        assert_eq!(interfaces(&out), ["eth0", "lo"], "{out}");
        let prefix = subnet.rsplit_once('.').unwrap().0;
        assert!(out.contains(&format!("inet {prefix}.")), "{subnet}: {out}");
    }

    // host: the host's interfaces, among them this binary's bridge and the default route's.
    let dev = a.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        IMAGE,
        "cat",
        "/proc/net/dev",
    ]);
    let inside = interfaces(&dev);
    assert!(inside.contains(&a.bridge), "{} not in {inside:?}", a.bridge);
    if let Some(ifname) = default_route_interface() {
        assert!(inside.contains(&ifname), "{ifname} not in {inside:?}");
    }
    let dev = a.ok(&["run", "--rm", "--net", "host", IMAGE, "ip", "-4", "addr"]);
    if let Some(host_ip) = host_address() {
        assert!(dev.contains(&format!("inet {host_ip}/")), "{dev}");
    }

    // Whatever the mode, a removed container leaves no namespace, record or files.
    for mode in ["none", "host", "bridge"] {
        let out = a
            .command(&["run", "--rm", "--network", mode, IMAGE, "true"])
            .env("AAC_LOG", "aac_runtime::network=info")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", out_text(&out));
        let ids = ids_in(&text(&out.stderr));
        assert_eq!(ids.len(), 1, "{mode}: {}", out_text(&out));
        let ids: Vec<(String, Option<String>)> = ids.into_iter().map(|i| (i, None)).collect();
        assert_no_traces(a, &ids, mode);
    }
}

/// The default network's subnet (`10.88.3.0/24`), from `aac network inspect`.
fn default_subnet(a: &Aac) -> String {
    let v: serde_json::Value = serde_json::from_str(&a.ok(&["network", "inspect", "aac"])).unwrap();
    v[0]["subnet"].as_str().unwrap().to_string()
}

#[test]
fn network_mode_from_agent_yaml() {
    if !root() {
        return;
    }
    let a = aac();
    ensure_default_bridge(a);
    let script = "command: [sh, -c, 'cat /proc/net/dev; ip -4 addr']\n";

    let dir = agent_dir(&format!(
        "{}  {script}  network:\n    mode: none\n",
        yaml_head("nt-yaml-none")
    ));
    let out = a.ok(&["up", "--rm", &dir.path().to_string_lossy()]);
    assert_eq!(interfaces(&out), ["lo"], "{out}");

    let dir = agent_dir(&format!(
        "{}  {script}  network:\n    mode: host\n",
        yaml_head("nt-yaml-host")
    ));
    let out = a.ok(&["up", "--rm", &dir.path().to_string_lossy()]);
    assert!(interfaces(&out).contains(&a.bridge), "{out}");

    // A user network by name: eth0 gets an address of that network's subnet.
    a.ok(&[
        "network",
        "create",
        "--subnet",
        "10.97.41.0/24",
        "nt-yaml-net",
    ]);
    let dir = agent_dir(&format!(
        "{}  {script}  network:\n    mode: nt-yaml-net\n",
        yaml_head("nt-yaml-named")
    ));
    let out = a.ok(&["up", "--rm", &dir.path().to_string_lossy()]);
    assert_eq!(interfaces(&out), ["eth0", "lo"], "{out}");
    assert!(out.contains("inet 10.97.41."), "{out}");
    // --network on the command line wins over the file.
    let out = a.ok(&[
        "up",
        "--rm",
        "--network",
        "none",
        &dir.path().to_string_lossy(),
    ]);
    assert_eq!(interfaces(&out), ["lo"], "{out}");
    a.ok(&["network", "rm", "nt-yaml-net"]);
}

// ---------------------------------------------------------------------------------------------
// Published ports

/// httpd on 8080, 8081 and 9090, each answering with its own page.
const THREE_WEB_SERVERS: &str = "for p in 8080 8081 9090; do mkdir -p /www$p && echo web-$p > /www$p/index.html && httpd -p $p -h /www$p; done; exec sleep 600";

#[test]
fn published_tcp_ports_in_every_form() {
    if !root() {
        return;
    }
    let a = aac();
    let host_ip = host_address();
    let (pa, pb, plocal) = (free_port(), free_port(), free_port());
    let prange = free_port_pair();
    let fixed_8080 = tcp_port_free(8080);
    if !fixed_8080 {
        eprintln!("port 8080 is taken on this host: the 8080:8080 form is not tried");
    }
    let p_ab = format!("{pa}:8080,{pb}:9090");
    let p_local = format!("127.0.0.1:{plocal}:8080");
    let p_range = format!("{}-{}:8080-8081", prange, prange + 1);
    let mut args = vec![
        "run",
        "-d",
        "--name",
        "nt-web",
        "-p",
        &p_ab,
        "-p",
        &p_local,
        "-p",
        "8080",
        "--publish",
        &p_range,
    ];
    if fixed_8080 {
        args.extend(["-p", "8080:8080"]);
    }
    args.extend([IMAGE, "sh", "-c", THREE_WEB_SERVERS]);
    let id = a.ok(&args).trim().to_string();

    // The ephemeral host port is resolved at start and shown by inspect and ps.
    let v = a.inspect("nt-web");
    let ports = v["Ports"].as_array().unwrap().clone();
    let ephemeral: Vec<u16> = ports
        .iter()
        .filter(|p| p["container"] == 8080 && p.get("hostIp").is_none())
        .map(|p| p["host"].as_u64().unwrap() as u16)
        .filter(|h| ![pa, prange, 8080].contains(h))
        .collect();
    assert_eq!(ephemeral.len(), 1, "{ports:?}");
    let pe = ephemeral[0];
    assert_ne!(pe, 0);
    let ps = a.ok(&["ps"]);
    let line = ps
        .lines()
        .find(|l| l.contains("nt-web"))
        .unwrap_or_else(|| panic!("{ps}"));
    for shown in [
        format!("0.0.0.0:{pe}->8080/tcp"),
        format!("0.0.0.0:{pa}->8080/tcp"),
        format!("0.0.0.0:{pb}->9090/tcp"),
        format!("127.0.0.1:{plocal}->8080/tcp"),
        format!("0.0.0.0:{}->8081/tcp", prange + 1),
    ] {
        assert!(line.contains(&shown), "{shown} not in {line}");
    }
    // The attachment record (inspect's Network) holds the same ports.
    let recorded = v["Network"]["ports"].as_array().unwrap();
    assert_eq!(
        recorded.len(),
        if fixed_8080 { 7 } else { 6 },
        "{recorded:?}"
    );

    // Every published port answers at 127.0.0.1 and at the host's own address.
    let mut open: Vec<(u16, &str)> = vec![
        (pa, "web-8080"),
        (pb, "web-9090"),
        (pe, "web-8080"),
        (prange, "web-8080"),
        (prange + 1, "web-8081"),
    ];
    if fixed_8080 {
        open.push((8080, "web-8080"));
    }
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for (port, body) in &open {
        let got = wait_http(loopback, *port, body);
        assert!(got.starts_with("HTTP/1."), "{got}");
    }
    match host_ip {
        Some(ip) => {
            for (port, body) in &open {
                wait_http(IpAddr::V4(ip), *port, body);
            }
        }
        None => eprintln!("the host has no non-loopback IPv4 address: only 127.0.0.1 is tried"),
    }

    // hostIP is honoured: published on 127.0.0.1 only.
    wait_http(loopback, plocal, "web-8080");
    if let Some(ip) = host_ip {
        let got = http_get(IpAddr::V4(ip), plocal);
        assert!(
            !got.as_ref().is_ok_and(|b| b.contains("web-8080")),
            "127.0.0.1:{plocal} answered on {ip} too: {got:?}"
        );
    }

    a.ok(&["rm", "-f", "nt-web"]);
    // The mappings are gone with the container.
    let got = http_get(loopback, pa);
    assert!(
        !got.as_ref().is_ok_and(|b| b.contains("web-8080")),
        "{pa} still answers: {got:?}"
    );
    assert_no_traces(a, &[(id, None)], "after rm");
}

/// A perl UDP echo server (perl comes with the host's /usr; the busybox image has no UDP
/// server: its nc has no -u).
const UDP_ECHO: &str = "use IO::Socket::INET; $| = 1; my $s = IO::Socket::INET->new(LocalPort => 8080, Proto => 'udp') or die \"bind: $!\"; print \"ready\\n\"; while (1) { my $m; $s->recv($m, 1500) // next; $s->send(\"echo:$m\"); }";

#[test]
fn udp_echo_through_a_published_port() {
    if !root() {
        return;
    }
    if !Path::new("/usr/bin/perl").exists() {
        eprintln!("skipped: no /usr/bin/perl on this host for the UDP echo server");
        return;
    }
    let a = aac();
    let pu = UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let publish = format!("{pu}:8080/udp");
    let mut args = vec![
        "run",
        "-d",
        "--name",
        "nt-udp",
        "-p",
        &publish,
        "-v",
        "/usr:/usr:ro",
    ];
    // The dynamic loader and libraries of the host's perl (on merged-/usr hosts these are
    // symlinks into /usr, which the bind mounts resolve).
    let lib64 = "/lib64:/lib64:ro".to_string();
    let lib = "/lib:/lib:ro".to_string();
    if Path::new("/lib64").exists() {
        args.extend(["-v", &lib64]);
    }
    if Path::new("/lib").exists() {
        args.extend(["-v", &lib]);
    }
    args.extend([IMAGE, "/usr/bin/perl", "-e", UDP_ECHO]);
    a.ok(&args);
    a.wait_for("nt-udp", Duration::from_secs(20), "the echo server", |v| {
        assert_ne!(
            v["State"]["Status"],
            "exited",
            "{}",
            a.ok(&["logs", "nt-udp"])
        );
        a.ok(&["logs", "nt-udp"]).contains("ready")
    });
    let answer = udp_roundtrip(SocketAddr::from((Ipv4Addr::LOCALHOST, pu)), "ping-lo");
    assert_eq!(answer, "echo:ping-lo");
    match host_address() {
        Some(ip) => {
            let answer = udp_roundtrip(SocketAddr::from((ip, pu)), "ping-host");
            assert_eq!(answer, "echo:ping-host");
        }
        None => eprintln!("the host has no non-loopback IPv4 address: only 127.0.0.1 is tried"),
    }
    // The UDP port is taken for other agents, the same TCP port number is not.
    let out = a.run(&["run", "-d", "-p", &publish, IMAGE, "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", out_text(&out));
    assert!(
        text(&out.stderr).contains(&format!("port {pu}/udp is already in use")),
        "{}",
        out_text(&out)
    );
    a.ok(&["rm", "-f", "nt-udp"]);
}

#[test]
fn host_port_conflicts_are_refused_before_anything_is_created() {
    if !root() {
        return;
    }
    let a = aac();
    let before: Vec<String> = a.record_ids();

    // A host process holds the port (TCP, then UDP).
    let held = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let publish = format!("{port}:8080");
    let out = a.run(&[
        "run",
        "-d",
        "--name",
        "nt-clash-host",
        "-p",
        &publish,
        IMAGE,
        "sleep",
        "60",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", out_text(&out));
    assert!(
        text(&out.stderr).contains(&format!("port {port} is already in use")),
        "{}",
        out_text(&out)
    );
    let held_udp = UdpSocket::bind("0.0.0.0:0").unwrap();
    let uport = held_udp.local_addr().unwrap().port();
    let publish_udp = format!("127.0.0.1:{uport}:53/udp");
    let out = a.run(&[
        "run",
        "-d",
        "--name",
        "nt-clash-host",
        "-p",
        &publish_udp,
        IMAGE,
        "sleep",
        "60",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", out_text(&out));
    assert!(
        text(&out.stderr).contains(&format!("port {uport}/udp is already in use")),
        "{}",
        out_text(&out)
    );
    drop((held, held_udp));

    // Another aac container holds it: its mapping is a DNAT rule, not a socket.
    let port = free_port();
    let publish = format!("{port}:8080");
    a.ok(&[
        "run",
        "-d",
        "--name",
        "nt-clash-first",
        "-p",
        &publish,
        IMAGE,
        "sleep",
        "60",
    ]);
    assert!(
        tcp_port_free(port),
        "the mapping is not a socket: a bind test alone cannot see it"
    );
    let local = format!("127.0.0.1:{port}:9090");
    for clash in [&publish, &local] {
        let out = a.run(&[
            "run",
            "-d",
            "--name",
            "nt-clash-second",
            "-p",
            clash,
            IMAGE,
            "sleep",
            "60",
        ]);
        assert_eq!(out.status.code(), Some(125), "{clash}: {}", out_text(&out));
        assert!(
            text(&out.stderr).contains(&format!("port {port} is already in use")),
            "{}",
            out_text(&out)
        );
    }
    // Two ports of one run clash with each other.
    let twice = format!("{port}:1,{port}:2");
    let out = a.run(&[
        "run",
        "-d",
        "--name",
        "nt-clash-second",
        "-p",
        &twice,
        IMAGE,
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", out_text(&out));

    // Nothing was left by the refused runs: no record, name, attachment.
    for name in ["nt-clash-host", "nt-clash-second"] {
        assert!(!a.run(&["inspect", name]).status.success(), "{name} exists");
        assert!(!a.data_dir.join("names").join(name).exists(), "{name}");
        assert!(attachments_named(a, name).is_empty(), "{name} attached");
    }
    let first = a.inspect("nt-clash-first")["Id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in a.record_ids() {
        assert!(
            before.contains(&id)
                || id == first
                || a.run(&["inspect", &id]).status.success()
                // another test's container, removed since the listing
                || !a.data_dir.join("containers").join(&id).exists(),
            "unknown record {id}"
        );
    }
    // Once the first container is gone the port is free again.
    a.ok(&["rm", "-f", "nt-clash-first"]);
    a.ok(&[
        "run",
        "-d",
        "--name",
        "nt-clash-second",
        "-p",
        &publish,
        IMAGE,
        "sleep",
        "60",
    ]);
    a.ok(&["rm", "-f", "nt-clash-second"]);
}

#[test]
fn one_host_port_one_container_under_concurrency() {
    if !root() {
        return;
    }
    let a = aac();
    let port = free_port();
    let publish = format!("{port}:8080");
    let children: Vec<_> = (0..4)
        .map(|i| {
            let name = format!("nt-race-{i}");
            a.command(&[
                "run", "-d", "--name", &name, "-p", &publish, IMAGE, "sleep", "60",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let winners: Vec<usize> = (0..outs.len())
        .filter(|i| outs[*i].status.success())
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{:?}",
        outs.iter().map(out_text).collect::<Vec<_>>()
    );
    for (i, o) in outs.iter().enumerate() {
        let name = format!("nt-race-{i}");
        if winners.contains(&i) {
            continue;
        }
        assert_eq!(o.status.code(), Some(125), "{}", out_text(o));
        assert!(
            text(&o.stderr).contains(&format!("port {port} is already in use")),
            "{}",
            out_text(o)
        );
        assert_gone(a, &name, &[]);
    }
    a.ok(&["rm", "-f", &format!("nt-race-{}", winners[0])]);
}

// ---------------------------------------------------------------------------------------------
// DNS and hosts files

fn nameservers(resolv: &str) -> Vec<String> {
    resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .map(|s| s.trim().to_string())
        .collect()
}

#[test]
fn dns_servers_land_in_resolv_conf() {
    if !root() {
        return;
    }
    let a = aac();
    let out = a.ok(&[
        "run",
        "--rm",
        "--dns",
        "9.9.9.9",
        "--dns",
        "1.0.0.1",
        IMAGE,
        "cat",
        "/etc/resolv.conf",
    ]);
    assert_eq!(nameservers(&out), ["9.9.9.9", "1.0.0.1"], "{out}");
    // Without --dns: the host's servers, never a loopback one (unreachable from the namespace).
    let out = a.ok(&["run", "--rm", IMAGE, "cat", "/etc/resolv.conf"]);
    for ns in nameservers(&out) {
        let ip: IpAddr = ns.parse().unwrap();
        assert!(!ip.is_loopback(), "{out}");
    }
    // In host mode too.
    let out = a.ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "--dns",
        "8.8.4.4",
        IMAGE,
        "cat",
        "/etc/resolv.conf",
    ]);
    assert_eq!(nameservers(&out), ["8.8.4.4"], "{out}");

    // spec.network.dns; --dns replaces the file's list.
    let dir = agent_dir(&format!(
        "{}  command: [cat, /etc/resolv.conf]\n  network:\n    dns: [8.8.8.8, 1.1.1.1]\n",
        yaml_head("nt-dns-yaml")
    ));
    let path = dir.path().to_string_lossy().to_string();
    let out = a.ok(&["up", "--rm", &path]);
    assert_eq!(nameservers(&out), ["8.8.8.8", "1.1.1.1"], "{out}");
    let out = a.ok(&["up", "--rm", "--dns", "9.9.9.9", &path]);
    assert_eq!(nameservers(&out), ["9.9.9.9"], "{out}");
}

/// The address a hosts file gives `name`.
fn hosts_ip(hosts: &str, name: &str) -> Option<String> {
    hosts
        .lines()
        .find(|l| l.split_whitespace().skip(1).any(|w| w == name))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_name() {
    if !root() {
        return;
    }
    let a = aac();
    a.ok(&["network", "create", "nt-talk"]);
    let ls = a.ok(&["network", "ls"]);
    assert!(ls.contains("nt-talk"), "{ls}");
    a.ok(&[
        "run",
        "-d",
        "--name",
        "nt-srv",
        "--network",
        "nt-talk",
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /www && echo hello-by-name > /www/index.html && exec httpd -f -p 8080 -h /www",
    ]);
    let srv_ip = a.inspect("nt-srv")["Network"]["ip"]
        .as_str()
        .unwrap()
        .to_string();

    // The client's hosts file names itself and the server; wget reaches the server by name.
    let out = a.run(&[
        "run",
        "--rm",
        "--name",
        "nt-cli",
        "--network",
        "nt-talk",
        IMAGE,
        "sh",
        "-c",
        "cat /etc/hosts; echo ---; hostname; echo ---; \
         for i in $(seq 1 50); do wget -qO- http://nt-srv:8080/ && exit 0; sleep 0.2; done; exit 1",
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", out_text(&out));
    let (hosts, rest) = stdout.split_once("---\n").unwrap();
    let (hostname, body) = rest.split_once("---\n").unwrap();
    assert_eq!(hostname.trim(), "nt-cli");
    assert_eq!(
        hosts_ip(hosts, "nt-srv").as_deref(),
        Some(srv_ip.as_str()),
        "{hosts}"
    );
    assert!(hosts_ip(hosts, "nt-cli").is_some(), "{hosts}");
    assert_eq!(body, "hello-by-name\n");

    // A peer that joins later appears in the server's hosts file, and leaves it again.
    a.ok(&[
        "run",
        "-d",
        "--name",
        "nt-peer",
        "--network",
        "nt-talk",
        IMAGE,
        "sleep",
        "60",
    ]);
    let peer_ip = a.inspect("nt-peer")["Network"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let hosts = a.ok(&["exec", "nt-srv", "cat", "/etc/hosts"]);
    assert_eq!(
        hosts_ip(&hosts, "nt-peer").as_deref(),
        Some(peer_ip.as_str()),
        "{hosts}"
    );
    assert_eq!(
        hosts_ip(&hosts, "nt-srv").as_deref(),
        Some(srv_ip.as_str()),
        "{hosts}"
    );
    let got = a.ok(&["exec", "nt-peer", "wget", "-qO-", "http://nt-srv:8080/"]);
    assert_eq!(got, "hello-by-name\n");
    a.ok(&["rm", "-f", "nt-peer"]);
    let hosts = a.ok(&["exec", "nt-srv", "cat", "/etc/hosts"]);
    assert!(hosts_ip(&hosts, "nt-peer").is_none(), "{hosts}");

    // A container on another network does not know the name.
    let out = a.ok(&["run", "--rm", IMAGE, "cat", "/etc/hosts"]);
    assert!(hosts_ip(&out, "nt-srv").is_none(), "{out}");

    // The network lists its container and cannot be removed while it is in use.
    let v: serde_json::Value =
        serde_json::from_str(&a.ok(&["network", "inspect", "nt-talk"])).unwrap();
    let names: Vec<&str> = v[0]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nt-srv"]);
    let out = a.run(&["network", "rm", "nt-talk"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("nt-srv"), "{}", out_text(&out));
    a.ok(&["rm", "-f", "nt-srv"]);
    a.ok(&["network", "rm", "nt-talk"]);
    assert!(!a.ok(&["network", "ls"]).contains("nt-talk"));
}

// ---------------------------------------------------------------------------------------------
// Services

#[test]
fn services_resolve_to_running_containers_on_the_network() {
    if !root() {
        return;
    }
    let a = aac();
    a.ok(&["network", "create", "nt-svc"]);
    a.ok(&[
        "run",
        "-d",
        "--name",
        "nt-db",
        "--network",
        "nt-svc",
        IMAGE,
        "sh",
        "-c",
        "mkdir -p /www && echo db > /www/index.html && exec httpd -f -p 8080 -h /www",
    ]);
    let db_ip = a.inspect("nt-db")["Network"]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = agent_dir(&format!(
        "{}  command: [sh, -c, 'env | grep ^NT_DB_ | sort; echo started; exec sleep 60']\n  network:\n    mode: nt-svc\n  services:\n    - name: nt-db\n      port: 8080\n",
        yaml_head("nt-agent")
    ));
    let path = dir.path().to_string_lossy().to_string();
    a.ok(&["up", "-d", &path]);
    a.wait_for("nt-agent", Duration::from_secs(15), "output", |_| {
        a.ok(&["logs", "nt-agent"]).contains("started")
    });
    let logs = a.ok(&["logs", "nt-agent"]);
    assert_eq!(
        logs,
        format!("NT_DB_HOST={db_ip}\nNT_DB_PORT=8080\nstarted\n"),
        "{logs}"
    );
    let env = a.ok(&["exec", "nt-agent", "env"]);
    assert!(env.contains(&format!("NT_DB_HOST={db_ip}\n")), "{env}");
    // The agent reaches the service with what it was given.
    let got = a.ok(&[
        "exec",
        "nt-agent",
        "sh",
        "-c",
        "wget -qO- http://$NT_DB_HOST:$NT_DB_PORT/",
    ]);
    assert_eq!(got, "db\n");
    a.ok(&["rm", "-f", "nt-agent"]);

    // A service that is missing: a clear error naming it, after no wait, nothing left.
    let dir = agent_dir(&format!(
        "{}  command: [sleep, '60']\n  network:\n    mode: nt-svc\n  services:\n    - name: nt-db\n      port: 8080\n    - name: nt-nowhere\n      port: 5432\n",
        yaml_head("nt-agent-missing")
    ));
    let missing = dir.path().to_string_lossy().to_string();
    let started = Instant::now();
    let out = a
        .command(&["up", "-d", &missing])
        .env("AAC_SERVICE_TIMEOUT", "3s")
        .env("AAC_LOG", "aac_runtime::network=info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", out_text(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("service \"nt-nowhere\" is not a container on network nt-svc"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let ids = ids_in(&err);
    assert!(!ids.is_empty(), "no container ID in the log: {err}");
    assert_gone(a, "nt-agent-missing", &ids);

    // A service that is there but does not accept connections: a bounded wait.
    a.ok(&[
        "run",
        "-d",
        "--name",
        "nt-deaf",
        "--network",
        "nt-svc",
        IMAGE,
        "sleep",
        "60",
    ]);
    let dir = agent_dir(&format!(
        "{}  command: [sleep, '60']\n  network:\n    mode: nt-svc\n  services:\n    - name: nt-deaf\n      port: 5432\n",
        yaml_head("nt-agent-deaf")
    ));
    let deaf = dir.path().to_string_lossy().to_string();
    let started = Instant::now();
    let out = a
        .command(&["up", "-d", &deaf])
        .env("AAC_SERVICE_TIMEOUT", "2s")
        .env("AAC_LOG", "aac_runtime::network=info")
        .output()
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(out.status.code(), Some(125), "{}", out_text(&out));
    let err = text(&out.stderr);
    assert!(
        err.contains("service \"nt-deaf\"") && err.contains("did not accept connections within 2s"),
        "{err}"
    );
    assert!(waited >= Duration::from_secs(2), "{waited:?}");
    assert!(waited < Duration::from_secs(25), "{waited:?}");
    assert_gone(a, "nt-agent-deaf", &ids_in(&err));
    // A bad timeout is refused.
    let out = a
        .command(&["up", "-d", &deaf])
        .env("AAC_SERVICE_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125), "{}", out_text(&out));
    assert!(
        text(&out.stderr).contains("AAC_SERVICE_TIMEOUT"),
        "{}",
        out_text(&out)
    );
    assert_gone(a, "nt-agent-deaf", &[]);

    a.ok(&["rm", "-f", "nt-db", "nt-deaf"]);
    a.ok(&["network", "rm", "nt-svc"]);
}

/// A refused agent left no record, name or network resources.
fn assert_gone(a: &Aac, name: &str, ids: &[String]) {
    assert!(!a.run(&["inspect", name]).status.success(), "{name} exists");
    assert!(!a.data_dir.join("names").join(name).exists(), "{name}");
    assert!(attachments_named(a, name).is_empty(), "{name} attached");
    let ids: Vec<(String, Option<String>)> = ids.iter().map(|i| (i.clone(), None)).collect();
    assert_no_traces(a, &ids, name);
}

// ---------------------------------------------------------------------------------------------
// Teardown

/// Containers per worker thread in `many_containers_leave_nothing_behind`: 10 (50 in all), or
/// `AAC_TEST_CONTAINERS_EACH` (the test VM, under software emulation, runs fewer).
fn containers_each() -> usize {
    std::env::var("AAC_TEST_CONTAINERS_EACH")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(10)
}

#[test]
fn many_containers_leave_nothing_behind() {
    if !root() {
        return;
    }
    let a = aac();
    const WORKERS: usize = 5;
    let each = containers_each();
    let started = Instant::now();
    let seen: Vec<Vec<(String, Option<String>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                s.spawn(move || {
                    let mut seen = Vec::new();
                    for i in 0..each {
                        // Every other one publishes an ephemeral port (portmap rules).
                        let mut args = vec!["run", "-d"];
                        if i % 2 == 0 {
                            args.extend(["-p", "8080"]);
                        }
                        args.extend([IMAGE, "sleep", "300"]);
                        let id = a.ok(&args).trim().to_string();
                        let rec = attachment(a, &id).unwrap_or_else(|| panic!("{id}: no record"));
                        let ip = rec["ip"].as_str().map(str::to_string);
                        assert!(ip.is_some(), "{rec}");
                        if w == 0 && i == 0 {
                            // The checks see what a live container holds.
                            let rules = iptables_save();
                            let traces = traces_of(a, rules.as_deref(), &id, ip.as_deref());
                            for what in ["IP allocation", "namespace", "attachment record"] {
                                assert!(
                                    traces.iter().any(|t| t.starts_with(what)),
                                    "{what} of a live container not found: {traces:?}"
                                );
                            }
                            if rules.is_some() {
                                assert!(
                                    traces.iter().any(|t| t.contains("dnat name")),
                                    "no portmap rule of a live container: {traces:?}"
                                );
                            }
                        }
                        a.ok(&["rm", "-f", &id]);
                        seen.push((id, ip));
                    }
                    seen
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let seen: Vec<(String, Option<String>)> = seen.into_iter().flatten().collect();
    assert_eq!(seen.len(), WORKERS * each);
    eprintln!(
        "{} containers started and removed in {:?}",
        seen.len(),
        started.elapsed()
    );
    let after = format!("after {} run -d + rm -f", seen.len());
    assert_no_traces(a, &seen, &after);
}

#[test]
fn failure_and_stop_paths_leave_nothing_behind() {
    if !root() {
        return;
    }
    let a = aac();
    let logged = |args: &[&str]| -> Output {
        a.command(args)
            .env("AAC_LOG", "aac_runtime::network=info")
            .output()
            .unwrap()
    };

    // The command is not found: the network was attached, then released.
    let out = logged(&[
        "run",
        "-d",
        "--name",
        "nt-fail-cmd",
        "-p",
        "8080",
        IMAGE,
        "no-such-command",
    ]);
    assert_eq!(out.status.code(), Some(127), "{}", out_text(&out));
    let ids = ids_in(&text(&out.stderr));
    assert!(
        !ids.is_empty(),
        "no container ID in the log: {}",
        out_text(&out)
    );
    assert_gone(a, "nt-fail-cmd", &ids);
    // The same in the foreground with --rm.
    let out = logged(&[
        "run",
        "--rm",
        "--name",
        "nt-fail-cmd",
        IMAGE,
        "no-such-command",
    ]);
    assert_eq!(out.status.code(), Some(127), "{}", out_text(&out));
    assert_gone(a, "nt-fail-cmd", &ids_in(&text(&out.stderr)));

    // A port conflict between two aac containers: the second one creates nothing.
    let port = free_port();
    let publish = format!("{port}:8080");
    let first = a
        .ok(&[
            "run",
            "-d",
            "--name",
            "nt-fail-first",
            "-p",
            &publish,
            IMAGE,
            "sleep",
            "60",
        ])
        .trim()
        .to_string();
    let out = logged(&[
        "run",
        "-d",
        "--name",
        "nt-fail-second",
        "-p",
        &publish,
        IMAGE,
        "sleep",
        "60",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", out_text(&out));
    assert!(
        text(&out.stderr).contains(&format!("port {port} is already in use")),
        "{}",
        out_text(&out)
    );
    assert!(
        !text(&out.stderr).contains("attached"),
        "the refused run attached a network: {}",
        out_text(&out)
    );
    assert_gone(a, "nt-fail-second", &ids_in(&text(&out.stderr)));

    // A missing user network: nothing is created either.
    let out = logged(&[
        "run",
        "-d",
        "--name",
        "nt-fail-net",
        "--network",
        "nt-no-such-net",
        IMAGE,
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", out_text(&out));
    assert!(
        text(&out.stderr).contains("no such network: nt-no-such-net"),
        "{}",
        out_text(&out)
    );
    assert_gone(a, "nt-fail-net", &ids_in(&text(&out.stderr)));

    // stop releases the address, the mapping and the namespace while the record stays.
    let ip = attachment(a, &first).unwrap()["ip"]
        .as_str()
        .unwrap()
        .to_string();
    a.ok(&["stop", "-t", "1", "nt-fail-first"]);
    wait_until(
        Duration::from_secs(15),
        "the network release after stop",
        || attachment(a, &first).is_none(),
    );
    let rules = iptables_save();
    let left: Vec<String> = traces_of(a, rules.as_deref(), &first, Some(&ip))
        .into_iter()
        .filter(|t| !t.starts_with("container folder"))
        .collect();
    assert!(left.is_empty(), "after stop: {left:?}");
    // ...so its port can be published again.
    a.ok(&[
        "run",
        "-d",
        "--name",
        "nt-fail-second",
        "-p",
        &publish,
        IMAGE,
        "sleep",
        "60",
    ]);
    a.ok(&["rm", "-f", "nt-fail-first", "nt-fail-second"]);
    assert_no_traces(a, &[(first, Some(ip))], "after rm");
}

#[test]
fn rm_cleans_up_after_a_crash_between_cni_add_and_its_record() {
    if !root() {
        return;
    }
    let a = aac();
    let id = a
        .ok(&[
            "run",
            "-d",
            "--name",
            "nt-crashed",
            "-p",
            "8080",
            IMAGE,
            "sleep",
            "60",
        ])
        .trim()
        .to_string();
    // As if aac had died after the CNI ADD but before it recorded the result.
    let path = a
        .data_dir
        .join("networks/attachments")
        .join(format!("{id}.json"));
    let mut rec = attachment(a, &id).unwrap();
    let ip = rec["ip"].as_str().unwrap().to_string();
    let rec_obj = rec.as_object_mut().unwrap();
    rec_obj.remove("result");
    rec_obj.remove("ip");
    std::fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
    a.ok(&["rm", "-f", "nt-crashed"]);
    // Including the firewall plugin's rules, which name the address only.
    assert_no_traces(a, &[(id, Some(ip))], "after rm");
}
