//! Networking with the real CNI plugins and real network namespaces. Needs root (skipped
//! otherwise) and the CNI plugins (`/usr/lib/cni`, `/opt/cni/bin` or `AAC_CNI_PATH`).
//!
//! Each test has its own state directories, a network name unique to this run and its own
//! subnet, so it does not clash with other tests or test binaries running at the same time.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aac_runtime::agent::model::{NetworkMode, PortSpec, Protocol, ServiceDep};
use aac_runtime::network::{self, netns, AttachRequest, NetError};
use aac_runtime::state::{new_id, StateDirs};

struct Env {
    dirs: StateDirs,
    base: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        // Best effort: detach whatever a failed test left behind, then delete the state.
        if let Ok(recs) = network::list_attachments(&self.dirs) {
            for r in recs {
                let _ = network::detach(&self.dirs, &r.container_id);
            }
        }
        if let Ok(nets) = network::list_networks(&self.dirs) {
            for n in nets {
                let _ = network::remove_network(&self.dirs, &n.name);
            }
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// `None` (after printing why) when the test cannot run here.
fn env() -> Option<Env> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: network tests need root");
        return None;
    }
    let plugins = network::PluginDirs::from_env();
    for p in ["bridge", "host-local", "portmap", "firewall", "loopback"] {
        if plugins.find(p).is_err() {
            eprintln!("skipping: CNI plugin {p} not found");
            return None;
        }
    }
    let base = std::env::temp_dir().join(format!("aac-net-test-{}", &new_id()[..12]));
    Some(Env {
        dirs: StateDirs {
            run: base.join("run"),
            data: base.join("data"),
        },
        base,
    })
}

/// A /24 for test number `k`, different per process (10.200.0.0/13 area).
fn subnet(k: u8) -> String {
    let pid = std::process::id();
    format!(
        "10.{}.{}.0/24",
        200 + (pid % 40) as u8,
        k * 10 + ((pid / 40) % 10) as u8
    )
}

fn net_name(tag: &str) -> String {
    format!("t{}-{}-{tag}", std::process::id(), &new_id()[..6])
}

fn attach(
    env: &Env,
    id: &str,
    name: &str,
    mode: &NetworkMode,
    ports: &[PortSpec],
) -> Result<network::Attachment, NetError> {
    network::attach(
        &env.dirs,
        &AttachRequest {
            container_id: id,
            name,
            network: mode,
            ports,
            dns: &[],
            dns_search: &[],
            dns_options: &[],
            ip: None,
            hostname: "",
            dns_proxy: None,
        },
    )
}

fn tcp(container: u16, host: u16) -> PortSpec {
    PortSpec {
        container,
        host: Some(host),
        protocol: Protocol::Tcp,
        host_ip: None,
    }
}

/// Serve `reply` to every connection on `l` (echoing nothing), in the background.
fn serve(l: TcpListener, reply: &'static [u8]) {
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            let _ = s.write_all(reply);
        }
    });
}

fn read_from(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The host's own (non-loopback) address, if it has a default route.
fn host_addr() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.123:9")
        .or_else(|_| s.connect("8.8.8.8:53"))
        .ok()?;
    s.local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|_| new_id()).collect()
}

fn assert_nothing_left(env: &Env, ids: &[String], net: &str) {
    assert!(network::list_attachments(&env.dirs).unwrap().is_empty());
    let ns_dir = netns::netns_dir(&env.dirs);
    let left: Vec<_> = std::fs::read_dir(&ns_dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    let ipam = env.dirs.data.join("cni/networks").join(net);
    let allocs: Vec<String> = std::fs::read_dir(&ipam)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip"))
                .collect()
        })
        .unwrap_or_default();
    assert!(allocs.is_empty(), "IP allocations left: {allocs:?}");
    for (cmd, args) in [
        ("iptables-save", &[][..]),
        ("nft", &["list", "ruleset"][..]),
    ] {
        let Ok(out) = Command::new(cmd).args(args).output() else {
            continue;
        };
        let text = String::from_utf8_lossy(&out.stdout);
        for id in ids {
            assert!(!text.contains(id.as_str()), "{cmd} still mentions {id}");
        }
    }
}

