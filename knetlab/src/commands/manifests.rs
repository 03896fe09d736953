//! What `check` and `diff` read: manifest paths (files, directories, `-` for stdin) into
//! manifest streams, the cluster options as a scenario header, and the scenario made of
//! both ([`sim::scenario::from_manifests`], which decodes each stream as a
//! `manifestFiles` entry). Every input mistake is found here, before anything is built.

use std::path::{Component, Path, PathBuf};

use sim::scenario::{ManifestStream, Scenario};

/// The name errors and the saved baseline give what came on stdin.
pub const STDIN: &str = "<stdin>";

/// The cluster options of `check` and `diff`; left out, each takes the scenario default.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClusterOpts {
    /// Nodes in the cluster, named n1..nN (default 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub nodes: Option<u16>,
    /// How pods on different nodes reach each other (default host-gw).
    #[arg(long, value_enum)]
    pub network: Option<Network>,
    /// The NetworkPolicy enforcer (default iptables; `none` enforces nothing).
    #[arg(long, value_enum)]
    pub policy: Option<Policy>,
    /// The kube-proxy mode for Services (default iptables).
    #[arg(long, value_enum)]
    pub proxy: Option<Proxy>,
    /// How a denied packet is refused (default reject: an ICMP error; drop: silence).
    #[arg(long, value_enum)]
    pub deny: Option<Deny>,
    /// Leave out kinds that change the network but are not modelled (CiliumNetworkPolicy,
    /// Gateway API routes, ...) with a loud warning, instead of refusing to run.
    #[arg(long)]
    pub ignore_unsupported: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum Network {
    HostGw,
    Vxlan,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum Policy {
    Iptables,
    None,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum Proxy {
    Iptables,
    Nftables,
    Ipvs,
    Userspace,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum Deny {
    Reject,
    Drop,
}

impl ClusterOpts {
    /// The `cluster:` section these options stand for (`{}` when all are defaults).
    pub fn cluster_yaml(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.nodes {
            parts.push(format!("nodes: {n}"));
        }
        if let Some(n) = self.network {
            parts.push(format!(
                "network: {}",
                match n {
                    Network::HostGw => "host-gw",
                    Network::Vxlan => "vxlan",
                }
            ));
        }
        if let Some(p) = self.policy {
            parts.push(format!(
                "policy: {}",
                match p {
                    Policy::Iptables => "iptables",
                    Policy::None => "none",
                }
            ));
        }
        if let Some(p) = self.proxy {
            parts.push(format!(
                "proxy: {}",
                match p {
                    Proxy::Iptables => "iptables",
                    Proxy::Nftables => "nftables",
                    Proxy::Ipvs => "ipvs",
                    Proxy::Userspace => "userspace",
                }
            ));
        }
        if let Some(d) = self.deny {
            parts.push(format!(
                "deny: {}",
                match d {
                    Deny::Reject => "reject",
                    Deny::Drop => "drop",
                }
            ));
        }
        format!("{{{}}}", parts.join(", "))
    }
}

/// One manifest input as given: a file (a directory stands for its files) or stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    File(PathBuf),
    Stdin,
}

/// Whether a file name is one a directory contributes.
fn is_manifest_name(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
}

/// The files of the given paths: a file as it is, a directory as its `*.yaml`, `*.yml`
/// and `*.json` files sorted by name (not recursive), `-` as stdin (at most once).
pub fn inputs(args: &[String]) -> Result<Vec<Input>, String> {
    if args.is_empty() {
        return Err("name the manifests: files, directories, or - for stdin".into());
    }
    let mut out = Vec::new();
    for arg in args {
        if arg == "-" {
            if out.contains(&Input::Stdin) {
                return Err("- (stdin) is given twice".into());
            }
            out.push(Input::Stdin);
            continue;
        }
        let path = PathBuf::from(arg);
        let meta = std::fs::metadata(&path).map_err(|e| format!("{arg}: {e}"))?;
        if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| format!("{arg}: {e}"))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| is_manifest_name(p) && p.is_file())
                .collect();
            if files.is_empty() {
                return Err(format!(
                    "{arg}: the directory holds no *.yaml, *.yml or *.json file (subdirectories are not read)"
                ));
            }
            files.sort();
            out.extend(files.into_iter().map(Input::File));
        } else {
            out.push(Input::File(path));
        }
    }
    Ok(out)
}

