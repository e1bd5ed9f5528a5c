//! The two netfilter netlink sockets the resolver holds in the agent's namespace: one that
//! adds addresses to the allow sets (an nf_tables batch per update, acknowledged before the
//! DNS answer goes out), and one that receives the packets the reject rules log (NFLOG), so
//! each refused connection becomes a counted, reported denial.
//!
//! Both are created by a thread inside the namespace; a netlink socket stays in the namespace
//! it was created in wherever it is used.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST};
use netlink_packet_netfilter::nflog::{
    config_request, ConfigCmd, ConfigMode, ConfigNla, PacketNla,
};
use netlink_packet_netfilter::nftables::{
    DataAttribute, ListAttribute, NfTablesMessage, SetElementAttribute, SetElementList,
    SetElementMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use super::rules::{AllowSet, TABLE};

/// `NFNL_SUBSYS_NFTABLES`: the batch messages name the subsystem they carry.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// How long to wait for the kernel's answer to a batch (it answers while handling the send).
const ACK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("nf_tables refused the set update: {0}")]
    Refused(io::Error),
    #[error("netlink: no answer from the kernel")]
    NoAnswer,
    #[error("netlink: unreadable answer: {0}")]
    Decode(String),
}

impl NetlinkError {
    /// The kernel's errno for a refused update.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Refused(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// One element of an allow set: its key and how long it stays (`None`: for good).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub set: AllowSet,
    pub key: Vec<u8>,
    pub timeout: Option<Duration>,
}

/// IPPROTO numbers of the protocols with ports.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

impl Element {
    /// An address in the any-port set of its family.
    pub fn addr(ip: IpAddr, timeout: Option<Duration>) -> Element {
        let key = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        Element {
            set: AllowSet::for_addr(ip, false),
            key,
            timeout,
        }
    }

    /// `address . protocol . port` in the per-port set of its family. Each field of a
    /// concatenated key takes a whole number of 32-bit registers: the protocol byte and the
    /// big-endian port are padded to four bytes each.
    pub fn addr_port(ip: IpAddr, proto: u8, port: u16, timeout: Option<Duration>) -> Element {
        let mut key = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        key.extend_from_slice(&[proto, 0, 0, 0]);
        let p = port.to_be_bytes();
        key.extend_from_slice(&[p[0], p[1], 0, 0]);
        Element {
            set: AllowSet::for_addr(ip, true),
            key,
            timeout,
        }
    }
}

fn set_receive_timeout(sock: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = nix::sys::time::TimeVal::new(
        timeout.as_secs() as nix::sys::time::time_t,
        timeout.subsec_micros() as nix::sys::time::suseconds_t,
    );
    // SAFETY: the descriptor belongs to `sock`, which outlives this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(sock.as_raw_fd()) };
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(io::Error::from)
}

fn emit(mut msg: NetlinkMessage<NetfilterMessage>, out: &mut Vec<u8>) {
    msg.finalize();
    let start = out.len();
    out.resize(start + msg.buffer_len(), 0);
    msg.serialize(&mut out[start..]);
}

/// Writes elements into the allow sets of the agent's namespace.
pub struct SetWriter {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl SetWriter {
    /// Open the socket; call from a thread inside the agent's namespace.
    pub fn open() -> Result<SetWriter, NetlinkError> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        set_receive_timeout(&sock, ACK_TIMEOUT)?;
        Ok(SetWriter {
            sock,
            seq: 1,
            buf: vec![0; 64 * 1024],
        })
    }

