//! Client sockets for probes: made inside the client's namespace, non-blocking, with
//! `IP_RECVERR` on so that ICMP errors land in the socket's error queue with their type,
//! code and sender (the "offender"), and registered with tokio as an [`AsyncFd`].

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockProtocol, SockType, SockaddrIn,
    connect, recvmsg, setsockopt, sockopt,
};
use tokio::io::unix::AsyncFd;

use super::outcome::QueuedError;
use crate::netns::Netns;

/// The IP TOS byte of traced probes (DSCP 4): `--trace` tells its probe's packets from
/// the answers by it.
pub const TRACE_TOS: i32 = 0x10;

/// A socket created in `ns`, non-blocking, with `IP_RECVERR`, bound to `source_port` when
/// one is given (`--trace`'s probe, which also carries [`TRACE_TOS`]), connected to
/// `dst` (a non-blocking TCP connect is under way when this returns), and registered with
/// tokio.
pub fn connected(
    ns: &Netns,
    ty: SockType,
    proto: Option<SockProtocol>,
    source_port: Option<u16>,
    dst: SocketAddrV4,
) -> io::Result<AsyncFd<OwnedFd>> {
    // Only the socket() call needs the namespace: the socket stays in it for good.
    let fd = ns.enter(|| {
        nix::sys::socket::socket(
            AddressFamily::Inet,
            ty,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            proto,
        )
    })?;
    setsockopt(&fd, sockopt::Ipv4RecvErr, &true)?;
    if let Some(port) = source_port {
        // A traced probe also carries a TOS mark of its own: its source port does not
        // survive kube-proxy's `MASQUERADE --random-fully`, the mark does.
        setsockopt(&fd, sockopt::Ipv4Tos, &TRACE_TOS)?;
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        nix::sys::socket::bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)),
        )?;
    }
    match connect(fd.as_raw_fd(), &SockaddrIn::from(dst)) {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    register(fd)
}

/// Hands a socket to tokio's reactor.
pub fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same for
    // as long as it is registered.
    Ok(unsafe { AsyncFd::register(fd) }?)
}

/// Takes one entry off the socket's error queue, if there is one, with the first bytes of
/// the packet that caused it (for raw sockets: the transport header as it was sent).
pub fn take_error(fd: &impl AsFd) -> Option<(QueuedError, Vec<u8>)> {
    let mut data = [0u8; 64];
    let mut iov = [io::IoSliceMut::new(&mut data)];
    let mut cmsg = nix::cmsg_space!(nix::libc::sock_extended_err, nix::libc::sockaddr_in);
    let msg = recvmsg::<SockaddrIn>(
        fd.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
    )
    .ok()?;
    let len = msg.bytes.min(64);
    let mut found = None;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::Ipv4RecvErr(ee, offender) = c {
            found = Some(QueuedError {
                errno: ee.ee_errno as i32,
                origin: ee.ee_origin,
                icmp_type: ee.ee_type,
                icmp_code: ee.ee_code,
                offender: offender.map(|a| Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr))),
            });
        }
    }
    found.map(|e| (e, data[..len].to_vec()))
}

/// Discards a pending socket error (`SO_ERROR`), returning it.
pub fn take_so_error(fd: &impl AsFd) -> Option<Errno> {
    match nix::sys::socket::getsockopt(fd, sockopt::SocketError) {
        Ok(0) => None,
        Ok(e) => Some(Errno::from_raw(e)),
        Err(e) => Some(e),
    }
}
