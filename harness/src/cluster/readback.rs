//! A namespace's links, IPv4 addresses and main-table IPv4 routes as the kernel has
//! them, read through [`crate::system::netlink`] (no process spawns), for
//! [`super::Cluster::verify`] and [`super::Cluster::describe`].

use std::net::Ipv4Addr;

use anyhow::{Context, Result};
use ipnet::Ipv4Net;

use crate::netns::Netns;
pub(super) use crate::system::netlink::Link;
use crate::system::netlink::{Address, Route, Scope};

/// What a namespace holds.
#[derive(Debug, Clone, Default)]
pub(super) struct NsState {
    pub links: Vec<Link>,
    pub addrs: Vec<Address>,
    /// Unicast IPv4 routes of the main table.
    pub routes: Vec<Route>,
}

impl NsState {
    pub async fn read(ns: &Netns) -> Result<NsState> {
        let h = super::build::netlink_of(ns)?;
        let ctx = || {
            format!(
                "read links, addresses and routes in namespace {}",
                ns.name()
            )
        };
        // One after the other on one socket: [`read_many`] bounds the sockets open at once.
        let links = h.links().await.with_context(ctx)?;
        let addrs = h.all_ipv4_addresses().await.with_context(ctx)?;
        let routes = h.main_ipv4_routes().await.with_context(ctx)?;
        Ok(NsState {
            links,
            addrs,
            routes,
        })
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
                    Scope::Universe => {}
                    Scope::Link => s.push_str(" scope link"),
                    Scope::Host => s.push_str(" scope host"),
                    Scope::Other(n) => s.push_str(&format!(" scope {n}")),
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