fn hosts_of(env: &Env, id: &str) -> String {
    std::fs::read_to_string(env.dirs.container_dir(id).join("hosts")).unwrap()
}

fn ino(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

#[test]
fn containers_on_a_user_network_reach_each_other() {
    let Some(env) = env() else { return };
    let net = net_name("pair");
    let def = network::create_network(&env.dirs, &net, Some(&subnet(1))).unwrap();
    let mode = NetworkMode::Named(net.clone());
    let [a, b]: [String; 2] = ids(2).try_into().unwrap();
    let att_a = attach(&env, &a, "alpha", &mode, &[]).unwrap();
    let hosts_a = env.dirs.container_dir(&a).join("hosts");
    let ino_before = ino(&hosts_a);
    let att_b = attach(&env, &b, "beta", &mode, &[]).unwrap();
    let (ip_a, ip_b) = (att_a.ip.unwrap(), att_b.ip.unwrap());
    assert_ne!(ip_a, ip_b);
    for ip in [ip_a, ip_b] {
        let IpAddr::V4(v4) = ip else { panic!("{ip}") };
        assert!(def.subnet.contains(&v4), "{ip} not in {}", def.subnet);
    }
    let dests: Vec<String> = att_a
        .mounts
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect();
    assert_eq!(dests, ["/etc/resolv.conf", "/etc/hosts", "/etc/hostname"]);

    // TCP both ways, between the two namespaces.
    let ns_a = att_a.netns_path.clone().unwrap();
    let ns_b = att_b.netns_path.clone().unwrap();
    let la = netns::run_in(&ns_a, || TcpListener::bind("0.0.0.0:7000"))
        .unwrap()
        .unwrap();
    serve(la, b"from alpha");
    let lb = netns::run_in(&ns_b, || TcpListener::bind("0.0.0.0:7000"))
        .unwrap()
        .unwrap();
    serve(lb, b"from beta");
    let got = netns::run_in(&ns_b, || read_from(SocketAddr::new(ip_a, 7000)))
        .unwrap()
        .unwrap();
    assert_eq!(got, "from alpha");
    let got = netns::run_in(&ns_a, || read_from(SocketAddr::new(ip_b, 7000)))
        .unwrap()
        .unwrap();
    assert_eq!(got, "from beta");

    // Each hosts file names the other, by its name and NAME.NETWORK; alpha's was rewritten
    // in place when beta joined.
    let names = |ip: IpAddr, name: &str| format!("{ip}\t{name} {name}.{net}\n");
    for id in [&a, &b] {
        let hosts = hosts_of(&env, id);
        assert!(hosts.contains(&names(ip_a, "alpha")), "{hosts}");
        assert!(hosts.contains(&names(ip_b, "beta")), "{hosts}");
    }
    assert_eq!(ino(&hosts_a), ino_before);

    // Inspect shows both; removal is refused while they are attached.
    let info = network::inspect_network(&env.dirs, &net).unwrap();
    let mut names: Vec<&str> = info.containers.iter().map(|c| c.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["alpha", "beta"]);
    assert!(matches!(
        network::remove_network(&env.dirs, &net),
        Err(NetError::NetworkInUse { .. })
    ));

    // Services: beta depends on alpha:7000.
    let dep = |name: &str, port| ServiceDep {
        name: name.to_string(),
        port,
        protocol: Protocol::Tcp,
    };
    let vars = network::resolve_services(
        &env.dirs,
        &mode,
        &[dep("alpha", 7000)],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        vars,
        [
            ("ALPHA_HOST".to_string(), ip_a.to_string()),
            ("ALPHA_PORT".to_string(), "7000".to_string())
        ]
    );
    let err =
        network::resolve_services(&env.dirs, &mode, &[dep("gamma", 1)], Duration::from_secs(1))
            .unwrap_err();
    assert!(err.to_string().contains("\"gamma\""), "{err}");
    let err = network::resolve_services(
        &env.dirs,
        &mode,
        &[dep("alpha", 7001)],
        Duration::from_millis(500),
    )
    .unwrap_err();
    assert!(matches!(err, NetError::ServiceNotReady { .. }), "{err}");

    // Beta leaves: alpha's hosts file forgets it.
    network::detach(&env.dirs, &b).unwrap();
    network::detach(&env.dirs, &b).unwrap(); // idempotent
    assert!(
        !hosts_of(&env, &a).contains("beta"),
        "{}",
        hosts_of(&env, &a)
    );
    assert_eq!(ino(&hosts_a), ino_before);
    network::detach(&env.dirs, &a).unwrap();
    assert_nothing_left(&env, &[a, b], &net);
    network::remove_network(&env.dirs, &net).unwrap();
    assert!(!Path::new("/sys/class/net").join(&def.bridge).exists());
    assert!(matches!(
        network::inspect_network(&env.dirs, &net),
        Err(NetError::NoSuchNetwork(_))
    ));
}

#[test]
fn published_tcp_and_udp_ports_reach_the_container() {
    let Some(env) = env() else { return };
    let net = net_name("ports");
    network::create_network(&env.dirs, &net, Some(&subnet(2))).unwrap();
    let mode = NetworkMode::Named(net.clone());
    let id = new_id();
    let ports = [
        tcp(8080, 0),
        PortSpec {
            container: 5353,
            host: Some(0),
            protocol: Protocol::Udp,
            host_ip: None,
        },
    ];
    let att = attach(&env, &id, "web", &mode, &ports).unwrap();
    assert_eq!(att.ports.len(), 2);
    let tcp_port = att.ports[0].host_port;
    let udp_port = att.ports[1].host_port;
    assert!(tcp_port != 0 && udp_port != 0);
    let ns = att.netns_path.clone().unwrap();

    let l = netns::run_in(&ns, || TcpListener::bind("0.0.0.0:8080"))
        .unwrap()
        .unwrap();
    serve(l, b"hello");
    let u = netns::run_in(&ns, || UdpSocket::bind("0.0.0.0:5353"))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = u.recv_from(&mut buf) {
            let _ = u.send_to(&buf[..n], from);
        }
    });

    let mut targets = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    targets.extend(host_addr());
    for ip in targets {
        let got = read_from(SocketAddr::new(ip, tcp_port));
        assert_eq!(
            got.as_deref().ok(),
            Some("hello"),
            "TCP via {ip}:{tcp_port}: {got:?}"
        );
        let c = UdpSocket::bind("0.0.0.0:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut echoed = None;
        for _ in 0..3 {
            c.send_to(b"ping", SocketAddr::new(ip, udp_port)).unwrap();
            let mut buf = [0u8; 16];
            if let Ok((n, _)) = c.recv_from(&mut buf) {
                echoed = Some(buf[..n].to_vec());
                break;
            }
        }
        assert_eq!(
            echoed.as_deref(),
            Some(&b"ping"[..]),
            "UDP via {ip}:{udp_port}"
        );
    }

    // Another container asking for the same host port: refused before anything is created.
    let other = new_id();
    let err = attach(&env, &other, "web2", &mode, &[tcp(80, tcp_port)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("port {tcp_port} is already in use")
    );
    assert!(network::attachment(&env.dirs, &other).unwrap().is_none());
    assert!(!netns::netns_path(&env.dirs, &other).exists());
    assert!(network::check_ports(&env.dirs, &[tcp(80, tcp_port)]).is_err());

    // A port held by a host process.
    let held = TcpListener::bind("0.0.0.0:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let err = network::check_ports(&env.dirs, &[tcp(80, held_port)]).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("port {held_port} is already in use")
    );
    let err = attach(&env, &other, "web2", &mode, &[tcp(80, held_port)]).unwrap_err();
    assert!(matches!(err, NetError::PortInUse { port, .. } if port == held_port));
    assert!(network::attachment(&env.dirs, &other).unwrap().is_none());
    drop(held);
    network::check_ports(&env.dirs, &[tcp(80, held_port)]).unwrap();

    // While attached, the CNI rules name the container (so the check after detach means
    // something).
    if let Ok(out) = Command::new("iptables-save").output() {
        assert!(String::from_utf8_lossy(&out.stdout).contains(id.as_str()));
    }
    network::detach(&env.dirs, &id).unwrap();
    // The port is free again once detached.
    network::check_ports(&env.dirs, &[tcp(80, tcp_port)]).unwrap();
    assert!(read_from(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), tcp_port)).is_err());
    assert_nothing_left(&env, &[id, other], &net);
}