    fn message(
        &mut self,
        inner: NetfilterMessageInner,
        flags: u16,
        family: NetfilterProtoFamily,
        res_id: u16,
    ) -> NetlinkMessage<NetfilterMessage> {
        let mut m = NetlinkMessage::from(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, res_id),
            inner,
        ));
        m.header.flags = flags;
        m.header.sequence_number = self.seq;
        self.seq = self.seq.wrapping_add(1);
        m
    }

    /// Add `elements` in one transaction; with `replace`, delete each first (so that a longer
    /// timeout replaces a shorter one on kernels that keep the old one on add). Either all
    /// changes happen or none.
    pub fn update(&mut self, elements: &[Element], replace: bool) -> Result<(), NetlinkError> {
        if elements.is_empty() {
            return Ok(());
        }
        let mut by_set: Vec<(AllowSet, Vec<&Element>)> = Vec::new();
        for e in elements {
            match by_set.iter_mut().find(|(s, _)| *s == e.set) {
                Some((_, v)) => v.push(e),
                None => by_set.push((e.set, vec![e])),
            }
        }
        let mut out = Vec::new();
        let begin = self.message(
            ControlMessage::BatchBegin.into(),
            NLM_F_REQUEST,
            NetfilterProtoFamily::Unspec,
            NFNL_SUBSYS_NFTABLES,
        );
        emit(begin, &mut out);
        let mut acks = Vec::new();
        for (set, elems) in &by_set {
            let list = |with_timeout: bool| SetElementMessage {
                attributes: vec![
                    SetElementList::Table(TABLE.to_string()),
                    SetElementList::Set(set.name().to_string()),
                    SetElementList::Elements(
                        elems
                            .iter()
                            .map(|e| {
                                let mut attrs = vec![SetElementAttribute::Key(
                                    DataAttribute::Value(e.key.clone()),
                                )];
                                if let (true, Some(t)) = (with_timeout, e.timeout) {
                                    attrs.push(SetElementAttribute::Timeout(
                                        t.as_millis().min(u128::from(u64::MAX)) as u64,
                                    ));
                                }
                                ListAttribute::Element(attrs)
                            })
                            .collect(),
                    ),
                ],
            };
            if replace {
                let del = self.message(
                    NfTablesMessage::DeleteSetElement(list(false)).into(),
                    NLM_F_REQUEST | NLM_F_ACK,
                    NetfilterProtoFamily::Inet,
                    0,
                );
                acks.push(del.header.sequence_number);
                emit(del, &mut out);
            }
            let add = self.message(
                NfTablesMessage::NewSetElement(list(true)).into(),
                NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
                NetfilterProtoFamily::Inet,
                0,
            );
            acks.push(add.header.sequence_number);
            emit(add, &mut out);
        }
        let end = self.message(
            ControlMessage::BatchEnd.into(),
            NLM_F_REQUEST,
            NetfilterProtoFamily::Unspec,
            NFNL_SUBSYS_NFTABLES,
        );
        emit(end, &mut out);
        self.sock.send(&out, 0)?;
        self.read_acks(&acks)
    }

    /// Every message sent with NLM_F_ACK gets an answer: code 0, or the errno that aborted
    /// the batch (then the other answers may say 0 for changes that were not made).
    fn read_acks(&mut self, expected: &[u32]) -> Result<(), NetlinkError> {
        let mut pending: Vec<u32> = expected.to_vec();
        let mut refused: Option<io::Error> = None;
        while !pending.is_empty() {
            let n = match self.sock.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(NetlinkError::NoAnswer)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[off..n])
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let len = msg.header.length as usize;
                if let NetlinkPayload::Error(err) = &msg.payload {
                    pending.retain(|s| *s != msg.header.sequence_number);
                    if let Some(code) = err.code {
                        refused.get_or_insert(io::Error::from_raw_os_error(-code.get()));
                    }
                }
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
        match refused {
            Some(e) => Err(NetlinkError::Refused(e)),
            None => Ok(()),
        }
    }
}

/// A packet the reject rules logged: where it was going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Denied {
    pub dst: IpAddr,
    /// IPPROTO number.
    pub proto: u8,
    /// Destination port for TCP and UDP.
    pub port: Option<u16>,
}

impl Denied {
    pub fn protocol_name(&self) -> String {
        match self.proto {
            PROTO_TCP => "tcp".into(),
            PROTO_UDP => "udp".into(),
            1 => "icmp".into(),
            58 => "icmpv6".into(),
            n => n.to_string(),
        }
    }
}

/// Where an IPv4 or IPv6 packet (from its network header on) was going.
pub fn parse_packet(p: &[u8]) -> Option<Denied> {
    let version = p.first()? >> 4;
    let (dst, proto, l4): (IpAddr, u8, &[u8]) = match version {
        4 => {
            let ihl = usize::from(p[0] & 0x0f) * 4;
            if p.len() < 20 || ihl < 20 {
                return None;
            }
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            (IpAddr::V4(dst), p[9], p.get(ihl..).unwrap_or(&[]))
        }
        6 => {
            if p.len() < 40 {
                return None;
            }
            let mut d = [0u8; 16];
            d.copy_from_slice(&p[24..40]);
            // Extension headers are not followed: the port is then unknown.
            (IpAddr::V6(Ipv6Addr::from(d)), p[6], &p[40..])
        }
        _ => return None,
    };
    let port = match proto {
        PROTO_TCP | PROTO_UDP if l4.len() >= 4 => Some(u16::from_be_bytes([l4[2], l4[3]])),
        _ => None,
    };
    Some(Denied { dst, proto, port })
}

