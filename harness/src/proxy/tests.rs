//! The proxies' syncs against the recording fake: what each mode runs, in which order,
//! on a node's first sync and later ones; that an unchanged node is left alone; and that
//! a node whose sync failed is reported by name and started up again next time.

use std::sync::Arc;

use sim::objects::ClusterObjects;
use sim::plan::Plan;
use sim::scenario::{IpvsConfig, IpvsFallback};

use super::iptables::IptablesProxy;
use super::ipvs::IpvsProxy;
use super::nftables::NftablesProxy;
use super::userspace::UserspaceProxy;
use super::{ProxyError, ServiceProxy};
use crate::fixtures;
use crate::system::fake::{Call, Fake};
use crate::system::{NsRef, Tool};

struct Setup {
    plan: Plan,
    /// One Service over x/a.
    one: ClusterObjects,
    /// The same and a second Service over x/b.
    two: ClusterObjects,
    nodes: Vec<(String, NsRef)>,
    fake: Arc<Fake>,
}

fn setup(fake: Fake) -> Setup {
    let (plan, objects) = fixtures::standard();
    let one = fixtures::with(&objects, &fixtures::service("web", "10.96.0.10", "a"));
    let two = fixtures::with(&one, &fixtures::service("api", "10.96.0.11", "b"));
    let nodes = fixtures::nodes(&plan);
    Setup {
        plan,
        one,
        two,
        nodes,
        fake: Arc::new(fake),
    }
}

impl Setup {
    fn ns(&self, i: usize) -> String {
        self.nodes[i].1.name().to_string()
    }

    fn route(&self) -> String {
        format!("route {} dev eth0", self.plan.service_cidr)
    }
}

#[test]
fn iptables_starts_a_node_up_then_syncs_partially_and_skips_unchanged_nodes() {
    let s = setup(Fake::new());
    let mut p = IptablesProxy::with_system(s.fake.clone());
    let r = p.sync_refs(&s.plan, &s.nodes, &s.one).unwrap();
    assert!(r.nodes.iter().all(|n| n.changed && n.full));
    for i in 0..2 {
        assert_eq!(
            s.fake.take_summaries(&s.ns(i)),
            [
                s.route(),
                "iptables-nft-save -t nat".into(),
                "iptables-nft-restore --noflush".into()
            ]
        );
    }
    let r = p.sync_refs(&s.plan, &s.nodes, &s.one).unwrap();
    assert!(!r.changed());
    assert_eq!(s.fake.calls(), []);

    let r = p.sync_refs(&s.plan, &s.nodes, &s.two).unwrap();
    assert!(r.nodes.iter().all(|n| n.changed && !n.full));
    for i in 0..2 {
        assert_eq!(
            s.fake.take_summaries(&s.ns(i)),
            ["iptables-nft-restore --noflush"]
        );
    }
}

#[test]
fn iptables_reports_each_failed_node_and_starts_it_up_again() {
    let s = setup(Fake::new());
    let mut p = IptablesProxy::with_system(s.fake.clone());
    let n1 = s.ns(0);
    let failing = n1.clone();
    s.fake.fail_next(
        move |c| c.is_run(&failing, Tool::IptablesRestore),
        "iptables-restore: line 3 failed",
    );
    let err = p.sync_refs(&s.plan, &s.nodes, &s.one).unwrap_err();
    let ProxyError::Sync { errors, .. } = &err else {
        panic!("not a sync error: {err}");
    };
    assert_eq!(errors.nodes().collect::<Vec<_>>(), ["n1"]);
    assert!(
        err.to_string().starts_with(
            "service proxy sync failed:\n  node n1: load kube-proxy's rules into node n1: \
             `iptables-nft-restore --noflush` failed"
        ),
        "{err}"
    );
    s.fake.take_calls();
    // n2 is known and unchanged; n1 starts up again (a full sync).
    let r = p.sync_refs(&s.plan, &s.nodes, &s.one).unwrap();
    assert_eq!(s.fake.take_summaries(&s.ns(1)), Vec::<String>::new());
    assert_eq!(s.fake.take_summaries(&n1).len(), 3);
    assert_eq!(
        r.nodes
            .iter()
            .map(|n| (n.changed, n.full))
            .collect::<Vec<_>>(),
        [(true, true), (false, false)]
    );
}

#[test]
fn iptables_on_a_node_started_before_replaces_instead_of_bootstrapping() {
    let s = setup(Fake::new());
    let n1 = s.ns(0);
    s.fake.prints(
        &n1,
        Tool::IptablesSave,
        &["-t", "nat"],
        "*nat\n:KUBE-PROXY-CANARY - [0:0]\n:KUBE-SVC-OLD - [0:0]\nCOMMIT\n",
    );
    let mut p = IptablesProxy::with_system(s.fake.clone());
    p.sync_refs(&s.plan, &s.nodes, &s.one).unwrap();
    let restore = |ns: &str| {
        s.fake
            .calls()
            .into_iter()
            .find_map(|c| match c {
                Call::Run {
                    ns: n,
                    tool: Tool::IptablesRestore,
                    stdin,
                    ..
                } if n == ns => stdin,
                _ => None,
            })
            .unwrap()
    };
    // Started before: no new jumps, and the stale chain is deleted.
    assert!(restore(&n1).contains("-X KUBE-SVC-OLD"), "{}", restore(&n1));
    assert!(!restore(&n1).contains("-I PREROUTING"));
    assert!(restore(&s.ns(1)).contains("KUBE-PROXY-CANARY"));
}

