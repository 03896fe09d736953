//! Nodes joining a running cluster ([`Cluster::join_node`]) against the real kernel, in
//! both network modes: after the join `verify` finds on every node (and on the router) the
//! entries towards the new node and on the new node those towards all the others, pods on
//! it reach and are reached from pods on the old nodes and an external host, and teardown
//! leaves nothing of it behind. Then `scenarios/node-join.yaml` (a vxlan scenario, run by
//! the scenario suite) once more in host-gw mode. Needs root and the CNI plugins: ignored
//! unless run with `--include-ignored` (see `common`).

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use harness::cluster::Cluster;
use harness::netns;
use sim::objects::PodRef;
use sim::plan::Plan;
use sim::scenario::NetworkMode;

/// Two nodes and an external host, planned through the scenario parser (so the
/// defaults are a scenario's).
fn plan(prefix: &str, network: &str) -> Plan {
    let text = format!(
        "name: t\nsummary: t\ncluster:\n  nodes: 2\n  network: {network}\n  policy: none\n  externalHosts: [{{name: pc, address: 172.17.0.5}}]\n"
    );
    let s = sim::scenario::parse_str(Path::new("t.yaml"), &text).unwrap();
    Plan::new(prefix, &s.cluster).unwrap()
}

fn ping(ns: &netns::Netns, to: Ipv4Addr) -> bool {
    ns.command("ping")
        .args(["-c1", "-W1", "-q", &to.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

async fn join_and_reach(network: &str) -> anyhow::Result<()> {
    let prefix = harness::run::new_prefix();
    let mut c = Cluster::create(plan(&prefix, network)).await?;
    let result = async {
        let (a, b, n) = (
            PodRef::new("x", "a"),
            PodRef::new("x", "b"),
            PodRef::new("x", "n"),
        );
        c.add_pods(&[(a.clone(), "n1".into()), (b.clone(), "n2".into())])
            .await?;
        anyhow::ensure!(
            c.add_pods(&[(n.clone(), "n3".into())]).await.is_err(),
            "a pod went onto a node that has not joined"
        );
        c.join_node("n3").await?;
        anyhow::ensure!(c.join_node("n3").await.is_err(), "n3 joined twice");
        let n3 = c.plan().node("n3").cloned().expect("n3 is planned");
        anyhow::ensure!(
            (n3.index, n3.pod_subnet.to_string(), n3.netns.clone())
                == (3, "10.244.3.0/24".into(), format!("{prefix}-node-n3")),
            "n3 planned as {n3:?}"
        );
        // verify checks every node's entries towards every other node in the plan,
        // and the router's route to every pod subnet.
        c.verify().await?;
        c.add_pods(&[(n.clone(), "n3".into())]).await?;
        c.verify().await?;
        let ip = |p: &PodRef| c.pod(p).unwrap().ip;
        let ns = |p: &PodRef| c.pod(p).unwrap().netns.clone();
        anyhow::ensure!(ip(&n).to_string().starts_with("10.244.3."), "{}", ip(&n));
        for (from, to) in [(&a, &n), (&n, &a), (&b, &n), (&n, &b)] {
            anyhow::ensure!(ping(&ns(from), ip(to)), "{from} cannot reach {to}");
        }
        let (pc, _) = c.host("pc").expect("host pc");
        anyhow::ensure!(ping(&pc, ip(&n)), "host pc cannot reach {n}");
        let described = c.describe().await?;
        anyhow::ensure!(
            described.contains("node n3") && described.contains("10.244.3.0/24"),
            "{described}"
        );
        Ok(())
    }
    .await;
    let td = c.teardown().await;
    result?;
    anyhow::ensure!(td.is_ok(), "teardown: {:?}", td.errors);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let left = netns::list_run(&prefix)?;
    anyhow::ensure!(left.is_empty(), "left behind: {left:?}");
    anyhow::ensure!(
        !Path::new(sim::plan::STATE_ROOT).join(&prefix).exists(),
        "state directory left behind"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn a_joined_node_is_wired_everywhere_host_gw() {
    common::require_root(&[]);
    join_and_reach("host-gw").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn a_joined_node_is_wired_everywhere_vxlan() {
    common::require_root(&[]);
    join_and_reach("vxlan").await.unwrap();
}

/// `scenarios/node-join.yaml` is a vxlan lesson; the same steps must hold in host-gw
/// mode, where the join adds plain routes instead of tunnel entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn the_node_join_scenario_in_host_gw_mode() {
    common::require_root(&[]);
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/node-join.yaml");
    let mut scenario = sim::scenario::load(&file).unwrap();
    scenario.cluster.network = NetworkMode::HostGw;
    let opts = harness::run::RunOptions {
        prefix: harness::run::new_prefix(),
        repeat: 0,
        ..Default::default()
    };
    let report = match harness::run::run(&scenario, &opts).await {
        Ok(r) => r,
        Err(e) => {
            let _ = harness::sweep::clean_prefix(&opts.prefix);
            panic!("{e:#}");
        }
    };
    assert!(
        report.teardown_errors.is_empty(),
        "{:?}",
        report.teardown_errors
    );
    assert!(
        report.ok(),
        "{}",
        report
            .steps
            .iter()
            .map(sim::matrix::render_step)
            .collect::<Vec<_>>()
            .join("\n")
    );
    // After the join n1 routes n3's pod subnet via n3's underlay address: no tunnel.
    let after = report
        .built
        .split("== after step")
        .nth(1)
        .expect("a description after the join");
    assert!(
        after.contains("route 10.244.3.0/24 via 192.168.200.13 dev eth0"),
        "{after}"
    );
    assert!(!after.contains("vxlan"), "{after}");
    assert!(netns::list_run(&opts.prefix).unwrap().is_empty());
}
