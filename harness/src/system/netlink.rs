//! Typed rtnetlink: every link, address, route, neighbour and FDB entry knetlab makes or
//! reads in a namespace (the cluster's fabric, nodes, router and hosts, and what the
//! engines change in a node) goes through [`Netlink`], so nothing outside `system`
//! speaks rtnetlink, and every error names the namespace and the object. [`blocking`] is
//! the one way to run such calls from blocking code: it opens the netlink socket on a
//! thread of its own inside the namespace (so no tokio worker ever switches namespace)
//! and drives the calls on a small runtime of that thread.

use std::fs::File;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt as _;
use ipnet::Ipv4Net;
use nix::errno::Errno;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::packet_route::neighbour::NeighbourFlags;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteNextHop, RouteProtocol, RouteScope,
};
use rtnetlink::{
    Handle, LinkBridge, LinkDummy, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan,
    RouteMessageBuilder,
};

use super::{NsRef, SystemError};
use crate::netns::Netns;

mod read;

pub use read::{Address, FdbEntry, Link, Route, Scope, Vxlan};

/// The routing protocol the router's and nodes' Service routes carry (`proto bgp`, as a
/// gateway that learnt them from MetalLB's BGP speakers would show them), so a sync finds
/// its own routes, and only those, again: every other route knetlab makes carries another
/// protocol.
const SERVICE_ROUTE_PROTOCOL: RouteProtocol = RouteProtocol::Bgp;

/// A VXLAN device to create: `ip link add NAME type vxlan id VNI dev UNDERLAY local LOCAL
/// dstport PORT nolearning address MAC mtu MTU up`, in one request.
#[derive(Debug, Clone, Copy)]
pub struct NewVxlan<'a> {
    pub name: &'a str,
    pub vni: u32,
    /// The index of the link the device sends through.
    pub underlay: u32,
    pub local: Ipv4Addr,
    pub port: u16,
    pub mac: &'a [u8],
    pub mtu: u32,
}

/// An rtnetlink connection inside one namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
    ns: String,
}

/// Runs `f` over a netlink connection inside `ns`, on a thread of its own, and waits for
/// it; `what` says what was being done when it fails.
pub fn blocking<T, F, Fut>(ns: &NsRef, what: String, f: F) -> Result<T, SystemError>
where
    T: Send,
    F: FnOnce(Netlink) -> Fut + Send,
    Fut: Future<Output = Result<T, SystemError>>,
{
    let name = ns.name().to_string();
    on_connection(
        ns,
        Some(ns.netns()?),
        what,
        || rtnetlink::new_connection().map(|(conn, handle, _)| (conn, handle)),
        |handle| f(Netlink { handle, ns: name }),
    )
}

/// Runs `f` over a connection of any netlink protocol (rtnetlink, generic netlink) that
/// `open` makes inside `netns`, or where the process runs when `None` (only for
/// questions whose answer is the same in every namespace). It all happens on a thread of
/// its own with a small runtime, so no tokio worker ever switches namespace; `ns` names
/// the namespace in errors and `what` says what was being done.
pub(crate) fn on_connection<C, H, T, F, Fut>(
    ns: &NsRef,
    netns: Option<&Netns>,
    what: String,
    open: impl FnOnce() -> std::io::Result<(C, H)> + Send,
    f: F,
) -> Result<T, SystemError>
where
    C: Future<Output = ()> + Send + 'static,
    T: Send,
    F: FnOnce(H) -> Fut + Send,
    Fut: Future<Output = Result<T, SystemError>>,
{
    let ran = std::thread::scope(|s| {
        s.spawn(move || -> Result<T, SystemError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| SystemError::kernel(ns, "start a netlink runtime".into(), e))?;
            // The socket is made inside the namespace and stays there; the thread is
            // switched back at once. It registers with this thread's runtime.
            let _runtime = rt.enter();
            let opened = match netns {
                Some(netns) => netns.enter(open),
                None => open(),
            };
            let (conn, handle) =
                opened.map_err(|e| SystemError::kernel(ns, "open a netlink socket".into(), e))?;
            rt.block_on(async move {
                let driver = tokio::spawn(conn);
                let out = f(handle).await;
                driver.abort();
                out
            })
        })
        .join()
        .unwrap_or_else(|_| {
            Err(SystemError::kernel(
                ns,
                "run netlink calls".into(),
                "the netlink thread panicked",
            ))
        })
    });
    ran.map_err(|e| match e {
        SystemError::Kernel {
            ns,
            what: inner,
            source,
        } => SystemError::Kernel {
            ns,
            what: format!("{what}: {inner}"),
            source,
        },
        other => other,
    })
}

