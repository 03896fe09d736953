//! The `model:` shorthand for the standard conformance model of the Kubernetes
//! network-policy tooling (the e2e netpol suite, Cyclonus, Policy Assistant):
//!
//! ```yaml
//! model: {namespaces: [x, y, z], pods: [a, b, c], ports: [80, 81], protocols: [TCP, UDP]}
//! ```
//!
//! creates each namespace with the label `ns=<name>` (`kubernetes.io/metadata.name` is
//! added to every namespace by [`crate::objects::ClusterObjects::apply`], as the API
//! server does), and in each one a pod per name with the label `pod=<name>` and one
//! container, `serve`, declaring one port per (port, protocol) named
//! `serve-<port>-<protocol in lower case>`. Pods get no `nodeName`: the scheduler spreads
//! them round-robin. Every list defaults to the standard model above, so `model: {}`
//! is the standard model.

use std::collections::BTreeSet;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ScenarioError;
use crate::protocol::Protocol;

use super::source::Source;
use super::yaml::{join_index, join_key};

/// The container every model pod runs (the harness serves the declared ports itself).
pub(crate) const CONTAINER_NAME: &str = "serve";
pub(crate) const CONTAINER_IMAGE: &str = "knetlab/serve";

/// The `model:` section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Model {
    #[serde(default = "default_namespaces")]
    pub namespaces: Vec<String>,
    #[serde(default = "default_pods")]
    pub pods: Vec<String>,
    #[serde(default = "default_ports")]
    pub ports: Vec<u16>,
    #[serde(default = "default_protocols")]
    pub protocols: Vec<Protocol>,
}

fn default_namespaces() -> Vec<String> {
    vec!["x".into(), "y".into(), "z".into()]
}
fn default_pods() -> Vec<String> {
    vec!["a".into(), "b".into(), "c".into()]
}
fn default_ports() -> Vec<u16> {
    vec![80, 81]
}
fn default_protocols() -> Vec<Protocol> {
    vec![Protocol::Tcp, Protocol::Udp]
}

/// A manifest the model creates and the field path to blame for it.
pub(crate) struct ModelObject {
    pub value: Value,
    pub path: String,
}

/// Checks the model's lists and expands them into manifests: namespaces first (in
/// order), then pods (namespace by namespace, pod by pod).
pub(crate) fn expand(
    src: &Source,
    path: &str,
    model: &Model,
) -> Result<Vec<ModelObject>, ScenarioError> {
    unique_non_empty(src, &join_key(path, "namespaces"), &model.namespaces)?;
    unique_non_empty(src, &join_key(path, "pods"), &model.pods)?;
    unique_non_empty(src, &join_key(path, "ports"), &model.ports)?;
    unique_non_empty(src, &join_key(path, "protocols"), &model.protocols)?;
    for (i, p) in model.ports.iter().enumerate() {
        if *p == 0 {
            return Err(src.at_value(
                &join_index(&join_key(path, "ports"), i),
                "0 is not a port number (1-65535)",
            ));
        }
    }

    let ports: Vec<Value> = model
        .ports
        .iter()
        .flat_map(|port| {
            model.protocols.iter().map(move |proto| {
                json!({
                    "name": format!("serve-{port}-{}", proto.lower()),
                    "containerPort": port,
                    "protocol": proto.as_str(),
                })
            })
        })
        .collect();

    let mut out = Vec::new();
    for (i, ns) in model.namespaces.iter().enumerate() {
        out.push(ModelObject {
            value: json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"ns": ns}},
            }),
            path: join_index(&join_key(path, "namespaces"), i),
        });
    }
    for ns in &model.namespaces {
        for (i, pod) in model.pods.iter().enumerate() {
            out.push(ModelObject {
                value: json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": pod, "namespace": ns, "labels": {"pod": pod}},
                    "spec": {"containers": [{
                        "name": CONTAINER_NAME,
                        "image": CONTAINER_IMAGE,
                        "ports": ports,
                    }]},
                }),
                path: join_index(&join_key(path, "pods"), i),
            });
        }
    }
    Ok(out)
}

fn unique_non_empty<T: Ord + std::fmt::Debug>(
    src: &Source,
    path: &str,
    items: &[T],
) -> Result<(), ScenarioError> {
    if items.is_empty() {
        return Err(src.at_value(path, "the model needs at least one entry here"));
    }
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        if !seen.insert(item) {
            return Err(src.at_value(&join_index(path, i), format!("{item:?} is listed twice")));
        }
    }
    Ok(())
}
