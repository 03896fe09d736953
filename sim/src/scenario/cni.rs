//! `cluster.cni`: the CNI chain that wires the pods. By default knetlab writes its own
//! list (bridge + host-local, plus `portmap` and `bandwidth` when some pod needs them);
//! a scenario may give its own network configuration list instead, inline
//! (`conflist: {...}`) or as a file next to the scenario (`file: 10-mynet.conf`; a
//! single-plugin `.conf` becomes a list of one, as libcni does).
//!
//! What is checked here is structure; whether each plugin binary exists is a fact of the
//! machine, checked by the harness when it runs. The rules:
//! - `cniVersion` must be one Debian's plugins (v1.1.1) speak and whose results knetlab
//!   reads: 0.3.0, 0.3.1, 0.4.0 or 1.0.0 (CHECK needs 0.4.0 or later; the harness skips it
//!   below that, as libcni does).
//! - `name` is a CNI network name; `plugins` is a non-empty list of objects with a `type`
//!   naming a binary (no path).
//! - The first plugin is `bridge` with `host-local` IPAM: knetlab gives every node its own
//!   pod subnet, so it owns the address plan. The list may name at most one IPv4 range
//!   (`subnet`, or `ranges: [[{subnet}]]`); that range is the cluster's pod CIDR (so
//!   `cluster.podCIDR` must then be left out or equal it), and on node i it is replaced by
//!   the node's i-th /24 of it, exactly as a per-node configuration would say. Pinning
//!   `rangeStart`, `rangeEnd` or `gateway` cannot hold for every node and is rejected.
//!   host-local's `dataDir` is always knetlab's per-node directory.

use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::error::ScenarioError;
use crate::podnet;

use super::CniConfig;
use super::source::Source;
use super::yaml::{self, join_index, join_key};

/// The spec versions accepted in a scenario's list (see the module comment).
pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];
/// The smallest burst that lets a full-size packet through a token bucket (2 KB).
const MIN_BURST_BITS: u64 = 16_000;

/// `cluster.cni` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CniHeader {
    conflist: Option<Value>,
    file: Option<String>,
    burst: Option<String>,
    check: Option<bool>,
}

/// Checks `cluster.cni`. Returns the configuration and, when the scenario's list names
/// a range, that range (the pod CIDR the list implies).
pub(super) fn parse(
    src: &Source,
    value: Option<&Value>,
) -> Result<(CniConfig, Option<Ipv4Net>), ScenarioError> {
    let base = "cluster.cni";
    let Some(value) = value else {
        return Ok((CniConfig::default(), None));
    };
    let h: CniHeader = src.deserialize(base, value)?;
    let mut config = CniConfig {
        check: h.check,
        ..CniConfig::default()
    };
    if let Some(text) = &h.burst {
        let p = join_key(base, "burst");
        config.burst = match text.as_str() {
            "runtime" => None,
            q => {
                let bits = podnet::parse_quantity(q).map_err(|m| {
                    src.at_value(&p, format!("burst: {m}; write runtime or bits, e.g. 1M"))
                })?;
                if !(MIN_BURST_BITS..=(u64::from(u32::MAX) * 8)).contains(&bits) {
                    return Err(src.at_value(
                        &p,
                        format!("a burst of {bits} bits is out of range (16k bits, one full-size packet, up to 32G bits)"),
                    ));
                }
                Some(bits)
            }
        };
    }
    let range = match (&h.conflist, &h.file) {
        (Some(_), Some(_)) => {
            return Err(src.at_key(
                &join_key(base, "file"),
                "give either conflist or file, not both",
            ));
        }
        (None, None) => None,
        (Some(v), None) => {
            let (list, range) = check_list(src, &join_key(base, "conflist"), v)?;
            config.conflist = Some(list);
            config.origin = Some("cluster.cni.conflist".into());
            range
        }
        (None, Some(name)) => {
            let p = join_key(base, "file");
            let dir = src.file.parent().unwrap_or(Path::new("."));
            let file = dir.join(name);
            let text = std::fs::read_to_string(&file).map_err(|e| {
                src.at_value(
                    &p,
                    format!("cannot read CNI configuration {}: {e}", file.display()),
                )
            })?;
            // JSON is YAML: parsing it as YAML keeps line and column for every error.
            let (docs, positions) = yaml::parse(&file, &text, false)?;
            let fsrc = Source::new(&file, positions);
            let Some(v) = docs.into_iter().next().flatten() else {
                return Err(src.at_value(&p, format!("{} is empty", file.display())));
            };
            let (list, range) = check_list(&fsrc, "", &v)?;
            config.conflist = Some(list);
            config.origin = Some(file.display().to_string());
            range
        }
    };
    Ok((config, range))
}