#[test]
fn nftables_loads_one_transaction_per_changed_node() {
    let s = setup(Fake::new());
    let mut p = NftablesProxy::with_system(s.fake.clone());
    p.sync_refs(&s.plan, &s.nodes, &s.one).unwrap();
    assert_eq!(
        s.fake.take_summaries(&s.ns(0)),
        [s.route(), "nft list tables ip".into(), "nft -f -".into()]
    );
    s.fake.take_calls();
    p.sync_refs(&s.plan, &s.nodes, &s.one).unwrap();
    assert_eq!(s.fake.calls(), []);
    let r = p.sync_refs(&s.plan, &s.nodes, &s.two).unwrap();
    assert!(r.nodes.iter().all(|n| n.changed && !n.full));
    assert_eq!(s.fake.take_summaries(&s.ns(1)), ["nft -f -"]);
}

#[test]
fn ipvs_without_the_kernel_module_fails_or_falls_back_as_the_scenario_says() {
    let s = setup(Fake::new());
    let mut fail = IpvsProxy::with_system(IpvsConfig::default(), s.fake.clone());
    assert!(!fail.available());
    let err = fail.sync_refs(&s.plan, &s.nodes, &s.one).unwrap_err();
    assert!(matches!(err, ProxyError::IpvsMissing { .. }), "{err}");
    assert_eq!(err.to_string(), super::ipvs::missing_message());
    assert_eq!(s.fake.take_calls(), [Call::IpvsFamily]);

    let config = IpvsConfig {
        fallback: IpvsFallback::Iptables,
        ..IpvsConfig::default()
    };
    let mut fallback = IpvsProxy::with_system(config, s.fake.clone());
    fallback.sync_refs(&s.plan, &s.nodes, &s.one).unwrap();
    assert_eq!(
        s.fake.take_summaries(&s.ns(0)),
        [
            s.route(),
            "iptables-nft-save -t nat".into(),
            "iptables-nft-restore --noflush".into()
        ]
    );
}

#[test]
fn ipvs_with_the_kernel_module_programs_the_node_in_kube_proxys_order() {
    let s = setup(Fake::new().with_ipvs(42));
    let mut p = IpvsProxy::with_system(IpvsConfig::default(), s.fake.clone());
    assert!(p.available());
    s.fake.take_calls();
    p.sync_refs(&s.plan, &s.nodes, &s.one).unwrap();
    let n1 = s.fake.take_summaries(&s.ns(0));
    let at = |what: &str| {
        n1.iter()
            .position(|c| c.starts_with(what))
            .unwrap_or_else(|| panic!("no {what} in {n1:?}"))
    };
    assert_eq!(at("route"), 0);
    assert!(at("sysctl net/ipv4/vs/conntrack=1") < at("dummy kube-ipvs0"));
    assert!(at("dummy kube-ipvs0") < at("address 10.96.0.10/32 on kube-ipvs0"));
    assert!(at("address 10.96.0.10/32") < at("ipset restore -exist"));
    assert!(at("ipset restore -exist") < at("iptables-nft-restore --noflush"));
    assert!(at("iptables-nft-restore --noflush") < at("ipvs "));
    assert_eq!(n1.last().map(String::as_str), Some("ipvs 1 servers"));
    s.fake.take_calls();

    p.sync_refs(&s.plan, &s.nodes, &s.one).unwrap();
    assert_eq!(s.fake.calls(), []);
    // A Service more: its address is bound, no start-up again, the table rewritten.
    p.sync_refs(&s.plan, &s.nodes, &s.two).unwrap();
    let n1 = s.fake.take_summaries(&s.ns(0));
    assert!(
        !n1.iter()
            .any(|c| c.starts_with("route") || c.starts_with("dummy"))
    );
    assert!(n1.contains(&"address 10.96.0.11/32 on kube-ipvs0".to_string()));
    assert_eq!(n1.last().map(String::as_str), Some("ipvs 2 servers"));
    s.fake.take_calls();
    // Back to one: the stale address is unbound.
    p.sync_refs(&s.plan, &s.nodes, &s.one).unwrap();
    let n1 = s.fake.take_summaries(&s.ns(0));
    assert!(n1.contains(&"address 10.96.0.11/32 off kube-ipvs0".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userspace_inserts_its_jumps_once_and_rewrites_portals_only_on_change() {
    // Services whose selector matches no pod: no endpoints, so no socket is opened (the
    // fake has no namespace to open one in).
    let (plan, objects) = fixtures::standard();
    let one = fixtures::with(&objects, &fixtures::service("web", "10.96.0.10", "none"));
    let two = fixtures::with(&one, &fixtures::service("api", "10.96.0.11", "none"));
    let nodes = fixtures::nodes(&plan);
    let fake = Arc::new(Fake::new());
    let mut p = UserspaceProxy::with_system(fake.clone());
    tokio::task::block_in_place(|| {
        let r = p.sync_refs(&plan, &nodes, &one).unwrap();
        assert!(r.nodes.iter().all(|n| n.changed && n.full));
        assert_eq!(
            fake.take_summaries(nodes[0].1.name()),
            [
                format!("route {} dev eth0", plan.service_cidr),
                "iptables-nft-save -t nat".into(),
                "iptables-nft-restore --noflush".into(),
                "iptables-nft-restore --noflush".into()
            ]
        );
        fake.take_calls();
        assert!(!p.sync_refs(&plan, &nodes, &one).unwrap().changed());
        assert_eq!(fake.calls(), []);
        let r = p.sync_refs(&plan, &nodes, &two).unwrap();
        assert!(r.nodes.iter().all(|n| n.changed && !n.full));
        assert_eq!(
            fake.take_summaries(nodes[1].1.name()),
            ["iptables-nft-restore --noflush"]
        );
    });
}
