//! The agent's DNS resolver: it answers names of the agent's own network from its hosts
//! file, forwards queries for allowed names upstream (UDP or TCP, as the agent asked), puts
//! the addresses of the answer (CNAME chains followed) into the allow sets before the answer
//! goes out, and answers NXDOMAIN for every other name.
//!
//! Queries and answers are DNS wire format read and written with hickory-proto; an answer
//! from upstream goes back as it came (the query ID restored), except that TTLs above
//! [`super::MAX_TTL`] are lowered to it, so the agent never trusts an address longer than the
//! rules admit it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::netlink::{Element, NetlinkError, SetWriter, PROTO_TCP, PROTO_UDP};
use super::report::Reporter;
use super::rules::AllowSet;
use super::{clamp_ttl, MAX_TTL};
use crate::agent::egress::{normalize_name, Allowance, EgressPolicy};

/// How long one upstream server gets to answer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// TTL of the answers for the agent's own network (its hosts file may change).
const LOCAL_TTL: u32 = 5;
/// CNAME hops followed at most.
const MAX_CHAIN: usize = 16;

/// What to do with a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A name of the agent's own network: answered from its hosts file.
    Local(Vec<IpAddr>),
    /// On the list: forwarded, its addresses allowed on these ports.
    Forward(Allowance),
    /// Not on the list: NXDOMAIN.
    Deny,
}

/// The addresses an answer gives `qname`, through its CNAME chain, each with the smallest TTL
/// along its way.
pub fn chain_addresses(qname: &str, answers: &[Record]) -> Vec<(IpAddr, u32)> {
    let norm = |n: &Name| normalize_name(&n.to_ascii());
    let mut chain: Vec<(String, u32)> = vec![(normalize_name(qname), u32::MAX)];
    for _ in 0..MAX_CHAIN {
        let (last, ttl) = chain[chain.len() - 1].clone();
        let next = answers.iter().find_map(|r| match r.data() {
            RData::CNAME(c) if norm(r.name()) == last => Some((norm(&c.0), ttl.min(r.ttl()))),
            _ => None,
        });
        match next {
            Some((target, t)) if !chain.iter().any(|(n, _)| *n == target) => {
                chain.push((target, t))
            }
            _ => break,
        }
    }
    let mut out: Vec<(IpAddr, u32)> = Vec::new();
    for r in answers {
        let ip = match r.data() {
            RData::A(a) => IpAddr::V4(a.0),
            RData::AAAA(a) => IpAddr::V6(a.0),
            _ => continue,
        };
        let owner = norm(r.name());
        if let Some((_, t)) = chain.iter().find(|(n, _)| *n == owner) {
            let ttl = r.ttl().min(*t);
            match out.iter_mut().find(|(i, _)| *i == ip) {
                Some(e) => e.1 = e.1.max(ttl),
                None => out.push((ip, ttl)),
            }
        }
    }
    out
}

/// Addresses a hosts file gives `name` (lower case).
pub fn hosts_lookup(hosts: &str, name: &str) -> Vec<IpAddr> {
    hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let ip: IpAddr = w.next()?.parse().ok()?;
            w.any(|n| n.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .collect()
}

fn reply_to(q: &Message, code: ResponseCode) -> Message {
    let mut m = Message::error_msg(q.id(), q.op_code(), code);
    m.set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true);
    m.add_queries(q.queries().to_vec());
    m
}

/// A bare error answer for a query too broken to parse: its ID and FORMERR.
fn formerr(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() < 2 {
        return None;
    }
    let id = u16::from_be_bytes([raw[0], raw[1]]);
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

/// Lower every TTL above `max` to it; `None` when nothing needed lowering.
fn cap_ttls(m: &mut Message, max: u32) -> bool {
    let mut changed = false;
    for r in m.answers_mut().iter_mut() {
        if r.ttl() > max {
            r.set_ttl(max);
            changed = true;
        }
    }
    changed
}

/// A cheap source of query IDs for upstream queries: not the agent's own.
fn query_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() as u16
}

