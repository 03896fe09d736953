//! Tests of the nftables renderer: kube-proxy's golden rules, incremental syncs, names
//! and listings.

use super::*;
use crate::kube_proxy::model::Endpoint;
use std::collections::BTreeSet;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// kube-proxy's fake proxier (K-NFT-T `NewFakeProxier`): node `test-node`
/// 192.168.0.2, pods in 10.0.0.0/8, services in 172.30.0.0/16.
fn fake_node(services: Vec<ServicePort>) -> ProxyInput {
    ProxyInput {
        node: "test-node".into(),
        node_ip: ip("192.168.0.2"),
        cluster_cidr: Some("10.0.0.0/8".parse().unwrap()),
        config: ProxyConfig::default(),
        services,
    }
}

fn svc(ns: &str, name: &str, cip: &str, eps: &[(&str, Option<&str>)]) -> ServicePort {
    let mut sp = ServicePort::cluster_ip(ns, name, Some("p80"), Protocol::Tcp, ip(cip), 80);
    sp.endpoints = eps
        .iter()
        .map(|(a, node)| Endpoint::ready(ip(a), 80, *node))
        .collect();
    sp
}

/// The six services of K-NFT-T `TestOverallNFTablesRules` (= the iptables golden's).
fn six_services() -> Vec<ServicePort> {
    let svc1 = svc("ns1", "svc1", "172.30.0.41", &[("10.180.0.1", None)]);
    let mut svc2 = svc("ns2", "svc2", "172.30.0.42", &[("10.180.0.2", None)]);
    svc2.node_port = Some(3001);
    svc2.load_balancer_ips = vec![ip("1.2.3.4")];
    svc2.external_ips = vec![ip("192.168.99.22")];
    svc2.external_policy_local = true;
    svc2.health_check_node_port = Some(30000);
    let mut svc3 = svc("ns3", "svc3", "172.30.0.43", &[("10.180.0.3", None)]);
    svc3.node_port = Some(3003);
    let mut svc4 = svc(
        "ns4",
        "svc4",
        "172.30.0.44",
        &[("10.180.0.4", None), ("10.180.0.5", Some("test-node"))],
    );
    svc4.external_ips = vec![ip("192.168.99.33")];
    let mut svc5 = svc("ns5", "svc5", "172.30.0.45", &[("10.180.0.3", None)]);
    svc5.node_port = Some(3002);
    svc5.load_balancer_ips = vec![ip("5.6.7.8")];
    svc5.health_check_node_port = Some(30000);
    svc5.load_balancer_source_ranges = vec!["203.0.113.0/25".parse().unwrap()];
    svc5.session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 10800,
    };
    let svc6 = svc("ns6", "svc6", "172.30.0.46", &[]);
    vec![svc1, svc2, svc3, svc4, svc5, svc6]
}

fn lines(text: &str) -> BTreeSet<&str> {
    text.lines().collect()
}

fn assert_has(text: &str, expected: &str) {
    let have = lines(text);
    let missing: Vec<&str> = expected
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !have.contains(l))
        .collect();
    assert!(
        missing.is_empty(),
        "missing lines:\n{}\n--- in:\n{text}",
        missing.join("\n")
    );
}

