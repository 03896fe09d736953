//! The `ipvs` proxy: kube-proxy's IPVS mode. What a node holds in that mode is rendered
//! by `sim::kube_proxy::ipvs` (the IPVS table, the `kube-ipvs0` addresses, the ipsets
//! and the iptables rules IPVS mode still needs); this module decides whether the
//! kernel can have it and, if so, puts it there.
//!
//! **Detection.** IPVS is programmed through the generic netlink family `"IPVS"`: the
//! family exists when `ip_vs` is in the kernel. [`detect`] asks the kernel's generic
//! netlink controller for it (`CTRL_CMD_GETFAMILY`); `ENOENT` means no IPVS. On the
//! knetlab machines the kernel is built without `CONFIG_IP_VS` (and without the dummy
//! device `kube-ipvs0` needs), and modules cannot be loaded, so the family is absent.
//!
//! **Without IPVS** the scenario decides (`cluster.ipvs.fallback`): `fail` stops the run
//! before anything is built ([`missing_message`]), as kube-proxy since v1.26 refuses to
//! start ("can't use the IPVS proxier"); `iptables` runs [`super::iptables`] instead, as
//! kube-proxy before v1.26 fell back when IPVS was missing, and the run's notes say so
//! ([`fallback_note`]). Either way every sync renders the IPVS state of each node from
//! `sim`, and [`ServiceProxy::installed`] appends it to what is installed, marked as not
//! installed, so the `@proxy` snapshots and `--keep` readers see the IPVS table a real
//! node would hold.
//!
//! **With IPVS** (never exercised: no kernel at hand has it; written from the kernel's
//! `include/uapi/linux/ip_vs.h` and `net/netfilter/ipvs/ip_vs_ctl.c` netlink policy, and
//! moby/ipvs, which kube-proxy uses) a sync of a node: sets the `net.ipv4.vs.*` sysctls
//! kube-proxy sets, creates `kube-ipvs0` (a dummy link) and binds every service address
//! to it, loads the ipsets with `ipset restore -exist`, inserts the jumps and loads the
//! iptables rules with `iptables-restore --noflush`, then flushes the IPVS table and
//! adds every virtual server and real server over generic netlink. That is a full
//! rewrite per changed node, not kube-proxy's per-object diff; addresses and sets left
//! over from a previous sync are removed.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use sim::kube_proxy::ipvs::{self as proxy_ipvs, DUMMY_DEVICE, IpvsRules, JUMPS, VirtualServer};
use sim::kube_proxy::model::{node_input, service_ports};
use sim::objects::ClusterObjects;
use sim::plan::Plan;
use sim::protocol::Protocol;
use sim::scenario::{IpvsConfig, IpvsFallback};

use super::iptables::IptablesProxy;
use super::{ProxyNodeSync, ProxySyncReport, ServiceProxy, route_service_cidr};
use crate::netns::Netns;
use crate::policy::{IPTABLES_RESTORE, run_in};

/// Why a run with `proxy: ipvs` and `fallback: fail` stops on this kernel.
pub fn missing_message() -> String {
    "this kernel has no IPVS (no 'IPVS' generic netlink family; on a real node: modprobe \
     ip_vs); set cluster.ipvs.fallback: iptables to run as kube-proxy did before v1.26 \
     when IPVS was missing"
        .to_string()
}

/// The run's note when IPVS is missing and the scenario falls back to iptables.
pub fn fallback_note() -> String {
    "proxy ipvs: this kernel has no IPVS (no 'IPVS' generic netlink family), so the \
     iptables proxy runs instead (cluster.ipvs.fallback: iptables, what kube-proxy did \
     before v1.26); the IPVS table, kube-ipvs0 addresses, ipsets and iptables rules a real \
     node would hold are rendered by sim and shown after the installed rules, marked \
     'not installed'"
        .to_string()
}