/// What is in the allow sets, as far as this resolver put it there.
struct Sets {
    writer: SetWriter,
    /// When each element runs out.
    expires: HashMap<(AllowSet, Vec<u8>), Instant>,
}

/// One agent's resolver.
pub struct Resolver {
    pub policy: EgressPolicy,
    pub upstream: Vec<SocketAddr>,
    pub hosts_file: Option<PathBuf>,
    sets: Mutex<Sets>,
    pub report: Mutex<Reporter>,
    /// The last allowed name each address was answered for (to name a refused port).
    names: Mutex<HashMap<IpAddr, (String, Instant)>>,
}

impl Resolver {
    pub fn new(
        policy: EgressPolicy,
        upstream: Vec<SocketAddr>,
        hosts_file: Option<PathBuf>,
        writer: SetWriter,
        report: Reporter,
    ) -> Resolver {
        Resolver {
            policy,
            upstream,
            hosts_file,
            sets: Mutex::new(Sets {
                writer,
                expires: HashMap::new(),
            }),
            report: Mutex::new(report),
            names: Mutex::new(HashMap::new()),
        }
    }

    /// Where a query goes.
    pub fn decide(&self, name: &str) -> Decision {
        if let Some(path) = &self.hosts_file {
            if let Ok(hosts) = std::fs::read_to_string(path) {
                let ips = hosts_lookup(&hosts, name);
                if !ips.is_empty() {
                    return Decision::Local(ips);
                }
            }
        }
        match self.policy.allows(name) {
            Some(a) => Decision::Forward(a),
            None => Decision::Deny,
        }
    }

