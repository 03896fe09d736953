//! The bodies of the fuzz targets, one function per target, each taking libFuzzer's raw
//! input. The cargo-fuzz binaries (`fuzz_targets/*.rs`) call them; `sim`'s stable test
//! `tests/fuzz_corpus.rs` includes this file and replays the committed corpus and
//! regressions through the same functions. An input may be rejected with an error, but
//! no function may panic, hang or allocate without bound.
//!
//! Everything goes through the entry points the harness uses (`sim::scenario::parse_str`,
//! `sim::ingress::IngressModel::new`, `sim::ingress::render::render`), so the targets
//! follow `sim`'s inner layout changes for free.

use std::net::Ipv4Addr;
use std::path::Path;

use sim::ingress::IngressModel;
use sim::ingress::render::{RenderOptions, render};
use sim::objects::{ClusterObjects, PodRef};
use sim::scenario::{Change, Scenario};

/// A cluster and pods for the targets that fuzz one section of a scenario; the fuzzed
/// text is indented into the section named last.
const HEADER: &str = "\
name: fuzz
summary: fuzz input
cluster:
  nodes: 2
manifests:
  - {apiVersion: v1, kind: Namespace, metadata: {name: prod, labels: {env: production}}}
  - apiVersion: v1
    kind: Pod
    metadata: {name: web, namespace: prod, labels: {app: web}}
    spec: {nodeName: n1, containers: [{name: c, image: nginx, ports: [{name: http, containerPort: 80}]}]}
  - apiVersion: v1
    kind: Pod
    metadata: {name: client, namespace: default, labels: {app: client}}
    spec: {nodeName: n2, containers: [{name: c, image: busybox}]}
";

/// The whole scenario file: YAML, the header, the model, manifests, steps, expectations.
pub fn scenario(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse(text);
    }
}

/// One manifest (any kind, any `apiVersion`), decoded as the scenario's fourth manifest.
pub fn manifest(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse(&format!("{HEADER}  -\n{}", indent(text, 4)));
    }
}

/// The value of `expect:` in either form (the text tables or `default` + `exceptions`).
pub fn expect(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse(&format!(
            "{HEADER}probe:\n  from: [prod/web, default/client, node/n1]\nexpect:\n{}",
            indent(text, 2)
        ));
    }
}

/// A scenario whose Ingress objects are rendered into nginx configuration after every
/// step, as the controller would write it and as the snapshots show it.
pub fn ingress(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(s) = parse(text) else {
        return;
    };
    let mut objects = ClusterObjects::new(s.cluster.nodes.clone());
    let mut next_ip: u32 = u32::from(Ipv4Addr::new(10, 244, 0, 2));
    for step in &s.steps {
        for change in &step.changes {
            if let Change::Apply(raw) = change {
                let Ok(object) =
                    raw.decode(&|p| objects.pods.get(p).and_then(sim::objects::pod_ip))
                else {
                    continue;
                };
                objects.apply(object);
                let pod = PodRef::new(&raw.key.0, &raw.key.1);
                if objects.pods.contains_key(&pod) {
                    objects.set_pod_ip(&pod, Ipv4Addr::from(next_ip));
                    next_ip = next_ip.wrapping_add(1);
                }
            } else {
                let _ = change.apply_to(&mut objects, &|_| None);
            }
        }
        let model = IngressModel::new(&objects);
        for (dir, ips) in [("/run/knetlab-fuzz", true), ("$DIR", false)] {
            let opts = RenderOptions {
                dir: dir.into(),
                ips,
            };
            let _ = render(&model, &opts);
        }
    }
}

/// The scenario, or `None` when the parser rejects it (a rejection is a fine outcome).
fn parse(text: &str) -> Option<Scenario> {
    sim::scenario::parse_str(Path::new("fuzz.yaml"), text).ok()
}

/// `text` with every line moved `by` spaces to the right.
fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines().map(|l| format!("{pad}{l}\n")).collect()
}
