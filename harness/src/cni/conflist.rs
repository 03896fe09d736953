//! CNI network configurations: the node's `.conflist` (bridge + host-local) and the
//! loopback `.conf`, written to the node's config directory so people can read them, and
//! loaded back the way libcni loads them (a single `.conf` becomes a list of one).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use sim::plan::NodePlan;
use sim::scenario::CniConfig;

/// The spec version knetlab speaks; Debian's plugins (1.1.1) support up to 1.0.0.
pub const CNI_VERSION: &str = "1.0.0";
/// The pod network's name (also a directory level in host-local's data dir).
pub const NETWORK_NAME: &str = "knetlab";
/// The bridge every node's pods hang off.
pub const BRIDGE: &str = "cni0";
/// File names in a node's config directory, in the order a runtime would read them.
pub const CONFLIST_FILE: &str = "10-knetlab.conflist";
pub const LOOPBACK_FILE: &str = "99-loopback.conf";

/// A network configuration list: plugins run in order on ADD and CHECK, reversed on DEL.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    pub cni_version: String,
    pub name: String,
    pub disable_check: bool,
    /// Each plugin's own configuration (with its `type`), as in the file.
    pub plugins: Vec<Map<String, Value>>,
}

impl ConfList {
    /// Parses a `.conflist` (with `plugins`) or a single-plugin `.conf`.
    pub fn from_value(v: &Value) -> Result<ConfList> {
        let obj = v
            .as_object()
            .context("a CNI network configuration must be a JSON object")?;
        let field = |k: &str| -> Result<String> {
            obj.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .with_context(|| format!("CNI network configuration has no string `{k}`"))
        };
        let name = field("name")?;
        let cni_version = field("cniVersion")?;
        let plugins: Vec<Map<String, Value>> = match obj.get("plugins") {
            Some(list) => list
                .as_array()
                .with_context(|| format!("network {name}: `plugins` is not a list"))?
                .iter()
                .map(|p| {
                    p.as_object()
                        .cloned()
                        .context("a plugin configuration is not an object")
                })
                .collect::<Result<_>>()?,
            None => vec![obj.clone()],
        };
        if plugins.is_empty() {
            bail!("network {name} has no plugins");
        }
        for p in &plugins {
            let ty = p.get("type").and_then(Value::as_str).unwrap_or("");
            // The type names a binary in CNI_PATH, nothing else.
            if ty.is_empty() || ty.contains('/') || ty.starts_with('.') {
                bail!("network {name}: plugin type {ty:?} is not a plugin name");
            }
        }
        Ok(ConfList {
            cni_version,
            name,
            disable_check: obj
                .get("disableCheck")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            plugins,
        })
    }

    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<ConfList> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("parse {} as JSON", path.display()))?;
        ConfList::from_value(&v).with_context(|| format!("in {}", path.display()))
    }

    /// The list in `.conflist` form (what the result cache stores).
    pub fn to_value(&self) -> Value {
        json!({
            "cniVersion": self.cni_version,
            "name": self.name,
            "disableCheck": self.disable_check,
            "plugins": self.plugins,
        })
    }

    /// The `type` of plugin `i`.
    pub fn plugin_type(&self, i: usize) -> &str {
        self.plugins[i]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// Where a node keeps its CNI files inside the run's state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDirs {
    pub root: PathBuf,
    /// `net.d`: the configuration files.
    pub conf: PathBuf,
    /// host-local's `dataDir`.
    pub ipam: PathBuf,
    /// The result cache, so a later process (teardown, `clean`) can DEL.
    pub cache: PathBuf,
}

impl NodeDirs {
    pub fn new(state_dir: &Path, node: &str) -> NodeDirs {
        let root = state_dir.join(node);
        NodeDirs {
            conf: root.join("net.d"),
            ipam: root.join("ipam"),
            cache: root.join("cache"),
            root,
        }
    }
}

