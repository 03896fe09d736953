//! Scenarios made of manifests alone, for `knetlab check` and `diff`: a scenario header
//! written by the caller (cluster options, `probe: {services: true}`) plus manifest
//! streams the caller read (files, a directory's files, stdin). Each stream is decoded
//! exactly as a `manifestFiles` entry is, so whatever kinds that path accepts, these do.

use std::path::{Path, PathBuf};

use crate::error::ScenarioError;

use super::{LoadOptions, Scenario};

/// One multi-document YAML (or JSON) text and the name errors give it (its file, or
/// `<stdin>`).
#[derive(Debug, Clone)]
pub struct ManifestStream {
    pub name: PathBuf,
    pub text: String,
}

/// Checks the scenario `header` (a scenario document, usually without manifests; `path`
/// names it and anchors its relative `manifestFiles`) with `streams` applied after its
/// own manifests. A stream with no manifest in it is an error naming it.
pub fn from_manifests(
    path: &Path,
    header: &str,
    streams: &[ManifestStream],
    opts: &LoadOptions,
) -> Result<Scenario, ScenarioError> {
    super::build::build_with(path, header, opts, streams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Kind;

    const HEADER: &str = "name: check\nsummary: s\ncluster: {nodes: 2}\nprobe: {services: true}\n";

    fn stream(name: &str, text: &str) -> ManifestStream {
        ManifestStream {
            name: name.into(),
            text: text.into(),
        }
    }

    fn load(
        path: &Path,
        header: &str,
        streams: &[ManifestStream],
    ) -> Result<Scenario, ScenarioError> {
        from_manifests(path, header, streams, &LoadOptions::default())
    }

    #[test]
    fn streams_are_applied_as_manifest_files_are_with_the_services_probe() {
        let s = load(
            Path::new("/x/check"),
            HEADER,
            &[
                stream(
                    "a.yaml",
                    "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n",
                ),
                stream(
                    "<stdin>",
                    "# helm prints comments\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: web, labels: {app: web}}\nspec: {containers: [{name: c, image: i}]}\n",
                ),
            ],
        )
        .unwrap();
        assert!(s.probe.services);
        assert_eq!(s.cluster.nodes.len(), 2);
        let kinds: Vec<(Kind, String)> = s.steps[0]
            .changes
            .iter()
            .filter_map(|c| match c {
                super::super::Change::Apply(raw) => {
                    Some((raw.kind, raw.file.display().to_string()))
                }
                _ => None,
            })
            .collect();
        // Namespaces, then pods, then the rest, as for manifestFiles.
        assert_eq!(
            kinds,
            vec![
                (Kind::Namespace, "/x/check".to_string()),
                (Kind::Pod, "<stdin>".to_string()),
                (Kind::Service, "a.yaml".to_string()),
            ]
        );
    }

    #[test]
    fn a_stream_that_is_not_yaml_or_holds_nothing_is_an_error_naming_it() {
        let e = load(Path::new("check"), HEADER, &[stream("<stdin>", "a: [b\n")])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("<stdin>:"), "{e}");
        let e = load(
            Path::new("check"),
            HEADER,
            &[stream("c.yaml", "# only\n---\n")],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("c.yaml") && e.contains("holds no manifests"),
            "{e}"
        );
        let e = load(
            Path::new("check"),
            HEADER,
            &[stream(
                "d.yaml",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containerz: []}\n",
            )],
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("d.yaml:4:"), "{e}");
    }
}