/// Every name the reference verified (§2.3).
#[test]
fn chain_names_match_the_reference() {
    let tcp = Protocol::Tcp;
    let v4 = |s: &str| IpAddr::V4(ip(s));
    assert_eq!(
        service_port_chain_base("ns1", "svc1", tcp, Some("p80")),
        "ULMVA6XW-ns1/svc1/tcp/p80"
    );
    assert_eq!(
        endpoint_chain_base("ns1", "svc1", tcp, Some("p80"), v4("10.180.0.1"), 80),
        "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    );
    assert!(
        endpoint_chain_base("ns5", "svc5", tcp, Some("p80"), v4("10.180.0.3"), 80)
            .starts_with("GTK6MW7G-")
    );
    assert!(
        service_port_chain_base("default", "nginx-service", tcp, Some("http"))
            .starts_with("PIOJ4VP5-")
    );
    for (addr, hash) in [("10.244.1.5", "7CJWOLVL"), ("10.244.2.7", "XRVHCYCJ")] {
        let b = endpoint_chain_base("default", "nginx-service", tcp, Some("http"), v4(addr), 80);
        assert_eq!(
            b,
            format!("{hash}-default/nginx-service/tcp/http__{addr}/80")
        );
    }
    // An unnamed port leaves the last part empty; IPv6 colons become dots.
    assert!(service_port_chain_base("a", "b", Protocol::Udp, None).ends_with("-a/b/udp/"));
    let v6 = endpoint_chain_base(
        "ns1",
        "svc1",
        tcp,
        Some("p80"),
        "fd00:10:180::2:1".parse().unwrap(),
        80,
    );
    assert!(v6.ends_with("__fd00.10.180..2.1/80"), "{v6}");
    assert!(is_service_chain_name("service-ULMVA6XW-ns1/svc1/tcp/p80"));
    assert!(!is_service_chain_name(SERVICES));
    // Long names are cut to knftables' limit with `...`, keeping the hash.
    let long = hash_and_truncate(&"x".repeat(300));
    assert_eq!(long.len(), 240);
    assert!(long.ends_with("..."));
}

/// The reference's small example (§2.6), which was loaded into nft on this machine:
/// every line of the per-service transaction is in ours.
#[test]
fn the_reference_example_is_reproduced() {
    let mut sp = ServicePort::cluster_ip(
        "default",
        "nginx-service",
        Some("http"),
        Protocol::Tcp,
        ip("10.96.0.50"),
        80,
    );
    sp.node_port = Some(30080);
    sp.endpoints = vec![
        Endpoint::ready(ip("10.244.2.7"), 80, Some("n2")),
        Endpoint::ready(ip("10.244.1.5"), 80, Some("n1")),
    ];
    let input = ProxyInput {
        node: "n1".into(),
        node_ip: ip("192.168.0.2"),
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        config: ProxyConfig::default(),
        services: vec![sp],
    };
    let rules = render(&input, Some("10.96.0.0/16".parse().unwrap())).unwrap();
    let text = rules.full_transaction();
    assert_has(
        &text,
        r#"
add chain ip kube-proxy service-PIOJ4VP5-default/nginx-service/tcp/http
add rule ip kube-proxy service-PIOJ4VP5-default/nginx-service/tcp/http ip daddr 10.96.0.50 ip saddr != 10.244.0.0/16 jump mark-for-masquerade
add rule ip kube-proxy service-PIOJ4VP5-default/nginx-service/tcp/http numgen random mod 2 vmap { 0 : goto endpoint-7CJWOLVL-default/nginx-service/tcp/http__10.244.1.5/80 , 1 : goto endpoint-XRVHCYCJ-default/nginx-service/tcp/http__10.244.2.7/80 }
add chain ip kube-proxy external-PIOJ4VP5-default/nginx-service/tcp/http
add rule ip kube-proxy external-PIOJ4VP5-default/nginx-service/tcp/http jump mark-for-masquerade
add rule ip kube-proxy external-PIOJ4VP5-default/nginx-service/tcp/http goto service-PIOJ4VP5-default/nginx-service/tcp/http
add chain ip kube-proxy endpoint-7CJWOLVL-default/nginx-service/tcp/http__10.244.1.5/80
add rule ip kube-proxy endpoint-7CJWOLVL-default/nginx-service/tcp/http__10.244.1.5/80 ip saddr 10.244.1.5 jump mark-for-masquerade
add rule ip kube-proxy endpoint-7CJWOLVL-default/nginx-service/tcp/http__10.244.1.5/80 meta l4proto tcp dnat to 10.244.1.5:80
add chain ip kube-proxy endpoint-XRVHCYCJ-default/nginx-service/tcp/http__10.244.2.7/80
add rule ip kube-proxy endpoint-XRVHCYCJ-default/nginx-service/tcp/http__10.244.2.7/80 ip saddr 10.244.2.7 jump mark-for-masquerade
add rule ip kube-proxy endpoint-XRVHCYCJ-default/nginx-service/tcp/http__10.244.2.7/80 meta l4proto tcp dnat to 10.244.2.7:80
add element ip kube-proxy cluster-ips { 10.96.0.50 }
add element ip kube-proxy service-ips { 10.96.0.50 . tcp . 80 : goto service-PIOJ4VP5-default/nginx-service/tcp/http }
add element ip kube-proxy service-nodeports { tcp . 30080 : goto external-PIOJ4VP5-default/nginx-service/tcp/http }
"#,
    );
    // Nothing but that: 3 + 2 + 2 + 2 per-service rules, 3 elements.
    let per_service_rules = text
        .lines()
        .filter(|l| l.starts_with("add rule") && l.contains("/nginx-service/"))
        .count();
    assert_eq!(per_service_rules, 8);
    let elements = text
        .lines()
        .filter(|l| l.starts_with("add element"))
        .count();
    assert_eq!(elements, 4, "3 + the node's nodeport-ips element");
}

/// K-NFT-T `baseRules` with kube-proxy's real mark (`0x00004000`; the fake proxier
/// uses `0x4000`): every base line, and every base chain is created and flushed.
#[test]
fn base_rules_match_kube_proxy() {
    let rules = render(&fake_node(vec![]), Some("172.30.0.0/16".parse().unwrap())).unwrap();
    let text = rules.full_transaction();
    assert_has(
        &text,
        r#"
add table ip kube-proxy { comment "rules for kube-proxy" ; }
add set ip kube-proxy cluster-ips { type ipv4_addr ; comment "Active ClusterIPs" ; }
add set ip kube-proxy nodeport-ips { type ipv4_addr ; comment "IPs that accept NodePort traffic" ; }
add map ip kube-proxy firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "destinations that are subject to LoadBalancerSourceRanges" ; }
add map ip kube-proxy no-endpoint-nodeports { type inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }
add map ip kube-proxy no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }
add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment "NodePort traffic" ; }
add chain ip kube-proxy cluster-ips-check
add chain ip kube-proxy filter-prerouting-pre-dnat { type filter hook prerouting priority -110 ; }
add chain ip kube-proxy filter-output-pre-dnat { type filter hook output priority -110 ; }
add chain ip kube-proxy filter-forward { type filter hook forward priority 0 ; }
add chain ip kube-proxy filter-input { type filter hook input priority 0 ; }
add chain ip kube-proxy filter-output { type filter hook output priority 0 ; }
add chain ip kube-proxy firewall-check
add chain ip kube-proxy mark-for-masquerade
add chain ip kube-proxy masquerading
add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }
add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }
add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }
add chain ip kube-proxy nodeport-endpoints-check
add chain ip kube-proxy reject-chain { comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }
add chain ip kube-proxy services
add chain ip kube-proxy service-endpoints-check
add rule ip kube-proxy cluster-ips-check ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"
add rule ip kube-proxy cluster-ips-check ip daddr { 172.30.0.0/16 } drop comment "Drop traffic to unallocated ClusterIPs"
add rule ip kube-proxy filter-prerouting-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-forward ct state new jump service-endpoints-check
add rule ip kube-proxy filter-forward ct state new jump cluster-ips-check
add rule ip kube-proxy filter-input ct state new jump nodeport-endpoints-check
add rule ip kube-proxy filter-input ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output ct state new jump service-endpoints-check
add rule ip kube-proxy filter-output-pre-dnat ct state new jump firewall-check
add rule ip kube-proxy filter-output ct state new jump cluster-ips-check
add rule ip kube-proxy firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips
add rule ip kube-proxy mark-for-masquerade mark set mark or 0x00004000
add rule ip kube-proxy masquerading mark and 0x00004000 == 0 return
add rule ip kube-proxy masquerading mark set mark xor 0x00004000
add rule ip kube-proxy masquerading masquerade fully-random
add rule ip kube-proxy nat-output jump services
add rule ip kube-proxy nat-postrouting jump masquerading
add rule ip kube-proxy nat-prerouting jump services
add rule ip kube-proxy nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports
add rule ip kube-proxy reject-chain reject
add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips
add rule ip kube-proxy services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports
add element ip kube-proxy nodeport-ips { 192.168.0.2 }
add rule ip kube-proxy service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services
"#,
    );
    for (name, ..) in BASE_CHAINS {
        assert!(
            text.contains(&format!("flush chain ip kube-proxy {name}\n")),
            "{name}"
        );
    }
    // Rule order inside a base chain is kube-proxy's.
    let pos = |l: &str| text.find(l).unwrap();
    assert!(
        pos("filter-input ct state new jump nodeport-endpoints-check")
            < pos("filter-input ct state new jump service-endpoints-check")
    );
    assert!(
        pos("filter-output ct state new jump service-endpoints-check")
            < pos("filter-output ct state new jump cluster-ips-check")
    );
    // Without ServiceCIDRs there is no drop rule.
    let none = render(&fake_node(vec![]), None).unwrap().full_transaction();
    assert!(!none.contains("unallocated"));
}