/// The pod network of one node: the bridge plugin with host-local IPAM over the node's
/// pod subnet. `isGateway` gives `cni0` the subnet's first address and the pods their
/// default route; `hairpinMode` lets a pod reach itself through a service.
pub fn pod_network(node: &NodePlan, ipam_dir: &Path) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": node.pod_subnet.to_string() }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": ipam_dir.display().to_string(),
            },
        }],
    })
}

/// `portmap`, as the default list gains it when some pod has a hostPort: the runtime's
/// `portMappings` reach it through the capability; `snat` masquerades hairpin and
/// localhost connections so their replies come back through the node.
pub fn portmap_plugin() -> Value {
    json!({ "type": "portmap", "capabilities": { "portMappings": true }, "snat": true })
}

/// `bandwidth`, as the default list gains it when some pod has a bandwidth annotation.
pub fn bandwidth_plugin() -> Value {
    json!({ "type": "bandwidth", "capabilities": { "bandwidth": true } })
}

/// The node's pod network. Without a scenario list: [`pod_network`], chained (bridge,
/// then portmap, then bandwidth, the order of Kubernetes' documentation) with only the
/// plugins the scenario's pods use, since every plugin is one more process per pod and
/// command: measured on the 2-core VM, ~4 ms per pod and command for each of the two
/// even when the pod uses neither (and portmap with a mapping ~40 ms per ADD, ~110 ms
/// per DEL: iptables-nft), against a bring-up target of 0.2 s for 9 pods. With a scenario list: that list, with the first plugin's host-local range
/// replaced by this node's subnet (`ranges: [[{subnet}]]`, as a per-node configuration
/// would say) and its `dataDir` by knetlab's; everything else as written.
pub fn node_network(cni: &CniConfig, node: &NodePlan, ipam_dir: &Path) -> Result<Value> {
    let Some(list) = &cni.conflist else {
        let mut v = pod_network(node, ipam_dir);
        let plugins = v["plugins"]
            .as_array_mut()
            .expect("the default list has plugins");
        if cni.pods_want_host_ports {
            plugins.push(portmap_plugin());
        }
        if cni.pods_want_bandwidth {
            plugins.push(bandwidth_plugin());
        }
        return Ok(v);
    };
    let origin = cni.origin.as_deref().unwrap_or("the scenario");
    let mut v = list.clone();
    let ipam = v
        .pointer_mut("/plugins/0/ipam")
        .and_then(Value::as_object_mut)
        .with_context(|| format!("the CNI list of {origin} has no ipam in its first plugin"))?;
    ipam.remove("subnet");
    ipam.insert(
        "ranges".into(),
        json!([[{ "subnet": node.pod_subnet.to_string() }]]),
    );
    ipam.insert("dataDir".into(), json!(ipam_dir.display().to_string()));
    Ok(v)
}

/// Every plugin of the list is a binary in `dir` (CNI_PATH): a machine fact, so checked
/// here rather than when the scenario is read, and before any pod is added.
fn plugins_exist(dir: &Path, list: &Value, origin: &str) -> Result<()> {
    let missing: Vec<String> = sim::scenario::cni::plugin_types(list)
        .into_iter()
        .filter(|t| !dir.join(t).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut have: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    have.sort();
    bail!(
        "the CNI list of {origin} names plugin{} {} not in {} (there: {})",
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", "),
        dir.display(),
        if have.is_empty() {
            "nothing".to_string()
        } else {
            have.join(" ")
        }
    )
}

/// The bridge a list's first plugin makes (the bridge plugin's default is `cni0`).
pub fn bridge_name(list: &ConfList) -> String {
    list.plugins
        .first()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("bridge"))
        .and_then(|p| p.get("bridge"))
        .and_then(Value::as_str)
        .unwrap_or(BRIDGE)
        .to_string()
}

/// The loopback network (containerd runs it on `lo` of every pod).
pub fn loopback_network() -> Value {
    json!({ "cniVersion": CNI_VERSION, "name": "cni-loopback", "type": "loopback" })
}

