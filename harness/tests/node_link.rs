//! A node's underlay link taken down and brought back ([`Cluster::set_node_underlay`])
//! against the real kernel: pods across the cut stop reaching each other, pods inside the
//! cut-off node still do, `verify` reports the downed port unless told it is intended (and
//! then reports it if it is up after all), and the link comes back with everything working.
//! Needs root: ignored unless run with `--include-ignored` (see `common`).

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use harness::cluster::Cluster;
use sim::objects::PodRef;
use sim::plan::{Plan, prefix_from_seed};
use sim::scenario::ClusterConfig;

fn plan() -> Plan {
    let cluster = ClusterConfig {
        nodes: vec!["n1".into(), "n2".into()],
        pod_cidr: "10.244.0.0/16".parse().unwrap(),
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        network: Default::default(),
        policy: Default::default(),
        deny: Default::default(),
        proxy: Default::default(),
        cni: Default::default(),
        external_hosts: vec![],
    };
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ (u64::from(std::process::id()) << 32);
    Plan::new(&prefix_from_seed(seed), &cluster).unwrap()
}

/// One ping with a deadline of `wait_s` seconds.
fn ping(c: &Cluster, from: &PodRef, to: Ipv4Addr, wait_s: u32) -> bool {
    c.pod(from)
        .unwrap()
        .netns
        .command("ping")
        .args(["-c1", &format!("-W{wait_s}"), "-q", &to.to_string()])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: builds clusters in network namespaces"]
async fn node_underlay_down_and_up() {
    common::require_root(&[]);
    let mut c = Cluster::create(plan()).await.expect("create");
    let result = async {
        let (a, b, c2) = (
            PodRef::new("x", "a"),
            PodRef::new("x", "b"),
            PodRef::new("x", "c"),
        );
        c.add_pods(&[
            (a.clone(), "n1".into()),
            (b.clone(), "n2".into()),
            (c2.clone(), "n2".into()),
        ])
        .await?;
        let ip = |p: &PodRef| c.pod(p).unwrap().ip;
        anyhow::ensure!(ping(&c, &a, ip(&b), 1), "a cannot reach b before the cut");
        let down: BTreeSet<String> = ["n2".to_string()].into();

        c.set_node_underlay("n2", false).await?;
        let fault = c
            .verify()
            .await
            .expect_err("a downed port is a fault to plain verify");
        anyhow::ensure!(
            fault.problems.iter().any(|p| p.contains("ul2 is down")),
            "{fault}"
        );
        c.verify_with_down(&down).await?;
        anyhow::ensure!(!ping(&c, &a, ip(&b), 1), "a reaches b across a downed link");
        anyhow::ensure!(!ping(&c, &b, ip(&a), 1), "b reaches a across a downed link");
        anyhow::ensure!(ping(&c, &b, ip(&c2), 1), "b cannot reach c inside n2");

        c.set_node_underlay("n2", true).await?;
        let fault = c
            .verify_with_down(&down)
            .await
            .expect_err("an up port where a down one is expected is a fault");
        anyhow::ensure!(
            fault.problems.iter().any(|p| p.contains("ul2 is up")),
            "{fault}"
        );
        c.verify().await?;
        // Recovery takes up to about a second (see harness::run's NODE_BACK_PATIENCE).
        let t = Instant::now();
        while !ping(&c, &a, ip(&b), 1) {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(5),
                "a cannot reach b 5 s after the link came back"
            );
        }
        eprintln!("link back: a reaches b again after {:?}", t.elapsed());
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let report = c.teardown().await;
    result.unwrap();
    assert!(report.errors.is_empty(), "{:?}", report.errors);
}
