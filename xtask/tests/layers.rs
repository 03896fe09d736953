//! The layers of a crate, checked from its source: every top-level module belongs to one
//! layer of a table (bottom first), and a module may import only from layers below its
//! own. The checker reads every `crate::…` path (in `use` lines and in code) and every
//! `super::…` path that climbs out of its top-level module, in `src/**/*.rs` outside
//! `#[cfg(test)]` code (test modules may reach anywhere), and names file and line of each
//! import that goes sideways or up.
//!
//! Same-layer imports are allowed only while they stay acyclic: a layer is a set of
//! peers, and peers may build on one another (`peers` on `names`, `oracle` on `matrix`)
//! as long as no two of them need each other. A cycle inside a layer fails the test with
//! every import that closes it. A module's own submodules are never a question.
//!
//! The check also fails on a top-level module the table does not list (a new module must
//! be given its place), on a table entry with no module behind it, and on a glob import
//! across modules (`use crate::x::*`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// `sim`'s layers, bottom first. A module may import from the layers before its own, and
/// from its own layer's modules as long as those imports form no cycle.
const SIM_LAYERS: &[(&str, &[&str])] = &[
    // Words every layer speaks: ports and protocols, errors, label selectors, the API
    // server's name rules, probe peers and pod identities, the cluster's configuration.
    (
        "vocabulary",
        &["protocol", "error", "selector", "names", "peers", "cluster"],
    ),
    // The cluster's objects (with the API server's defaulting) and the address plan.
    // The objects the workload controllers would create, and where the scheduler puts them.
    ("objects", &["objects", "plan", "workloads"]),
    // What the objects mean: NetworkPolicy, Services and endpoints, the pod network,
    // DNS records, the Ingress model.
    (
        "semantics",
        &[
            "policy",
            "cluster_policy",
            "services",
            "podnet",
            "dns",
            "ingress",
        ],
    ),
    // Text for the kernel and from it: the policy enforcer's rules, kube-proxy's model and
    // its three modes, and kernel traces told as stories.
    ("renderers", &["render", "kube_proxy", "trace"]),
    // Verdicts: the oracle (DNS prediction included) and the matrices.
    ("prediction", &["oracle", "matrix"]),
    // Scenario files parsed, checked and expanded into steps.
    ("scenario", &["scenario"]),
    // Reports of a run.
    ("report", &["report"]),
    // Random cases for the differential tests (cargo feature `testgen`).
    ("test support", &["testgen"]),
];

/// `harness`, bottom up: namespaces and packages before the seam around the kernel, the
/// CNI before what sweeps its leftovers, the cluster before the engines that program it,
/// the run on top.
const HARNESS_LAYERS: &[(&str, &[&str])] = &[
    // Entering and naming network namespaces.
    ("namespaces", &["netns"]),
    // The seam: tools in a namespace (one table of names), typed netlink, the fan-out;
    // the Debian packages those tools come from.
    ("system", &["system", "prereq"]),
    // A small libcni: conflists, ADD/CHECK/DEL, the result cache.
    ("cni", &["cni"]),
    // What killed runs left, and the processes they started.
    ("sweep", &["sweep"]),
    // The cluster (fabric, nodes, pods), the host snapshot, packet captures.
    ("cluster", &["cluster", "host", "capture"]),
    // Probe servers and clients.
    ("probes", &["probe"]),
    // What runs in the nodes: the policy enforcer, the service proxies, DNS, Ingress.
    ("engines", &["policy", "proxy", "dns", "ingress"]),
    // Following one packet through netfilter.
    ("trace", &["trace"]),
    // One scenario, step by step.
    ("run", &["run"]),
    // The oracle against the kernel on many random cases (policies on a cluster of its
    // own; Service sets as scenario runs).
    ("differential", &["differential"]),
    // Fixtures of the unit tests (`#[cfg(test)]`).
    ("test support", &["fixtures"]),
];

/// One reference from a module to another top-level module.
#[derive(Debug, Clone)]
struct Import {
    file: PathBuf,
    line: usize,
    from: String,
    to: String,
    path: String,
}