    /// The name an address was last answered for, if still current.
    pub fn name_of(&self, ip: IpAddr) -> Option<String> {
        let names = self.names.lock().ok()?;
        names
            .get(&ip)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(n, _)| n.clone())
    }

    /// Put literal addresses of the list in the sets for good.
    pub fn allow_static(&self, addrs: &[(IpAddr, Option<u16>)]) -> Result<(), NetlinkError> {
        let mut elems = Vec::new();
        for (ip, port) in addrs {
            match port {
                None => elems.push(Element::addr(*ip, None)),
                Some(p) => {
                    elems.push(Element::addr_port(*ip, PROTO_TCP, *p, None));
                    elems.push(Element::addr_port(*ip, PROTO_UDP, *p, None));
                }
            }
        }
        let mut sets = self.sets.lock().map_err(|_| NetlinkError::NoAnswer)?;
        sets.writer.update(&elems, false)
    }

    /// Admit the addresses of an answer for `name`; returns how many were added or extended.
    pub fn learn(
        &self,
        name: &str,
        allowance: &Allowance,
        addrs: &[(IpAddr, u32)],
    ) -> Result<usize, NetlinkError> {
        let now = Instant::now();
        let mut fresh = Vec::new();
        let mut extend = Vec::new();
        let mut sets = self.sets.lock().map_err(|_| NetlinkError::NoAnswer)?;
        for (ip, ttl) in addrs {
            let timeout = clamp_ttl(*ttl);
            let until = now + timeout;
            let elems: Vec<Element> = match allowance {
                Allowance::AnyPort => vec![Element::addr(*ip, Some(timeout))],
                Allowance::Ports(ports) => ports
                    .iter()
                    .flat_map(|p| {
                        [
                            Element::addr_port(*ip, PROTO_TCP, *p, Some(timeout)),
                            Element::addr_port(*ip, PROTO_UDP, *p, Some(timeout)),
                        ]
                    })
                    .collect(),
            };
            for e in elems {
                match sets.expires.get(&(e.set, e.key.clone())) {
                    // Already there for long enough.
                    Some(t) if *t + Duration::from_secs(1) >= until => {}
                    // There, but running out sooner: replace it.
                    Some(t) if *t > now + Duration::from_secs(1) => extend.push(e),
                    _ => fresh.push(e),
                }
            }
        }
        let n = fresh.len() + extend.len();
        if !extend.is_empty() {
            match sets.writer.update(&extend, true) {
                Ok(()) => {}
                // It ran out in the meantime: add it anew.
                Err(e) if e.errno() == Some(libc::ENOENT) => fresh.append(&mut extend),
                Err(e) => return Err(e),
            }
        }
        sets.writer.update(&fresh, false)?;
        for e in fresh.iter().chain(&extend) {
            let t = e.timeout.unwrap_or(MAX_TTL);
            sets.expires.insert((e.set, e.key.clone()), now + t);
        }
        sets.expires.retain(|_, t| *t > now);
        drop(sets);
        if let Ok(mut names) = self.names.lock() {
            for (ip, ttl) in addrs {
                names.insert(*ip, (name.to_string(), now + clamp_ttl(*ttl)));
            }
            names.retain(|_, (_, t)| *t > now);
        }
        Ok(n)
    }

    /// Answer one query (wire format); `tcp` when it came over TCP (and goes upstream so).
    pub async fn handle(&self, raw: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let q = match Message::from_vec(raw) {
            Ok(q) => q,
            Err(_) => return formerr(raw),
        };
        if q.message_type() != MessageType::Query {
            return None;
        }
        if q.op_code() != OpCode::Query || q.queries().len() != 1 {
            return reply_to(&q, ResponseCode::NotImp).to_vec().ok();
        }
        let query = &q.queries()[0];
        let name = normalize_name(&query.name().to_ascii());
        match self.decide(&name) {
            Decision::Local(ips) => {
                let mut m = reply_to(&q, ResponseCode::NoError);
                m.set_authoritative(true);
                for ip in ips {
                    let data = match (ip, query.query_type()) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
                        _ => continue,
                    };
                    m.add_answer(Record::from_rdata(query.name().clone(), LOCAL_TTL, data));
                }
                m.to_vec().ok()
            }
            Decision::Deny => {
                if let Ok(mut r) = self.report.lock() {
                    r.denied_query(&name);
                }
                reply_to(&q, ResponseCode::NXDomain).to_vec().ok()
            }
            Decision::Forward(allowance) => {
                let answer = match self.forward(raw, tcp).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("resolving {name}: {e}");
                        return reply_to(&q, ResponseCode::ServFail).to_vec().ok();
                    }
                };
                if let Ok(mut r) = self.report.lock() {
                    r.allowed_query();
                }
                self.pass_on(&q, &name, &allowance, answer)
            }
        }
    }

    /// Admit the addresses of an upstream answer and give it back under the agent's ID.
    fn pass_on(
        &self,
        q: &Message,
        name: &str,
        allowance: &Allowance,
        mut answer: Vec<u8>,
    ) -> Option<Vec<u8>> {
        answer[..2].copy_from_slice(&q.id().to_be_bytes());
        let Ok(mut m) = Message::from_vec(&answer) else {
            // Unreadable: nothing to admit; the agent may make of it what it can.
            return Some(answer);
        };
        let addrs = chain_addresses(name, m.answers());
        match self.learn(name, allowance, &addrs) {
            Ok(n) => {
                if n > 0 {
                    if let Ok(mut r) = self.report.lock() {
                        r.allowed_addresses(n);
                    }
                }
            }
            Err(e) => {
                // An address the rules do not admit would only fail later: say so now.
                tracing::warn!("allowing the addresses of {name}: {e}");
                return reply_to(q, ResponseCode::ServFail).to_vec().ok();
            }
        }
        if cap_ttls(&mut m, MAX_TTL.as_secs() as u32) {
            if let Ok(v) = m.to_vec() {
                return Some(v);
            }
        }
        Some(answer)
    }

    /// Ask the upstream servers in turn; the first answer wins.
    async fn forward(&self, raw: &[u8], tcp: bool) -> io::Result<Vec<u8>> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no upstream DNS server");
        for server in &self.upstream {
            let id = query_id();
            let mut query = raw.to_vec();
            query[..2].copy_from_slice(&id.to_be_bytes());
            let r = if tcp {
                tokio::time::timeout(UPSTREAM_TIMEOUT, forward_tcp(*server, &query)).await
            } else {
                tokio::time::timeout(UPSTREAM_TIMEOUT, forward_udp(*server, &query, id)).await
            };
            match r {
                Ok(Ok(a)) => return Ok(a),
                Ok(Err(e)) => last = io::Error::new(e.kind(), format!("{server}: {e}")),
                Err(_) => {
                    last = io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("{server}: no answer within {UPSTREAM_TIMEOUT:?}"),
                    )
                }
            }
        }
        Err(last)
    }
}

