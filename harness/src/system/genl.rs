//! IPVS over generic netlink, with the rust-netlink crates: `genetlink` resolves the
//! family through the kernel's controller and carries the requests, and
//! `netlink-packet-generic` / `netlink-packet-core` frame them. What is ours is the IPVS
//! family itself: its commands and attributes ([`IpvsMessage`]), written from the
//! kernel's `include/uapi/linux/ip_vs.h` and the `net/netfilter/ipvs/ip_vs_ctl.c` netlink
//! policy (moby/ipvs, which kube-proxy uses, lays them out the same way). Only the
//! requests kube-proxy's IPVS mode needs are here: flush, add a virtual server, add a
//! real server.

use std::net::Ipv4Addr;

use futures::StreamExt as _;
use genetlink::{GenetlinkError, GenetlinkHandle};
use netlink_packet_core::{
    DecodeError, Emitable, NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload, Nla,
    ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use sim::kube_proxy::ipvs::{RealServer, VirtualServer};
use sim::protocol::Protocol;

/// The family name IPVS registers with the generic netlink controller.
const IPVS_FAMILY: &str = "IPVS";
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
const NLA_F_NESTED: u16 = 0x8000;

/// One IPVS request: a command and its top-level attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMessage {
    pub cmd: u8,
    pub attrs: Vec<IpvsAttr>,
}

/// A top-level IPVS attribute: a virtual server or a real server, each nested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsAttr {
    Service(Vec<ServiceAttr>),
    Dest(Vec<DestAttr>),
}

/// `IPVS_SVC_ATTR_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceAttr {
    Family(u16),
    Protocol(u16),
    Address(Ipv4Addr),
    Port(u16),
    Scheduler(String),
    /// `struct ip_vs_flags { flags, mask }`.
    Flags(u32, u32),
    Timeout(u32),
    Netmask(u32),
}

/// `IPVS_DEST_ATTR_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestAttr {
    Address(Ipv4Addr),
    Port(u16),
    ForwardMethod(u32),
    Weight(u32),
    UpperThreshold(u32),
    LowerThreshold(u32),
    AddressFamily(u16),
}

impl IpvsMessage {
    /// `ipvsadm -C`.
    pub fn flush() -> Self {
        Self {
            cmd: IPVS_CMD_FLUSH,
            attrs: Vec::new(),
        }
    }

    /// Adds virtual server `vs` (its real servers come one by one, [`Self::new_dest`]).
    pub fn new_service(vs: &VirtualServer) -> Self {
        let flags = if vs.persistence.is_some() {
            IP_VS_SVC_F_PERSISTENT
        } else {
            0
        };
        let mut service = service_key(vs);
        service.extend([
            ServiceAttr::Scheduler(vs.scheduler.as_str().to_string()),
            ServiceAttr::Flags(flags, u32::MAX),
            ServiceAttr::Timeout(vs.persistence.unwrap_or(0)),
            ServiceAttr::Netmask(u32::MAX),
        ]);
        Self {
            cmd: IPVS_CMD_NEW_SERVICE,
            attrs: vec![IpvsAttr::Service(service)],
        }
    }

    /// Adds real server `rs` to virtual server `vs`, NAT-forwarded as kube-proxy does.
    pub fn new_dest(vs: &VirtualServer, rs: &RealServer) -> Self {
        Self {
            cmd: IPVS_CMD_NEW_DEST,
            attrs: vec![
                IpvsAttr::Service(service_key(vs)),
                IpvsAttr::Dest(vec![
                    DestAttr::Address(rs.address),
                    DestAttr::Port(rs.port),
                    DestAttr::ForwardMethod(IP_VS_CONN_F_MASQ),
                    DestAttr::Weight(rs.weight),
                    DestAttr::UpperThreshold(0),
                    DestAttr::LowerThreshold(0),
                    DestAttr::AddressFamily(AF_INET),
                ]),
            ],
        }
    }
}