/// A plugin's configuration and its field path.
type PluginAt<'a> = (String, &'a Map<String, Value>);

/// Checks one network configuration (list or single `.conf`) found at `path` of `src`
/// and returns it in list form with the IPv4 range it names, if any.
fn check_list(
    src: &Source,
    path: &str,
    v: &Value,
) -> Result<(Value, Option<Ipv4Net>), ScenarioError> {
    let Some(obj) = v.as_object() else {
        return Err(src.at_value(
            path,
            "a CNI network configuration is a mapping with cniVersion, name and plugins",
        ));
    };
    let string = |k: &str| -> Result<&str, ScenarioError> {
        match obj.get(k) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(src.at_value(&join_key(path, k), format!("`{k}` must be a string"))),
            None => Err(src.at_value(path, format!("the CNI network configuration has no `{k}`"))),
        }
    };
    let version = string("cniVersion")?;
    let vp = join_key(path, "cniVersion");
    if !SUPPORTED_VERSIONS.contains(&version) {
        let why = match version {
            "0.1.0" | "0.2.0" => format!(
                "cniVersion {version} results carry no interface list (and cannot be chained); knetlab needs {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
            "1.1.0" => "Debian's CNI plugins (v1.1.1) speak the spec up to 1.0.0 and reject 1.1.0 (\"incompatible CNI versions\")".to_string(),
            other => format!(
                "{other:?} is not a CNI spec version the plugins support ({})",
                SUPPORTED_VERSIONS.join(", ")
            ),
        };
        return Err(src.at_value(&vp, why));
    }
    let name = string("name")?;
    if !valid_network_name(name) {
        return Err(src.at_value(
            &join_key(path, "name"),
            format!("{name:?} is not a CNI network name (letters, digits, `_`, `.` and `-`, starting with a letter or digit)"),
        ));
    }
    // A single `.conf` is a list of one, as libcni's ConfListFromConf makes it.
    let (plugins, plugins_path): (Vec<PluginAt>, bool) = match obj.get("plugins") {
        Some(Value::Array(list)) => {
            if list.is_empty() {
                return Err(src.at_value(&join_key(path, "plugins"), "the plugin list is empty"));
            }
            let mut out = Vec::new();
            for (i, p) in list.iter().enumerate() {
                let pp = join_index(&join_key(path, "plugins"), i);
                let o = p.as_object().ok_or_else(|| {
                    src.at_value(&pp, "a plugin configuration is a mapping with a `type`")
                })?;
                out.push((pp, o));
            }
            (out, true)
        }
        Some(_) => {
            return Err(src.at_value(
                &join_key(path, "plugins"),
                "`plugins` must be a list of plugin configurations",
            ));
        }
        None => (vec![(path.to_string(), obj)], false),
    };
    for (pp, p) in &plugins {
        let tp = join_key(pp, "type");
        match p.get("type") {
            Some(Value::String(t)) if valid_plugin_type(t) => {}
            Some(Value::String(t)) => {
                return Err(src.at_value(
                    &tp,
                    format!("plugin type {t:?} is not a plugin name (a file in /usr/lib/cni)"),
                ));
            }
            _ => {
                return Err(src.at_key(pp, "a plugin configuration needs a string `type`"));
            }
        }
        if let Some(caps) = p.get("capabilities")
            && !caps
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_boolean))
        {
            return Err(src.at_value(
                &join_key(pp, "capabilities"),
                "capabilities map names to true or false (e.g. {bandwidth: true})",
            ));
        }
    }
    let range = check_ipam(src, &plugins[0].0, plugins[0].1)?;
    let list = if plugins_path {
        v.clone()
    } else {
        let mut plugin = obj.clone();
        plugin.remove("cniVersion");
        plugin.remove("name");
        json!({"cniVersion": version, "name": name, "plugins": [plugin]})
    };
    Ok((list, range))
}