/// Something wrong with a crate's layering.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Violation(String);

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks the crate whose sources are in `src` against `layers` (bottom first); empty
/// when every import goes down (or sideways without a cycle).
fn check_layers(src: &Path, layers: &[(&str, &[&str])]) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut layer_of: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for (i, (layer, modules)) in layers.iter().enumerate() {
        for m in *modules {
            if let Some((_, other)) = layer_of.insert(m, (i, layer)) {
                out.push(Violation(format!(
                    "module `{m}` is listed in both layer `{other}` and layer `{layer}`"
                )));
            }
        }
    }
    let modules = top_level_modules(src);
    for m in &modules {
        if !layer_of.contains_key(m.as_str()) {
            out.push(Violation(format!(
                "{}: top-level module `{m}` is in no layer of the table: give it its place",
                src.display()
            )));
        }
    }
    for m in layer_of.keys() {
        if !modules.contains(*m) {
            out.push(Violation(format!(
                "the layer table lists `{m}`, which is no top-level module of {}",
                src.display()
            )));
        }
    }

    let mut same_layer: Vec<Import> = Vec::new();
    for file in rust_files(src) {
        let Some(from) = owner(src, &file) else {
            continue;
        };
        let text = match fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                out.push(Violation(format!("{}: cannot read: {e}", file.display())));
                continue;
            }
        };
        let depth = module_depth(src, &file);
        for import in imports(&file, &from, depth, &text, &modules) {
            if import.path.ends_with('*') {
                out.push(Violation(format!(
                    "{}:{}: glob import `{}` across modules: name what you use",
                    import.file.display(),
                    import.line,
                    import.path
                )));
            }
            let (Some(&(own, own_name)), Some(&(theirs, their_name))) = (
                layer_of.get(from.as_str()),
                layer_of.get(import.to.as_str()),
            ) else {
                continue;
            };
            if theirs > own {
                out.push(Violation(format!(
                    "{}:{}: `{}` (layer {own_name}) imports `{}` from the higher layer {their_name}",
                    import.file.display(),
                    import.line,
                    import.from,
                    import.path
                )));
            } else if theirs == own {
                same_layer.push(import);
            }
        }
    }
    out.extend(same_layer_cycles(&same_layer));
    out.sort();
    out.dedup();
    out
}

/// The top-level modules of `src`: `x.rs` and `x/` (not `lib.rs`, `main.rs`, `bin/`).
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let Ok(entries) = fs::read_dir(src) else {
        return BTreeSet::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if path.is_dir() {
                (name != "bin").then_some(name)
            } else {
                let stem = name.strip_suffix(".rs")?;
                (stem != "lib" && stem != "main").then(|| stem.to_string())
            }
        })
        .collect()
}

