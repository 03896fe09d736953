//! `--capture fabric`: every frame that crosses the fabric bridge during a run, written
//! to a pcap file that tcpdump and Wireshark read, and a summary of what was on the wire:
//! VXLAN packets (UDP 4789) with the pod addresses inside them, and pod addresses seen
//! unencapsulated (host-gw routing, or traffic from and to hosts outside the cluster).
//!
//! The capture is an AF_PACKET socket (pnet's datalink channel) opened on `br0` inside
//! the fabric namespace. pnet asks for promiscuous mode, and a bridge in promiscuous mode
//! hands a copy of every frame it forwards between its ports up to itself, so the socket
//! sees node-to-node traffic, not just what is addressed to the bridge. The socket is
//! open when [`Capture::start`] returns, so nothing sent after that is missed (unless the
//! socket's receive buffer overflows under a flood). The file is the classic pcap format
//! (LINKTYPE_ETHERNET), written by hand: its layout (a 24-byte file header, then a
//! 16-byte header per frame) has not changed since 1998, and the summary is computed
//! by reading the file back, so the summary also proves the file parses.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use pnet_datalink::{self as datalink, Channel};
use pnet_packet::Packet;
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::ip::IpNextHeaderProtocols;
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::udp::UdpPacket;

use crate::netns::Netns;

/// IANA's VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// The largest frame kept whole. Frames between veths may be GSO super-frames of up to
/// 64 KiB; tcpdump's default snap length keeps them too.
const SNAPLEN: usize = 262_144;
/// How often the capture thread looks at its stop flag when the wire is quiet.
const POLL: Duration = Duration::from_millis(20);
/// After a stop is asked for, frames still queued are written for at most this long.
const DRAIN: Duration = Duration::from_millis(200);

/// A capture running on a thread of its own.
#[derive(Debug)]
pub struct Capture {
    path: PathBuf,
    pod_cidr: Ipv4Net,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<u64>>>,
}