/// The first plugin: `bridge` with `host-local`, at most one IPv4 range, nothing pinned.
fn check_ipam(
    src: &Source,
    pp: &str,
    plugin: &Map<String, Value>,
) -> Result<Option<Ipv4Net>, ScenarioError> {
    let ty = plugin.get("type").and_then(Value::as_str).unwrap_or("");
    if ty != "bridge" {
        return Err(src.at_value(
            &join_key(pp, "type"),
            format!("the first plugin must be `bridge` (knetlab checks each node's bridge and gateway, and policies match bridged traffic), not {ty:?}"),
        ));
    }
    let ip = join_key(pp, "ipam");
    let Some(ipam) = plugin.get("ipam").and_then(Value::as_object) else {
        return Err(src.at_key(
            pp,
            "the bridge plugin needs `ipam: {type: host-local}`: knetlab hands each node its pod subnet through host-local",
        ));
    };
    if ipam.get("type").and_then(Value::as_str) != Some("host-local") {
        return Err(src.at_value(
            &join_key(&ip, "type"),
            "ipam type must be host-local: knetlab gives each node its own pod subnet through it",
        ));
    }
    let pinned = |obj: &Map<String, Value>, at: &str| -> Result<(), ScenarioError> {
        for k in ["rangeStart", "rangeEnd", "gateway"] {
            if obj.contains_key(k) {
                return Err(src.at_key(
                    &join_key(at, k),
                    format!("`{k}` cannot hold on every node: knetlab replaces the range by each node's /24 of it (leave it out)"),
                ));
            }
        }
        Ok(())
    };
    let mut subnets: Vec<(String, &Value)> = Vec::new();
    if let Some(s) = ipam.get("subnet") {
        pinned(ipam, &ip)?;
        subnets.push((join_key(&ip, "subnet"), s));
    }
    if let Some(r) = ipam.get("ranges") {
        let rp = join_key(&ip, "ranges");
        let sets = r.as_array().ok_or_else(|| {
            src.at_value(&rp, "`ranges` is a list of range sets ([[{subnet: ...}]])")
        })?;
        for (i, set) in sets.iter().enumerate() {
            let sp = join_index(&rp, i);
            let ranges = set.as_array().ok_or_else(|| {
                src.at_value(&sp, "a range set is a list of ranges ([{subnet: ...}])")
            })?;
            for (j, range) in ranges.iter().enumerate() {
                let p = join_index(&sp, j);
                let o = range
                    .as_object()
                    .ok_or_else(|| src.at_value(&p, "a range is a mapping with a `subnet`"))?;
                pinned(o, &p)?;
                let s = o
                    .get("subnet")
                    .ok_or_else(|| src.at_value(&p, "a range needs a `subnet`"))?;
                subnets.push((join_key(&p, "subnet"), s));
            }
        }
    }
    if subnets.len() > 1 {
        return Err(src.at_value(
            &subnets[1].0,
            "knetlab gives each node one IPv4 range (its /24 of the pod CIDR): name at most one subnet",
        ));
    }
    let Some((sp, s)) = subnets.pop() else {
        return Ok(None);
    };
    let text = s.as_str().unwrap_or_default();
    let net: Ipv4Net = text.parse().map_err(|_| {
        src.at_value(
            &sp,
            format!("{s} is not an IPv4 subnet (IPv6 is off in knetlab's namespaces)"),
        )
    })?;
    if net.addr() != net.network() {
        return Err(src.at_value(
            &sp,
            format!(
                "{net} is not a network address; did you mean {}?",
                net.trunc()
            ),
        ));
    }
    if net.addr() == Ipv4Addr::UNSPECIFIED {
        return Err(src.at_value(&sp, "0.0.0.0/… cannot be a pod range"));
    }
    Ok(Some(net))
}

/// libcni's rule for network names.
fn valid_network_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A plugin type names a binary in CNI_PATH, nothing else.
pub fn valid_plugin_type(t: &str) -> bool {
    !t.is_empty() && !t.contains('/') && !t.starts_with('.')
}

