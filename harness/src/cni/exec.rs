//! Running a network configuration list the way libcni does: each plugin is a process
//! started inside the node's namespace with the CNI_* variables in its environment and
//! its configuration (with `name`, `cniVersion` and `prevResult` injected) on stdin.
//! ADD chains each plugin's result into the next; CHECK and DEL hand every plugin the
//! cached result, and DEL walks the list backwards. Plugins that declare a capability
//! (`capabilities: {portMappings: true}`) get the runtime's value for it as
//! `runtimeConfig`, on every command, and no others do.
//!
//! Debian's plugins (v1.1.1) have two CHECK bugs that fire on healthy attachments; CHECK
//! recognises exactly those failures, reports them as [`CheckNote`]s and goes on with
//! the next plugin (any other failure is an error):
//! - portmap checks an IPv6 DNAT chain even for IPv4-only pods and fails with "could not
//!   check ipv6 dnat: chain CNI-DN-… not found" (containernetworking/plugins#819). It
//!   checks the IPv4 rules first, so reaching that message means they matched.
//! - bandwidth dereferences a nil pointer when the pod has no bandwidth limits (its
//!   runtimeConfig has none) and panics (containernetworking/plugins#1221).

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use serde_json::{Map, Value};

use super::cache::{self, CacheEntry};
use super::conflist::ConfList;
use super::result::{CniResult, PluginError};
use super::{CniError, CniErrorKind, Command, RuntimeConf};
use crate::netns::Netns;

/// The only PATH a plugin sees (it may call iptables or ip), independent of the caller's.
const PLUGIN_PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// ADD: runs every plugin of `list` in order, caches the final result under `cache_dir`
/// and returns it. On failure nothing is cached; the caller DELs to undo a partial ADD.
pub fn add(
    node: &Netns,
    list: &ConfList,
    rt: &RuntimeConf,
    cache_dir: &Path,
) -> Result<CniResult, CniError> {
    check_node(node, rt, Command::Add, list)?;
    let mut prev: Option<Value> = None;
    for i in 0..list.plugins.len() {
        let stdin = plugin_config(list, i, &rt.capability_args, prev.as_ref());
        let out = invoke(node, list.plugin_type(i), Command::Add, rt, &stdin)
            .map_err(|k| err(Command::Add, list.plugin_type(i), rt, k))?;
        let v: Value = serde_json::from_slice(&out).map_err(|e| {
            err(
                Command::Add,
                list.plugin_type(i),
                rt,
                CniErrorKind::Output(format!("{e}: {}", String::from_utf8_lossy(&out))),
            )
        })?;
        prev = Some(v);
    }
    let last = list.plugin_type(list.plugins.len() - 1);
    let raw = prev.unwrap_or(Value::Null);
    let result: CniResult = serde_json::from_value(raw.clone())
        .map_err(|e| err(Command::Add, last, rt, CniErrorKind::Output(e.to_string())))?;
    cache::write(cache_dir, &CacheEntry::new(list, rt, raw)).map_err(|e| {
        err(
            Command::Add,
            last,
            rt,
            CniErrorKind::Cache(format!("{e:#}")),
        )
    })?;
    Ok(result)
}

/// DEL: runs the plugins of `list` in reverse order with the cached result (if any) as
/// `prevResult`, then drops the cache entry. Stops at the first failing plugin and keeps
/// the cache entry, so a later DEL can try again.
pub fn del(
    node: &Netns,
    list: &ConfList,
    rt: &RuntimeConf,
    cache_dir: &Path,
) -> Result<(), CniError> {
    check_node(node, rt, Command::Del, list)?;
    // An unreadable cache must not block the DEL: plugins cope without prevResult.
    let cached = cache::read(cache_dir, &rt.container_id, &rt.ifname)
        .ok()
        .flatten()
        .map(|c| c.result);
    for i in (0..list.plugins.len()).rev() {
        let stdin = plugin_config(list, i, &rt.capability_args, cached.as_ref());
        invoke(node, list.plugin_type(i), Command::Del, rt, &stdin)
            .map_err(|k| err(Command::Del, list.plugin_type(i), rt, k))?;
    }
    cache::remove(cache_dir, &rt.container_id, &rt.ifname).map_err(|e| {
        err(
            Command::Del,
            list.plugin_type(0),
            rt,
            CniErrorKind::Cache(format!("{e:#}")),
        )
    })
}

