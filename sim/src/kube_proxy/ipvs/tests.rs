//! Tests of the IPVS renderer: virtual servers, ipsets and the netfilter rules.

use super::*;
use crate::kube_proxy::model::{Endpoint, ProxyConfig, ServicePort};

const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 11);

fn input(services: Vec<ServicePort>) -> ProxyInput {
    ProxyInput {
        node: "n1".into(),
        node_ip: NODE_IP,
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        config: ProxyConfig::default(),
        services,
    }
}

fn nginx() -> ServicePort {
    let mut sp = ServicePort::cluster_ip(
        "default",
        "nginx",
        Some("http"),
        Protocol::Tcp,
        "10.96.0.10".parse().unwrap(),
        80,
    );
    sp.endpoints = vec![
        Endpoint::ready("10.244.2.2".parse().unwrap(), 8080, Some("n2")),
        Endpoint::ready("10.244.1.2".parse().unwrap(), 8080, Some("n1")),
    ];
    sp
}

fn render_one(sp: ServicePort) -> IpvsRules {
    render(&input(vec![sp]), IpvsScheduler::Rr, &[NODE_IP]).unwrap()
}

#[test]
fn a_cluster_ip_is_one_virtual_server_with_a_real_server_per_endpoint() {
    let r = render_one(nginx());
    assert_eq!(
        r.ipvsadm(),
        "IP Virtual Server version 1.2.1 (size=4096)\n\
         Prot LocalAddress:Port Scheduler Flags\n  \
         -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
         TCP  10.96.0.10:80 rr\n  \
         -> 10.244.1.2:8080              Masq    1      0          0\n  \
         -> 10.244.2.2:8080              Masq    1      0          0\n"
    );
    assert_eq!(r.bound, ["10.96.0.10".parse::<Ipv4Addr>().unwrap()]);
    assert_eq!(
        r.dummy_device(),
        "kube-ipvs0       DOWN           10.96.0.10/32\n"
    );
    let cluster = r.set(sets::CLUSTER_IP).unwrap();
    assert_eq!(
        cluster.entries.iter().collect::<Vec<_>>(),
        ["10.96.0.10,tcp:80"]
    );
    // Only the endpoint on this node is a hairpin candidate.
    assert_eq!(
        r.set(sets::LOOP_BACK)
            .unwrap()
            .entries
            .iter()
            .collect::<Vec<_>>(),
        ["10.244.1.2,tcp:8080,10.244.1.2"]
    );
    assert_eq!(
        r.set(sets::IPVS_IPS)
            .unwrap()
            .entries
            .iter()
            .collect::<Vec<_>>(),
        ["10.96.0.10"]
    );
    // Every set exists, empty or not, in kube-proxy's order.
    let save = r.ipset_save();
    assert!(save.starts_with("create KUBE-LOOP-BACK hash:ip,port,ip family inet hashsize 1024 maxelem 65536 comment\nadd KUBE-LOOP-BACK 10.244.1.2,tcp:8080,10.244.1.2\n"), "{save}");
    assert!(save.contains("create KUBE-NODE-PORT-TCP bitmap:port range 0-65535 comment\n"));
    assert_eq!(save.matches("create ").count(), SET_INFO.len());
    let t = &r.restore;
    for line in [
        "-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN",
        "-A KUBE-POSTROUTING -m comment --comment \"Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose\" -m set --match-set KUBE-LOOP-BACK dst,dst,src -j MASQUERADE",
        "-A KUBE-SERVICES -m comment --comment \"Kubernetes service cluster ip + port for masquerade purpose\" -m set --match-set KUBE-CLUSTER-IP dst,dst ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
        "-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT",
        "-A KUBE-SERVICES -m set --match-set KUBE-CLUSTER-IP dst,dst -j ACCEPT",
        "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000",
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set KUBE-IPVS-IPS dst -j REJECT",
    ] {
        assert!(t.lines().any(|l| l == line), "missing {line}\n{t}");
    }
    // No NodePort, no load balancer: their set rules are not written.
    assert!(!t.contains("KUBE-NODE-PORT-TCP"), "{t}");
    assert!(!t.contains("-j KUBE-LOAD-BALANCER\n"), "{t}");
    // The ACCEPT comes after the NodePort jump: it must be last in KUBE-SERVICES.
    let pos = |s: &str| t.find(s).unwrap();
    assert!(pos("--dst-type LOCAL -j KUBE-NODE-PORT") < pos("KUBE-CLUSTER-IP dst,dst -j ACCEPT"));
    assert!(t.starts_with("*filter\n:KUBE-FORWARD - [0:0]\n"), "{t}");
    assert!(t.contains("COMMIT\n*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-NODE-PORT - [0:0]\n:KUBE-LOAD-BALANCER - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n"), "{t}");
}