/// Receives the packets the reject rules log to [`super::rules::LOG_GROUP`].
pub struct Nflog {
    sock: Socket,
    buf: Vec<u8>,
}

impl Nflog {
    /// Open the socket and bind it to `group`; call from a thread inside the namespace.
    pub fn open(group: u16) -> Result<Nflog, NetlinkError> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        set_receive_timeout(&sock, ACK_TIMEOUT)?;
        let mut req = config_request(
            NetfilterProtoFamily::Unspec,
            group,
            vec![
                ConfigCmd::Bind.into(),
                // Headers are enough to say where a packet was going.
                ConfigMode::new_packet(128).into(),
                // Each packet at once, not in batches a second late.
                ConfigNla::QThresh(1),
            ],
        );
        req.header.sequence_number = 1;
        let mut out = Vec::new();
        emit(req, &mut out);
        sock.send(&out, 0)?;
        let mut nf = Nflog {
            sock,
            buf: vec![0; 64 * 1024],
        };
        let n = nf.sock.recv(&mut &mut nf.buf[..], 0).map_err(|e| {
            if e.kind() == io::ErrorKind::WouldBlock {
                NetlinkError::NoAnswer
            } else {
                e.into()
            }
        })?;
        let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&nf.buf[..n])
            .map_err(|e| NetlinkError::Decode(e.to_string()))?;
        if let NetlinkPayload::Error(err) = &msg.payload {
            if let Some(code) = err.code {
                return Err(NetlinkError::Refused(io::Error::from_raw_os_error(
                    -code.get(),
                )));
            }
        }
        nf.sock.set_non_blocking(true)?;
        Ok(nf)
    }

    /// Every logged packet waiting now (non-blocking; empty when none).
    pub fn drain(&mut self) -> io::Result<Vec<Denied>> {
        let mut out = Vec::new();
        loop {
            let n = match self.sock.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The queue overflowed: some packets were not logged; go on with the rest.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) => return Err(e),
            };
            let mut off = 0;
            while off < n {
                let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[off..n])
                else {
                    break;
                };
                let len = msg.header.length as usize;
                if let NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner:
                        NetfilterMessageInner::ULog(
                            netlink_packet_netfilter::nflog::ULogMessage::Packet(nlas),
                        ),
                    ..
                }) = &msg.payload
                {
                    for nla in nlas {
                        if let PacketNla::Payload(p) = nla {
                            out.extend(parse_packet(p));
                        }
                    }
                }
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
            }
        }
    }
}

impl AsRawFd for Nflog {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_laid_out_in_registers() {
        let e = Element::addr_port("10.1.2.3".parse().unwrap(), PROTO_TCP, 443, None);
        assert_eq!(e.set, AllowSet::V4Port);
        assert_eq!(e.key, vec![10, 1, 2, 3, 6, 0, 0, 0, 0x01, 0xbb, 0, 0]);
        let e = Element::addr("fd00::1".parse().unwrap(), Some(Duration::from_secs(5)));
        assert_eq!(e.set, AllowSet::V6);
        assert_eq!(e.key.len(), 16);
        let e = Element::addr_port("fd00::1".parse().unwrap(), PROTO_UDP, 53, None);
        assert_eq!(e.key.len(), 24);
    }

    #[test]
    fn packets_say_where_they_went() {
        // IPv4 TCP SYN to 192.0.2.9:8080.
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = 6;
        p[16..20].copy_from_slice(&[192, 0, 2, 9]);
        p[22..24].copy_from_slice(&8080u16.to_be_bytes());
        assert_eq!(
            parse_packet(&p),
            Some(Denied {
                dst: "192.0.2.9".parse().unwrap(),
                proto: 6,
                port: Some(8080)
            })
        );
        // ICMP: no port.
        p[9] = 1;
        assert_eq!(parse_packet(&p).unwrap().port, None);
        // IPv6 UDP to 2001:db8::1 port 53.
        let mut q = vec![0u8; 48];
        q[0] = 0x60;
        q[6] = 17;
        q[24..40].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        q[42..44].copy_from_slice(&53u16.to_be_bytes());
        let d = parse_packet(&q).unwrap();
        assert_eq!(d.port, Some(53));
        assert_eq!(d.protocol_name(), "udp");
        assert_eq!(parse_packet(&[0x45, 0, 0]), None);
        assert_eq!(parse_packet(&[]), None);
    }
}