impl Netlink {
    /// Wraps an open rtnetlink handle on namespace `ns` (for async callers that made
    /// their own, like `crate::netns::Netns::netlink`).
    pub fn from_handle(handle: Handle, ns: &str) -> Self {
        Self {
            handle,
            ns: ns.to_string(),
        }
    }

    fn fail(&self, what: String, e: rtnetlink::Error) -> SystemError {
        SystemError::Kernel {
            ns: self.ns.clone(),
            what,
            source: e.into(),
        }
    }

    /// The index of the link `name`, `None` if there is none: one request by name, as
    /// `ip link show NAME` sends (the kernel answers ENODEV for a missing link), not a
    /// dump of every link.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, SystemError> {
        match self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await
        {
            Ok(link) => Ok(link.map(|l| l.header.index)),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -(Errno::ENODEV as i32) => {
                Ok(None)
            }
            Err(e) => Err(self.fail(format!("look up link {name}"), e)),
        }
    }

    /// The index of the link `name`; [`SystemError::NoLink`] if there is none.
    pub async fn index_by_name(&self, name: &str) -> Result<u32, SystemError> {
        self.link_index(name)
            .await?
            .ok_or_else(|| SystemError::NoLink {
                ns: self.ns.clone(),
                link: name.to_string(),
            })
    }

    /// Creates a dummy link `name`, up.
    pub async fn add_dummy(&self, name: &str) -> Result<(), SystemError> {
        self.handle
            .link()
            .add(LinkDummy::new(name).up().build())
            .execute()
            .await
            .map_err(|e| self.fail(format!("add dummy link {name}"), e))
    }

    /// Sets the link `name` up.
    pub async fn set_up(&self, name: &str) -> Result<(), SystemError> {
        self.set_state(name, true).await
    }

    /// Sets the link `name` up (`up`) or down.
    pub async fn set_state(&self, name: &str, up: bool) -> Result<(), SystemError> {
        let index = self.index_by_name(name).await?;
        let msg = LinkUnspec::new_with_index(index);
        let msg = if up { msg.up() } else { msg.down() };
        let state = if up { "up" } else { "down" };
        self.handle
            .link()
            .set(msg.build())
            .execute()
            .await
            .map_err(|e| self.fail(format!("set link {name} {state}"), e))
    }

    /// `ip route replace DEST dev DEV`: scope link, protocol boot, as `ip` makes it.
    pub async fn replace_link_route(&self, dest: Ipv4Net, dev: &str) -> Result<(), SystemError> {
        let index = self.index_by_name(dev).await?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest.network(), dest.prefix_len())
            .output_interface(index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::Boot)
            .build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| self.fail(format!("replace route {dest} dev {dev}"), e))
    }

    /// `ip route add DEST via GW dev INDEX onlink`.
    pub async fn add_onlink_route(
        &self,
        dest: Ipv4Net,
        gateway: Ipv4Addr,
        index: u32,
    ) -> Result<(), SystemError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest.network(), dest.prefix_len())
            .gateway(gateway)
            .output_interface(index)
            .onlink()
            .build();
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(|e| self.fail(format!("add route {dest} via {gateway} onlink"), e))
    }

    /// A permanent neighbour (ARP) entry: `ip neigh add IP lladdr MAC dev INDEX`.
    pub async fn add_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: &[u8],
    ) -> Result<(), SystemError> {
        self.handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(mac)
            .execute()
            .await
            .map_err(|e| self.fail(format!("add neighbour {ip}"), e))
    }

    /// A forwarding database entry of the device itself: `bridge fdb add MAC dev INDEX
    /// dst DST self permanent`.
    pub async fn add_fdb(&self, index: u32, mac: &[u8], dst: Ipv4Addr) -> Result<(), SystemError> {
        self.handle
            .neighbours()
            .add_bridge(index, mac)
            .destination(IpAddr::V4(dst))
            .flags(NeighbourFlags::Own)
            .execute()
            .await
            .map_err(|e| self.fail(format!("add fdb entry towards {dst}"), e))
    }

    async fn address_messages(&self, dev: &str) -> Result<Vec<AddressMessage>, SystemError> {
        let index = self.index_by_name(dev).await?;
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.fail(format!("list the addresses of {dev}"), e))
    }

    /// The IPv4 addresses on `dev`.
    pub async fn addresses(&self, dev: &str) -> Result<Vec<Ipv4Net>, SystemError> {
        Ok(self
            .address_messages(dev)
            .await?
            .iter()
            .filter_map(ipv4_of)
            .collect())
    }

    /// `ip addr replace ADDR dev DEV`.
    pub async fn replace_address(&self, dev: &str, addr: Ipv4Net) -> Result<(), SystemError> {
        let index = self.index_by_name(dev).await?;
        self.handle
            .address()
            .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(|e| self.fail(format!("put {addr} on {dev}"), e))
    }

    /// `ip addr del ADDR dev DEV`; missing is fine.
    pub async fn delete_address(&self, dev: &str, addr: Ipv4Net) -> Result<(), SystemError> {
        for msg in self.address_messages(dev).await? {
            if ipv4_of(&msg) == Some(addr) {
                self.handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(|e| self.fail(format!("take {addr} off {dev}"), e))?;
            }
        }
        Ok(())
    }
}

