//! Running a network configuration list the way libcni does: each plugin is a process
//! started inside the node's namespace with the CNI_* variables in its environment and
//! its configuration (with `name`, `cniVersion` and `prevResult` injected) on stdin.
//! ADD chains each plugin's result into the next; CHECK and DEL hand every plugin the
//! cached result, and DEL walks the list backwards.

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use serde_json::{Map, Value};

use super::cache::{self, CacheEntry};
use super::conflist::ConfList;
use super::result::{CniResult, PluginError};
use super::{CNI_PATH, CniError, CniErrorKind, Command, RuntimeConf};
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
        let stdin = plugin_config(list, i, prev.as_ref());
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
        let stdin = plugin_config(list, i, cached.as_ref());
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

/// CHECK: asks every plugin, in order, whether the attachment still matches the cached
/// result. Not part of a normal run; useful when something looks wrong.
pub fn check(
    node: &Netns,
    list: &ConfList,
    rt: &RuntimeConf,
    cache_dir: &Path,
) -> Result<(), CniError> {
    check_node(node, rt, Command::Check, list)?;
    if list.disable_check {
        return Ok(());
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
    for i in 0..list.plugins.len() {
        let stdin = plugin_config(list, i, Some(&cached.result));
        invoke(node, list.plugin_type(i), Command::Check, rt, &stdin)
            .map_err(|k| err(Command::Check, list.plugin_type(i), rt, k))?;
    }
    Ok(())
}

/// The plugin's stdin: its own configuration plus the list's `name` and `cniVersion`,
/// and `prevResult` when there is one.
pub fn plugin_config(list: &ConfList, i: usize, prev: Option<&Value>) -> Value {
    let mut conf: Map<String, Value> = list.plugins[i].clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
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
    let bin = Path::new(CNI_PATH).join(plugin);
    if !bin.is_file() {
        return Err(CniErrorKind::Exec(format!(
            "no plugin {plugin} in {CNI_PATH} (is containernetworking-plugins installed?)"
        )));
    }
    let stdin = serde_json::to_vec(conf).map_err(|e| CniErrorKind::Exec(e.to_string()))?;
    let mut cmd = node.command(&bin);
    cmd.env_clear()
        .env("PATH", PLUGIN_PATH_ENV)
        .env("CNI_COMMAND", command.as_str())
        .env("CNI_CONTAINERID", &rt.container_id)
        .env("CNI_NETNS", &rt.netns)
        .env("CNI_IFNAME", &rt.ifname)
        .env("CNI_PATH", CNI_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if !rt.args.is_empty() {
        let args: Vec<String> = rt.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        cmd.env("CNI_ARGS", args.join(";"));
    }
    let mut child = cmd.spawn().map_err(|e| {
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
        let first = plugin_config(&list, 0, None);
        assert_eq!(
            first,
            json!({"type": "bridge", "bridge": "cni0", "name": "net", "cniVersion": "1.0.0"})
        );
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let second = plugin_config(&list, 1, Some(&prev));
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["type"], "portmap");
        assert_eq!(second["name"], "net");
    }
}
