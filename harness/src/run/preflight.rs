//! What is checked about a scenario before anything is built: what no engine can run
//! yet is refused or noted, and whether a service proxy is needed at all.

use anyhow::Result;
use sim::objects::Kind;
use sim::scenario::{Change, Peer, Scenario};

/// What no engine can run, said before anything is built rather than ignored: a probe
/// from a host outside the cluster to a cluster IP (`svc/...`) is refused, because
/// cluster IPs are only routed inside the nodes; outside clients reach a Service through
/// `nodeport/NODE:PORT`, `lb/NAME:PORT` or `extip/NS/NAME:PORT`, which the router routes
/// to the nodes. Returns notes to print (none at present).
pub(super) fn refuse_what_no_engine_runs(scenario: &Scenario) -> Result<Vec<String>> {
    let from: &[Peer] = scenario.probe.from.as_deref().unwrap_or_default();
    let to: &[Peer] = scenario.probe.to.as_deref().unwrap_or_default();
    if let (Some(host), Some(svc)) = (
        from.iter().find(|p| matches!(p, Peer::Host(_))),
        to.iter().find(|p| p.is_service()),
    ) {
        anyhow::bail!(
            "{}: probe.from has {host} and probe.to has {svc}: a cluster IP is only routed \
             inside the cluster's nodes, so a host outside it cannot reach one; probe the \
             Service from outside with nodeport/NODE:NODEPORT, lb/NAME:PORT or \
             extip/NS/NAME:PORT instead, or list the host's probes in another scenario",
            scenario.path.display()
        );
    }
    Ok(Vec::new())
}

/// Whether any step of the scenario creates a Service or an Endpoints object.
pub(super) fn has_services(scenario: &Scenario) -> bool {
    scenario.steps.iter().flat_map(|s| &s.changes).any(
        |c| matches!(c, Change::Apply(raw) if matches!(raw.kind, Kind::Service | Kind::Endpoints)),
    )
}

/// `proxy: ipvs` on a kernel without IPVS, decided before anything is built: with
/// `cluster.ipvs.fallback: fail` the run stops here with a plain message (as kube-proxy
/// since v1.26 refuses to start); with `iptables` the iptables proxy stands in and the
/// returned note says so. Nothing to say for the other proxies, for a kernel with IPVS,
/// or for a scenario without Services (no proxy runs).
pub(super) fn ipvs_preflight(scenario: &Scenario) -> Result<Vec<String>> {
    let sim::scenario::ProxyKind::Ipvs(config) = scenario.cluster.proxy else {
        return Ok(vec![]);
    };
    if !has_services(scenario) {
        return Ok(vec![]);
    }
    if crate::proxy::ipvs::detect()?.is_some() {
        return Ok(vec![
            "proxy ipvs: this kernel has IPVS, so knetlab programs it over generic netlink;              that path has never run on the kernels knetlab was built on (they have no IPVS):              check `ipvsadm -Ln` in the nodes (--keep)"
                .to_string(),
        ]);
    }
    match config.fallback {
        sim::scenario::IpvsFallback::Fail => anyhow::bail!(
            "{}: {}",
            scenario.path.display(),
            crate::proxy::ipvs::missing_message()
        ),
        sim::scenario::IpvsFallback::Iptables => Ok(vec![crate::proxy::ipvs::fallback_note()]),
    }
}

/// `proxy: userspace` proxies cluster IPs only (a listener per service port behind the
/// portal rules); probes of node ports, load-balancer or external addresses would meet
/// no rule at all, so they are refused before anything is built.
pub(super) fn userspace_preflight(scenario: &Scenario) -> Result<()> {
    if scenario.cluster.proxy != sim::scenario::ProxyKind::Userspace {
        return Ok(());
    }
    let to: &[Peer] = scenario.probe.to.as_deref().unwrap_or_default();
    if let Some(p) = to.iter().find(|p| {
        matches!(
            p,
            Peer::NodePort { .. } | Peer::LoadBalancer { .. } | Peer::ExternalIp { .. }
        )
    }) {
        anyhow::bail!(
            "{}: probe.to has {p}, but the userspace proxy only proxies cluster IPs \
             (knetlab's lesson engine writes no NodePort, load-balancer or external-IP \
             portals); probe svc/NS/NAME:PORT, or use another cluster.proxy",
            scenario.path.display()
        );
    }
    Ok(())
}
