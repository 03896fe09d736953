//! Just enough generic netlink for IPVS: resolve a family, send a request and wait for
//! its acknowledgement. Messages are built by hand (a netlink header, the 4-byte generic
//! header, attributes padded to 4 bytes) on a `netlink-sys` socket. Written from the
//! kernel's `include/uapi/linux/ip_vs.h` and the `net/netfilter/ipvs/ip_vs_ctl.c`
//! netlink policy, and moby/ipvs, which kube-proxy uses.

use std::io;
use std::net::Ipv4Addr;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};
use sim::kube_proxy::ipvs::VirtualServer;
use sim::protocol::Protocol;

const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLMSG_ERROR: u16 = 0x2;
const NLMSG_DONE: u16 = 0x3;

// include/uapi/linux/ip_vs.h
const IPVS_GENL_VERSION: u8 = 1;
const IPVS_CMD_NEW_SERVICE: u8 = 1;
const IPVS_CMD_NEW_DEST: u8 = 5;
const IPVS_CMD_FLUSH: u8 = 17;
const IPVS_CMD_ATTR_SERVICE: u16 = 1;
const IPVS_CMD_ATTR_DEST: u16 = 2;
const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
const IPVS_SVC_ATTR_NETMASK: u16 = 9;
const IPVS_DEST_ATTR_ADDR: u16 = 1;
const IPVS_DEST_ATTR_PORT: u16 = 2;
const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
const IP_VS_SVC_F_PERSISTENT: u32 = 0x1;
/// `IP_VS_CONN_F_MASQ`: NAT forwarding, what kube-proxy uses.
const IP_VS_CONN_F_MASQ: u32 = 0;
const AF_INET: u16 = 2;

/// One request being built.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(family: u16, cmd: u8, version: u8, seq: u32) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in `finish`
        buf.extend_from_slice(&family.to_ne_bytes());
        buf.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
        buf.extend_from_slice(&[cmd, version, 0, 0]);
        Self {
            buf,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, ty: u16, data: &[u8]) -> &mut Self {
        let len = u16::try_from(4 + data.len()).expect("attributes are small");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(data);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self
    }

    fn u16(&mut self, ty: u16, v: u16) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    fn u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// An IPv4 address in a `union nf_inet_addr` (16 bytes).
    fn addr(&mut self, ty: u16, a: Ipv4Addr) -> &mut Self {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&a.octets());
        self.attr(ty, &raw)
    }

    /// A port: `__be16`.
    fn port(&mut self, ty: u16, p: u16) -> &mut Self {
        self.attr(ty, &p.to_be_bytes())
    }

    fn begin(&mut self, ty: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        let at = self.nests.pop().expect("begin before end");
        let len = u16::try_from(self.buf.len() - at).expect("attributes are small");
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).expect("messages are small");
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// Attributes of one level: (type without flags, payload).
fn attrs(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([data[0], data[1]]));
        let ty = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if len < 4 || len > data.len() {
            break;
        }
        out.push((ty, &data[4..len]));
        let next = (len + 3) & !3;
        data = &data[next.min(data.len())..];
    }
    out
}

fn protocol_number(p: Protocol) -> u16 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

/// A generic netlink socket in the namespace of the thread that opened it.
pub struct Genl {
    sock: Socket,
    seq: u32,
}

