//! Reading a namespace back over rtnetlink: its links, addresses, main-table routes,
//! VXLAN devices, neighbours and FDB, turned into plain values so that callers (the
//! cluster's verify and describe) never see a netlink message.

use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt as _;
use ipnet::Ipv4Net;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteScope, RouteType,
};

use super::{Netlink, SystemError};

/// The kernel's main routing table.
const MAIN_TABLE: u32 = 254;

/// A link as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// The bridge it is a port of.
    pub controller: Option<u32>,
    pub mac: Option<Vec<u8>>,
    pub mtu: Option<u32>,
}

/// An IPv4 address on the link of index `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub net: Ipv4Net,
}

/// A route's scope, as `ip route` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Universe,
    Link,
    Host,
    /// Any other scope, by number.
    Other(u8),
}

/// A unicast IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub scope: Scope,
    /// The gateway is used without a route to it (`onlink`).
    pub onlink: bool,
}

/// A VXLAN device as the kernel has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vxlan {
    pub index: u32,
    pub up: bool,
    pub mac: Option<Vec<u8>>,
    pub mtu: Option<u32>,
    pub vni: Option<u32>,
    pub port: Option<u16>,
    pub local: Option<Ipv4Addr>,
    /// The underlay link the device sends through.
    pub link: Option<u32>,
    pub learning: Option<bool>,
}

/// A forwarding database entry of a device itself (`self`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FdbEntry {
    pub mac: Vec<u8>,
    /// The remote underlay address frames to `mac` are sent to.
    pub dst: Option<Ipv4Addr>,
    pub permanent: bool,
}