/// DEL from a cache entry alone (what `clean` does after a crash).
pub fn del_cached(node: &Netns, entry: &CacheEntry, cache_dir: &Path) -> Result<(), CniError> {
    let (list, rt) = entry.runtime().map_err(|e| CniError {
        command: Command::Del,
        plugin: "?".into(),
        pod: entry.pod.clone(),
        ifname: entry.if_name.clone(),
        node: entry.node.clone(),
        kind: Box::new(CniErrorKind::Cache(format!("{e:#}"))),
    })?;
    del(node, &list, &rt, cache_dir)
}

/// What a CHECK that passed has to say: the known plugin bugs it stepped over, or why
/// it did not run at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub notes: Vec<CheckNote>,
    /// Set when the list was not checked (`disableCheck`, or a spec version before CHECK).
    pub skipped: Option<String>,
}

/// A plugin whose CHECK failed with a known bug of its version, not a real problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckNote {
    pub plugin: String,
    pub pod: String,
    pub node: String,
    /// The upstream issue, e.g. `containernetworking/plugins#819`.
    pub issue: &'static str,
    /// What the plugin said and why it is that bug.
    pub what: String,
}

/// CHECK: asks every plugin, in order, whether the attachment still matches the cached
/// result (passed to each as `prevResult`). A plugin failure that is one of the known
/// bugs of Debian's 1.1.1 (see the module comment) becomes a note and the check goes on;
/// any other failure is an error.
pub fn check(
    node: &Netns,
    list: &ConfList,
    rt: &RuntimeConf,
    cache_dir: &Path,
) -> Result<CheckReport, CniError> {
    check_node(node, rt, Command::Check, list)?;
    if list.disable_check {
        return Ok(CheckReport {
            skipped: Some(format!("network {} sets disableCheck", list.name)),
            ..CheckReport::default()
        });
    }
    if matches!(
        list.cni_version.as_str(),
        "0.1.0" | "0.2.0" | "0.3.0" | "0.3.1"
    ) {
        // libcni refuses too: CHECK came with spec 0.4.0.
        return Ok(CheckReport {
            skipped: Some(format!(
                "network {} is cniVersion {}, and CHECK came with 0.4.0",
                list.name, list.cni_version
            )),
            ..CheckReport::default()
        });
    }
    let cached = cache::read(cache_dir, &rt.container_id, &rt.ifname)
        .map_err(|e| {
            err(
                Command::Check,
                list.plugin_type(0),
                rt,
                CniErrorKind::Cache(format!("{e:#}")),
            )
        })?
        .ok_or_else(|| {
            err(
                Command::Check,
                list.plugin_type(0),
                rt,
                CniErrorKind::Cache("no cached result to check against".into()),
            )
        })?;
    let mut report = CheckReport::default();
    for i in 0..list.plugins.len() {
        let plugin = list.plugin_type(i);
        let stdin = plugin_config(list, i, &rt.capability_args, Some(&cached.result));
        match invoke(node, plugin, Command::Check, rt, &stdin) {
            Ok(_) => {}
            Err(kind) => match known_check_bug(plugin, rt, &kind) {
                Some((issue, what)) => report.notes.push(CheckNote {
                    plugin: plugin.to_string(),
                    pod: rt.pod.clone(),
                    node: rt.node.clone(),
                    issue,
                    what,
                }),
                None => return Err(err(Command::Check, plugin, rt, kind)),
            },
        }
    }
    Ok(report)
}

/// Whether a CHECK failure is exactly one of the known bugs of Debian's plugins.
fn known_check_bug(
    plugin: &str,
    rt: &RuntimeConf,
    kind: &CniErrorKind,
) -> Option<(&'static str, String)> {
    match (plugin, kind) {
        ("portmap", CniErrorKind::Plugin(e))
            if e.msg
                .starts_with("could not check ipv6 dnat: chain CNI-DN-")
                && e.msg.ends_with("not found in iptables table nat") =>
        {
            Some((
                "containernetworking/plugins#819",
                format!(
                    "\"{}\": the pod has no IPv6 address; the IPv4 rules were checked first and match",
                    e.msg
                ),
            ))
        }
        ("bandwidth", CniErrorKind::Failed { output, .. })
            if !rt.capability_args.contains_key("bandwidth")
                && output.contains("nil pointer dereference")
                && output.contains("main.cmdCheck") =>
        {
            Some((
                "containernetworking/plugins#1221",
                "the plugin panics (nil pointer) when the pod has no bandwidth limits to check"
                    .to_string(),
            ))
        }
        _ => None,
    }
}

