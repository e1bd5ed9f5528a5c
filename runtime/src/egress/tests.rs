//! The egress pieces against the real kernel: a network namespace of the test's own, nftables
//! rules and sets in it, the resolver answering from inside it with a DNS server of the test's
//! own upstream. Root only (skipped otherwise, with a message).

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::netlink::{Element, PROTO_TCP};
use super::*;

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: needs root (network namespaces, nftables)");
    false
}

/// A namespace with `lo` and a veth pair `d0`/`d1` (10.77.0.2/24 on d0, default route via
/// 10.77.0.1, which nobody answers): what is routed out goes nowhere.
struct Ns {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Ns {
    fn new() -> Ns {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns");
        netns::create(&path).unwrap();
        let ns = Ns { _dir: dir, path };
        for cmd in [
            "ip link set lo up",
            "ip link add d0 type veth peer name d1",
            "ip addr add 10.77.0.2/24 dev d0",
            "ip link set d1 up",
            "ip link set d0 up",
            "ip route add default via 10.77.0.1",
        ] {
            let out = ns.run(cmd);
            assert!(out.status.success(), "{cmd}: {:?}", out);
        }
        ns
    }

    fn run(&self, cmd: &str) -> std::process::Output {
        let args: Vec<&str> = cmd.split_whitespace().collect();
        netns::run_in(&self.path, || {
            Command::new(args[0]).args(&args[1..]).output().unwrap()
        })
        .unwrap()
    }

    fn nft_list(&self, set: &str) -> String {
        let out = self.run(&format!(
            "{} list set inet aac_egress {set}",
            rules::nft_binary()
        ));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A TCP connect from inside: Ok, or the error kind.
    fn connect(&self, addr: &str) -> Result<(), io::ErrorKind> {
        let addr: SocketAddr = addr.parse().unwrap();
        netns::run_in(&self.path, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(300))
                .map(drop)
                .map_err(|e| e.kind())
        })
        .unwrap()
    }

    fn query(&self, name: &str, tcp: bool) -> Message {
        let mut q = Message::new();
        q.set_id(4242)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        let raw = q.to_vec().unwrap();
        let answer = netns::run_in(&self.path, || -> io::Result<Vec<u8>> {
            let server = SocketAddr::new(IpAddr::V4(RESOLVER_IP), 53);
            if tcp {
                use std::io::{Read, Write};
                let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                let mut msg = (raw.len() as u16).to_be_bytes().to_vec();
                msg.extend_from_slice(&raw);
                s.write_all(&msg)?;
                let mut len = [0u8; 2];
                s.read_exact(&mut len)?;
                let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                s.read_exact(&mut buf)?;
                Ok(buf)
            } else {
                let s = UdpSocket::bind("127.0.0.1:0")?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.send_to(&raw, server)?;
                let mut buf = vec![0u8; 4096];
                let n = s.recv(&mut buf)?;
                buf.truncate(n);
                Ok(buf)
            }
        })
        .unwrap()
        .unwrap();
        let m = Message::from_vec(&answer).unwrap();
        assert_eq!(m.id(), 4242);
        m
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = netns::remove(&self.path);
    }
}

fn params() -> RulesetParams {
    RulesetParams {
        own_networks: vec!["10.77.0.0/24".parse().unwrap()],
        host_addresses: vec!["10.77.0.1".parse().unwrap()],
    }
}