/// Every `.rs` file under `src`, sorted, except those only compiled for tests: files
/// named `tests.rs` and whole `tests/` folders (a module declares them `#[cfg(test)]`).
fn rust_files(src: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![src.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let p = e.path();
            let name = e.file_name();
            if p.is_dir() {
                if name != "tests" && name != "snapshots" {
                    todo.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") && name != "tests.rs" {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The top-level module a file belongs to (`None` for `lib.rs` / `main.rs`).
fn owner(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.strip_suffix(".rs").unwrap_or(&first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// How many `super::` a file's module needs to reach the crate root: `x.rs` and
/// `x/mod.rs` 1, `x/y.rs` and `x/y/mod.rs` 2, and so on.
fn module_depth(src: &Path, file: &Path) -> usize {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let n = rel.components().count();
    if rel.file_name().is_some_and(|f| f == "mod.rs") {
        n - 1
    } else {
        n
    }
}

/// Every reference from `text` (a file of module `from`, `depth` levels below the crate
/// root) to another top-level module, outside `#[cfg(test)]` items.
fn imports(
    file: &Path,
    from: &str,
    depth: usize,
    text: &str,
    modules: &BTreeSet<String>,
) -> Vec<Import> {
    let code = without_test_items(&blank_comments_and_literals(text));
    let mut out = Vec::new();
    for (i, line) in code.lines().enumerate() {
        for path in paths_in(line) {
            let segments: Vec<&str> = path.split("::").collect();
            let target = if segments[0] == "crate" {
                segments.get(1).copied()
            } else {
                // `super::super::x` from depth 2 reaches the root, then names `x`.
                let supers = segments.iter().take_while(|s| **s == "super").count();
                (supers >= depth)
                    .then(|| segments.get(supers).copied())
                    .flatten()
            };
            let Some(to) = target else { continue };
            if to != from && modules.contains(to) {
                out.push(Import {
                    file: file.to_path_buf(),
                    line: i + 1,
                    from: from.to_string(),
                    to: to.to_string(),
                    path: path.clone(),
                });
            }
        }
    }
    out
}

/// The `crate::a::b` and `super::…` paths of one line of code, each with every segment
/// written (a `{` group ends the path; a trailing `*` is kept to spot glob imports).
fn paths_in(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &line[i..];
        let starts = rest.starts_with("crate::") || rest.starts_with("super::");
        let boundary = i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':';
        if starts && boundary {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '*'))
                .unwrap_or(rest.len());
            out.push(rest[..end].trim_end_matches(':').to_string());
            i += end.max(1);
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `text` with comments, string literals and char literals replaced by spaces (newlines
/// kept), so that braces and paths are only those of code.
fn blank_comments_and_literals(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut level = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    level += 1;
                    out.push_str("  ");
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    level -= 1;
                    out.push_str("  ");
                    i += 2;
                    if level == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && (i == 0 || !(b[i - 1].is_alphanumeric() || b[i - 1] == '_'))
        {
            // Raw string: r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                match b.get(j) {
                    None => break,
                    Some('"') if (1..=hashes).all(|k| b.get(j + k) == Some(&'#')) => {
                        j += 1 + hashes;
                        break;
                    }
                    _ => j += 1,
                }
            }
            for &ch in &b[i..j.min(b.len())] {
                blank(&mut out, ch);
            }
            i = j;
        } else if c == '"' {
            blank(&mut out, c);
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            if i < b.len() {
                blank(&mut out, b[i]);
                i += 1;
            }
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}'), not a lifetime ('a).
            let end = if next == Some('\\') {
                (i + 2..b.len()).find(|&k| b[k] == '\'')
            } else if b.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(e) => {
                    for &ch in &b[i..=e] {
                        blank(&mut out, ch);
                    }
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `code` (already without comments and literals) with every item marked
/// `#[cfg(test)]` blanked: up to its `;` if it has no body, else to its closing brace.
fn without_test_items(code: &str) -> String {
    let mut b: Vec<char> = code.chars().collect();
    let marker: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + marker.len() <= b.len() {
        if b[i..i + marker.len()] != marker[..] {
            i += 1;
            continue;
        }
        let start = i;
        let mut j = i + marker.len();
        let mut depth = 0usize;
        while j < b.len() {
            match b[j] {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        j += 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    j += 1;
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        let end = j.min(b.len());
        for ch in &mut b[start..end] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
        i = j;
    }
    b.into_iter().collect()
}

/// The cycles among same-layer imports, each reported with the imports that close it.
fn same_layer_cycles(imports: &[Import]) -> Vec<Violation> {
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for i in imports {
        graph.entry(&i.from).or_default().insert(&i.to);
    }
    let reaches = |a: &str, b: &str| -> bool {
        let mut seen = BTreeSet::new();
        let mut todo = vec![a];
        while let Some(m) = todo.pop() {
            if m == b {
                return true;
            }
            if seen.insert(m) {
                todo.extend(graph.get(m).into_iter().flatten().copied());
            }
        }
        false
    };
    imports
        .iter()
        .filter(|i| reaches(&i.to, &i.from))
        .map(|i| {
            Violation(format!(
                "{}:{}: `{}` imports `{}` from its own layer, and `{}` reaches `{}` back: a cycle",
                i.file.display(),
                i.line,
                i.from,
                i.path,
                i.to,
                i.from
            ))
        })
        .collect()
}

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(name)
        .join("src")
}

fn assert_layered(name: &str, layers: &[(&str, &[&str])]) {
    let violations = check_layers(&crate_src(name), layers);
    assert!(
        violations.is_empty(),
        "{name}: {} layering violation(s):\n{}",
        violations.len(),
        violations
            .iter()
            .map(|v| format!("  {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn sim_imports_only_from_lower_layers() {
    assert_layered("sim", SIM_LAYERS);
}

/// The checker itself, on a small crate written to a temporary folder.
#[test]
fn harness_imports_only_from_lower_layers() {
    assert_layered("harness", HARNESS_LAYERS);
}

#[test]
fn the_checker_finds_upward_imports_cycles_globs_and_unlisted_modules() {
    let dir = std::env::temp_dir().join(format!("knetlab-layers-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let files: &[(&str, &str)] = &[
        (
            "lib.rs",
            "pub mod a; pub mod b; pub mod c; pub mod d; pub mod stray;",
        ),
        (
            "a.rs",
            "//! `crate::c` in a comment is no import.\n\
             use crate::b::Thing;\nconst S: &str = \"crate::c\";\n\
             #[cfg(test)]\nmod tests { use crate::c::X; }\n",
        ),
        ("b.rs", "use crate::a::Y;\n"),
        ("c/mod.rs", "pub mod inner;\nuse crate::a::*;\n"),
        ("c/inner.rs", "use super::super::d::Up;\nuse super::Own;\n"),
        ("d.rs", "use crate::a::Fine;\n"),
        ("stray.rs", ""),
    ];
    for (path, text) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    let layers: &[(&str, &[&str])] = &[("low", &["a", "b"]), ("mid", &["c"]), ("high", &["d"])];
    let found: Vec<String> = check_layers(&dir, layers)
        .into_iter()
        .map(|v| v.0.replace(&dir.display().to_string(), "SRC"))
        .collect();
    let _ = fs::remove_dir_all(&dir);
    let expect = [
        "SRC/a.rs:2: `a` imports `crate::b::Thing` from its own layer, and `b` reaches `a` back: a cycle",
        "SRC/b.rs:1: `b` imports `crate::a::Y` from its own layer, and `a` reaches `b` back: a cycle",
        "SRC/c/inner.rs:1: `c` (layer mid) imports `super::super::d::Up` from the higher layer high",
        "SRC/c/mod.rs:2: glob import `crate::a::*` across modules: name what you use",
        "SRC: top-level module `stray` is in no layer of the table: give it its place",
    ];
    assert_eq!(found, expect, "got:\n{}", found.join("\n"));
}
