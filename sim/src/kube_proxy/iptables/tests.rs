//! The renderer against kube-proxy's own rules, one service type at a time.

use super::*;
use crate::kube_proxy::model::{Endpoint, masquerade_mark};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn input(services: Vec<ServicePort>) -> ProxyInput {
    ProxyInput {
        node: "n1".into(),
        node_ip: ip("192.168.0.11"),
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        config: ProxyConfig::default(),
        services,
    }
}

fn web(endpoints: Vec<Endpoint>) -> ServicePort {
    let mut sp = ServicePort::cluster_ip(
        "default",
        "web",
        Some("http"),
        Protocol::Tcp,
        ip("10.96.0.10"),
        80,
    );
    sp.endpoints = endpoints;
    sp
}

fn lines_with<'a>(text: &'a str, needle: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn probabilities_are_written_and_read_back_like_kube_proxy_and_iptables() {
    assert_eq!(probability(2), "0.5000000000");
    assert_eq!(probability(3), "0.3333333333");
    assert_eq!(probability(4), "0.2500000000");
    assert_eq!(probability(7), "0.1428571429");
    // An exact tie at the 10th decimal rounds to even, as Go's %0.10f does.
    assert_eq!(probability(2048), "0.0004882812");
    // The reference's verified re-printings (§1.6), and one captured on this machine.
    for (written, saved) in [
        ("0.5000000000", "0.50000000000"),
        ("0.3333333333", "0.33333333349"),
        ("0.2000000000", "0.20000000019"),
        ("0.1428571429", "0.14285714272"),
        ("0.0010010010", "0.00100100087"),
        ("0.2500000000", "0.25000000000"),
    ] {
        assert_eq!(
            saved_probability(written).as_deref(),
            Some(saved),
            "{written}"
        );
        // Reading the saved form back gives it again.
        assert_eq!(saved_probability(saved).as_deref(), Some(saved));
    }
    assert_eq!(saved_probability("1.5"), None);
    assert_eq!(saved_probability("x"), None);
}

#[test]
fn mark_is_formatted_like_go() {
    assert_eq!(masquerade_mark(14), "0x00004000");
    assert_eq!(masquerade_mark(0), "0x00000001");
    assert_eq!(masquerade_mark(31), "0x80000000");
    let mut i = input(vec![]);
    i.config.masquerade_bit = 32;
    assert_eq!(render(&i), Err(ProxyError::MasqueradeBit(32)));
}

#[test]
fn jumps_end_up_in_the_reference_order() {
    let order: Vec<String> = installed_jumps()
        .iter()
        .map(|j| format!("{} {} {}", j.table, j.source, j.target))
        .collect();
    assert_eq!(
        order,
        [
            "filter INPUT KUBE-FIREWALL",
            "filter INPUT KUBE-PROXY-FIREWALL",
            "filter INPUT KUBE-NODEPORTS",
            "filter INPUT KUBE-EXTERNAL-SERVICES",
            "filter FORWARD KUBE-PROXY-FIREWALL",
            "filter FORWARD KUBE-FORWARD",
            "filter FORWARD KUBE-SERVICES",
            "filter FORWARD KUBE-EXTERNAL-SERVICES",
            "filter OUTPUT KUBE-FIREWALL",
            "filter OUTPUT KUBE-PROXY-FIREWALL",
            "filter OUTPUT KUBE-SERVICES",
            "nat PREROUTING KUBE-SERVICES",
            "nat OUTPUT KUBE-SERVICES",
            "nat POSTROUTING KUBE-POSTROUTING",
        ]
    );
    // Replaying the inserts gives the same order (the model inserts at position 1).
    let mut state = IptablesState::new();
    state.apply_restore(&bootstrap_restore(false)).unwrap();
    let saved = state.save();
    let filter = saved.split("*nat").next().unwrap_or_default();
    let jumps: Vec<&str> = filter
        .lines()
        .filter(|l| {
            l.starts_with("-A INPUT") || l.starts_with("-A FORWARD") || l.starts_with("-A OUTPUT")
        })
        .collect();
    assert_eq!(jumps.len(), 11);
    assert!(jumps[0].ends_with("-j KUBE-FIREWALL"));
    assert_eq!(
        JUMP_CHAINS[0].args(),
        [
            "-m",
            "conntrack",
            "--ctstate",
            "NEW",
            "-m",
            "comment",
            "--comment",
            "kubernetes externally-visible service portals",
            "-j",
            "KUBE-EXTERNAL-SERVICES"
        ]
    );
}