#[test]
fn rules_sets_and_denial_log_in_a_namespace() {
    if !root() {
        return;
    }
    let ns = Ns::new();
    rules::apply(&ns.path, &rules::ruleset(&params())).unwrap();
    // Applying again (a new monitor adopting the agent) keeps working.
    rules::apply(&ns.path, &rules::ruleset(&params())).unwrap();
    let mut s = netns::run_in(&ns.path, open_sockets).unwrap().unwrap();

    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    s.sets
        .update(
            &[
                Element::addr(ip("192.0.2.10"), Some(Duration::from_secs(30))),
                Element::addr_port(
                    ip("192.0.2.11"),
                    PROTO_TCP,
                    443,
                    Some(Duration::from_secs(60)),
                ),
            ],
            false,
        )
        .unwrap();
    let l4 = ns.nft_list("allow4");
    assert!(l4.contains("192.0.2.10 timeout 30s"), "{l4}");
    let l4p = ns.nft_list("allow4p");
    assert!(l4p.contains("192.0.2.11 . tcp . 443 timeout 1m"), "{l4p}");
    // A longer timeout replaces the shorter one.
    s.sets
        .update(
            &[Element::addr(
                ip("192.0.2.10"),
                Some(Duration::from_secs(120)),
            )],
            true,
        )
        .unwrap();
    assert!(
        ns.nft_list("allow4").contains("timeout 2m"),
        "{}",
        ns.nft_list("allow4")
    );
    // Replacing what is not there is refused, and changes nothing.
    let e = s
        .sets
        .update(
            &[Element::addr(
                ip("192.0.2.12"),
                Some(Duration::from_secs(9)),
            )],
            true,
        )
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
    assert!(!ns.nft_list("allow4").contains("192.0.2.12"));

    // Refused at once, not left to time out: an address not allowed, a port not allowed,
    // the host behind the gateway, another DNS server.
    for addr in [
        "192.0.2.99:80",
        "192.0.2.11:80",
        "10.77.0.1:22",
        "192.0.2.10:53",
    ] {
        assert_eq!(
            ns.connect(addr),
            Err(io::ErrorKind::ConnectionRefused),
            "{addr}"
        );
    }
    // Allowed ones go out (and, into the unanswered veth, never answer).
    for addr in ["192.0.2.10:80", "192.0.2.11:443", "10.77.0.9:80"] {
        assert_eq!(ns.connect(addr), Err(io::ErrorKind::TimedOut), "{addr}");
    }
    // Each refusal was logged to the resolver.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while seen.len() < 4 && Instant::now() < deadline {
        seen.extend(s.nflog.drain().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    let dsts: Vec<String> = seen
        .iter()
        .map(|d| format!("{}:{}/{}", d.dst, d.port.unwrap_or(0), d.protocol_name()))
        .collect();
    for want in [
        "192.0.2.99:80/tcp",
        "192.0.2.11:80/tcp",
        "10.77.0.1:22/tcp",
        "192.0.2.10:53/tcp",
    ] {
        assert!(dsts.iter().any(|d| d == want), "{want} not in {dsts:?}");
    }
}

fn fake_answer(raw: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(raw).ok()?;
    let qname = q.queries().first()?.name().clone();
    let mut m = Message::error_msg(q.id(), OpCode::Query, ResponseCode::NoError);
    m.add_queries(q.queries().to_vec());
    let a = |n: &str, ttl, ip: &str| {
        Record::from_rdata(
            Name::from_ascii(n).unwrap(),
            ttl,
            RData::A(A(ip.parse().unwrap())),
        )
    };
    match qname.to_ascii().as_str() {
        "allowed.test." => {
            m.add_answer(a("allowed.test.", 7, "192.0.2.20"));
        }
        "alias.test." => {
            m.add_answer(Record::from_rdata(
                qname.clone(),
                300,
                RData::CNAME(CNAME(Name::from_ascii("edge.cdn.test.").unwrap())),
            ));
            m.add_answer(a("edge.cdn.test.", 300, "192.0.2.21"));
        }
        "big.test." => {
            m.add_answer(a("big.test.", 86400, "192.0.2.22"));
        }
        _ => {
            m.set_response_code(ResponseCode::NXDomain);
        }
    }
    m.to_vec().ok()
}

/// A DNS server (UDP and TCP) on 127.0.0.1 in the test's own namespace: `allowed.test` A
/// 192.0.2.20 (TTL 7), `alias.test` CNAME `edge.cdn.test` A 192.0.2.21, `big.test` A
/// 192.0.2.22 with a TTL of a day.
fn fake_upstream() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let listener = std::net::TcpListener::bind(addr).unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            if let Some(a) = fake_answer(&buf[..n]) {
                let _ = sock.send_to(&a, peer);
            }
        }
    });
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut s in listener.incoming().flatten() {
            let mut len = [0u8; 2];
            if s.read_exact(&mut len).is_err() {
                continue;
            }
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if s.read_exact(&mut q).is_err() {
                continue;
            }
            if let Some(a) = fake_answer(&q) {
                let mut out = (a.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&a);
                let _ = s.write_all(&out);
            }
        }
    });
    addr
}