/// Reads every input into a stream.
pub fn read(inputs: &[Input]) -> Result<Vec<ManifestStream>, String> {
    inputs
        .iter()
        .map(|i| match i {
            Input::File(p) => std::fs::read_to_string(p)
                .map(|text| ManifestStream {
                    name: p.clone(),
                    text,
                })
                .map_err(|e| format!("{}: {e}", p.display())),
            Input::Stdin => {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(|e| format!("{STDIN}: {e} (manifests are UTF-8 YAML or JSON)"))?;
                if text.trim().is_empty() {
                    return Err(format!(
                        "{STDIN}: nothing came on stdin; pipe manifests in, e.g. `helm template my-app ./chart | sudo knetlab check -`"
                    ));
                }
                Ok(ManifestStream {
                    name: PathBuf::from(STDIN),
                    text,
                })
            }
        })
        .collect()
}

/// The scenario header `check` runs: the cluster options, every pod port and every
/// Service port probed from every pod.
pub fn header(name: &str, summary: &str, cluster: &ClusterOpts) -> String {
    format!(
        "name: {}\nsummary: {}\ncluster: {}\nprobe: {{services: true}}\n",
        yaml_string(name),
        yaml_string(summary),
        cluster.cluster_yaml()
    )
}

/// The scenario of `check` for these inputs (read and checked; nothing is built).
pub fn scenario(
    name: &str,
    args: &[String],
    cluster: &ClusterOpts,
) -> Result<(Scenario, Vec<Input>, Vec<ManifestStream>), String> {
    let inputs = inputs(args)?;
    let streams = read(&inputs)?;
    let cwd = std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?;
    let summary = format!("knetlab check of {}", args.join(" "));
    let scenario = sim::scenario::from_manifests(
        &cwd.join("knetlab-check"),
        &header(name, &summary, cluster),
        &streams,
        &sim::scenario::LoadOptions {
            ignore_unsupported: cluster.ignore_unsupported,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok((scenario, inputs, streams))
}

/// A string as a YAML scalar that reads back as exactly that string (JSON's quoting is
/// valid YAML).
pub fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// `to` relative to the directory `from` (both made absolute against the current
/// directory; `..` where they part).
pub fn relative(from: &Path, to: &Path) -> Result<PathBuf, String> {
    let abs = |p: &Path| -> Result<PathBuf, String> {
        std::fs::canonicalize(p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let from = abs(from)?;
    let to = abs(to)?;
    let a: Vec<Component> = from.components().collect();
    let b: Vec<Component> = to.components().collect();
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..a.len() {
        out.push("..");
    }
    for c in &b[common..] {
        out.push(c.as_os_str());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_go_up_where_the_paths_part() {
        let dir = std::env::temp_dir().join(format!("knetlab-rel-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::create_dir_all(dir.join("c")).unwrap();
        std::fs::write(dir.join("c/m.yaml"), "x").unwrap();
        std::fs::write(dir.join("a/b/n.yaml"), "x").unwrap();
        assert_eq!(
            relative(&dir.join("a/b"), &dir.join("c/m.yaml")).unwrap(),
            PathBuf::from("../../c/m.yaml")
        );
        assert_eq!(
            relative(&dir.join("a"), &dir.join("a/b/n.yaml")).unwrap(),
            PathBuf::from("b/n.yaml")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_gives_its_manifest_files_sorted_and_an_empty_one_is_an_error() {
        let dir = std::env::temp_dir().join(format!("knetlab-inputs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for f in ["b.yml", "a.yaml", "c.json", "notes.txt", "sub/d.yaml"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        let got = inputs(&[dir.display().to_string(), "-".into()]).unwrap();
        assert_eq!(
            got,
            vec![
                Input::File(dir.join("a.yaml")),
                Input::File(dir.join("b.yml")),
                Input::File(dir.join("c.json")),
                Input::Stdin
            ]
        );
        // Not recursive: sub/d.yaml is not among the directory's files above.
        assert_eq!(
            inputs(&[dir.join("sub").display().to_string()]).unwrap(),
            vec![Input::File(dir.join("sub/d.yaml"))]
        );
        std::fs::remove_file(dir.join("sub/d.yaml")).unwrap();
        let err = inputs(&[dir.join("sub").display().to_string()]).unwrap_err();
        assert!(err.contains("holds no *.yaml"), "{err}");
        assert!(inputs(&["-".into(), "-".into()]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cluster_options_become_the_scenario_header() {
        let opts = ClusterOpts {
            nodes: Some(3),
            network: Some(Network::Vxlan),
            deny: Some(Deny::Drop),
            ..Default::default()
        };
        assert_eq!(
            opts.cluster_yaml(),
            "{nodes: 3, network: vxlan, deny: drop}"
        );
        assert_eq!(ClusterOpts::default().cluster_yaml(), "{}");
    }
}