/// The `type`s of a list's plugins, in order.
pub fn plugin_types(list: &Value) -> Vec<String> {
    list.get("plugins")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.get("type").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether some plugin of the list declares `capabilities: {NAME: true}`.
pub fn has_capability(list: &Value, name: &str) -> bool {
    list.get("plugins")
        .and_then(Value::as_array)
        .is_some_and(|ps| {
            ps.iter()
                .any(|p| p.pointer(&format!("/capabilities/{name}")) == Some(&Value::Bool(true)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::parse_str;

    fn cluster(extra: &str) -> Result<crate::scenario::ClusterConfig, ScenarioError> {
        let text = format!("name: t\nsummary: s\ncluster:\n  nodes: 2\n{extra}");
        parse_str(Path::new("t.yaml"), &text).map(|s| s.cluster)
    }

    /// The bridge plugin's documented example (cni.dev), as `10-mynet.conf`.
    const MYNET: &str = r#"    conflist:
      cniVersion: "0.3.1"
      name: mynet
      type: bridge
      bridge: mynet0
      isDefaultGateway: true
      ipMasq: true
      hairpinMode: true
      ipam: {type: host-local, subnet: 10.10.0.0/16}
"#;

    #[test]
    fn a_single_conf_becomes_a_list_and_sets_the_pod_cidr() {
        let c = cluster(&format!("  cni:\n{MYNET}")).unwrap();
        assert_eq!(c.pod_cidr.to_string(), "10.10.0.0/16");
        let list = c.cni.conflist.unwrap();
        assert_eq!(list["name"], "mynet");
        assert_eq!(list["cniVersion"], "0.3.1");
        assert_eq!(plugin_types(&list), ["bridge"]);
        assert_eq!(list["plugins"][0]["bridge"], "mynet0");
        assert!(list["plugins"][0].get("name").is_none());
    }

    #[test]
    fn pod_cidr_must_match_the_range() {
        let e = cluster(&format!("  podCIDR: 10.244.0.0/16\n  cni:\n{MYNET}")).unwrap_err();
        assert!(e.message.contains("10.10.0.0/16"), "{e}");
        assert_eq!(e.path, "cluster.podCIDR");
        assert!(cluster(&format!("  podCIDR: 10.10.0.0/16\n  cni:\n{MYNET}")).is_ok());
    }

    #[test]
    fn structure_is_checked_where_it_is_wrong() {
        for (yaml, path, words) in [
            (
                "    conflist: {cniVersion: \"1.1.0\", name: n, plugins: [{type: bridge, ipam: {type: host-local}}]}\n",
                "cluster.cni.conflist.cniVersion",
                "1.0.0",
            ),
            (
                "    conflist: {cniVersion: \"0.2.0\", name: n, type: bridge, ipam: {type: host-local}}\n",
                "cluster.cni.conflist.cniVersion",
                "interface list",
            ),
            (
                "    conflist: {cniVersion: \"1.0.0\", name: n, plugins: []}\n",
                "cluster.cni.conflist.plugins",
                "empty",
            ),
            (
                "    conflist: {cniVersion: \"1.0.0\", name: n, plugins: [{type: ../sh}]}\n",
                "cluster.cni.conflist.plugins[0].type",
                "plugin name",
            ),
            (
                "    conflist: {cniVersion: \"1.0.0\", name: n, plugins: [{type: ptp, ipam: {type: host-local}}]}\n",
                "cluster.cni.conflist.plugins[0].type",
                "bridge",
            ),
            (
                "    conflist: {cniVersion: \"1.0.0\", name: n, plugins: [{type: bridge, ipam: {type: dhcp}}]}\n",
                "cluster.cni.conflist.plugins[0].ipam.type",
                "host-local",
            ),
            (
                "    conflist: {cniVersion: \"1.0.0\", name: n, plugins: [{type: bridge, ipam: {type: host-local, ranges: [[{subnet: 10.9.0.0/16, gateway: 10.9.0.9}]]}}]}\n",
                "cluster.cni.conflist.plugins[0].ipam.ranges[0][0].gateway",
                "every node",
            ),
            (
                "    conflist: {cniVersion: \"1.0.0\", name: \"-x\", plugins: [{type: bridge}]}\n",
                "cluster.cni.conflist.name",
                "network name",
            ),
            (
                "    conflist: {cniVersion: \"1.0.0\", name: n, plugins: [{type: bridge, ipam: {type: host-local}}, {type: bandwidth, capabilities: {bandwidth: yes please}}]}\n",
                "cluster.cni.conflist.plugins[1].capabilities",
                "true or false",
            ),
            ("    burst: lots\n", "cluster.cni.burst", "not a quantity"),
            ("    burst: 1k\n", "cluster.cni.burst", "out of range"),
            (
                "    file: does-not-exist.conf\n",
                "cluster.cni.file",
                "cannot read",
            ),
        ] {
            let e = cluster(&format!("  cni:\n{yaml}")).unwrap_err();
            assert_eq!(e.path, path, "{yaml}: {e}");
            assert!(e.message.contains(words), "{yaml}: {e}");
        }
    }

    #[test]
    fn capabilities_and_burst() {
        let c = cluster("  cni:\n    burst: 1M\n    check: false\n").unwrap();
        assert_eq!(c.cni.burst, Some(1_000_000));
        assert_eq!(c.cni.check, Some(false));
        assert!(c.cni.conflist.is_none());
        let list = json!({"plugins": [{"type": "bridge"}, {"type": "bandwidth", "capabilities": {"bandwidth": true}}]});
        assert!(has_capability(&list, "bandwidth"));
        assert!(!has_capability(&list, "portMappings"));
    }

    fn scenario(body: &str) -> Result<crate::scenario::Scenario, ScenarioError> {
        let text = format!("name: t\nsummary: s\ncluster:\n  nodes: 2\n{body}");
        parse_str(Path::new("t.yaml"), &text)
    }

    const PODS: &str = r#"manifests:
  - {apiVersion: v1, kind: Namespace, metadata: {name: x}}
  - apiVersion: v1
    kind: Pod
    metadata: {name: a, namespace: x, annotations: {kubernetes.io/egress-bandwidth: ANNOT}}
    spec: {nodeName: n1, containers: [{name: c, image: i, ports: [{containerPort: 80, hostPort: HOSTPORT}]}]}
  - apiVersion: v1
    kind: Pod
    metadata: {name: b, namespace: x}
    spec: {nodeName: NODE_B, containers: [{name: c, image: i, ports: [{containerPort: 81, hostPort: 30080}]}]}
"#;

    fn pods(annot: &str, host_port: &str, node_b: &str) -> String {
        PODS.replace("ANNOT", annot)
            .replace("HOSTPORT", host_port)
            .replace("NODE_B", node_b)
    }

    #[test]
    fn pods_tell_the_default_list_which_plugins_it_needs() {
        let s = scenario(&pods("10M", "30081", "n1")).unwrap();
        assert!(s.cluster.cni.pods_want_bandwidth);
        assert!(s.cluster.cni.pods_want_host_ports);
        let plain =
            scenario("manifests:\n  - {apiVersion: v1, kind: Namespace, metadata: {name: x}}\n")
                .unwrap();
        assert!(!plain.cluster.cni.pods_want_bandwidth);
        assert!(!plain.cluster.cni.pods_want_host_ports);
    }

    #[test]
    fn bad_annotations_and_host_ports_are_reported_where_they_are() {
        let e = scenario(&pods("lots", "30081", "n1")).unwrap_err();
        assert_eq!(
            e.path,
            "manifests[1].metadata.annotations.kubernetes.io/egress-bandwidth"
        );
        assert!(e.message.contains("not a quantity"), "{e}");
        assert!(e.location.is_some(), "{e}");
        let e = scenario(&pods("10M", "70000", "n1")).unwrap_err();
        assert_eq!(e.path, "manifests[1].spec.containers[0].ports[0].hostPort");
        // The same host port on one node: the scheduler would not do it.
        let e = scenario(&pods("10M", "30080", "n1")).unwrap_err();
        assert!(e.message.contains("already taken on node n1"), "{e}");
        assert!(scenario(&pods("10M", "30080", "n2")).is_ok());
    }

    #[test]
    fn throughput_entries_are_checked() {
        let base = pods("10M", "30081", "n2");
        let ok = scenario(&format!(
            "{base}throughput:\n  - {{from: x/a, to: x/b, expectMbps: {{min: 6, max: 12}}}}\n"
        ))
        .unwrap();
        let t = &ok.throughput[0];
        assert_eq!(
            (t.port, t.min_mbps, t.max_mbps),
            (5201, Some(6.0), Some(12.0))
        );
        for (entry, path, words) in [
            (
                "{from: x/a, to: x/zz}",
                "throughput[0].to",
                "does not exist",
            ),
            (
                "{from: node/n1, to: x/b}",
                "throughput[0].from",
                "not a pod",
            ),
            ("{from: x/a, to: x/a}", "throughput[0].to", "itself"),
            (
                "{from: x/a, to: x/b, port: 0}",
                "throughput[0].port",
                "not a port",
            ),
            (
                "{from: x/a, to: x/b, expectMbps: {min: 9, max: 3}}",
                "throughput[0].expectMbps.max",
                "below",
            ),
            (
                "{from: x/a, to: x/b, expectMbps: {min: -1}}",
                "throughput[0].expectMbps.min",
                "above 0",
            ),
        ] {
            let e = scenario(&format!("{base}throughput:\n  - {entry}\n")).unwrap_err();
            assert_eq!(e.path, path, "{entry}: {e}");
            assert!(e.message.contains(words), "{entry}: {e}");
        }
    }
}
