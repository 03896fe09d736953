//! The result cache, kept like libcni's (`cniCacheV1`): one file per attachment
//! (`<container id>-<ifname>.json`) holding the network configuration that was run and
//! its result. DEL and CHECK need the result as `prevResult`, and a later process
//! (teardown after a crash, `cargo xtask clean`) can DEL from the cache alone.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RuntimeConf;
use super::conflist::ConfList;

const KIND: &str = "cniCacheV1";

/// One cached attachment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    pub kind: String,
    pub container_id: String,
    pub if_name: String,
    pub network_name: String,
    /// CNI_NETNS as given to the plugin.
    pub netns: String,
    /// CNI_ARGS pairs as given to the plugin.
    #[serde(default)]
    pub cni_args: Vec<(String, String)>,
    /// runtimeConfig values by capability name, as libcni caches them.
    #[serde(default)]
    pub capability_args: serde_json::Map<String, Value>,
    /// knetlab's addition: the node namespace the plugin ran in (never the root one).
    pub node_netns: String,
    /// knetlab's addition: names for messages (`ns/name` and the node).
    pub pod: String,
    pub node: String,
    /// The configuration list as run (`.conflist` form).
    pub config: Value,
    pub result: Value,
}

impl CacheEntry {
    pub fn new(list: &ConfList, rt: &RuntimeConf, result: Value) -> CacheEntry {
        CacheEntry {
            kind: KIND.to_string(),
            container_id: rt.container_id.clone(),
            if_name: rt.ifname.clone(),
            network_name: list.name.clone(),
            netns: rt.netns.display().to_string(),
            cni_args: rt.args.clone(),
            capability_args: rt.capability_args.clone(),
            node_netns: rt.node_netns.clone(),
            pod: rt.pod.clone(),
            node: rt.node.clone(),
            config: list.to_value(),
            result,
        }
    }

    /// The runtime parameters and the list this attachment was made with.
    pub fn runtime(&self) -> Result<(ConfList, RuntimeConf)> {
        let list = ConfList::from_value(&self.config)
            .with_context(|| format!("cached configuration of {}", self.container_id))?;
        let rt = RuntimeConf {
            container_id: self.container_id.clone(),
            netns: PathBuf::from(&self.netns),
            ifname: self.if_name.clone(),
            args: self.cni_args.clone(),
            capability_args: self.capability_args.clone(),
            node_netns: self.node_netns.clone(),
            pod: self.pod.clone(),
            node: self.node.clone(),
            // A cached attachment is undone with the installed plugins.
            plugin_dir: PathBuf::from(super::CNI_PATH),
        };
        Ok((list, rt))
    }
}

/// The cache file of one attachment.
pub fn path(cache_dir: &Path, container_id: &str, ifname: &str) -> PathBuf {
    cache_dir.join(format!("{container_id}-{ifname}.json"))
}

pub fn write(cache_dir: &Path, entry: &CacheEntry) -> Result<()> {
    let p = path(cache_dir, &entry.container_id, &entry.if_name);
    let text = serde_json::to_vec_pretty(entry).context("render CNI cache entry")?;
    // Write then rename, so a crash never leaves half a file for `clean` to trip on.
    let tmp = p.with_extension("json.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, &p)
        .with_context(|| format!("rename {} to {}", tmp.display(), p.display()))
}

pub fn read(cache_dir: &Path, container_id: &str, ifname: &str) -> Result<Option<CacheEntry>> {
    read_file(&path(cache_dir, container_id, ifname))
}

pub fn read_file(p: &Path) -> Result<Option<CacheEntry>> {
    match std::fs::read(p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("parse CNI cache {}", p.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", p.display())),
    }
}

pub fn remove(cache_dir: &Path, container_id: &str, ifname: &str) -> Result<()> {
    let p = path(cache_dir, container_id, ifname);
    match std::fs::remove_file(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", p.display()))
        }
        _ => Ok(()),
    }
}

/// Every cache entry in a directory, sorted by file name. Unreadable files are errors in
/// the second list; the caller decides whether to go on.
pub fn read_dir(cache_dir: &Path) -> (Vec<CacheEntry>, Vec<String>) {
    let mut entries = vec![];
    let mut errors = vec![];
    let dir = match std::fs::read_dir(cache_dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (entries, errors),
        Err(e) => {
            errors.push(format!("read {}: {e}", cache_dir.display()));
            return (entries, errors);
        }
    };
    let mut files: Vec<PathBuf> = dir
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for f in files {
        match read_file(&f) {
            Ok(Some(e)) => entries.push(e),
            Ok(None) => {}
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    (entries, errors)
}