#[test]
fn none_mode_has_only_loopback_and_host_mode_no_namespace() {
    let Some(env) = env() else { return };
    let id = new_id();
    let att = attach(&env, &id, "lonely", &NetworkMode::None, &[tcp(80, 0)]).unwrap();
    assert!(att.ip.is_none());
    assert!(att.ports.is_empty());
    let ns = att.netns_path.clone().unwrap();
    let (devs, lo_works) = netns::run_in(&ns, || {
        let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
        let names: Vec<String> = dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|s| s.trim().to_string())
            .collect();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let ok = TcpStream::connect(l.local_addr().unwrap()).is_ok();
        (names, ok)
    })
    .unwrap();
    assert_eq!(devs, ["lo"]);
    assert!(lo_works, "lo is not up");
    assert!(hosts_of(&env, &id).contains("lonely"));
    network::detach(&env.dirs, &id).unwrap();
    assert!(!ns.exists());

    let hid = new_id();
    let att = attach(&env, &hid, "hosty", &NetworkMode::Host, &[]).unwrap();
    assert!(att.netns_path.is_none());
    assert_eq!(att.mounts.len(), 3);
    assert!(hosts_of(&env, &hid).contains("hosty"));
    assert_eq!(att.network, "host");
    // gc detaches attachments of containers that no longer exist.
    assert_eq!(
        network::gc(&env.dirs, &[]).unwrap(),
        std::slice::from_ref(&hid)
    );
    assert_nothing_left(&env, &[id, hid], "none");
}