impl Capture {
    /// Opens a capture on `iface` inside `ns` and writes every frame to `path` until
    /// [`Capture::stop`]. `pod_cidr` tells the summary which addresses are pods'.
    pub fn start(ns: &Netns, iface: &str, path: &Path, pod_cidr: Ipv4Net) -> Result<Capture> {
        let file = File::create(path)
            .with_context(|| format!("create the capture file {}", path.display()))?;
        let mut out = BufWriter::new(file);
        write_file_header(&mut out).with_context(|| format!("write {}", path.display()))?;
        let config = datalink::Config {
            read_timeout: Some(POLL),
            read_buffer_size: SNAPLEN,
            promiscuous: true,
            ..Default::default()
        };
        // The interface list and the socket both belong to the namespace they are made in.
        let rx = ns
            .enter(|| -> Result<_> {
                let dev = datalink::interfaces()
                    .into_iter()
                    .find(|i| i.name == iface)
                    .with_context(|| format!("no interface {iface}"))?;
                match datalink::channel(&dev, config)
                    .with_context(|| format!("open a packet socket on {iface}"))?
                {
                    Channel::Ethernet(_, rx) => Ok(rx),
                    _ => bail!("{iface} is not an Ethernet interface"),
                }
            })
            .with_context(|| format!("capture on {iface} in namespace {}", ns.name()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("fabric-capture".into())
            .spawn(move || -> Result<u64> {
                let mut rx = rx;
                let mut frames = 0u64;
                let mut stopping: Option<Instant> = None;
                loop {
                    if stopping.is_none() && flag.load(Ordering::Relaxed) {
                        stopping = Some(Instant::now());
                    }
                    if stopping.is_some_and(|t| t.elapsed() > DRAIN) {
                        break;
                    }
                    match rx.next() {
                        Ok(frame) => {
                            write_record(&mut out, SystemTime::now(), frame)
                                .with_context(|| format!("write {shown}"))?;
                            frames += 1;
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::WouldBlock
                                    | std::io::ErrorKind::Interrupted
                            ) =>
                        {
                            // Quiet wire: once stopping, nothing is left in the queue.
                            if stopping.is_some() {
                                break;
                            }
                        }
                        Err(e) => return Err(e).context("read from the packet socket"),
                    }
                }
                out.flush().with_context(|| format!("write {shown}"))?;
                Ok(frames)
            })
            .context("start the capture thread")?;
        Ok(Capture {
            path: path.to_path_buf(),
            pod_cidr,
            stop,
            thread: Some(thread),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops the capture (frames already queued are still written), closes the file and
    /// summarises it. Blocks for up to a few hundred milliseconds.
    pub fn stop(mut self) -> Result<CaptureSummary> {
        self.stop.store(true, Ordering::Relaxed);
        let written = match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("the capture thread panicked"))??,
            None => 0,
        };
        let summary = summarise_file(&self.path, self.pod_cidr)?;
        if summary.packets != written {
            bail!(
                "{} holds {} frames but {written} were written",
                self.path.display(),
                summary.packets
            );
        }
        Ok(summary)
    }

    /// [`Capture::stop`] off the async workers.
    pub async fn finish(self) -> Result<CaptureSummary> {
        tokio::task::spawn_blocking(move || self.stop())
            .await
            .context("capture stop task")?
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // A capture dropped without stop() still ends its thread and closes its file.
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// pcap magic (microsecond timestamps, written in the host's byte order).
const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;

fn write_file_header(w: &mut impl Write) -> std::io::Result<()> {
    w.write_all(&PCAP_MAGIC.to_ne_bytes())?;
    w.write_all(&2u16.to_ne_bytes())?; // version 2.4
    w.write_all(&4u16.to_ne_bytes())?;
    w.write_all(&0i32.to_ne_bytes())?; // thiszone
    w.write_all(&0u32.to_ne_bytes())?; // sigfigs
    w.write_all(&(SNAPLEN as u32).to_ne_bytes())?;
    w.write_all(&LINKTYPE_ETHERNET.to_ne_bytes())
}

fn write_record(w: &mut impl Write, at: SystemTime, frame: &[u8]) -> std::io::Result<()> {
    let t = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let kept = frame.len().min(SNAPLEN);
    w.write_all(&(t.as_secs() as u32).to_ne_bytes())?;
    w.write_all(&t.subsec_micros().to_ne_bytes())?;
    w.write_all(&(kept as u32).to_ne_bytes())?;
    w.write_all(&(frame.len() as u32).to_ne_bytes())?;
    w.write_all(&frame[..kept])
}

/// Reads a pcap file (either byte order, microsecond or nanosecond timestamps) and
/// returns its Ethernet frames.
pub fn read_pcap(path: &Path) -> Result<Vec<Vec<u8>>> {
    let mut data = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .with_context(|| format!("read {}", path.display()))?;
    parse_pcap(&data).with_context(|| format!("parse {} as pcap", path.display()))
}

fn parse_pcap(data: &[u8]) -> Result<Vec<Vec<u8>>> {
    if data.len() < 24 {
        bail!("too short for a pcap header ({} bytes)", data.len());
    }
    let magic = u32::from_ne_bytes(data[0..4].try_into().expect("4 bytes"));
    let swap = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => false,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => true,
        m => bail!("not a pcap file (magic {m:#010x})"),
    };
    let u32_at = |at: usize| {
        let v = u32::from_ne_bytes(data[at..at + 4].try_into().expect("4 bytes"));
        if swap { v.swap_bytes() } else { v }
    };
    if u32_at(20) != LINKTYPE_ETHERNET {
        bail!("link type {} is not Ethernet", u32_at(20));
    }
    let mut frames = Vec::new();
    let mut at = 24;
    while at < data.len() {
        if at + 16 > data.len() {
            bail!("truncated record header at byte {at}");
        }
        let caplen = u32_at(at + 8) as usize;
        let start = at + 16;
        if start + caplen > data.len() {
            bail!("truncated record at byte {at}");
        }
        frames.push(data[start..start + caplen].to_vec());
        at = start + caplen;
    }
    Ok(frames)
}

/// What a capture saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CaptureSummary {
    pub path: PathBuf,
    /// Frames in the file.
    pub packets: u64,
    pub bytes: u64,
    /// IPv4 UDP packets to or from port 4789 carrying a VXLAN header.
    pub vxlan: u64,
    /// The VNIs seen.
    pub vnis: BTreeSet<u32>,
    /// VXLAN packets per (outer source, outer destination): the underlay addresses.
    pub tunnels: BTreeMap<(Ipv4Addr, Ipv4Addr), u64>,
    /// VXLAN packets per (inner source, inner destination) IPv4 addresses.
    pub inner: BTreeMap<(Ipv4Addr, Ipv4Addr), u64>,
    /// Unencapsulated IPv4 packets from one pod address to another.
    pub plain_pod_to_pod: BTreeMap<(Ipv4Addr, Ipv4Addr), u64>,
    /// Unencapsulated IPv4 packets between a pod address and something else (a node's
    /// underlay address, an external host).
    pub plain_pod_other: BTreeMap<(Ipv4Addr, Ipv4Addr), u64>,
    /// Everything else: ARP, node-to-node and router traffic without pod addresses.
    pub other: u64,
}

impl CaptureSummary {
    /// Unencapsulated packets with a pod address as source or destination.
    pub fn plain_pod_packets(&self) -> u64 {
        self.plain_pod_to_pod.values().sum::<u64>() + self.plain_pod_other.values().sum::<u64>()
    }

    /// VXLAN packets whose inner packet goes from pod to pod.
    pub fn vxlan_pod_to_pod(&self, pod_cidr: Ipv4Net) -> u64 {
        self.inner
            .iter()
            .filter(|((s, d), _)| pod_cidr.contains(s) && pod_cidr.contains(d))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Reads a pcap file and sorts its frames into VXLAN, pod traffic without a tunnel, and
/// the rest.
pub fn summarise_file(path: &Path, pod_cidr: Ipv4Net) -> Result<CaptureSummary> {
    let frames = read_pcap(path)?;
    let mut s = summarise(&frames, pod_cidr);
    s.path = path.to_path_buf();
    Ok(s)
}

/// Sorts frames into VXLAN, pod traffic without a tunnel, and the rest.
pub fn summarise(frames: &[Vec<u8>], pod_cidr: Ipv4Net) -> CaptureSummary {
    let mut s = CaptureSummary::default();
    for f in frames {
        s.packets += 1;
        s.bytes += f.len() as u64;
        let Some((src, dst, ip)) = ipv4_of(f) else {
            s.other += 1;
            continue;
        };
        if let Some((vni, inner)) = vxlan_of(&ip) {
            s.vxlan += 1;
            s.vnis.insert(vni);
            *s.tunnels.entry((src, dst)).or_default() += 1;
            if let Some((isrc, idst, _)) = ipv4_of(inner) {
                *s.inner.entry((isrc, idst)).or_default() += 1;
            }
            continue;
        }
        let (sp, dp) = (pod_cidr.contains(&src), pod_cidr.contains(&dst));
        if sp && dp {
            *s.plain_pod_to_pod.entry((src, dst)).or_default() += 1;
        } else if sp || dp {
            *s.plain_pod_other.entry((src, dst)).or_default() += 1;
        } else {
            s.other += 1;
        }
    }
    s
}

/// The IPv4 source, destination and the packet of an Ethernet frame.
fn ipv4_of(frame: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr, Ipv4Packet<'_>)> {
    let eth = EthernetPacket::new(frame)?;
    if eth.get_ethertype() != EtherTypes::Ipv4 {
        return None;
    }
    // The IPv4 header starts right after the 14-byte Ethernet header.
    let ip = Ipv4Packet::new(&frame[14..])?;
    Some((ip.get_source(), ip.get_destination(), ip))
}

/// The VNI and the inner Ethernet frame of a VXLAN packet (UDP to or from 4789 with the
/// I flag set).
fn vxlan_of<'a>(ip: &'a Ipv4Packet<'a>) -> Option<(u32, &'a [u8])> {
    if ip.get_next_level_protocol() != IpNextHeaderProtocols::Udp {
        return None;
    }
    let hl = usize::from(ip.get_header_length()) * 4;
    let udp = UdpPacket::new(ip.packet().get(hl..)?)?;
    if udp.get_destination() != VXLAN_PORT && udp.get_source() != VXLAN_PORT {
        return None;
    }
    // The UDP payload as a slice of the IP packet (UdpPacket::payload borrows udp).
    let payload = ip.packet().get(hl + 8..)?;
    if payload.len() < 8 || payload[0] & 0x08 == 0 {
        return None;
    }
    let vni = u32::from_be_bytes([0, payload[4], payload[5], payload[6]]);
    Some((vni, &payload[8..]))
}

/// At most this many address pairs are listed per kind; the rest are counted.
const LIST: usize = 12;

impl fmt::Display for CaptureSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "fabric capture: {} packets ({} bytes) on the underlay bridge, written to {}",
            self.packets,
            self.bytes,
            self.path.display()
        )?;
        let pairs = |f: &mut fmt::Formatter<'_>, m: &BTreeMap<(Ipv4Addr, Ipv4Addr), u64>| {
            for ((a, b), n) in m.iter().take(LIST) {
                writeln!(f, "      {a} -> {b}: {n}")?;
            }
            if m.len() > LIST {
                writeln!(f, "      ... and {} more address pairs", m.len() - LIST)?;
            }
            Ok(())
        };
        if self.vxlan == 0 {
            writeln!(f, "  VXLAN (UDP {VXLAN_PORT}): none")?;
        } else {
            let vnis: Vec<String> = self.vnis.iter().map(u32::to_string).collect();
            writeln!(
                f,
                "  VXLAN (UDP {VXLAN_PORT}, VNI {}): {} packets",
                vnis.join(", "),
                self.vxlan
            )?;
            writeln!(f, "    outer (underlay) addresses:")?;
            pairs(f, &self.tunnels)?;
            writeln!(f, "    inner addresses:")?;
            pairs(f, &self.inner)?;
        }
        let p2p: u64 = self.plain_pod_to_pod.values().sum();
        let other: u64 = self.plain_pod_other.values().sum();
        writeln!(
            f,
            "  pod addresses without a tunnel: {p2p} pod-to-pod, {other} to or from other addresses"
        )?;
        if p2p > 0 {
            writeln!(f, "    pod to pod:")?;
            pairs(f, &self.plain_pod_to_pod)?;
        }
        if other > 0 {
            writeln!(f, "    pod and other:")?;
            pairs(f, &self.plain_pod_other)?;
        }
        writeln!(
            f,
            "  other (ARP, node and router traffic without pod addresses): {}",
            self.other
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        let len = (20 + payload.len()) as u16;
        p[2..4].copy_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    fn frames() -> Vec<Vec<u8>> {
        let inner = eth(0x0800, &ipv4([10, 244, 1, 2], [10, 244, 2, 2], 6, &[0; 20]));
        let mut vx = vec![0x08, 0, 0, 0, 0, 0, 1, 0];
        vx.extend_from_slice(&inner);
        vec![
            // VXLAN between the nodes, VNI 1.
            eth(
                0x0800,
                &ipv4(
                    [192, 168, 200, 11],
                    [192, 168, 200, 12],
                    17,
                    &udp(40000, 4789, &vx),
                ),
            ),
            // A pod packet routed without a tunnel (host-gw).
            eth(0x0800, &ipv4([10, 244, 2, 2], [10, 244, 1, 2], 6, &[0; 20])),
            // A host talking to a pod.
            eth(0x0800, &ipv4([172, 17, 0, 5], [10, 244, 1, 2], 6, &[0; 20])),
            // UDP on another port is not VXLAN.
            eth(
                0x0800,
                &ipv4(
                    [192, 168, 200, 11],
                    [192, 168, 200, 12],
                    17,
                    &udp(1, 53, &[0; 8]),
                ),
            ),
            // ARP.
            eth(0x0806, &[0; 28]),
        ]
    }

    #[test]
    fn frames_are_sorted_into_tunnel_plain_and_other() {
        let cidr: Ipv4Net = "10.244.0.0/16".parse().unwrap();
        let s = summarise(&frames(), cidr);
        assert_eq!(s.packets, 5);
        assert_eq!(s.vxlan, 1);
        assert_eq!(s.vnis, BTreeSet::from([1]));
        let ip = |t: &str| t.parse::<Ipv4Addr>().unwrap();
        assert_eq!(s.tunnels[&(ip("192.168.200.11"), ip("192.168.200.12"))], 1);
        assert_eq!(s.inner[&(ip("10.244.1.2"), ip("10.244.2.2"))], 1);
        assert_eq!(s.vxlan_pod_to_pod(cidr), 1);
        assert_eq!(s.plain_pod_to_pod[&(ip("10.244.2.2"), ip("10.244.1.2"))], 1);
        assert_eq!(s.plain_pod_other.len(), 1);
        assert_eq!(s.plain_pod_packets(), 2);
        assert_eq!(s.other, 2);
        let text = s.to_string();
        assert!(
            text.contains("VXLAN (UDP 4789, VNI 1): 1 packets"),
            "{text}"
        );
        assert!(text.contains("10.244.1.2 -> 10.244.2.2: 1"), "{text}");
    }

    #[test]
    fn pcap_files_round_trip() {
        let dir = std::env::temp_dir().join(format!("knetlab-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.pcap");
        let mut w = BufWriter::new(File::create(&path).unwrap());
        write_file_header(&mut w).unwrap();
        for f in frames() {
            write_record(&mut w, SystemTime::now(), &f).unwrap();
        }
        drop(w);
        assert_eq!(read_pcap(&path).unwrap(), frames());
        let mut data = std::fs::read(&path).unwrap();
        data.truncate(data.len() - 3);
        assert!(parse_pcap(&data).is_err());
        assert!(parse_pcap(b"not a pcap file at all, really").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