/// What names a virtual server: family, protocol, address and port.
fn service_key(vs: &VirtualServer) -> Vec<ServiceAttr> {
    vec![
        ServiceAttr::Family(AF_INET),
        ServiceAttr::Protocol(protocol_number(vs.protocol)),
        ServiceAttr::Address(vs.address),
        ServiceAttr::Port(vs.port),
    ]
}

fn protocol_number(p: Protocol) -> u16 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        IPVS_FAMILY
    }

    fn command(&self) -> u8 {
        self.cmd
    }

    fn version(&self) -> u8 {
        IPVS_GENL_VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

/// knetlab reads only acknowledgements from IPVS, never its dumps: a reply keeps its
/// command and drops its attributes.
impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(_buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Ok(Self {
            cmd: header.cmd,
            attrs: Vec::new(),
        })
    }
}

impl Nla for IpvsAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Service(attrs) => attrs.as_slice().buffer_len(),
            Self::Dest(attrs) => attrs.as_slice().buffer_len(),
        }
    }

    fn kind(&self) -> u16 {
        NLA_F_NESTED
            | match self {
                Self::Service(_) => IPVS_CMD_ATTR_SERVICE,
                Self::Dest(_) => IPVS_CMD_ATTR_DEST,
            }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Service(attrs) => attrs.as_slice().emit(buffer),
            Self::Dest(attrs) => attrs.as_slice().emit(buffer),
        }
    }
}

/// An address as `union nf_inet_addr`: 16 bytes, IPv4 in the first four.
const INET_ADDR_LEN: usize = 16;

fn emit_address(buffer: &mut [u8], a: Ipv4Addr) {
    buffer[..INET_ADDR_LEN].fill(0);
    buffer[..4].copy_from_slice(&a.octets());
}

impl Nla for ServiceAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Family(_) | Self::Protocol(_) | Self::Port(_) => 2,
            Self::Address(_) => INET_ADDR_LEN,
            // NUL-terminated
            Self::Scheduler(s) => s.len() + 1,
            Self::Flags(..) => 8,
            Self::Timeout(_) | Self::Netmask(_) => 4,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Family(_) => IPVS_SVC_ATTR_AF,
            Self::Protocol(_) => IPVS_SVC_ATTR_PROTOCOL,
            Self::Address(_) => IPVS_SVC_ATTR_ADDR,
            Self::Port(_) => IPVS_SVC_ATTR_PORT,
            Self::Scheduler(_) => IPVS_SVC_ATTR_SCHED_NAME,
            Self::Flags(..) => IPVS_SVC_ATTR_FLAGS,
            Self::Timeout(_) => IPVS_SVC_ATTR_TIMEOUT,
            Self::Netmask(_) => IPVS_SVC_ATTR_NETMASK,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Family(v) | Self::Protocol(v) => buffer[..2].copy_from_slice(&v.to_ne_bytes()),
            // `__be16`, unlike the other numbers
            Self::Port(p) => buffer[..2].copy_from_slice(&p.to_be_bytes()),
            Self::Address(a) => emit_address(buffer, *a),
            Self::Scheduler(s) => {
                buffer[..s.len()].copy_from_slice(s.as_bytes());
                buffer[s.len()] = 0;
            }
            Self::Flags(flags, mask) => {
                buffer[..4].copy_from_slice(&flags.to_ne_bytes());
                buffer[4..8].copy_from_slice(&mask.to_ne_bytes());
            }
            Self::Timeout(v) | Self::Netmask(v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
        }
    }
}

impl Nla for DestAttr {
    fn value_len(&self) -> usize {
        match self {
            Self::Address(_) => INET_ADDR_LEN,
            Self::Port(_) | Self::AddressFamily(_) => 2,
            Self::ForwardMethod(_)
            | Self::Weight(_)
            | Self::UpperThreshold(_)
            | Self::LowerThreshold(_) => 4,
        }
    }

