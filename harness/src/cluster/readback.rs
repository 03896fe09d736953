//! Reading a namespace's links, IPv4 addresses and main-table IPv4 routes back from the
//! kernel over rtnetlink (no process spawns), for [`super::Cluster::verify`] and
//! [`super::Cluster::describe`].

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::RouteMessageBuilder;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteScope, RouteType,
};

use crate::netns::Netns;

/// The kernel's main routing table.
const MAIN_TABLE: u32 = 254;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Link {
    pub index: u32,
    pub name: String,
    /// Administratively up (IFF_UP).
    pub up: bool,
    /// The bridge it is a port of.
    pub controller: Option<u32>,
    pub mac: Option<Vec<u8>>,
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Addr {
    pub index: u32,
    pub net: Ipv4Net,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Route {
    pub dst: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
    pub scope: RouteScope,
    /// The gateway is used without a route to it (`onlink`).
    pub onlink: bool,
}

/// What a namespace holds.
#[derive(Debug, Clone, Default)]
pub(super) struct NsState {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    /// Unicast IPv4 routes of the main table.
    pub routes: Vec<Route>,
}

impl NsState {
    pub async fn read(ns: &Netns) -> Result<NsState> {
        let h = ns.netlink()?;
        let ctx = || {
            format!(
                "read links, addresses and routes in namespace {}",
                ns.name()
            )
        };
        let links: Vec<_> = h
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .with_context(ctx)?;
        let addrs: Vec<_> = h
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .with_context(ctx)?;
        let routes: Vec<_> = h
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .with_context(ctx)?;
        let mut state = NsState::default();
        for l in links {
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
            state.links.push(link);
        }
        for a in addrs {
            if a.header.family != AddressFamily::Inet {
                continue;
            }
            let ip = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                a.attributes.iter().find_map(|x| match x {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = ip
                && let Ok(net) = Ipv4Net::new(ip, a.header.prefix_len)
            {
                state.addrs.push(Addr {
                    index: a.header.index,
                    net,
                });
            }
        }
        for r in routes {
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
                state.routes.push(Route {
                    dst,
                    gateway,
                    oif,
                    scope: r.header.scope,
                    onlink: r.header.flags.contains(RouteFlags::Onlink),
                });
            }
        }
        Ok(state)
    }

    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    pub fn link_name(&self, index: u32) -> &str {
        self.links
            .iter()
            .find(|l| l.index == index)
            .map_or("?", |l| l.name.as_str())
    }

    /// The IPv4 addresses on a link, sorted.
    pub fn addrs_of(&self, name: &str) -> Vec<Ipv4Net> {
        let Some(l) = self.link(name) else {
            return vec![];
        };
        let mut v: Vec<Ipv4Net> = self
            .addrs
            .iter()
            .filter(|a| a.index == l.index)
            .map(|a| a.net)
            .collect();
        v.sort();
        v
    }

    /// Whether the main table routes `dst` via `gateway` (or directly, for `None`) out of
    /// the link called `dev`.
    pub fn has_route(&self, dst: Ipv4Net, gateway: Option<Ipv4Addr>, dev: &str) -> bool {
        let Some(l) = self.link(dev) else {
            return false;
        };
        self.routes
            .iter()
            .any(|r| r.dst == dst && r.gateway == gateway && r.oif == Some(l.index))
    }

    /// Routes as `ip route` prints them (without proto and src), sorted.
    pub fn route_lines(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .routes
            .iter()
            .map(|r| {
                let mut s = if r.dst.prefix_len() == 0 {
                    "default".to_string()
                } else {
                    r.dst.to_string()
                };
                if let Some(g) = r.gateway {
                    s.push_str(&format!(" via {g}"));
                }
                if let Some(i) = r.oif {
                    s.push_str(&format!(" dev {}", self.link_name(i)));
                }
                match r.scope {
                    RouteScope::Universe => {}
                    RouteScope::Link => s.push_str(" scope link"),
                    RouteScope::Host => s.push_str(" scope host"),
                    other => s.push_str(&format!(" scope {}", u8::from(other))),
                }
                if r.onlink {
                    s.push_str(" onlink");
                }
                s
            })
            .collect();
        v.sort();
        v
    }

    /// Ports of the bridge called `bridge`, by name, sorted.
    pub fn ports_of(&self, bridge: &str) -> Vec<&str> {
        let Some(b) = self.link(bridge) else {
            return vec![];
        };
        let mut v: Vec<&str> = self
            .links
            .iter()
            .filter(|l| l.controller == Some(b.index))
            .map(|l| l.name.as_str())
            .collect();
        v.sort();
        v
    }
}

/// How many namespaces are read at once: each read holds its own netlink socket with a
/// 64 KiB receive buffer, so reading 5 000 pods at once cost ~280 MB (measured by
/// `cargo xtask bench --scale`); 64 at a time keeps the same speed on two cores.
const READ_AT_ONCE: usize = 64;

/// Reads many namespaces, a bounded number at a time; results in the given order.
pub async fn read_many<'a>(nss: impl IntoIterator<Item = &'a Netns>) -> Vec<Result<NsState>> {
    use futures::StreamExt;
    futures::stream::iter(nss.into_iter().map(NsState::read))
        .buffered(READ_AT_ONCE)
        .collect()
        .await
}
