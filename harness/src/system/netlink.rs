//! Typed rtnetlink for what the engines change in a node (links, addresses, routes), and
//! the one way to run such calls from blocking code: [`blocking`] opens the netlink
//! socket on a thread of its own inside the namespace (so no tokio worker ever switches
//! namespace) and drives the calls on a small runtime of that thread.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt as _;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::neighbour::NeighbourFlags;
use rtnetlink::packet_route::route::{RouteProtocol, RouteScope};
use rtnetlink::{Handle, LinkDummy, LinkUnspec, RouteMessageBuilder};

use super::{NsRef, SystemError};

/// An rtnetlink connection inside one namespace.
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
    let netns = ns.netns()?;
    let name = ns.name().to_string();
    let ran = std::thread::scope(|s| {
        s.spawn(move || -> Result<T, SystemError> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| SystemError::kernel(ns, "start a netlink runtime".into(), e))?;
            // The socket is made inside the namespace and stays there; the thread is
            // switched back at once. It registers with this thread's runtime.
            let _runtime = rt.enter();
            let (conn, handle, _) = netns
                .enter(rtnetlink::new_connection)
                .map_err(|e| SystemError::kernel(ns, "open a netlink socket".into(), e))?;
            rt.block_on(async move {
                let driver = tokio::spawn(conn);
                let out = f(Netlink { handle, ns: name }).await;
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

    /// The index of the link `name`, `None` if there is none.
    pub async fn link_index(&self, name: &str) -> Result<Option<u32>, SystemError> {
        let links: Vec<_> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| self.fail("list links".into(), e))?;
        Ok(links
            .into_iter()
            .find(|l| {
                l.attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::IfName(n) if n == name))
            })
            .map(|l| l.header.index))
    }

    async fn index(&self, name: &str) -> Result<u32, SystemError> {
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
        let index = self.index(name).await?;
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
        let index = self.index(dev).await?;
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
        let index = self.index(dev).await?;
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
        let index = self.index(dev).await?;
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

/// The IPv4 address (with its prefix) an address message carries.
fn ipv4_of(msg: &AddressMessage) -> Option<Ipv4Net> {
    msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(IpAddr::V4(ip)) => Ipv4Net::new(*ip, msg.header.prefix_len).ok(),
        _ => None,
    })
}
