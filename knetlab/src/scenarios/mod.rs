//! Where scenarios come from and how a name becomes a file. A name means `NAME.yaml`
//! in the catalog's directory; anything with a `/` or a `.yaml` ending is a path. The
//! directory is, first found: `--scenarios DIR`, `$KNETLAB_SCENARIOS`, the source
//! tree's `scenarios/` (when running inside the workspace this binary was built from, so
//! an edited scenario takes effect without a rebuild), else the scenarios built into the
//! binary, written out to a private temporary directory for the process's lifetime
//! (scenarios name their CNI configurations and manifest files by relative path, and the
//! loader reads them from disk).

mod embedded;

use std::fmt;
use std::path::{Path, PathBuf};

/// The environment variable that points knetlab at a scenarios directory.
pub const ENV: &str = "KNETLAB_SCENARIOS";

/// Why the catalog is where it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Origin {
    /// `--scenarios DIR`.
    Flag,
    /// `$KNETLAB_SCENARIOS`.
    Env,
    /// The workspace the binary was built from.
    SourceTree,
    /// Built into the binary.
    Embedded,
}

/// The scenarios a run can name, in one directory.
pub struct Catalog {
    dir: PathBuf,
    origin: Origin,
    /// The temporary copy of the embedded set, removed with the catalog.
    _extracted: Option<embedded::Extracted>,
}

impl Catalog {
    /// Finds the scenarios directory (see the module doc): `flag` is `--scenarios`;
    /// `always_source_tree` takes the source tree's scenarios wherever the current
    /// directory is (`cargo xtask`), not only inside the workspace.
    pub fn locate(flag: Option<&Path>, always_source_tree: bool) -> Result<Catalog, String> {
        let given = match flag {
            Some(d) => Some((d.to_path_buf(), Origin::Flag)),
            None => std::env::var_os(ENV)
                .filter(|v| !v.is_empty())
                .map(|v| (PathBuf::from(v), Origin::Env)),
        };
        if let Some((dir, origin)) = given {
            if !dir.is_dir() {
                let by = match origin {
                    Origin::Flag => "--scenarios".to_string(),
                    _ => format!("${ENV}"),
                };
                return Err(format!("{by}: {} is not a directory", dir.display()));
            }
            return Ok(Catalog {
                dir,
                origin,
                _extracted: None,
            });
        }
        let source = source_tree();
        if source.is_dir() && (always_source_tree || inside_workspace()) {
            return Ok(Catalog {
                dir: source,
                origin: Origin::SourceTree,
                _extracted: None,
            });
        }
        let extracted = embedded::extract()?;
        Ok(Catalog {
            dir: extracted.dir().to_path_buf(),
            origin: Origin::Embedded,
            _extracted: Some(extracted),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// `default-deny` → `DIR/default-deny.yaml`; a path (with `/` or `.yaml`) as given.
    pub fn resolve(&self, arg: &str) -> Result<PathBuf, String> {
        let p = Path::new(arg);
        if arg.contains('/') || arg.ends_with(".yaml") || arg.ends_with(".yml") {
            return if p.exists() {
                Ok(p.to_path_buf())
            } else {
                Err(format!("no such scenario file: {arg}"))
            };
        }
        let file = self.dir.join(format!("{arg}.yaml"));
        if file.exists() {
            Ok(file)
        } else {
            let known: Vec<String> = self.all().iter().filter_map(|p| stem(p)).collect();
            Err(format!(
                "no scenario named {arg:?} in {self}; known: {}",
                known.join(", ")
            ))
        }
    }

    /// Every scenario file, sorted by name.
    pub fn all(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }
}

impl fmt::Display for Catalog {
    /// Where the scenarios come from, for `list` and errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.origin {
            Origin::Flag => write!(f, "{} (--scenarios)", self.dir.display()),
            Origin::Env => write!(f, "{} (${ENV})", self.dir.display()),
            Origin::SourceTree => write!(f, "{} (the source tree)", self.dir.display()),
            Origin::Embedded => write!(
                f,
                "the scenarios built into knetlab {} (use --scenarios DIR or ${ENV} for others)",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
}

pub fn stem(p: &Path) -> Option<String> {
    p.file_stem().and_then(|s| s.to_str()).map(str::to_string)
}

/// The workspace this binary was built from (it may be gone: an installed binary).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn source_tree() -> PathBuf {
    workspace_root().join("scenarios")
}

/// Whether the current directory is inside the workspace the binary was built from.
fn inside_workspace() -> bool {
    let (Ok(cwd), Ok(root)) = (
        std::env::current_dir().and_then(|d| d.canonicalize()),
        workspace_root().canonicalize(),
    ) else {
        return false;
    };
    cwd.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_set_resolves_names_and_the_files_they_reference() {
        let c = Catalog {
            dir: PathBuf::new(),
            origin: Origin::Embedded,
            _extracted: None,
        };
        assert!(c.to_string().contains("built into knetlab"), "{c}");
        let extracted = embedded::extract().unwrap();
        let c = Catalog {
            dir: extracted.dir().to_path_buf(),
            origin: Origin::Embedded,
            _extracted: Some(extracted),
        };
        let path = c.resolve("default-deny").unwrap();
        assert!(sim::scenario::load(&path).is_ok());
        // A CNI template and a manifest file, named relative to their scenario.
        for name in ["cni-mynet", "proxy-modes-iptables"] {
            let path = c.resolve(name).unwrap();
            sim::scenario::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let e = c.resolve("no-such").unwrap_err();
        assert!(e.contains("default-deny"), "{e}");
        let dir = c.dir().to_path_buf();
        drop(c);
        assert!(!dir.exists(), "the temporary copy goes with the catalog");
    }
}