async fn forward_udp(server: SocketAddr, query: &[u8], id: u16) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => "0.0.0.0:0".parse().map_err(io::Error::other)?,
        SocketAddr::V6(_) => "[::]:0".parse().map_err(io::Error::other)?,
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(server).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Only the answer to this query (same ID) counts.
        if n >= 12 && buf[..2] == id.to_be_bytes() {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn forward_tcp(server: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(server).await?;
    let len = u16::try_from(query.len()).map_err(io::Error::other)?;
    let mut msg = len.to_be_bytes().to_vec();
    msg.extend_from_slice(query);
    s.write_all(&msg).await?;
    read_framed(&mut s)
        .await?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "closed before answering"))
}

/// One length-prefixed DNS message from a TCP stream; `None` at end of stream.
pub async fn read_framed<R: AsyncReadExt + Unpin>(s: &mut R) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match s.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::CNAME;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn cname_chains_are_followed() {
        let answers = vec![
            Record::from_rdata(
                name("alias.test."),
                300,
                RData::CNAME(CNAME(name("mid.test."))),
            ),
            Record::from_rdata(
                name("mid.test."),
                60,
                RData::CNAME(CNAME(name("edge.cdn.test."))),
            ),
            Record::from_rdata(
                name("edge.cdn.test."),
                600,
                RData::A(A("192.0.2.5".parse().unwrap())),
            ),
            Record::from_rdata(
                name("edge.cdn.test."),
                20,
                RData::AAAA(AAAA("2001:db8::5".parse().unwrap())),
            ),
            // Not on the chain: never admitted.
            Record::from_rdata(
                name("other.test."),
                600,
                RData::A(A("192.0.2.66".parse().unwrap())),
            ),
        ];
        let got = chain_addresses("Alias.Test.", &answers);
        assert_eq!(
            got,
            vec![
                ("192.0.2.5".parse().unwrap(), 60),
                ("2001:db8::5".parse().unwrap(), 20)
            ]
        );
        // A CNAME loop ends.
        let looped = vec![
            Record::from_rdata(name("a.test."), 5, RData::CNAME(CNAME(name("b.test.")))),
            Record::from_rdata(name("b.test."), 5, RData::CNAME(CNAME(name("a.test.")))),
        ];
        assert!(chain_addresses("a.test", &looped).is_empty());
    }

    #[test]
    fn hosts_files_answer_names() {
        let hosts = "127.0.0.1\tlocalhost\n10.88.0.3\tweb web-host # peer\n# 10.9.9.9 web\n";
        assert_eq!(
            hosts_lookup(hosts, "web"),
            vec!["10.88.0.3".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(hosts_lookup(hosts, "WEB-host").len(), 1);
        assert!(hosts_lookup(hosts, "db").is_empty());
    }

    #[test]
    fn ttls_are_capped() {
        let mut m = Message::new();
        m.add_answer(Record::from_rdata(
            name("a.test."),
            86400,
            RData::A(A("192.0.2.1".parse().unwrap())),
        ));
        m.add_answer(Record::from_rdata(
            name("a.test."),
            30,
            RData::A(A("192.0.2.2".parse().unwrap())),
        ));
        assert!(cap_ttls(&mut m, 3600));
        assert_eq!(m.answers()[0].ttl(), 3600);
        assert_eq!(m.answers()[1].ttl(), 30);
        assert!(!cap_ttls(&mut m, 3600));
    }
}