/// The two networks a pod joins, in the order they are added: `lo`, then `eth0`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeNetworks {
    pub loopback: ConfList,
    pub pod: ConfList,
    /// The bridge the pod network's first plugin makes (`cni0` unless the list says).
    pub bridge: String,
    /// Where the plugins of both lists are (see [`super::RuntimeConf::plugin_dir`]).
    pub plugin_dir: PathBuf,
}

impl NodeNetworks {
    /// `(network, CNI_IFNAME)` in ADD order.
    pub fn in_add_order(&self) -> [(&ConfList, &'static str); 2] {
        [(&self.loopback, "lo"), (&self.pod, "eth0")]
    }
}

/// Sets `mtu` on every `bridge` plugin of a network configuration (list): the plugin
/// gives the bridge and both ends of each pod's veth that MTU. An overlay needs it so
/// pods never send packets bigger than the tunnel carries.
pub fn set_bridge_mtu(network: &mut Value, mtu: u32) {
    let plugins = match network.get_mut("plugins").and_then(Value::as_array_mut) {
        Some(list) => list.iter_mut().collect::<Vec<_>>(),
        None => vec![network],
    };
    for p in plugins {
        if p.get("type").and_then(Value::as_str) == Some("bridge")
            && let Some(obj) = p.as_object_mut()
        {
            obj.insert("mtu".into(), json!(mtu));
        }
    }
}

/// Writes the node's configuration files and creates its IPAM and cache directories,
/// then reads the files back, so what runs is exactly what people can read. `pod_mtu`
/// (the overlay's, in vxlan mode) goes into the bridge plugin's config.
pub fn write_node_configs(
    cni: &CniConfig,
    node: &NodePlan,
    dirs: &NodeDirs,
    pod_mtu: Option<u32>,
    plugin_dir: &Path,
) -> Result<NodeNetworks> {
    for d in [&dirs.conf, &dirs.ipam, &dirs.cache] {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    let write = |file: &str, v: &Value| -> Result<PathBuf> {
        let path = dirs.conf.join(file);
        let mut text = serde_json::to_string_pretty(v).context("render CNI configuration")?;
        text.push('\n');
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    };
    let mut pod_net = node_network(cni, node, &dirs.ipam)?;
    plugins_exist(
        plugin_dir,
        &pod_net,
        cni.origin.as_deref().unwrap_or("knetlab's default list"),
    )?;
    if let Some(mtu) = pod_mtu {
        set_bridge_mtu(&mut pod_net, mtu);
    }
    let pod = write(CONFLIST_FILE, &pod_net)?;
    let lo = write(LOOPBACK_FILE, &loopback_network())?;
    let pod = ConfList::load(&pod)?;
    Ok(NodeNetworks {
        loopback: ConfList::load(&lo)?,
        bridge: bridge_name(&pod),
        pod,
        plugin_dir: plugin_dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodePlan {
        NodePlan {
            name: "n1".into(),
            index: 1,
            netns: "kl000000-node-n1".into(),
            underlay_ip: "192.168.200.11".parse().unwrap(),
            underlay_mac: [2, 0x6b, 0x6c, 0, 0, 1],
            fabric_port: "ul1".into(),
            pod_subnet: "10.244.1.0/24".parse().unwrap(),
            gateway: "10.244.1.1".parse().unwrap(),
        }
    }

    #[test]
    fn pod_network_is_the_bridge_with_host_local_over_the_node_subnet() {
        let v = pod_network(&node(), Path::new("/run/knetlab/kl000000/n1/ipam"));
        let list = ConfList::from_value(&v).unwrap();
        assert_eq!(list.name, NETWORK_NAME);
        assert_eq!(list.cni_version, "1.0.0");
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugin_type(0), "bridge");
        let p = &list.plugins[0];
        assert_eq!(p["bridge"], "cni0");
        assert_eq!(p["isGateway"], true);
        assert_eq!(p["ipMasq"], false);
        assert_eq!(p["hairpinMode"], true);
        assert_eq!(p["ipam"]["ranges"][0][0]["subnet"], "10.244.1.0/24");
        assert_eq!(p["ipam"]["dataDir"], "/run/knetlab/kl000000/n1/ipam");
        assert_eq!(p["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
    }

    #[test]
    fn the_overlay_mtu_goes_into_the_bridge_plugin_only() {
        let mut v = pod_network(&node(), Path::new("/x"));
        assert!(v["plugins"][0].get("mtu").is_none());
        set_bridge_mtu(&mut v, 1450);
        assert_eq!(v["plugins"][0]["mtu"], 1450);
        let mut lo = loopback_network();
        set_bridge_mtu(&mut lo, 1450);
        assert!(lo.get("mtu").is_none());
    }

    #[test]
    fn the_default_list_gains_only_the_plugins_pods_use() {
        let dir = Path::new("/x");
        let types = |cni: &CniConfig| {
            let v = node_network(cni, &node(), dir).unwrap();
            sim::scenario::cni::plugin_types(&v)
        };
        let mut cni = CniConfig::default();
        assert_eq!(types(&cni), ["bridge"]);
        cni.pods_want_bandwidth = true;
        assert_eq!(types(&cni), ["bridge", "bandwidth"]);
        cni.pods_want_host_ports = true;
        assert_eq!(types(&cni), ["bridge", "portmap", "bandwidth"]);
        let v = node_network(&cni, &node(), dir).unwrap();
        assert_eq!(v["plugins"][1]["capabilities"]["portMappings"], true);
        assert_eq!(v["plugins"][1]["snat"], true);
        assert_eq!(v["plugins"][2]["capabilities"]["bandwidth"], true);
    }

    #[test]
    fn a_scenario_list_gets_the_node_subnet_and_knetlab_data_dir() {
        let cni = CniConfig {
            conflist: Some(json!({"cniVersion": "0.3.1", "name": "mynet", "plugins": [{
                "type": "bridge", "bridge": "mynet0", "isDefaultGateway": true,
                "ipam": {"type": "host-local", "subnet": "10.10.0.0/16", "dataDir": "/var/lib/x"}
            }]})),
            ..CniConfig::default()
        };
        let mut n = node();
        n.pod_subnet = "10.10.1.0/24".parse().unwrap();
        let v = node_network(&cni, &n, Path::new("/run/knetlab/x/n1/ipam")).unwrap();
        let ipam = &v["plugins"][0]["ipam"];
        assert!(ipam.get("subnet").is_none());
        assert_eq!(ipam["ranges"][0][0]["subnet"], "10.10.1.0/24");
        assert_eq!(ipam["dataDir"], "/run/knetlab/x/n1/ipam");
        assert_eq!(v["plugins"][0]["bridge"], "mynet0");
        assert_eq!(v["cniVersion"], "0.3.1");
        let list = ConfList::from_value(&v).unwrap();
        assert_eq!(bridge_name(&list), "mynet0");
        let default = ConfList::from_value(&pod_network(&node(), Path::new("/x"))).unwrap();
        assert_eq!(bridge_name(&default), "cni0");
    }

    #[test]
    fn a_single_conf_is_a_list_of_one() {
        let list = ConfList::from_value(&loopback_network()).unwrap();
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugin_type(0), "loopback");
        assert_eq!(ConfList::from_value(&list.to_value()).unwrap(), list);
    }

    #[test]
    fn bad_configurations_are_errors() {
        for bad in [
            json!([]),
            json!({"name": "x"}),
            json!({"name": "x", "cniVersion": "1.0.0", "plugins": []}),
            json!({"name": "x", "cniVersion": "1.0.0", "type": "../bin/sh"}),
            json!({"name": "x", "cniVersion": "1.0.0", "plugins": [{"bridge": "b"}]}),
        ] {
            assert!(ConfList::from_value(&bad).is_err(), "{bad}");
        }
    }
}