#[test]
fn normalise_rule_follows_iptables_save() {
    let cases = [
        (
            "-A KUBE-SVC-X -m comment --comment \"ns/a:p cluster IP\" -m tcp -p tcp -d 10.96.0.50 --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ",
            "-A KUBE-SVC-X ! -s 10.244.0.0/16 -d 10.96.0.50/32 -p tcp -m comment --comment \"ns/a:p cluster IP\" -m tcp --dport 80 -j KUBE-MARK-MASQ",
        ),
        (
            "-A KUBE-MARK-MASQ -j MARK --or-mark 0x00004000",
            "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        ),
        (
            "-A KUBE-POSTROUTING -j MARK --xor-mark 0x00004000",
            "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        ),
        (
            "-A KUBE-POSTROUTING -m mark ! --mark 0x00004000/0x00004000 -j RETURN",
            "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        ),
        (
            "-A KUBE-SEP-Y -m comment --comment ns/a:p -m recent --name KUBE-SEP-Y --set -m udp -p udp -j DNAT --to-destination 10.0.0.1:80",
            "-A KUBE-SEP-Y -p udp -m comment --comment \"ns/a:p\" -m recent --set --name KUBE-SEP-Y --mask 255.255.255.255 --rsource -m udp -j DNAT --to-destination 10.0.0.1:80",
        ),
        (
            "-A KUBE-SVC-X -m comment --comment \"ns/a:p -> 10.0.0.1:80\" -m recent --name KUBE-SEP-Y --rcheck --seconds 10800 --reap -j KUBE-SEP-Y",
            "-A KUBE-SVC-X -m comment --comment \"ns/a:p -> 10.0.0.1:80\" -m recent --rcheck --seconds 10800 --reap --name KUBE-SEP-Y --mask 255.255.255.255 --rsource -j KUBE-SEP-Y",
        ),
        (
            "-A KUBE-SERVICES -m comment --comment \"ns/a:p has no endpoints\" -m tcp -p tcp -d 10.96.0.1 --dport 80 -j REJECT",
            "-A KUBE-SERVICES -d 10.96.0.1/32 -p tcp -m comment --comment \"ns/a:p has no endpoints\" -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable",
        ),
        (
            "-A KUBE-FW-X -m comment --comment \"other traffic to ns/a:p will be dropped by KUBE-PROXY-FIREWALL\"",
            "-A KUBE-FW-X -m comment --comment \"other traffic to ns/a:p will be dropped by KUBE-PROXY-FIREWALL\"",
        ),
        (
            "-A KUBE-SERVICES -m comment --comment x -d 10.1.2.3/8 -j KUBE-NODEPORTS",
            "-A KUBE-SERVICES -d 10.0.0.0/8 -m comment --comment x -j KUBE-NODEPORTS",
        ),
        (
            "-A KUBE-SVC-X -m statistic --mode random --probability 0.0010010010 -j KUBE-SEP-Y",
            "-A KUBE-SVC-X -m statistic --mode random --probability 0.00100100087 -j KUBE-SEP-Y",
        ),
    ];
    for (written, saved) in cases {
        assert_eq!(normalise_rule(written), saved);
        assert_eq!(normalise_rule(saved), saved, "not idempotent");
    }
    assert_eq!(normalise_rule("COMMIT"), "COMMIT");
}

#[test]
fn restore_model_refuses_what_the_kernel_refuses() {
    let mut s = IptablesState::new();
    // A jump to a chain declared later in the section fails (checked on this
    // machine with iptables-nft 1.8.9).
    let e = s
        .apply_restore("*nat\n:A - [0:0]\n-A A -j B\n:B - [0:0]\nCOMMIT\n")
        .unwrap_err();
    assert_eq!(e.line, 3);
    assert!(s.save().is_empty(), "a failed section must not be applied");
    s.apply_restore("*nat\n:A - [0:0]\n:B - [0:0]\n-A A -j B\nCOMMIT\n")
        .unwrap();
    // Deleting a referenced chain fails; flushing the referrer first works.
    assert!(s.apply_restore("*nat\n:B - [0:0]\n-X B\nCOMMIT\n").is_err());
    s.apply_restore("*nat\n:A - [0:0]\n:B - [0:0]\n-X B\nCOMMIT\n")
        .unwrap();
    assert_eq!(s.chains(Table::Nat), ["A"]);
    assert!(
        s.apply_restore("*nat\n-A NOPE -j ACCEPT\nCOMMIT\n")
            .is_err()
    );
    assert!(s.apply_restore("*nat\n:A - [0:0]\n").is_err());
}

#[test]
fn endpoint_conditions_follow_categorize_endpoints() {
    let local_ready = Endpoint::ready(ip("10.244.1.2"), 80, Some("n1"));
    let remote_ready = Endpoint::ready(ip("10.244.2.2"), 80, Some("n2"));
    let local_term = Endpoint::terminating(ip("10.244.1.3"), 80, Some("n1"), true);
    let remote_term_not_serving = Endpoint::terminating(ip("10.244.2.3"), 80, Some("n2"), false);
    let mut not_ready = Endpoint::ready(ip("10.244.2.4"), 80, Some("n2"));
    not_ready.ready = false;
    not_ready.serving = false;

    // Ready endpoints win; terminating and not-ready ones are left out.
    let rules = render(&input(vec![web(vec![
        local_ready.clone(),
        remote_ready.clone(),
        local_term.clone(),
        not_ready.clone(),
    ])]))
    .unwrap();
    let text = rules.full_restore();
    assert_eq!(lines_with(&text, "-j DNAT").len(), 2);
    assert!(!text.contains("10.244.1.3"));
    // Not-ready endpoints still count for the large-cluster threshold.
    assert_eq!(rules.total_endpoints, 4);

    // No ready endpoint anywhere: serving + terminating ones take over.
    let text = render(&input(vec![web(vec![
        local_term.clone(),
        remote_term_not_serving.clone(),
        not_ready.clone(),
    ])]))
    .unwrap()
    .full_restore();
    assert_eq!(lines_with(&text, "-j DNAT").len(), 1);
    assert!(text.contains("--to-destination 10.244.1.3:80"));

    // Nothing usable: the service rejects.
    let text = render(&input(vec![web(vec![remote_term_not_serving, not_ready])]))
        .unwrap()
        .full_restore();
    assert!(text.contains("has no endpoints\" -m tcp -p tcp -d 10.96.0.10 --dport 80 -j REJECT"));
    assert!(!text.contains("KUBE-SVC-"));

    // internalTrafficPolicy Local: the local terminating endpoint is used when this
    // node has no ready local endpoint, even though a remote one is ready.
    let mut sp = web(vec![remote_ready, local_term]);
    sp.internal_policy_local = true;
    let text = render(&input(vec![sp])).unwrap().full_restore();
    assert!(text.contains("-j KUBE-SVL-"));
    assert!(!text.contains(":KUBE-SVC-"));
    assert_eq!(lines_with(&text, "-j DNAT").len(), 1);
    assert!(text.contains("--to-destination 10.244.1.3:80"));
}

#[test]
fn endpoints_are_sorted_and_deduplicated_like_kube_proxy() {
    let eps = vec![
        Endpoint::ready(ip("10.244.1.10"), 80, Some("n2")),
        Endpoint::ready(ip("10.244.1.9"), 80, Some("n2")),
        Endpoint::ready(ip("10.244.1.10"), 80, Some("n1")),
    ];
    let sp = web(eps);
    let list = endpoint_list(&sp, "n1");
    // String order: "10.244.1.10:80" < "10.244.1.9:80"; the local copy is kept.
    assert_eq!(
        list.iter()
            .map(|e| (e.text.as_str(), e.local))
            .collect::<Vec<_>>(),
        [("10.244.1.10:80", true), ("10.244.1.9:80", false)]
    );
}

#[test]
fn duplicate_ports_are_refused_and_headless_ports_ignored() {
    let a = web(vec![]);
    assert!(matches!(
        render(&input(vec![a.clone(), a.clone()])),
        Err(ProxyError::DuplicatePort(..))
    ));
    let mut udp = a.clone();
    udp.protocol = Protocol::Udp;
    assert!(render(&input(vec![a.clone(), udp])).is_ok());
    let mut headless = a;
    headless.cluster_ip = None;
    headless.endpoints = vec![Endpoint::ready(ip("10.244.1.2"), 80, Some("n1"))];
    let rules = render(&input(vec![headless.clone(), headless])).unwrap();
    assert_eq!(rules.total_endpoints, 0);
    assert!(!rules.full_restore().contains("default/web"));
}

#[test]
fn masquerade_all_and_no_detector() {
    let sp = web(vec![Endpoint::ready(ip("10.244.1.2"), 80, Some("n1"))]);
    let mut i = input(vec![sp]);
    i.config.masquerade_all = true;
    let text = render(&i).unwrap().full_restore();
    assert!(text.contains("--dport 80 -j KUBE-MARK-MASQ"));
    assert!(!text.contains("! -s 10.244"));
    i.config.masquerade_all = false;
    i.cluster_cidr = None;
    let text = render(&i).unwrap().full_restore();
    assert!(!text.contains("--dport 80 -j KUBE-MARK-MASQ"));
    assert!(!text.contains("! -s 10.244"));
}

#[test]
fn localhost_nodeports_off_and_liberal_conntrack() {
    let mut i = input(vec![]);
    i.config.localhost_nodeports = false;
    i.config.conntrack_tcp_be_liberal = true;
    i.config.random_fully = false;
    let text = render(&i).unwrap().full_restore();
    assert!(!text.contains("KUBE-FIREWALL"));
    assert!(text.contains("-m addrtype --dst-type LOCAL ! -d 127.0.0.0/8 -j KUBE-NODEPORTS"));
    assert!(!text.contains("INVALID"));
    assert!(text.contains("-j MASQUERADE\n"));
}

#[test]
fn large_cluster_mode_drops_endpoint_comments() {
    let make = |n: usize| {
        let eps = (0..n)
            .map(|k| Endpoint::ready(Ipv4Addr::from(0x0af4_0000u32 + k as u32), 80, Some("n2")))
            .collect();
        render(&input(vec![web(eps)])).unwrap()
    };
    let at = make(LARGE_CLUSTER_ENDPOINTS_THRESHOLD);
    assert!(!at.large_cluster);
    let text = at.full_restore();
    assert!(text.contains("-A KUBE-SEP-"));
    assert!(
        lines_with(&text, "-A KUBE-SEP-")
            .iter()
            .all(|l| l.contains("--comment"))
    );
    let over = make(LARGE_CLUSTER_ENDPOINTS_THRESHOLD + 1);
    assert!(over.large_cluster);
    let text = over.full_restore();
    assert!(
        lines_with(&text, "-A KUBE-SEP-")
            .iter()
            .all(|l| !l.contains("--comment"))
    );
    assert!(
        lines_with(&text, "-j KUBE-SEP-")
            .iter()
            .all(|l| !l.contains("--comment"))
    );
    // Service-level rules keep theirs.
    assert!(text.contains("\"default/web:http cluster IP\""));
    let mut state = IptablesState::new();
    state.apply_restore(&text).unwrap();
}

#[test]
fn rendering_is_deterministic_whatever_the_input_order() {
    let eps = vec![
        Endpoint::ready(ip("10.244.2.7"), 80, Some("n2")),
        Endpoint::ready(ip("10.244.1.5"), 80, Some("n1")),
    ];
    let mut a = web(eps.clone());
    let mut b = ServicePort::cluster_ip("apps", "api", None, Protocol::Udp, ip("10.96.0.11"), 53);
    b.endpoints = eps.clone();
    let one = render(&input(vec![a.clone(), b.clone()]))
        .unwrap()
        .full_restore();
    a.endpoints.reverse();
    b.endpoints.reverse();
    let two = render(&input(vec![b, a])).unwrap().full_restore();
    assert_eq!(one, two);
    // apps/api sorts before default/web.
    assert!(one.find("apps/api").unwrap() < one.find("default/web").unwrap());
}
