//! What is checked about a scenario before anything is built: what no engine can run
//! yet is refused or noted, and whether a service proxy is needed at all.

use anyhow::Result;
use sim::objects::Kind;
use sim::scenario::{Change, Peer, Scenario};

/// What this slice of the service proxy cannot do yet, said before anything is built
/// rather than ignored: a probe from a host outside the cluster to a cluster IP (not
/// routed outside the nodes; external clients come with NodePorts and load balancers) is
/// refused. Services whose NodePorts, load-balancer or external IPs the scenario cannot
/// probe yet run anyway (their rules are installed and their cluster IP works); the
/// returned notes say so.
pub(super) fn refuse_what_no_engine_runs(scenario: &Scenario) -> Result<Vec<String>> {
    let from: &[Peer] = scenario.probe.from.as_deref().unwrap_or_default();
    let to: &[Peer] = scenario.probe.to.as_deref().unwrap_or_default();
    if let (Some(host), Some(svc)) = (
        from.iter().find(|p| matches!(p, Peer::Host(_))),
        to.iter().find(|p| p.is_service()),
    ) {
        anyhow::bail!(
            "{}: probe.from has {host} and probe.to has {svc}: a cluster IP is only routed \
             inside the cluster's nodes, so a host outside it cannot reach one (outside \
             clients use NodePorts and load-balancer addresses, which knetlab cannot probe \
             yet); list the host's probes in another scenario",
            scenario.path.display()
        );
    }
    let mut notes = std::collections::BTreeSet::new();
    for step in &scenario.steps {
        for change in &step.changes {
            let Change::Apply(raw) = change else { continue };
            if raw.kind != Kind::Service {
                continue;
            }
            let spec = raw.value.get("spec");
            let ty = spec
                .and_then(|s| s.get("type"))
                .and_then(|t| t.as_str())
                .unwrap_or("ClusterIP");
            let external_ips = spec
                .and_then(|s| s.get("externalIPs"))
                .and_then(|v| v.as_array())
                .is_some_and(|a| !a.is_empty());
            let what = match (ty, external_ips) {
                ("NodePort" | "LoadBalancer", true) => format!("type {ty} with externalIPs"),
                ("NodePort" | "LoadBalancer", false) => format!("type {ty}"),
                (_, true) => "externalIPs".to_string(),
                _ => continue,
            };
            notes.insert(format!(
                "Service {}/{} has {what}: kube-proxy's rules for it are installed, but only \
                 its cluster IP is probed (node ports, load-balancer and external IPs cannot \
                 be probed yet)",
                raw.key.0, raw.key.1
            ));
        }
    }
    Ok(notes.into_iter().collect())
}

/// Whether any step of the scenario creates a Service or an Endpoints object.
pub(super) fn has_services(scenario: &Scenario) -> bool {
    scenario.steps.iter().flat_map(|s| &s.changes).any(
        |c| matches!(c, Change::Apply(raw) if matches!(raw.kind, Kind::Service | Kind::Endpoints)),
    )
}