/// Whether the kernel has IPVS: the id of the `"IPVS"` generic netlink family, or
/// `None` when the controller does not know it (`ENOENT`). Asked from the calling
/// thread's network namespace (generic netlink families are the kernel's, so any
/// namespace gives the same answer); nothing is changed.
pub fn detect() -> Result<Option<u16>> {
    let mut nl = genl::Genl::open().context("open a generic netlink socket")?;
    nl.family("IPVS")
        .context("ask the generic netlink controller for the IPVS family")
}

/// kube-proxy in IPVS mode, or the iptables proxy standing in for it.
pub struct IpvsProxy {
    config: IpvsConfig,
    /// `Some` when the kernel has IPVS (the family id), checked once at creation.
    family: Option<u16>,
    /// The detection error, if asking failed (reported at the first sync).
    detect_error: Option<String>,
    /// Runs when IPVS is missing and the scenario falls back.
    fallback: Option<IptablesProxy>,
    /// The IPVS rendering of each node at the last sync, keyed by namespace name.
    rendered: BTreeMap<String, IpvsRules>,
    /// With IPVS: the rendering last installed in each node.
    applied: BTreeMap<String, IpvsRules>,
}

impl IpvsProxy {
    /// Detects IPVS now; without it, `config.fallback` decides what [`Self::sync`] does.
    pub fn new(config: IpvsConfig) -> Self {
        let (family, detect_error) = match detect() {
            Ok(f) => (f, None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        let fallback = (family.is_none() && config.fallback == IpvsFallback::Iptables)
            .then(IptablesProxy::new);
        Self {
            config,
            family,
            detect_error,
            fallback,
            rendered: BTreeMap::new(),
            applied: BTreeMap::new(),
        }
    }

    /// Whether the kernel has IPVS.
    pub fn available(&self) -> bool {
        self.family.is_some()
    }

    /// The IPVS state rendered for a node at the last sync.
    pub fn rendered(&self, node: &Netns) -> Option<&IpvsRules> {
        self.rendered.get(node.name())
    }
}

/// The node's own addresses kube-proxy makes NodePort virtual servers on: its underlay
/// address, its bridge address and (in vxlan mode) its tunnel address.
pub fn node_addresses(plan: &Plan, node: &str) -> Vec<Ipv4Addr> {
    let Some(n) = plan.node(node) else {
        return Vec::new();
    };
    let mut v = vec![n.underlay_ip, n.gateway];
    if let Some(vtep) = plan.vtep(n) {
        v.push(vtep.address);
    }
    v
}

impl ServiceProxy for IpvsProxy {
    fn name(&self) -> &'static str {
        if self.fallback.is_some() {
            "ipvs (fallen back to iptables)"
        } else {
            "ipvs"
        }
    }

    fn sync(
        &mut self,
        plan: &Plan,
        nodes: &[(String, Netns)],
        objects: &ClusterObjects,
    ) -> Result<ProxySyncReport> {
        let start = Instant::now();
        let ports = service_ports(objects);
        let mut rendered = BTreeMap::new();
        for (node, ns) in nodes {
            let input = node_input(plan, node, ports.clone())
                .with_context(|| format!("the service proxy input of node {node}"))?;
            let rules =
                proxy_ipvs::render(&input, self.config.scheduler, &node_addresses(plan, node))
                    .map_err(|e| anyhow!("render the IPVS state of node {node}: {e}"))?;
            rendered.insert(ns.name().to_string(), rules);
        }
        let render_time = start.elapsed();
        self.rendered = rendered;
        if let Some(fallback) = self.fallback.as_mut() {
            return fallback.sync(plan, nodes, objects);
        }
        if self.family.is_none() {
            let why = self
                .detect_error
                .as_deref()
                .map(|e| format!(" (asking the kernel failed: {e})"))
                .unwrap_or_default();
            bail!("{}{why}", missing_message());
        }

        let work: Vec<(&String, &Netns, &IpvsRules, Option<IpvsRules>)> = nodes
            .iter()
            .map(|(node, ns)| {
                let rules = &self.rendered[ns.name()];
                (node, ns, rules, self.applied.remove(ns.name()))
            })
            .collect();
        let results =
            crate::parallel::each(&work, "a node's IPVS sync", |(node, ns, rules, before)| {
                apply_node(plan, node, ns, rules, before.as_ref())
            });
        let mut report = ProxySyncReport {
            render: render_time,
            ..ProxySyncReport::default()
        };
        let mut errors = Vec::new();
        let mut applied = Vec::new();
        for ((node, ns, rules, _), result) in work.into_iter().zip(results) {
            match result {
                Ok(done) => {
                    applied.push((ns.name().to_string(), rules.clone()));
                    report.nodes.push(done);
                }
                Err(e) => errors.push(format!("node {node}: {e:#}")),
            }
        }
        self.applied.extend(applied);
        report.elapsed = start.elapsed();
        if !errors.is_empty() {
            bail!("IPVS proxy sync failed:\n  {}", errors.join("\n  "));
        }
        Ok(report)
    }

    fn installed(&self, node: &Netns) -> Result<String> {
        match &self.fallback {
            Some(fallback) => {
                let mut text = fallback.installed(node)?;
                if let Some(r) = self.rendered.get(node.name()) {
                    text.push_str(
                        "# IPVS mode, rendered by sim and NOT installed (this kernel has no IPVS; \
                         the iptables proxy above runs instead):\n",
                    );
                    text.push_str(&r.text());
                }
                Ok(text)
            }
            None => {
                let ipvsadm = run_in(node, "ipvsadm", &["-Ln"], None)?;
                let addrs = run_in(
                    node,
                    "ip",
                    &["-4", "-brief", "addr", "show", "dev", DUMMY_DEVICE],
                    None,
                )?;
                let sets = run_in(node, "ipset", &["save"], None)?;
                let saved = run_in(node, crate::policy::IPTABLES_SAVE, &[], None)?;
                Ok(format!(
                    "# ipvsadm -Ln\n{ipvsadm}# ip -4 -brief addr show dev {DUMMY_DEVICE}\n{addrs}# ipset save\n{sets}# iptables-save\n{saved}"
                ))
            }
        }
    }
}

/// Installs `rules` in a node that has IPVS (see the module docs for the order).
fn apply_node(
    plan: &Plan,
    node: &str,
    ns: &Netns,
    rules: &IpvsRules,
    before: Option<&IpvsRules>,
) -> Result<ProxyNodeSync> {
    let start = Instant::now();
    if before == Some(rules) {
        return Ok(ProxyNodeSync {
            node: node.to_string(),
            changed: false,
            full: false,
            restore_bytes: 0,
            restore_lines: 0,
            elapsed: start.elapsed(),
        });
    }
    if before.is_none() {
        route_service_cidr(plan, ns)?;
        for (key, value) in [
            ("net/ipv4/vs/conntrack", "1"),
            ("net/ipv4/vs/expire_nodest_conn", "1"),
            ("net/ipv4/vs/expire_quiescent_template", "1"),
            ("net/ipv4/ip_forward", "1"),
        ] {
            ns.set_sysctl(key, value)?;
        }
        if run_in(ns, "ip", &["link", "show", DUMMY_DEVICE], None).is_err() {
            run_in(
                ns,
                "ip",
                &["link", "add", DUMMY_DEVICE, "type", "dummy"],
                None,
            )
            .with_context(|| format!("create {DUMMY_DEVICE} in node {node}"))?;
        }
    }
    // Addresses on kube-ipvs0: bind the new, unbind the stale.
    for a in &rules.bound {
        run_in(
            ns,
            "ip",
            &["addr", "replace", &format!("{a}/32"), "dev", DUMMY_DEVICE],
            None,
        )
        .with_context(|| format!("bind {a} to {DUMMY_DEVICE} in node {node}"))?;
    }
    for a in before.iter().flat_map(|b| &b.bound) {
        if !rules.bound.contains(a) {
            run_in(
                ns,
                "ip",
                &["addr", "del", &format!("{a}/32"), "dev", DUMMY_DEVICE],
                None,
            )
            .with_context(|| format!("unbind {a} from {DUMMY_DEVICE} in node {node}"))?;
        }
    }
    let (bytes, lines) = load_netfilter(ns, node, rules, before.is_none())?;
    // The IPVS table itself, over generic netlink from a socket made in the node.
    ns.enter(|| -> Result<()> {
        let mut nl = genl::Genl::open().context("open a generic netlink socket")?;
        let family = nl
            .family("IPVS")?
            .ok_or_else(|| anyhow!("{}", missing_message()))?;
        nl.ipvs_flush(family).context("flush the IPVS table")?;
        for vs in &rules.virtual_servers {
            nl.ipvs_add(family, vs).with_context(|| {
                format!(
                    "add IPVS virtual server {} {}:{}",
                    vs.protocol, vs.address, vs.port
                )
            })?;
        }
        Ok(())
    })
    .with_context(|| format!("program IPVS in node {node}"))?;
    Ok(ProxyNodeSync {
        node: node.to_string(),
        changed: true,
        full: before.is_none(),
        restore_bytes: bytes,
        restore_lines: lines,
        elapsed: start.elapsed(),
    })
}

/// The netfilter half of IPVS mode in one node: on the first sync the chains and
/// kube-proxy's jumps into them (`iptablesJumpChain`, each inserted once), then the
/// ipsets in one `ipset restore` (create what is missing, flush every set, refill) and
/// the rules in one `iptables-restore --noflush`. Needs no IPVS in the kernel (only
/// `-m ipvs`, written for load balancers the node may not reach, does). Returns the
/// bytes and lines written.
pub fn load_netfilter(
    ns: &Netns,
    node: &str,
    rules: &IpvsRules,
    first: bool,
) -> Result<(usize, usize)> {
    if first {
        for (table, from, to, comment) in JUMPS {
            let rule = ["-m", "comment", "--comment", comment, "-j", to];
            let mut check = vec!["-t", table, "-C", from];
            check.extend(rule);
            if run_in(ns, IPTABLES, &check, None).is_err() {
                // The chain must exist before a jump to it (`-N` fails if it does).
                let _ = run_in(ns, IPTABLES, &["-t", table, "-N", to], None);
                let mut insert = vec!["-t", table, "-I", from];
                insert.extend(rule);
                run_in(ns, IPTABLES, &insert, None).with_context(|| {
                    format!("insert kube-proxy's jump into {from} in node {node}")
                })?;
            }
        }
    }
    let saved = rules.ipset_save();
    let creates = saved.lines().filter(|l| l.starts_with("create "));
    let flushes = rules.sets.iter().map(|s| format!("flush {}", s.name));
    let adds = saved.lines().filter(|l| l.starts_with("add "));
    let script: String = creates
        .map(str::to_string)
        .chain(flushes)
        .chain(adds.map(str::to_string))
        .map(|l| l + "\n")
        .collect();
    run_in(ns, "ipset", &["restore", "-exist"], Some(&script))
        .with_context(|| format!("load kube-proxy's ipsets into node {node}"))?;
    run_in(ns, IPTABLES_RESTORE, &["--noflush"], Some(&rules.restore))
        .with_context(|| format!("load kube-proxy's IPVS-mode iptables rules into node {node}"))?;
    Ok((
        script.len() + rules.restore.len(),
        script.lines().count() + rules.restore.lines().count(),
    ))
}

/// The iptables binary of the backend the restores use.
const IPTABLES: &str = "iptables-nft";

/// Just enough generic netlink for IPVS: resolve a family, send a request and wait for
/// its acknowledgement. Messages are built by hand (a netlink header, the 4-byte generic
/// header, attributes padded to 4 bytes) on a `netlink-sys` socket.
mod genl {
    use super::*;
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};

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
                None => eprintln!("this kernel has no IPVS: {}", missing_message()),
            }
        }
    }
}