impl Genl {
    pub fn open() -> io::Result<Self> {
        let mut sock = Socket::new(NETLINK_GENERIC)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { sock, seq: 0 })
    }

    /// Sends `msg` and reads until the kernel answers its sequence number: the
    /// payload (after the generic header) of the first reply, `None` for a bare
    /// acknowledgement, or the error it sent.
    fn request(&mut self, build: impl FnOnce(u32) -> Msg) -> io::Result<Option<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = build(seq).finish();
        self.sock.send(&bytes, 0)?;
        let mut reply = None;
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut rest = &data[..];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let ty = u16::from_ne_bytes([rest[4], rest[5]]);
                let mseq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if len < 16 || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let body = &rest[16..len];
                rest = &rest[((len + 3) & !3).min(rest.len())..];
                if mseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_ERROR => {
                        let code = body
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        return Ok(reply);
                    }
                    NLMSG_DONE => return Ok(reply),
                    _ => {
                        if reply.is_none() {
                            reply = Some(body.get(4..).unwrap_or_default().to_vec());
                        }
                    }
                }
            }
        }
    }

    /// The id of the generic netlink family `name`, `None` if the kernel has none.
    pub fn family(&mut self, name: &str) -> io::Result<Option<u16>> {
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        let answer = self.request(|seq| {
            let mut m = Msg::new(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, seq);
            m.attr(CTRL_ATTR_FAMILY_NAME, &cname);
            m
        });
        match answer {
            Ok(Some(payload)) => Ok(attrs(&payload)
                .into_iter()
                .find(|(t, v)| *t == CTRL_ATTR_FAMILY_ID && v.len() >= 2)
                .map(|(_, v)| u16::from_ne_bytes([v[0], v[1]]))),
            Ok(None) => Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ipvsadm -C`.
    pub fn ipvs_flush(&mut self, family: u16) -> io::Result<()> {
        self.request(|seq| Msg::new(family, IPVS_CMD_FLUSH, IPVS_GENL_VERSION, seq))
            .map(drop)
    }

    /// Adds a virtual server and then each of its real servers.
    pub fn ipvs_add(&mut self, family: u16, vs: &VirtualServer) -> io::Result<()> {
        let service = |m: &mut Msg, full: bool| {
            m.begin(IPVS_CMD_ATTR_SERVICE)
                .u16(IPVS_SVC_ATTR_AF, AF_INET)
                .u16(IPVS_SVC_ATTR_PROTOCOL, protocol_number(vs.protocol))
                .addr(IPVS_SVC_ATTR_ADDR, vs.address)
                .port(IPVS_SVC_ATTR_PORT, vs.port);
            if full {
                let mut sched = vs.scheduler.as_str().as_bytes().to_vec();
                sched.push(0);
                let flags = if vs.persistence.is_some() {
                    IP_VS_SVC_F_PERSISTENT
                } else {
                    0
                };
                // struct ip_vs_flags { __u32 flags; __u32 mask; }
                let mut fl = flags.to_ne_bytes().to_vec();
                fl.extend_from_slice(&u32::MAX.to_ne_bytes());
                m.attr(IPVS_SVC_ATTR_SCHED_NAME, &sched)
                    .attr(IPVS_SVC_ATTR_FLAGS, &fl)
                    .u32(IPVS_SVC_ATTR_TIMEOUT, vs.persistence.unwrap_or(0))
                    .u32(IPVS_SVC_ATTR_NETMASK, u32::MAX);
            }
            m.end();
        };
        self.request(|seq| {
            let mut m = Msg::new(family, IPVS_CMD_NEW_SERVICE, IPVS_GENL_VERSION, seq);
            service(&mut m, true);
            m
        })?;
        for rs in &vs.real_servers {
            self.request(|seq| {
                let mut m = Msg::new(family, IPVS_CMD_NEW_DEST, IPVS_GENL_VERSION, seq);
                service(&mut m, false);
                m.begin(IPVS_CMD_ATTR_DEST)
                    .addr(IPVS_DEST_ATTR_ADDR, rs.address)
                    .port(IPVS_DEST_ATTR_PORT, rs.port)
                    .u32(IPVS_DEST_ATTR_FWD_METHOD, IP_VS_CONN_F_MASQ)
                    .u32(IPVS_DEST_ATTR_WEIGHT, rs.weight)
                    .u32(IPVS_DEST_ATTR_U_THRESH, 0)
                    .u32(IPVS_DEST_ATTR_L_THRESH, 0)
                    .u16(IPVS_DEST_ATTR_ADDR_FAMILY, AF_INET)
                    .end();
                m
            })?;
        }
        Ok(())
    }
}

/// Replaces the IPVS table of the calling thread's namespace with `servers`: flush, then
/// add every virtual server and its real servers. Errors say which server failed.
pub fn program_ipvs(servers: &[VirtualServer]) -> io::Result<()> {
    let mut nl = Genl::open()?;
    let family = nl
        .family("IPVS")?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "this kernel has no IPVS"))?;
    nl.ipvs_flush(family)
        .map_err(|e| io::Error::new(e.kind(), format!("flush the IPVS table: {e}")))?;
    for vs in servers {
        nl.ipvs_add(family, vs).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "add IPVS virtual server {} {}:{}: {e}",
                    vs.protocol, vs.address, vs.port
                ),
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_laid_out_as_netlink_wants() {
        let mut m = Msg::new(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 1, 7);
        m.attr(CTRL_ATTR_FAMILY_NAME, b"IPVS\0");
        m.begin(9).u16(1, 2).end();
        let b = m.finish();
        // 16 header + 4 genl + (4+5 → 12) + nest (4 + 8) = 44
        assert_eq!(b.len(), 44);
        assert_eq!(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]), 44);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), GENL_ID_CTRL);
        assert_eq!(u32::from_ne_bytes([b[8], b[9], b[10], b[11]]), 7);
        assert_eq!(&b[16..20], &[CTRL_CMD_GETFAMILY, 1, 0, 0]);
        let top = attrs(&b[20..]);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0], (CTRL_ATTR_FAMILY_NAME, &b"IPVS\0"[..]));
        assert_eq!(top[1].0, 9);
        assert_eq!(attrs(top[1].1), [(1u16, &2u16.to_ne_bytes()[..])]);
    }

    /// The controller itself always resolves; IPVS does not on knetlab's kernels
    /// (printed, not asserted: a kernel with `ip_vs` would resolve it).
    #[test]
    fn the_controller_answers_and_ipvs_is_looked_up() {
        let mut nl = Genl::open().expect("open a generic netlink socket");
        assert_eq!(nl.family("nlctrl").unwrap(), Some(GENL_ID_CTRL));
        assert_eq!(nl.family("knetlab-none").unwrap(), None);
        match nl.family("IPVS").unwrap() {
            Some(id) => eprintln!("this kernel has IPVS (family {id})"),
            None => eprintln!("this kernel has no IPVS"),
        }
    }
}