/// The plugin's stdin: its own configuration plus the list's `name` and `cniVersion`,
/// `runtimeConfig` with the runtime's values for the capabilities the plugin declares
/// (libcni's injectRuntimeConfig), and `prevResult` when there is one.
pub fn plugin_config(
    list: &ConfList,
    i: usize,
    capability_args: &Map<String, Value>,
    prev: Option<&Value>,
) -> Value {
    let mut conf: Map<String, Value> = list.plugins[i].clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    let runtime_config: Map<String, Value> = conf
        .get("capabilities")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, on)| on.as_bool() == Some(true))
        .filter_map(|(cap, _)| capability_args.get(cap).map(|v| (cap.clone(), v.clone())))
        .collect();
    if !runtime_config.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.clone());
    }
    Value::Object(conf)
}

/// Plugins run with the node as their current network namespace: never anywhere else.
fn check_node(
    node: &Netns,
    rt: &RuntimeConf,
    command: Command,
    list: &ConfList,
) -> Result<(), CniError> {
    if node.name() != rt.node_netns {
        return Err(err(
            command,
            list.plugin_type(0),
            rt,
            CniErrorKind::Exec(format!(
                "asked to run in namespace {} but the attachment belongs to {}",
                node.name(),
                rt.node_netns
            )),
        ));
    }
    Ok(())
}

fn err(command: Command, plugin: &str, rt: &RuntimeConf, kind: CniErrorKind) -> CniError {
    CniError {
        command,
        plugin: plugin.to_string(),
        pod: rt.pod.clone(),
        ifname: rt.ifname.clone(),
        node: rt.node.clone(),
        kind: Box::new(kind),
    }
}