#[test]
fn resolver_admits_answers_and_refuses_other_names() {
    if !root() {
        return;
    }
    let ns = Ns::new();
    let state = tempfile::tempdir().unwrap();
    let dirs = StateDirs {
        run: state.path().join("run"),
        data: state.path().join("data"),
    };
    let id = "egresstest0";
    std::fs::create_dir_all(dirs.container_dir(id)).unwrap();
    let hosts = state.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1\tlocalhost\n10.77.0.3\tpeer\n").unwrap();
    let upstream = fake_upstream();
    let policy = EgressPolicy {
        allowed: ["allowed.test", "*.test:8443", "big.test", "192.0.2.30:22"]
            .iter()
            .map(|s| crate::agent::HostPattern::parse(s).unwrap())
            .collect(),
    };
    let guard = Guard::start(
        &dirs,
        Config {
            container_id: id.into(),
            name: "egress-test".into(),
            netns: ns.path.clone(),
            policy,
            upstream: vec![upstream],
            rules: params(),
            hosts_file: Some(hosts),
        },
    )
    .unwrap();

    // An allowed name: the answer comes through, its address is allowed for the TTL's
    // clamped time (5 s minimum), over UDP and TCP.
    let m = ns.query("allowed.test.", false);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(m.answers().len(), 1);
    let l4 = ns.nft_list("allow4");
    assert!(l4.contains("192.0.2.20 timeout 7s"), "{l4}");
    assert_eq!(ns.connect("192.0.2.20:80"), Err(io::ErrorKind::TimedOut));
    assert_eq!(ns.query("allowed.test.", true).answers().len(), 1);
    // A wildcard with a port: the CNAME chain's address, on that port only.
    let m = ns.query("alias.test.", false);
    assert_eq!(m.answers().len(), 2, "{m:?}");
    let l4p = ns.nft_list("allow4p");
    assert!(l4p.contains("192.0.2.21 . tcp . 8443"), "{l4p}");
    assert!(l4p.contains("192.0.2.21 . udp . 8443"), "{l4p}");
    assert_eq!(ns.connect("192.0.2.21:8443"), Err(io::ErrorKind::TimedOut));
    assert_eq!(
        ns.connect("192.0.2.21:443"),
        Err(io::ErrorKind::ConnectionRefused)
    );
    // A TTL above an hour is cut to an hour, in the set and in the answer.
    let m = ns.query("big.test.", false);
    assert_eq!(m.answers()[0].ttl(), 3600);
    assert!(ns.nft_list("allow4").contains("192.0.2.22 timeout 1h"));
    // A literal address of the list is allowed from the start, for good, on its port.
    assert!(ns.nft_list("allow4p").contains("192.0.2.30 . tcp . 22"));
    // The agent's own network by name.
    let m = ns.query("peer.", false);
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(
        m.answers()[0].data(),
        &RData::A(A("10.77.0.3".parse().unwrap()))
    );
    // Names not on the list: NXDOMAIN, and never asked upstream.
    for n in ["denied.example.", "test.", "allowed.test.evil."] {
        let m = ns.query(n, false);
        assert_eq!(m.response_code(), ResponseCode::NXDomain, "{n}");
        assert!(m.answers().is_empty());
    }
    // A refused connection is reported with the name its address was answered for.
    assert_eq!(
        ns.connect("192.0.2.21:80"),
        Err(io::ErrorKind::ConnectionRefused)
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    let counters = loop {
        let c = report::load(&dirs, id);
        if c.denied_connections >= 2 || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(counters.denied_queries, 3, "{counters:?}");
    assert!(counters.denied_connections >= 2, "{counters:?}");
    assert!(counters.allowed_queries >= 4, "{counters:?}");
    assert!(
        counters
            .recent
            .iter()
            .any(|d| d.address.as_deref() == Some("192.0.2.21")
                && d.port == Some(80)
                && d.host.as_deref() == Some("alias.test")),
        "{counters:?}"
    );
    let journal = std::fs::read_to_string(dirs.data.join(crate::events::EVENTS_FILE)).unwrap();
    assert!(journal.contains(r#""type":"egress-denied""#), "{journal}");
    assert!(journal.contains(r#""host":"denied.example""#), "{journal}");
    assert!(journal.contains(r#""address":"192.0.2.21""#), "{journal}");

    // Stopping the guard closes the resolver's sockets; the rules stay with the namespace.
    drop(guard);
    let gone = netns::run_in(&ns.path, || {
        UdpSocket::bind(SocketAddr::new(IpAddr::V4(RESOLVER_IP), 53)).is_ok()
    })
    .unwrap();
    assert!(gone, "the resolver's port is still taken");
}

#[test]
fn a_policy_takes_net_raw_and_names_the_resolver() {
    let mut a = crate::agent::Agent::for_image("demo", "img");
    let caps = crate::spec::builder::capability_set(&a);
    assert!(caps.contains(&"NET_RAW".to_string()));
    assert_eq!(resolver_for(&a, &NetworkMode::Bridge), None);
    a.spec.network.security.allowed_hosts = vec!["api.example.com".into()];
    let caps = crate::spec::builder::capability_set(&a);
    assert!(!caps.contains(&"NET_RAW".to_string()), "{caps:?}");
    assert!(!caps.contains(&"NET_ADMIN".to_string()), "{caps:?}");
    assert_eq!(
        resolver_for(&a, &NetworkMode::Named("team".into())),
        Some(IpAddr::V4(RESOLVER_IP))
    );
    assert_eq!(resolver_for(&a, &NetworkMode::None), None);
    // The upstream servers: the agent's own, else this host's (loopback ones included).
    assert_eq!(
        upstream_servers(&["192.0.2.53".parse().unwrap()]),
        vec!["192.0.2.53:53".parse::<SocketAddr>().unwrap()]
    );
    assert_eq!(clamp_ttl(0), MIN_TTL);
    assert_eq!(clamp_ttl(30), Duration::from_secs(30));
    assert_eq!(clamp_ttl(u32::MAX), MAX_TTL);
}