#[test]
fn schedulers_persistence_and_internal_traffic_policy() {
    let mut sp = nginx();
    sp.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 600,
    };
    for sched in IpvsScheduler::ALL {
        let r = render(&input(vec![sp.clone()]), sched, &[NODE_IP]).unwrap();
        assert!(
            r.ipvsadm()
                .contains(&format!("TCP  10.96.0.10:80 {sched} persistent 600\n")),
            "{}",
            r.ipvsadm()
        );
        assert_eq!(r.virtual_servers[0].persistence, Some(600));
    }
    sp.internal_policy_local = true;
    let r = render_one(sp);
    let reals: Vec<String> = r.virtual_servers[0]
        .real_servers
        .iter()
        .map(|s| s.address.to_string())
        .collect();
    assert_eq!(reals, ["10.244.1.2"]);
    assert_eq!("lc".parse::<IpvsScheduler>(), Ok(IpvsScheduler::Lc));
    assert!("wrr".parse::<IpvsScheduler>().is_err());
}

#[test]
fn a_node_port_is_a_virtual_server_per_node_address_and_a_bitmap_entry() {
    let mut sp = nginx();
    sp.node_port = Some(30080);
    let gw: Ipv4Addr = "10.244.1.1".parse().unwrap();
    let r = render(
        &input(vec![sp.clone()]),
        IpvsScheduler::Rr,
        &[NODE_IP, gw, NODE_IP],
    )
    .unwrap();
    let vss: Vec<String> = r
        .virtual_servers
        .iter()
        .map(|v| {
            format!(
                "{}:{} {:?} {}",
                v.address,
                v.port,
                v.kind,
                v.real_servers.len()
            )
        })
        .collect();
    assert_eq!(
        vss,
        [
            "10.96.0.10:80 ClusterIp 2",
            "10.244.1.1:30080 NodePort 2",
            "192.168.200.11:30080 NodePort 2"
        ]
    );
    // Node addresses are not bound to the dummy device.
    assert_eq!(r.bound.len(), 1);
    assert_eq!(
        r.set(sets::NODE_PORT_TCP)
            .unwrap()
            .entries
            .iter()
            .collect::<Vec<_>>(),
        ["30080"]
    );
    assert!(r.restore.contains("-A KUBE-NODE-PORT -p tcp -m comment --comment \"Kubernetes nodeport TCP port for masquerade purpose\" -m set --match-set KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ\n"), "{}", r.restore);
    // externalTrafficPolicy Local: only local real servers, and the RETURN first.
    sp.external_policy_local = true;
    let r = render_one(sp);
    let np = r
        .virtual_servers
        .iter()
        .find(|v| v.kind == VirtualServerKind::NodePort)
        .unwrap();
    assert_eq!(np.real_servers.len(), 1);
    assert_eq!(r.virtual_servers[0].real_servers.len(), 2);
    let t = &r.restore;
    assert!(
        t.find("KUBE-NODE-PORT-LOCAL-TCP dst -j RETURN").unwrap()
            < t.find("KUBE-NODE-PORT-TCP dst -j KUBE-MARK-MASQ").unwrap(),
        "{t}"
    );
}

