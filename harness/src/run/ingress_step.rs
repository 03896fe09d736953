//! The ingress controller in the step loop: after a step's changes, the controller pod's
//! nginx is started (first time) or reloaded (configuration changed), the served Ingresses
//! get their `status.loadBalancer` address, and the scenario's `http:` checks for the step
//! are measured and compared with the oracle (see [`crate::ingress`]).

use std::net::Ipv4Addr;

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::networking::v1::{
    IngressLoadBalancerIngress, IngressLoadBalancerStatus, IngressStatus,
};
use sim::ingress::{IngressModel, Scheme, controller};
use sim::objects::{Kind, pod_node};
use sim::scenario::{Change, Peer, Scenario, Step};

use crate::ingress::Controller;
use crate::ingress::checks::{self, IngressStep};
use crate::ingress::client::{self, Request};

use super::{
    Live, RunOptions, note,
    probe_step::{node_addresses, oracle_context},
};

/// Whether some step of the scenario creates an Ingress.
pub(super) fn has_ingress(scenario: &Scenario) -> bool {
    scenario
        .steps
        .iter()
        .flat_map(|s| &s.changes)
        .any(|c| matches!(c, Change::Apply(raw) if raw.kind == Kind::Ingress))
}

/// Brings the controller in line with the step's objects and measures its `http:`
/// checks. `None` for scenarios without an Ingress.
pub(super) async fn ingress_step(
    scenario: &Scenario,
    step: &Step,
    opts: &RunOptions,
    live: &mut Live,
) -> Result<Option<IngressStep>> {
    if !has_ingress(scenario) {
        return Ok(None);
    }
    let pod = controller::pod_ref();
    let handle = live
        .cluster
        .pod(&pod)
        .ok_or_else(|| anyhow!("the ingress controller pod {pod} is not running"))?;
    if live.ingress.is_none() {
        crate::prereq::ensure_ingress(&mut |m| note(opts, || m.to_string()))?;
        let state = crate::sweep::state_dir(&opts.prefix);
        live.ingress = Some(Controller::new(handle.netns.clone(), handle.ip, &state)?);
    }
    let model = IngressModel::new(&live.objects);
    let ctl = live.ingress.as_mut().expect("set above");
    ctl.check_running()
        .with_context(|| format!("step {:?}: before configuring it", step.name))?;
    let sync = tokio::task::block_in_place(|| ctl.sync(&model))
        .with_context(|| format!("step {:?}: configure the ingress controller", step.name))?;
    note(opts, || {
        format!(
            "ingress controller {} in {:.1} ms ({} Ingress{})",
            sync.action,
            sync.ms,
            model.ingresses.len(),
            if model.ingresses.len() == 1 { "" } else { "es" }
        )
    });
    // The controller publishes the address of the node it runs on, as ingress-nginx
    // does without --publish-service.
    let plan = live.cluster.plan();
    let node = live
        .objects
        .pods
        .get(&pod)
        .and_then(pod_node)
        .unwrap_or_default();
    let node_ip = plan
        .nodes
        .iter()
        .find(|n| n.name == node)
        .map(|n| n.underlay_ip)
        .ok_or_else(|| anyhow!("the controller's node {node:?} is not in the plan"))?;
    let mut addresses = Vec::new();
    for ((ns, name), ing) in live.objects.ingresses.iter_mut() {
        let id = format!("{ns}/{name}");
        if !model.ingresses.contains(&id) {
            continue;
        }
        ing.status = Some(IngressStatus {
            load_balancer: Some(IngressLoadBalancerStatus {
                ingress: Some(vec![IngressLoadBalancerIngress {
                    ip: Some(node_ip.to_string()),
                    ..Default::default()
                }]),
            }),
        });
        addresses.push((id, node_ip.to_string()));
    }
    let mut notes = model.notes.clone();
    for g in &sync.generated_certificates {
        notes.push(format!(
            "generated a self-signed certificate for Secret {g} with rcgen"
        ));
    }
    // The NodePort answers on every node: the checks take the nodes whose link is up in
    // turn (check i goes to the i-th of them, round the list).
    let up_nodes: Vec<(&str, Ipv4Addr)> = plan
        .nodes
        .iter()
        .filter(|n| !live.down_nodes.contains(&n.name))
        .map(|n| (n.name.as_str(), n.underlay_ip))
        .collect();
    let node_addresses = node_addresses(plan);
    let oracle = oracle_context(scenario, live, &node_addresses);
    let mut results = Vec::new();
    for (i, spec) in scenario
        .http
        .iter()
        .filter(|s| s.runs_in(&step.name))
        .enumerate()
    {
        let (via_name, via_node) = up_nodes
            .get(i % up_nodes.len().max(1))
            .copied()
            .unwrap_or((node, node_ip));
        let netns = match &spec.from {
            Peer::Host(h) => live.cluster.host(h).map(|(ns, _)| ns),
            Peer::Pod(p) => live.cluster.pod(p).map(|h| h.netns.clone()),
            _ => None,
        };
        let Some(netns) = netns else {
            // A pod that does not exist in this step sends nothing.
            continue;
        };
        let port = match spec.scheme {
            Scheme::Http => controller::HTTP_NODE_PORT,
            Scheme::Https => controller::HTTPS_NODE_PORT,
        };
        let addr = client::node_addr(via_node, port);
        let got = client::get(&Request {
            client: &netns,
            scheme: spec.scheme,
            host: &spec.host,
            path: &spec.path,
            addr,
        })
        .await;
        let entry = Peer::NodePort {
            node: via_name.to_string(),
            port,
        };
        let predicted =
            checks::predict_check(spec, &model, &oracle, scenario.cluster.deny, Some(&entry));
        results.push(checks::judge(
            spec,
            &live.objects,
            format!("{addr}"),
            got,
            predicted,
        ));
    }
    // A check that disagrees is a verdict only while nginx is still there.
    if results.iter().any(|c| !c.agrees)
        && let Some(ctl) = live.ingress.as_mut()
    {
        ctl.check_running()
            .with_context(|| format!("step {:?}: its http checks", step.name))?;
    }
    Ok(Some(IngressStep {
        step: step.name.clone(),
        controller: sync.action,
        controller_ms: sync.ms,
        config: sync.config,
        addresses,
        notes,
        checks: results,
    }))
}