    fn kind(&self) -> u16 {
        match self {
            Self::Address(_) => IPVS_DEST_ATTR_ADDR,
            Self::Port(_) => IPVS_DEST_ATTR_PORT,
            Self::ForwardMethod(_) => IPVS_DEST_ATTR_FWD_METHOD,
            Self::Weight(_) => IPVS_DEST_ATTR_WEIGHT,
            Self::UpperThreshold(_) => IPVS_DEST_ATTR_U_THRESH,
            Self::LowerThreshold(_) => IPVS_DEST_ATTR_L_THRESH,
            Self::AddressFamily(_) => IPVS_DEST_ATTR_ADDR_FAMILY,
        }
    }

    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Self::Address(a) => emit_address(buffer, *a),
            Self::Port(p) => buffer[..2].copy_from_slice(&p.to_be_bytes()),
            Self::AddressFamily(v) => buffer[..2].copy_from_slice(&v.to_ne_bytes()),
            Self::ForwardMethod(v)
            | Self::Weight(v)
            | Self::UpperThreshold(v)
            | Self::LowerThreshold(v) => buffer[..4].copy_from_slice(&v.to_ne_bytes()),
        }
    }
}

/// The id of the IPVS family, `None` when the kernel has none (the controller answers
/// ENOENT: no `ip_vs` module, as on knetlab's own kernels).
pub async fn ipvs_family(handle: &GenetlinkHandle) -> Result<Option<u16>, GenetlinkError> {
    match handle.resolve_family::<IpvsMessage>().await {
        Ok(family) => Ok(Some(family.id)),
        Err(GenetlinkError::NetlinkError(e)) if e.raw_os_error() == Some(nix::libc::ENOENT) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Sends one request and waits for the kernel's acknowledgement.
async fn request(handle: &mut GenetlinkHandle, msg: IpvsMessage) -> Result<(), GenetlinkError> {
    let mut nl = NetlinkMessage::from(GenlMessage::from_payload(msg));
    nl.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut replies = handle.request(nl).await?;
    while let Some(reply) = replies.next().await {
        if let NetlinkPayload::Error(e) = reply?.payload {
            // an acknowledgement is an error message without a code
            return match e.code {
                None => Ok(()),
                Some(_) => Err(e.into()),
            };
        }
    }
    Ok(())
}

/// Replaces the IPVS table of the handle's namespace with `servers`: flush, then add every
/// virtual server and its real servers. Errors say which server failed.
pub async fn program_ipvs(
    handle: &mut GenetlinkHandle,
    servers: &[VirtualServer],
) -> Result<(), String> {
    match ipvs_family(handle).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err("this kernel has no IPVS".into()),
        Err(e) => return Err(format!("resolve the IPVS family: {e}")),
    }
    request(handle, IpvsMessage::flush())
        .await
        .map_err(|e| format!("flush the IPVS table: {e}"))?;
    for vs in servers {
        let failed = |e: GenetlinkError| {
            format!(
                "add IPVS virtual server {} {}:{}: {e}",
                vs.protocol, vs.address, vs.port
            )
        };
        request(handle, IpvsMessage::new_service(vs))
            .await
            .map_err(failed)?;
        for rs in &vs.real_servers {
            request(handle, IpvsMessage::new_dest(vs, rs))
                .await
                .map_err(failed)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{NlaBuffer, NlasIterator};
    use sim::cluster::IpvsScheduler;
    use sim::kube_proxy::ipvs::VirtualServerKind;

    use super::*;

    fn vs() -> VirtualServer {
        VirtualServer {
            protocol: Protocol::Tcp,
            address: Ipv4Addr::new(10, 96, 0, 10),
            port: 80,
            scheduler: IpvsScheduler::Rr,
            persistence: Some(10800),
            real_servers: vec![RealServer {
                address: Ipv4Addr::new(10, 244, 1, 2),
                port: 8080,
                weight: 1,
            }],
            service: "x/web:http".into(),
            kind: VirtualServerKind::ClusterIp,
        }
    }

    /// (kind without flags, payload) of each attribute at one level.
    fn level(bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
        NlasIterator::new(bytes)
            .map(|nla| {
                let nla: NlaBuffer<&[u8]> = nla.expect("well-formed attribute");
                (nla.kind(), nla.value().to_vec())
            })
            .collect()
    }

    fn emitted(msg: &IpvsMessage) -> Vec<u8> {
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        buf
    }

    #[test]
    fn a_virtual_server_is_laid_out_as_ip_vs_h_says() {
        let bytes = emitted(&IpvsMessage::new_service(&vs()));
        let top = level(&bytes);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].0, IPVS_CMD_ATTR_SERVICE);
        let svc = level(&top[0].1);
        let kinds: Vec<u16> = svc.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [
                IPVS_SVC_ATTR_AF,
                IPVS_SVC_ATTR_PROTOCOL,
                IPVS_SVC_ATTR_ADDR,
                IPVS_SVC_ATTR_PORT,
                IPVS_SVC_ATTR_SCHED_NAME,
                IPVS_SVC_ATTR_FLAGS,
                IPVS_SVC_ATTR_TIMEOUT,
                IPVS_SVC_ATTR_NETMASK
            ]
        );
        assert_eq!(svc[1].1, 6u16.to_ne_bytes());
        assert_eq!(&svc[2].1[..4], &[10, 96, 0, 10]);
        assert_eq!(svc[2].1.len(), 16);
        assert_eq!(svc[3].1, 80u16.to_be_bytes(), "ports are big-endian");
        assert_eq!(svc[4].1, b"rr\0");
        assert_eq!(&svc[5].1[..4], &IP_VS_SVC_F_PERSISTENT.to_ne_bytes());
        assert_eq!(svc[6].1, 10800u32.to_ne_bytes());
    }

    #[test]
    fn a_real_server_names_its_virtual_server_then_itself() {
        let v = vs();
        let bytes = emitted(&IpvsMessage::new_dest(&v, &v.real_servers[0]));
        let top = level(&bytes);
        assert_eq!(
            top.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            [IPVS_CMD_ATTR_SERVICE, IPVS_CMD_ATTR_DEST]
        );
        assert_eq!(level(&top[0].1).len(), 4, "only the key of the service");
        let dest = level(&top[1].1);
        assert_eq!(
            dest[0],
            (IPVS_DEST_ATTR_ADDR, {
                let mut a = vec![10, 244, 1, 2];
                a.resize(16, 0);
                a
            })
        );
        assert_eq!(
            dest[1],
            (IPVS_DEST_ATTR_PORT, 8080u16.to_be_bytes().to_vec())
        );
        assert_eq!(dest[2].1, IP_VS_CONN_F_MASQ.to_ne_bytes());
        assert_eq!(
            dest[6],
            (IPVS_DEST_ATTR_ADDR_FAMILY, AF_INET.to_ne_bytes().to_vec())
        );
    }

    #[test]
    fn nested_attributes_carry_the_nested_flag() {
        let bytes = emitted(&IpvsMessage::new_service(&vs()));
        let raw_kind = u16::from_ne_bytes([bytes[2], bytes[3]]);
        assert_eq!(raw_kind, NLA_F_NESTED | IPVS_CMD_ATTR_SERVICE);
        assert!(emitted(&IpvsMessage::flush()).is_empty());
    }

    /// The controller resolves itself, and an unknown family is `None`; IPVS resolves
    /// only on a kernel with `ip_vs` (printed, not asserted). Needs no root.
    #[tokio::test]
    async fn the_controller_answers_and_ipvs_is_looked_up() {
        let (conn, handle, _) = genetlink::new_connection().expect("a generic netlink socket");
        let driver = tokio::spawn(conn);
        let nlctrl = handle
            .resolve_family::<netlink_packet_generic::ctrl::GenlCtrl>()
            .await
            .expect("the controller resolves itself");
        assert_eq!(nlctrl.id, 0x10);
        match ipvs_family(&handle).await.expect("ask for IPVS") {
            Some(id) => eprintln!("this kernel has IPVS (family {id})"),
            None => eprintln!("this kernel has no IPVS"),
        }
        driver.abort();
    }
}