/// Building the cluster: the fabric bridge, the veths, the underlay and host addresses
/// and the static routes, each one request as `ip` would send it.
impl Netlink {
    /// `ip link set NAME up`, the link asked for by name. Returns its index.
    pub async fn bring_up(&self, name: &str) -> Result<u32, SystemError> {
        let index = self.index_by_name(name).await?;
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|e| self.fail(format!("bring up {name}"), e))?;
        Ok(index)
    }

    /// `ip link add NAME type bridge up`.
    pub async fn add_bridge(&self, name: &str) -> Result<(), SystemError> {
        self.handle
            .link()
            .add(LinkBridge::new(name).up().build())
            .execute()
            .await
            .map_err(|e| self.fail(format!("create bridge {name}"), e))
    }

    /// One request: a veth whose end `local` is created here, up (and a port of the
    /// bridge of index `controller` if given), and whose peer is born inside `peer_ns`
    /// as `peer_name` (with `peer_mac` if given), so it never has to move between
    /// namespaces (which costs an RCU grace period). The peer is created down: `IFF_UP`
    /// on the peer fails the whole request with ENOTCONN.
    pub async fn add_veth_with_peer_in(
        &self,
        local: &str,
        controller: Option<u32>,
        peer_ns: &Netns,
        peer_name: &str,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<(), SystemError> {
        let path = peer_ns.path();
        let ns_file = File::open(&path).map_err(|e| SystemError::Kernel {
            ns: self.ns.clone(),
            what: format!("open {}", path.display()),
            source: e.into(),
        })?;
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new().name(peer_name.to_string());
        if let Some(mac) = peer_mac {
            peer = peer.address(mac.to_vec());
        }
        let peer = peer.setns_by_fd(ns_file.as_raw_fd()).build();
        let mut msg =
            LinkVeth::new(local, peer_name).set_info_data(InfoData::Veth(InfoVeth::Peer(peer)));
        if let Some(br) = controller {
            msg = msg.controller(br);
        }
        self.handle
            .link()
            .add(msg.up().build())
            .execute()
            .await
            .map_err(|e| {
                self.fail(
                    format!(
                        "create veth {local} with peer {}/{peer_name}",
                        peer_ns.name()
                    ),
                    e,
                )
            })
    }

    /// `ip link add` of a VXLAN device, its MAC, MTU and up state in one request.
    pub async fn add_vxlan(&self, v: &NewVxlan<'_>) -> Result<(), SystemError> {
        let msg = LinkVxlan::new(v.name, v.vni)
            .dev(v.underlay)
            .local(v.local)
            .port(v.port)
            .learning(false)
            .address(v.mac.to_vec())
            .mtu(v.mtu)
            .up()
            .build();
        self.handle.link().add(msg).execute().await.map_err(|e| {
            self.fail(
                format!(
                    "create {} (vxlan id {} local {} dstport {} nolearning)",
                    v.name, v.vni, v.local, v.port
                ),
                e,
            )
        })
    }

    /// `ip addr add ADDR dev DEV` (`index`: DEV's index).
    pub async fn add_address(
        &self,
        dev: &str,
        index: u32,
        addr: Ipv4Net,
    ) -> Result<(), SystemError> {
        self.handle
            .address()
            .add(index, IpAddr::V4(addr.addr()), addr.prefix_len())
            .execute()
            .await
            .map_err(|e| self.fail(format!("add {addr} to {dev}"), e))
    }

    /// `ip route add DEST via GW dev DEV` (`index`: DEV's index).
    pub async fn add_gateway_route(
        &self,
        dest: Ipv4Net,
        gateway: Ipv4Addr,
        dev: &str,
        index: u32,
    ) -> Result<(), SystemError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest.network(), dest.prefix_len())
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(|e| self.fail(format!("add route {dest} via {gateway} dev {dev}"), e))
    }

    /// `ip route add DEST dev DEV scope link` (`index`: DEV's index).
    pub async fn add_link_scope_route(
        &self,
        dest: Ipv4Net,
        dev: &str,
        index: u32,
    ) -> Result<(), SystemError> {
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dest.network(), dest.prefix_len())
            .output_interface(index)
            .scope(RouteScope::Link)
            .build();
        self.handle
            .route()
            .add(route)
            .execute()
            .await
            .map_err(|e| self.fail(format!("add route {dest} dev {dev}"), e))
    }

    /// Deletes every Service route (a /32 of `proto bgp`: `SERVICE_ROUTE_PROTOCOL`)
    /// whose address is not in `keep`, after listing them all. Returns how many it
    /// deleted.
    pub async fn delete_service_routes_except(
        &self,
        keep: &[Ipv4Addr],
    ) -> Result<usize, SystemError> {
        let mut stale = Vec::new();
        let mut dump = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(route) = dump
            .try_next()
            .await
            .map_err(|e| self.fail("list the routes".into(), e))?
        {
            if route.header.protocol != SERVICE_ROUTE_PROTOCOL
                || route.header.destination_prefix_length != 32
            {
                continue;
            }
            let dst = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            if dst.is_some_and(|ip| !keep.contains(&ip)) {
                stale.push((dst, route));
            }
        }
        let deleted = stale.len();
        for (dst, route) in stale {
            self.handle
                .route()
                .del(route)
                .execute()
                .await
                .map_err(|e| {
                    let dst = dst.map(|d| d.to_string()).unwrap_or_default();
                    self.fail(format!("delete the stale Service route {dst}/32"), e)
                })?;
        }
        Ok(deleted)
    }

    /// `ip route replace IP/32 proto bgp` via `hops` out of the link of index `index`:
    /// one next hop, or ECMP over several.
    pub async fn replace_service_route(
        &self,
        ip: Ipv4Addr,
        hops: &[Ipv4Addr],
        index: u32,
    ) -> Result<(), SystemError> {
        let builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(ip, 32)
            .protocol(SERVICE_ROUTE_PROTOCOL);
        let route = match hops {
            [one] => builder.gateway(*one).output_interface(index).build(),
            _ => builder
                .multipath(
                    hops.iter()
                        .map(|gw| {
                            let mut hop = RouteNextHop::default();
                            hop.interface_index = index;
                            hop.attributes = vec![RouteAttribute::Gateway(RouteAddress::Inet(*gw))];
                            hop
                        })
                        .collect(),
                )
                .build(),
        };
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                let via = hops
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ");
                self.fail(format!("route {ip}/32 via {via}"), e)
            })
    }
}

/// The IPv4 address (with its prefix) an address message carries.
fn ipv4_of(msg: &AddressMessage) -> Option<Ipv4Net> {
    msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(IpAddr::V4(ip)) => Ipv4Net::new(*ip, msg.header.prefix_len).ok(),
        _ => None,
    })
}