/// Reading a namespace back: its links, addresses, main-table routes, VXLAN devices,
/// neighbours and FDB, as plain values.
impl Netlink {
    /// Every link.
    pub async fn links(&self) -> Result<Vec<Link>, SystemError> {
        let msgs: Vec<_> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.fail("list links".into(), e))?;
        Ok(msgs
            .into_iter()
            .map(|l| {
                let mut link = Link {
                    index: l.header.index,
                    name: String::new(),
                    up: l.header.flags.contains(LinkFlags::Up),
                    controller: None,
                    mac: None,
                    mtu: None,
                };
                for a in l.attributes {
                    match a {
                        LinkAttribute::IfName(n) => link.name = n,
                        LinkAttribute::Controller(c) => link.controller = Some(c),
                        LinkAttribute::Address(m) => link.mac = Some(m),
                        LinkAttribute::Mtu(m) => link.mtu = Some(m),
                        _ => {}
                    }
                }
                link
            })
            .collect())
    }

    /// Every IPv4 address, on any link (the local address where it differs from the
    /// peer's).
    pub async fn all_ipv4_addresses(&self) -> Result<Vec<Address>, SystemError> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.fail("list addresses".into(), e))?;
        let mut out = Vec::new();
        for a in msgs {
            if a.header.family != AddressFamily::Inet {
                continue;
            }
            let v4 = |local: bool| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Local(IpAddr::V4(ip)) if local => Some(*ip),
                    AddressAttribute::Address(IpAddr::V4(ip)) if !local => Some(*ip),
                    _ => None,
                })
            };
            if let Some(ip) = v4(true).or_else(|| v4(false))
                && let Ok(net) = Ipv4Net::new(ip, a.header.prefix_len)
            {
                out.push(Address {
                    index: a.header.index,
                    net,
                });
            }
        }
        Ok(out)
    }

    /// The unicast IPv4 routes of the main table.
    pub async fn main_ipv4_routes(&self) -> Result<Vec<Route>, SystemError> {
        let msgs: Vec<_> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.fail("list routes".into(), e))?;
        let mut out = Vec::new();
        for r in msgs {
            if r.header.address_family != AddressFamily::Inet || r.header.kind != RouteType::Unicast
            {
                continue;
            }
            let mut table = u32::from(r.header.table);
            let mut dst = Ipv4Addr::UNSPECIFIED;
            let mut gateway = None;
            let mut oif = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Table(t) => table = *t,
                    RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            if table != MAIN_TABLE {
                continue;
            }
            if let Ok(dst) = Ipv4Net::new(dst, r.header.destination_prefix_length) {
                out.push(Route {
                    dst,
                    gateway,
                    oif,
                    scope: match r.header.scope {
                        RouteScope::Universe => Scope::Universe,
                        RouteScope::Link => Scope::Link,
                        RouteScope::Host => Scope::Host,
                        other => Scope::Other(u8::from(other)),
                    },
                    onlink: r.header.flags.contains(RouteFlags::Onlink),
                });
            }
        }
        Ok(out)
    }

    /// The VXLAN device called `name`, `None` if there is no such link.
    pub async fn vxlan(&self, name: &str) -> Result<Option<Vxlan>, SystemError> {
        let link = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await;
        let link = match link {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(None),
            // A lookup by name answers ENODEV when there is no such device.
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == nix::libc::ENODEV => {
                return Ok(None);
            }
            Err(e) => return Err(self.fail(format!("look up {name}"), e)),
        };
        let mut v = Vxlan {
            index: link.header.index,
            up: link.header.flags.contains(LinkFlags::Up),
            ..Default::default()
        };
        for a in link.attributes {
            match a {
                LinkAttribute::Address(m) => v.mac = Some(m),
                LinkAttribute::Mtu(m) => v.mtu = Some(m),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Data(InfoData::Vxlan(nlas)) = info {
                            for n in nlas {
                                match n {
                                    InfoVxlan::Id(x) => v.vni = Some(x),
                                    InfoVxlan::Port(p) => v.port = Some(p),
                                    InfoVxlan::Local(ip) => v.local = Some(ip),
                                    InfoVxlan::Link(l) => v.link = Some(l),
                                    InfoVxlan::Learning(l) => v.learning = Some(l),
                                    _ => {}
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Some(v))
    }

    /// The permanent IPv4 neighbours (ARP entries) on the link of index `index`:
    /// (address, MAC), in the kernel's order.
    pub async fn permanent_neighbours(
        &self,
        index: u32,
    ) -> Result<Vec<(Ipv4Addr, Vec<u8>)>, SystemError> {
        let neigh: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.fail("list the IPv4 neighbours".into(), e))?;
        let mut out = Vec::new();
        for n in neigh.iter().filter(|n| n.header.ifindex == index) {
            if n.header.state != NeighbourState::Permanent {
                continue;
            }
            if let (Some(IpAddr::V4(ip)), Some(m)) = neigh_attrs(n) {
                out.push((ip, m));
            }
        }
        Ok(out)
    }

    /// The FDB entries of the link of index `index` itself (`self`, not a bridge's), in
    /// the kernel's order.
    pub async fn own_fdb(&self, index: u32) -> Result<Vec<FdbEntry>, SystemError> {
        let fdb: Vec<NeighbourMessage> = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.fail("list the FDB".into(), e))?;
        let mut out = Vec::new();
        for n in fdb.iter().filter(|n| n.header.ifindex == index) {
            if !n.header.flags.contains(NeighbourFlags::Own) {
                continue;
            }
            let (dst, lladdr) = neigh_attrs(n);
            let Some(mac) = lladdr else { continue };
            out.push(FdbEntry {
                mac,
                dst: match dst {
                    Some(IpAddr::V4(ip)) => Some(ip),
                    _ => None,
                },
                permanent: n.header.state == NeighbourState::Permanent,
            });
        }
        Ok(out)
    }
}

/// A neighbour or FDB entry's destination address and link-layer address.
fn neigh_attrs(n: &NeighbourMessage) -> (Option<IpAddr>, Option<Vec<u8>>) {
    let mut dst = None;
    let mut lladdr = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                dst = Some(IpAddr::V4(*ip))
            }
            // FDB entries (family AF_BRIDGE) carry their IPv4 destination as raw bytes.
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                if let Ok(octets) = <[u8; 4]>::try_from(b.as_slice()) {
                    dst = Some(IpAddr::V4(Ipv4Addr::from(octets)));
                }
            }
            NeighbourAttribute::LinkLayerAddress(m) => lladdr = Some(m.clone()),
            _ => {}
        }
    }
    (dst, lladdr)
}