/// Starts one plugin process in `node` and returns its stdout.
fn invoke(
    node: &Netns,
    plugin: &str,
    command: Command,
    rt: &RuntimeConf,
    conf: &Value,
) -> Result<Vec<u8>, CniErrorKind> {
    let bin = rt.plugin_dir.join(plugin);
    if !bin.is_file() {
        return Err(CniErrorKind::Exec(format!(
            "plugin binary missing: no {plugin} in {} (is containernetworking-plugins installed?)",
            rt.plugin_dir.display()
        )));
    }
    let stdin = serde_json::to_vec(conf).map_err(|e| CniErrorKind::Exec(e.to_string()))?;
    // A plain Command spawned from this thread while it sits in the node's namespace:
    // the child inherits the thread's namespace, and without a pre_exec hook (what
    // `Netns::command` uses) std can spawn with posix_spawn (vfork) instead of fork.
    // Forking copies the page tables of the whole harness and, while children are
    // between fork and exec, makes the harness's own writes fault copy-on-write: at
    // 1 000 pods (`cargo xtask bench --scale-sizes 10x100`, two runs each) fork took
    // 12.3-14.0 s for the ADDs and 8.8-10.5 s for the DELs, vfork 10.5-12.0 s and 7.1-7.2 s.
    let mut cmd = std::process::Command::new(&bin);
    cmd.env_clear()
        .env("PATH", PLUGIN_PATH_ENV)
        .env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", &rt.container_id)
        .env("CNI_NETNS", &rt.netns)
        .env("CNI_IFNAME", &rt.ifname)
        .env("CNI_PATH", &rt.plugin_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !rt.args.is_empty() {
        let args: Vec<String> = rt.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        cmd.env("CNI_ARGS", args.join(";"));
    }
    let mut child = node.enter(|| cmd.spawn()).map_err(|e| {
        CniErrorKind::Exec(format!(
            "start {} in namespace {}: {e}",
            bin.display(),
            node.name()
        ))
    })?;
    // The configuration is far smaller than a pipe buffer, so writing it all before
    // reading stdout cannot deadlock; plugins read stdin to the end first.
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(&stdin)
            .map_err(|e| CniErrorKind::Exec(format!("write the configuration to {plugin}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniErrorKind::Exec(format!("wait for {plugin}: {e}")))?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    match serde_json::from_slice::<PluginError>(&out.stdout) {
        Ok(e) => Err(CniErrorKind::Plugin(e)),
        Err(_) => Err(CniErrorKind::Failed {
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plugin_config_injects_name_version_and_prev_result() {
        let list = ConfList::from_value(&json!({
            "cniVersion": "1.0.0", "name": "net",
            "plugins": [{"type": "bridge", "bridge": "cni0"}, {"type": "portmap"}]
        }))
        .unwrap();
        let none = Map::new();
        let first = plugin_config(&list, 0, &none, None);
        assert_eq!(
            first,
            json!({"type": "bridge", "bridge": "cni0", "name": "net", "cniVersion": "1.0.0"})
        );
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let second = plugin_config(&list, 1, &none, Some(&prev));
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["type"], "portmap");
        assert_eq!(second["name"], "net");
    }

    #[test]
    fn runtime_config_goes_only_to_plugins_that_declare_the_capability() {
        let list = ConfList::from_value(&json!({
            "cniVersion": "1.0.0", "name": "net",
            "plugins": [
                {"type": "bridge"},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
                {"type": "bandwidth", "capabilities": {"bandwidth": true, "portMappings": false}}
            ]
        }))
        .unwrap();
        let mut args = Map::new();
        args.insert(
            "portMappings".into(),
            json!([{"hostPort": 30080, "containerPort": 80, "protocol": "tcp"}]),
        );
        assert!(
            plugin_config(&list, 0, &args, None)
                .get("runtimeConfig")
                .is_none()
        );
        assert_eq!(
            plugin_config(&list, 1, &args, None)["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 30080, "containerPort": 80, "protocol": "tcp"}]})
        );
        // Declared false, or declared but the runtime has no value: nothing injected.
        assert!(
            plugin_config(&list, 2, &args, None)
                .get("runtimeConfig")
                .is_none()
        );
        args.insert(
            "bandwidth".into(),
            json!({"ingressRate": 10_000_000, "ingressBurst": 4_294_967_295u64}),
        );
        assert_eq!(
            plugin_config(&list, 2, &args, None)["runtimeConfig"],
            json!({"bandwidth": {"ingressRate": 10_000_000, "ingressBurst": 4_294_967_295u64}})
        );
    }

    #[test]
    fn only_the_known_check_bugs_are_forgiven() {
        let rt = |caps: &[&str]| RuntimeConf {
            container_id: "c".into(),
            netns: "/var/run/netns/p".into(),
            ifname: "eth0".into(),
            args: vec![],
            capability_args: caps.iter().map(|c| (c.to_string(), json!({}))).collect(),
            node_netns: "n".into(),
            pod: "x/a".into(),
            node: "n1".into(),
            plugin_dir: crate::cni::CNI_PATH.into(),
        };
        let plugin_err = |msg: &str| {
            CniErrorKind::Plugin(PluginError {
                code: 999,
                msg: msg.into(),
                details: String::new(),
            })
        };
        // What portmap 1.1.1 printed on this machine (this-machine.md §2).
        let v6 = plugin_err(
            "could not check ipv6 dnat: chain CNI-DN-e3d126b67ffecee947ca9 not found in iptables table nat",
        );
        assert_eq!(
            known_check_bug("portmap", &rt(&[]), &v6).unwrap().0,
            "containernetworking/plugins#819"
        );
        assert!(known_check_bug("bridge", &rt(&[]), &v6).is_none());
        let v4 = plugin_err("could not check ipv4 dnat: rule [...] in chain CNI-DN-e3d1 not found");
        assert!(known_check_bug("portmap", &rt(&[]), &v4).is_none());
        let panic = CniErrorKind::Failed {
            status: "exit status: 2".into(),
            output: "panic: runtime error: invalid memory address or nil pointer dereference\n\ngoroutine 1 [running]:\nmain.cmdCheck(0xc0000bc770)".into(),
        };
        assert_eq!(
            known_check_bug("bandwidth", &rt(&[]), &panic).unwrap().0,
            "containernetworking/plugins#1221"
        );
        // With limits to check, a panic is not the known bug.
        assert!(known_check_bug("bandwidth", &rt(&["bandwidth"]), &panic).is_none());
    }
}