#[test]
fn load_balancer_and_external_ips_are_bound_and_filtered() {
    let mut sp = nginx();
    let lb: Ipv4Addr = "203.0.113.10".parse().unwrap();
    let eip: Ipv4Addr = "198.51.100.7".parse().unwrap();
    sp.load_balancer_ips = vec![lb];
    sp.external_ips = vec![eip];
    sp.load_balancer_source_ranges = vec!["192.0.2.0/24".parse().unwrap()];
    sp.protocol = Protocol::Udp;
    let r = render_one(sp);
    assert_eq!(
        r.bound,
        ["10.96.0.10".parse::<Ipv4Addr>().unwrap(), eip, lb]
    );
    let text = r.ipvsadm();
    assert!(text.contains("UDP  198.51.100.7:80 rr\n"), "{text}");
    assert!(text.contains("UDP  203.0.113.10:80 rr\n"), "{text}");
    assert_eq!(
        r.set(sets::LOAD_BALANCER_SOURCE_CIDR)
            .unwrap()
            .entries
            .iter()
            .collect::<Vec<_>>(),
        ["203.0.113.10,udp:80,192.0.2.0/24"]
    );
    assert_eq!(
        r.set(sets::EXTERNAL_IP)
            .unwrap()
            .entries
            .iter()
            .collect::<Vec<_>>(),
        ["198.51.100.7,udp:80"]
    );
    let t = &r.restore;
    // The node is not in the source range: its own access is dropped.
    assert!(t.contains("-A KUBE-IPVS-OUT-FILTER -s 203.0.113.10 -m ipvs --vaddr 203.0.113.10 --vproto UDP --vport 80 -j DROP\n"), "{t}");
    assert!(t.contains("-A KUBE-SERVICES -m comment --comment \"Kubernetes service lb portal\" -m set --match-set KUBE-LOAD-BALANCER dst,dst -j KUBE-LOAD-BALANCER\n"), "{t}");
    assert!(t.contains("-A KUBE-PROXY-FIREWALL -m comment --comment \"Kubernetes service load balancer ip + port for load balancer with sourceRange\" -m set --match-set KUBE-LOAD-BALANCER-FW dst,dst -j KUBE-SOURCE-RANGES-FIREWALL\n"), "{t}");
    assert!(t.contains("-m set --match-set KUBE-EXTERNAL-IP dst,dst -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT\n"), "{t}");
    assert!(
        t.contains("-A KUBE-SERVICES -m set --match-set KUBE-LOAD-BALANCER dst,dst -j ACCEPT\n"),
        "{t}"
    );
}

#[test]
fn headless_and_empty_services() {
    let mut headless = nginx();
    headless.name = "headless".into();
    headless.cluster_ip = None;
    let mut empty = nginx();
    empty.name = "empty".into();
    empty.cluster_ip = Some("10.96.0.11".parse().unwrap());
    empty.endpoints.clear();
    let r = render(&input(vec![headless, empty]), IpvsScheduler::Rr, &[NODE_IP]).unwrap();
    // No rule for the headless one; the empty one keeps a virtual server with no
    // real server (IPVS answers its connections with a port unreachable).
    assert_eq!(r.virtual_servers.len(), 1);
    assert!(r.virtual_servers[0].real_servers.is_empty());
    assert!(r.ipvsadm().ends_with("TCP  10.96.0.11:80 rr\n"));
    // Deterministic, and a duplicate port is refused as in iptables mode.
    assert!(matches!(
        render(&input(vec![nginx(), nginx()]), IpvsScheduler::Rr, &[]),
        Err(ProxyError::DuplicatePort(..))
    ));
    let text = render_one(nginx()).text();
    assert!(text.starts_with("# ipvsadm -Ln\n"), "{text}");
    assert!(text.contains("iptables -t nat -I PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"), "{text}");
}