/// K-NFT-T `TestOverallNFTablesRules`: the reference's verbatim highlights (§2.5),
/// and the rest of each service's block, per service type.
#[test]
fn the_six_services_golden() {
    let rules = render(
        &fake_node(six_services()),
        Some("172.30.0.0/16".parse().unwrap()),
    )
    .unwrap();
    let text = rules.full_transaction();
    // §2.5, verbatim.
    assert_has(
        &text,
        r#"
add chain ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 ip daddr 172.30.0.41 ip saddr != 10.0.0.0/8 jump mark-for-masquerade
add rule ip kube-proxy service-ULMVA6XW-ns1/svc1/tcp/p80 numgen random mod 1 vmap { 0 : goto endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 }
add chain ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 ip saddr 10.180.0.1 jump mark-for-masquerade
add rule ip kube-proxy endpoint-5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80 meta l4proto tcp dnat to 10.180.0.1:80
add element ip kube-proxy cluster-ips { 172.30.0.41 }
add element ip kube-proxy service-ips { 172.30.0.41 . tcp . 80 : goto service-ULMVA6XW-ns1/svc1/tcp/p80 }
add element ip kube-proxy no-endpoint-nodeports { tcp . 3001 comment "ns2/svc2:p80" : drop }
add element ip kube-proxy no-endpoint-services { 1.2.3.4 . tcp . 80 comment "ns2/svc2:p80" : drop }
add set ip kube-proxy affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { type ipv4_addr ; flags dynamic,timeout ; timeout 10800s ; }
add rule ip kube-proxy service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 goto endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80
add rule ip kube-proxy endpoint-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 update @affinity-GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80 { ip saddr }
add rule ip kube-proxy firewall-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr != { 203.0.113.0/25 } drop
add element ip kube-proxy firewall-ips { 5.6.7.8 . tcp . 80 : goto firewall-HVFWP5L3-ns5/svc5/tcp/p80 }
add element ip kube-proxy no-endpoint-services { 172.30.0.46 . tcp . 80 comment "ns6/svc6:p80" : goto reject-chain }
"#,
    );
    // svc2: LoadBalancer + external IP, eTP Local, no local endpoint: the external
    // chain short-circuits pod and node traffic and nothing else; outside clients
    // are dropped by the no-endpoint maps.
    assert_has(
        &text,
        r#"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 ip saddr 10.0.0.0/8 goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit pod traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local jump mark-for-masquerade comment "masquerade local traffic"
add rule ip kube-proxy external-42NFTM6N-ns2/svc2/tcp/p80 fib saddr type local goto service-42NFTM6N-ns2/svc2/tcp/p80 comment "short-circuit local traffic"
add element ip kube-proxy service-ips { 192.168.99.22 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-ips { 1.2.3.4 . tcp . 80 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy service-nodeports { tcp . 3001 : goto external-42NFTM6N-ns2/svc2/tcp/p80 }
add element ip kube-proxy no-endpoint-services { 192.168.99.22 . tcp . 80 comment "ns2/svc2:p80" : drop }
"#,
    );
    assert!(
        rules
            .chains_of("ns2/svc2:p80", Protocol::Tcp)
            .iter()
            .all(|c| !c.starts_with("local-"))
    );
    // svc3: NodePort, Cluster policy.
    assert_has(
        &text,
        r#"
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 jump mark-for-masquerade
add rule ip kube-proxy external-4AT6LBPK-ns3/svc3/tcp/p80 goto service-4AT6LBPK-ns3/svc3/tcp/p80
add element ip kube-proxy service-nodeports { tcp . 3003 : goto external-4AT6LBPK-ns3/svc3/tcp/p80 }
"#,
    );
    // svc4: external IP, two endpoints, uniform choice.
    assert_has(
        &text,
        r#"
add rule ip kube-proxy service-LAUZTJTB-ns4/svc4/tcp/p80 numgen random mod 2 vmap { 0 : goto endpoint-UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80 , 1 : goto endpoint-5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80 }
add element ip kube-proxy service-ips { 192.168.99.33 . tcp . 80 : goto external-LAUZTJTB-ns4/svc4/tcp/p80 }
"#,
    );
    // svc5: affinity rule before the numgen rule; the firewall chain exists.
    let svc5 = rules.chains_of("ns5/svc5:p80", Protocol::Tcp);
    assert!(
        svc5.contains(&"firewall-HVFWP5L3-ns5/svc5/tcp/p80"),
        "{svc5:?}"
    );
    let pos = |l: &str| text.find(l).unwrap_or_else(|| panic!("{l}"));
    assert!(
        pos("service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity")
            < pos("service-HVFWP5L3-ns5/svc5/tcp/p80 numgen random mod 1")
    );
    assert!(
        pos("add set ip kube-proxy affinity-GTK6MW7G")
            < pos("service-HVFWP5L3-ns5/svc5/tcp/p80 ip saddr @affinity")
    );
    // svc6: no endpoints: no chain at all, only the reject element.
    assert!(rules.chains_of("ns6/svc6:p80", Protocol::Tcp).is_empty());
    // Every chain a rule or element refers to is declared before it.
    let mut declared: HashSet<&str> = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("add chain ip kube-proxy ") {
            declared.insert(rest.split(' ').next().unwrap());
        }
        let words: Vec<&str> = line.split(' ').collect();
        for w in words.windows(2).filter(|w| w[0] == "goto") {
            assert!(
                declared.contains(w[1]),
                "{} used before declared in: {line}",
                w[1]
            );
        }
    }
}

#[test]
fn internal_traffic_policy_local_and_etp_local_with_a_local_endpoint() {
    // iTP Local: ClusterIP traffic goes to the local chain; a node without a local
    // endpoint drops it.
    let mut itp = svc(
        "ns1",
        "itp",
        "172.30.0.50",
        &[("10.0.1.1", Some("test-node")), ("10.0.2.1", Some("other"))],
    );
    itp.internal_policy_local = true;
    let mut etp = svc(
        "ns1",
        "etp",
        "172.30.0.51",
        &[("10.0.1.2", Some("test-node")), ("10.0.2.2", Some("other"))],
    );
    etp.node_port = Some(30051);
    etp.external_policy_local = true;
    let text = render(&fake_node(vec![itp.clone(), etp]), None)
        .unwrap()
        .full_transaction();
    let itp_base = service_port_chain_base("ns1", "itp", Protocol::Tcp, Some("p80"));
    assert!(text.contains(&format!(
        "add element ip kube-proxy service-ips {{ 172.30.0.50 . tcp . 80 : goto local-{itp_base} }}"
    )));
    assert!(text.contains(&format!("add rule ip kube-proxy local-{itp_base} ip daddr 172.30.0.50 ip saddr != 10.0.0.0/8 jump mark-for-masquerade")));
    assert!(text.contains(&format!(
        "add rule ip kube-proxy local-{itp_base} numgen random mod 1 vmap"
    )));
    assert!(!text.contains(&format!("service-{itp_base}")), "{text}");
    let etp_base = service_port_chain_base("ns1", "etp", Protocol::Tcp, Some("p80"));
    assert_has(
        &text,
        &format!(
            "add rule ip kube-proxy external-{etp_base} goto local-{etp_base}\n\
                 add rule ip kube-proxy local-{etp_base} numgen random mod 1 vmap {{ 0 : goto endpoint-{} }}",
            endpoint_chain_base(
                "ns1",
                "etp",
                Protocol::Tcp,
                Some("p80"),
                "10.0.1.2".parse().unwrap(),
                80
            )
        ),
    );
    assert!(text.contains(&format!(
        "add rule ip kube-proxy service-{etp_base} numgen random mod 2 vmap"
    )));

    let mut away = fake_node(vec![itp]);
    away.node = "third".into();
    let text = render(&away, None).unwrap().full_transaction();
    assert!(text.contains("add element ip kube-proxy no-endpoint-services { 172.30.0.50 . tcp . 80 comment \"ns1/itp:p80\" : drop }"));
    assert!(!text.contains("add chain ip kube-proxy local-"));
}

#[test]
fn masquerade_all_and_no_local_detector() {
    let mut input = fake_node(vec![svc("ns1", "a", "172.30.0.60", &[("10.0.0.9", None)])]);
    input.cluster_cidr = None;
    let text = render(&input, None).unwrap().full_transaction();
    assert!(!text.contains("ip saddr !="));
    input.config.masquerade_all = true;
    let text = render(&input, None).unwrap().full_transaction();
    assert!(text.contains("ip daddr 172.30.0.60 jump mark-for-masquerade"));
    input.config.masquerade_bit = 40;
    assert!(render(&input, None).is_err());
}

#[test]
fn output_is_deterministic_and_duplicates_refused() {
    let mut a = six_services();
    let one = render(&fake_node(a.clone()), None).unwrap();
    a.reverse();
    for s in &mut a {
        s.endpoints.reverse();
    }
    assert_eq!(
        render(&fake_node(a.clone()), None)
            .unwrap()
            .full_transaction(),
        one.full_transaction()
    );
    a.push(a[0].clone());
    assert!(matches!(
        render(&fake_node(a), None),
        Err(ProxyError::DuplicatePort(..))
    ));
}

fn many(n: usize, eps: usize) -> Vec<ServicePort> {
    (0..n)
        .map(|i| {
            let mut s = ServicePort::cluster_ip(
                "bench",
                &format!("svc-{i}"),
                Some("http"),
                Protocol::Tcp,
                Ipv4Addr::from(u32::from(ip("172.30.0.0")) + i as u32 + 1),
                80,
            );
            s.endpoints = (0..eps)
                .map(|k| {
                    Endpoint::ready(
                        Ipv4Addr::from(u32::from(ip("10.1.0.0")) + (i * 4 + k) as u32),
                        8080,
                        None,
                    )
                })
                .collect();
            s
        })
        .collect()
}

/// One endpoint added to one of 100 services: the partial sync rewrites that
/// service's chains (the new endpoint chain among them) and writes no element.
#[test]
fn incremental_adds_one_endpoint_without_rewriting_the_world() {
    let before_input = fake_node(many(100, 2));
    let before = render(&before_input, None).unwrap();
    let mut after_input = before_input.clone();
    after_input.services[42]
        .endpoints
        .push(Endpoint::ready(ip("10.9.9.9"), 8080, None));
    let after = render(&after_input, None).unwrap();
    let inc = after.incremental_transaction(&before);
    let full = after.full_transaction();
    assert!(
        inc.len() * 20 < full.len(),
        "{} vs {}",
        inc.len(),
        full.len()
    );
    assert!(inc.contains("dnat to 10.9.9.9:8080"));
    assert!(inc.lines().all(|l| l.contains("/svc-42/")), "{inc}");
    assert!(!inc.contains("add element"));
    assert!(!inc.contains("flush map"));
    // Nothing changed: nothing written.
    assert_eq!(after.incremental_transaction(&after), "");
}

#[test]
fn incremental_removes_services_endpoints_and_elements() {
    let mut services = many(3, 2);
    services[1].session_affinity = SessionAffinity::ClientIp {
        timeout_seconds: 60,
    };
    let before = render(&fake_node(services.clone()), None).unwrap();
    // svc-1 loses all its endpoints; svc-2 goes away.
    services[1].endpoints.clear();
    services.pop();
    let after = render(&fake_node(services), None).unwrap();
    let inc = after.incremental_transaction(&before);
    let b1 = service_port_chain_base("bench", "svc-1", Protocol::Tcp, Some("http"));
    let b2 = service_port_chain_base("bench", "svc-2", Protocol::Tcp, Some("http"));
    assert_has(
        &inc,
        &format!(
            "delete element ip kube-proxy service-ips {{ 172.30.0.2 . tcp . 80 }}\n\
                 add element ip kube-proxy no-endpoint-services {{ 172.30.0.2 . tcp . 80 comment \"bench/svc-1:http\" : goto reject-chain }}\n\
                 delete element ip kube-proxy cluster-ips {{ 172.30.0.3 }}\n\
                 delete element ip kube-proxy service-ips {{ 172.30.0.3 . tcp . 80 }}\n\
                 flush chain ip kube-proxy service-{b1}\n\
                 delete chain ip kube-proxy service-{b1}\n\
                 delete chain ip kube-proxy service-{b2}"
        ),
    );
    assert_eq!(inc.matches("delete set ip kube-proxy affinity-").count(), 2);
    // Flushes come before deletes, and element deletes before both.
    let pos = |l: &str| inc.find(l).unwrap();
    assert!(pos("delete element") < pos("flush chain"));
    assert!(inc.rfind("flush chain").unwrap() < pos("delete chain"));
    // A full sync on a node holding the old chains removes them too.
    let old_chains: Vec<String> = before
        .active_chains()
        .into_iter()
        .map(str::to_string)
        .collect();
    let old_sets: Vec<String> = before
        .affinity_sets()
        .into_iter()
        .map(str::to_string)
        .collect();
    let full = after.full_transaction_replacing(
        old_chains.iter().map(String::as_str),
        old_sets.iter().map(String::as_str),
    );
    assert!(full.contains(&format!("delete chain ip kube-proxy service-{b2}")));
    assert!(
        !full.contains("delete chain ip kube-proxy service-")
            || full.matches("delete chain").count() == 6
    );
}

#[test]
fn listings_are_normalised() {
    let listing = "table ip kube-proxy {\n\tset cluster-ips {\n\t\ttype ipv4_addr\n\t\telements = { 10.96.0.7, 10.96.0.50,\n\t\t\t     10.96.0.200 }\n\t}\n\tset affinity-X {\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 3h\n\t\telements = { 10.0.0.2 expires 2h59m58s }\n\t}\n\tchain a/b {   \n\t}\n}\n";
    let n = normalise_listing(listing);
    assert_eq!(
        n,
        "table ip kube-proxy {\n\tset cluster-ips {\n\t\ttype ipv4_addr\n\t\telements = { 10.96.0.200,\n\t\t\t     10.96.0.50,\n\t\t\t     10.96.0.7 }\n\t}\n\tset affinity-X {\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t\ttimeout 3h\n\t\telements = { 10.0.0.2 }\n\t}\n\tchain a/b {\n\t}\n}\n"
    );
    let (chains, sets) = listed_names(listing);
    assert_eq!(chains, ["a/b"]);
    assert_eq!(sets, ["cluster-ips", "affinity-X"]);
}