#[test]
fn default_network_is_created_on_first_use_and_cannot_be_removed() {
    let Some(env) = env() else { return };
    let def = network::ensure_default_network(&env.dirs).unwrap();
    assert_eq!(def.name, "aac");
    assert_eq!(def.bridge, "aac0");
    let names: Vec<String> = network::list_networks(&env.dirs)
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["aac"]);
    assert_eq!(
        network::inspect_network(&env.dirs, "bridge").unwrap().def,
        def
    );
    for n in ["aac", "bridge"] {
        assert!(matches!(
            network::remove_network(&env.dirs, n),
            Err(NetError::DefaultNetwork(_))
        ));
    }
    // A user network gets a different subnet and bridge; duplicates and overlaps are refused.
    let n = net_name("x");
    let user = network::create_network(&env.dirs, &n, None).unwrap();
    assert_ne!(user.subnet, def.subnet);
    assert!(user.bridge.len() <= 15 && user.bridge != def.bridge);
    assert!(matches!(
        network::create_network(&env.dirs, &n, None),
        Err(NetError::NetworkExists(_))
    ));
    let err = network::create_network(&env.dirs, &net_name("y"), Some(&user.subnet.to_string()))
        .unwrap_err();
    assert!(matches!(err, NetError::SubnetOverlap { .. }), "{err}");
    assert!(matches!(
        attach(
            &env,
            &new_id(),
            "x",
            &NetworkMode::Named("nope".into()),
            &[]
        ),
        Err(NetError::NoSuchNetwork(_))
    ));
    network::remove_network(&env.dirs, &n).unwrap();
}

#[test]
fn fifty_attach_detach_cycles_leave_nothing_behind() {
    let Some(env) = env() else { return };
    let net = net_name("cycle");
    network::create_network(&env.dirs, &net, Some(&subnet(3))).unwrap();
    let mode = NetworkMode::Named(net.clone());
    let all = ids(50);
    for id in &all {
        let att = attach(&env, id, "cycler", &mode, &[tcp(80, 0)]).unwrap();
        assert!(att.ip.is_some());
        network::detach(&env.dirs, id).unwrap();
    }
    assert_nothing_left(&env, &all, &net);
    network::remove_network(&env.dirs, &net).unwrap();
}

#[test]
fn a_failed_attach_rolls_back_everything() {
    let Some(env) = env() else { return };
    let net = net_name("fail");
    let def = network::create_network(&env.dirs, &net, Some(&subnet(4))).unwrap();
    // Point the network at a device that exists but is not a bridge: the bridge plugin fails
    // after the namespace, the record and the loopback plugin are done.
    let path = env.dirs.data.join("networks").join(format!("{net}.json"));
    let mut broken = def.clone();
    broken.bridge = "lo".into();
    std::fs::write(&path, serde_json::to_vec(&broken).unwrap()).unwrap();
    let id = new_id();
    let err = attach(
        &env,
        &id,
        "doomed",
        &NetworkMode::Named(net.clone()),
        &[tcp(80, 0)],
    )
    .unwrap_err();
    assert!(
        matches!(err, NetError::Plugin { ref plugin, .. } if plugin == "bridge"),
        "{err}"
    );
    assert!(network::attachment(&env.dirs, &id).unwrap().is_none());
    assert_nothing_left(&env, std::slice::from_ref(&id), &net);
    std::fs::write(&path, serde_json::to_vec(&def).unwrap()).unwrap();
    network::remove_network(&env.dirs, &net).unwrap();
}

#[test]
fn detach_after_a_crash_mid_attach_cleans_everything() {
    let Some(env) = env() else { return };
    let net = net_name("crash");
    network::create_network(&env.dirs, &net, Some(&subnet(5))).unwrap();
    let id = new_id();
    attach(
        &env,
        &id,
        "crashy",
        &NetworkMode::Named(net.clone()),
        &[tcp(80, 0)],
    )
    .unwrap();
    // As if aac died after the CNI ADD but before it recorded the result.
    let path = env
        .dirs
        .data
        .join("networks/attachments")
        .join(format!("{id}.json"));
    let mut rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    rec.as_object_mut().unwrap().remove("result");
    std::fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
    network::detach(&env.dirs, &id).unwrap();
    assert_nothing_left(&env, std::slice::from_ref(&id), &net);
    network::remove_network(&env.dirs, &net).unwrap();
}

#[test]
fn detach_succeeds_when_the_namespace_is_already_gone() {
    let Some(env) = env() else { return };
    let net = net_name("gone");
    network::create_network(&env.dirs, &net, Some(&subnet(6))).unwrap();
    let id = new_id();
    let att = attach(
        &env,
        &id,
        "ghost",
        &NetworkMode::Named(net.clone()),
        &[tcp(80, 0)],
    )
    .unwrap();
    // As after a reboot: the namespace is gone, the record is not.
    netns::remove(att.netns_path.as_deref().unwrap()).unwrap();
    network::detach(&env.dirs, &id).unwrap();
    let rules = String::from_utf8(Command::new("iptables-save").output().unwrap().stdout).unwrap();
    let left: Vec<&str> = rules.lines().filter(|l| l.contains(id.as_str())).collect();
    // The bridge plugin (v1.1) learns the masquerade rules' addresses from the namespace's
    // interface, so without the namespace it leaves them (after a real reboot they are gone
    // anyway). Everything else must be gone.
    let unexpected: Vec<&&str> = left
        .iter()
        .filter(|l| {
            !l.contains("MASQUERADE") && !l.contains("-d ") && !l.starts_with("-A POSTROUTING -s")
        })
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    assert!(network::list_attachments(&env.dirs).unwrap().is_empty());
    let ipam = env.dirs.data.join("cni/networks").join(&net);
    let allocs = std::fs::read_dir(&ipam)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
        .count();
    assert_eq!(allocs, 0);
    // Test-only cleanup of those rules, so the host is left as it was.
    for l in left.iter().filter(|l| l.starts_with("-A POSTROUTING")) {
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("iptables -t nat -D {} 2>/dev/null", &l[3..]))
            .status();
    }
    for l in &left {
        if let Some(chain) = l
            .split_whitespace()
            .nth(1)
            .filter(|c| c.starts_with("CNI-"))
        {
            let _ = Command::new("iptables")
                .args(["-t", "nat", "-F", chain])
                .status();
            let _ = Command::new("iptables")
                .args(["-t", "nat", "-X", chain])
                .status();
        }
    }
    network::remove_network(&env.dirs, &net).unwrap();
}
