//! YAML text to JSON values, keeping the line and column of every node by field path.
//!
//! Everything downstream (serde for the header, `k8s-openapi` for manifests) works on
//! `serde_json::Value`, which has no positions. So while converting we record, for every
//! node, the field path serde reports errors with (`manifests[2].spec.podSelector`, the
//! format of `serde_path_to_error`) and where the node stands in the file. An error found
//! later by path is then turned back into file, line and column.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use saphyr::{MarkedYaml, Scalar, ScalarStyle, YamlData, YamlLoader};
use saphyr_parser::{Event, Parser};
use serde_json::Value;

use crate::error::{Location, ScenarioError};

/// Line/column of every node of one YAML file, keyed by field path
/// (`manifests[2].spec.podSelector`). The documents of a multi-document file are
/// `documents[0]`, `documents[1]`, ...; a single-document file's root is the empty path.
/// One hashed map, not ordered: it is only looked up by path, and a 2 MB install
/// manifest has a hundred thousand long paths.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Positions {
    /// Where each node is named and where its value starts.
    nodes: HashMap<String, NodePosition>,
    /// Strings written as literal block scalars (`|`): line `i` of such a string stands on
    /// file line `value(path).line + i`, so errors inside a text table can point at it.
    pub literal_blocks: HashSet<String>,
}

/// Where one node stands.
#[derive(Debug, Clone, Copy, PartialEq)]
struct NodePosition {
    /// The key of a mapping entry (the right place for "unknown field"), or the node
    /// itself for sequence items and document roots.
    key: Location,
    /// Where the value starts (the right place for "wrong type" or "bad value"). For a
    /// block scalar (`|`) this is its first content line.
    value: Location,
}

impl Positions {
    /// Where the node at `path` is named (its key), or its nearest recorded ancestor.
    pub fn key(&self, path: &str) -> Option<Location> {
        self.nearest(path).map(|n| n.key)
    }

    /// Where the value at `path` starts, or that of its nearest recorded ancestor.
    pub fn value(&self, path: &str) -> Option<Location> {
        self.nearest(path).map(|n| n.value)
    }

    fn record(&mut self, path: String, key: Location, value: Location) {
        self.nodes.insert(path, NodePosition { key, value });
    }

    fn nearest(&self, path: &str) -> Option<NodePosition> {
        let mut p = path;
        loop {
            if let Some(n) = self.nodes.get(p) {
                return Some(*n);
            }
            if p.is_empty() {
                return None;
            }
            p = parent(p);
        }
    }
}

/// The path one level up (`a.b[2]` -> `a.b`, `a.b` -> `a`, `a` -> ``).
pub(crate) fn parent(path: &str) -> &str {
    if path.ends_with(']')
        && let Some(i) = path.rfind('[')
    {
        return &path[..i];
    }
    match path.rfind('.') {
        Some(i) => &path[..i],
        None => "",
    }
}

/// `base.key`, or `key` at the root: the format `serde_path_to_error` prints.
pub(crate) fn join_key(base: &str, key: &str) -> String {
    if base.is_empty() {
        key.to_string()
    } else {
        format!("{base}.{key}")
    }
}

/// `base[i]`.
pub(crate) fn join_index(base: &str, i: usize) -> String {
    format!("{base}[{i}]")
}

/// The path prefix of document `i` in a multi-document file.
pub(crate) fn document_path(i: usize) -> String {
    format!("documents[{i}]")
}

/// Parses YAML text into one JSON value per document (`None` for an empty document)
/// and the positions of all their nodes. With `multi == false` the file must hold exactly
/// one document, whose root is the empty path.
pub(crate) fn parse(
    file: &Path,
    text: &str,
    multi: bool,
) -> Result<(Vec<Option<Value>>, Positions), ScenarioError> {
    // Without an anchor no alias can copy anything (an alias to no anchor is the
    // loader's error), and most manifests have none: spare them a second scan.
    if text.contains('&') {
        check_alias_copies(file, text)?;
    }
    let mut loader: YamlLoader<MarkedYaml> = YamlLoader::default();
    // Keep scalars as written (with their style) so that quoted `"80"` stays a string and
    // literal blocks can be told apart; we resolve them ourselves below.
    loader.early_parse(false);
    let mut parser = Parser::new_from_str(text);
    let scan = parser.load(&mut loader, true);
    if let Some(e) = scan.err().or_else(|| loader.error().cloned()) {
        let m = e.marker();
        let message = match e.info() {
            "duplicated key in mapping" => {
                // The marker stands on the second occurrence of the key.
                let key: String = text
                    .chars()
                    .skip(m.index())
                    .take_while(|c| *c != ':' && *c != '\n')
                    .collect();
                format!("the key `{}` appears twice in the same mapping", key.trim())
            }
            info => format!(
                "not valid YAML: {info}{}",
                block_indent_hint(text, m.line())
            ),
        };
        return Err(ScenarioError::new(file, Some(loc(m)), "", message));
    }
    let docs = loader.into_documents();
    let mut positions = Positions::default();
    // About one node per 16 bytes of YAML: grown once rather than rehashed as it fills.
    positions.nodes.reserve(text.len() / 16);
    if !multi {
        match docs.len() {
            0 => return Err(ScenarioError::new(file, None, "", "the file is empty")),
            1 => {}
            _ => {
                return Err(ScenarioError::new(
                    file,
                    Some(loc(&docs[1].span.start)),
                    "",
                    "a scenario file holds one YAML document, but a second one starts here",
                ));
            }
        }
    }
    let mut out = Vec::with_capacity(docs.len());
    for (i, doc) in docs.iter().enumerate() {
        let path = if multi {
            document_path(i)
        } else {
            String::new()
        };
        let start = loc(&doc.span.start);
        positions.record(path.clone(), start, start);
        let mut conv = Converter {
            file,
            positions: &mut positions,
        };
        let value = conv.node(doc, &path)?;
        out.push((!value.is_null()).then_some(value));
    }
    Ok((out, positions))
}

/// The most text that aliases may copy in one file, in bytes.
const MAX_ALIAS_COPIES: usize = 16 << 20;

/// The loader resolves an alias by copying its anchor's value, and it bounds the number
/// of nodes copied (against "billion laughs") but not their size: one large anchor named
/// by thousands of aliases makes gigabytes out of a small file. This walks the events
/// first and refuses a file whose aliases would copy more than [`MAX_ALIAS_COPIES`]
/// bytes of text. YAML errors are left to the loader, which reports them with context.
fn check_alias_copies(file: &Path, text: &str) -> Result<(), ScenarioError> {
    // Bytes of text in each anchored value, aliases inside it counted as copies.
    let mut anchors: HashMap<usize, usize> = HashMap::new();
    // The collections still open: their anchor (0 for none) and their bytes so far.
    let mut open: Vec<(usize, usize)> = Vec::new();
    let mut copied: usize = 0;
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else {
            return Ok(());
        };
        let bytes = match event {
            Event::Scalar(value, _, anchor, _) => {
                if anchor != 0 {
                    anchors.insert(anchor, value.len());
                }
                value.len()
            }
            Event::Alias(anchor) => {
                let bytes = anchors.get(&anchor).copied().unwrap_or(0);
                copied = copied.saturating_add(bytes);
                if copied > MAX_ALIAS_COPIES {
                    return Err(ScenarioError::new(
                        file,
                        Some(loc(&span.start)),
                        "",
                        format!(
                            "the aliases (`*name`) up to here copy more than {} MiB of text: \
                             each alias repeats its anchor's whole value",
                            MAX_ALIAS_COPIES >> 20
                        ),
                    ));
                }
                bytes
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                open.push((anchor, 0));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some((anchor, bytes)) = open.pop() else {
                    continue;
                };
                if anchor != 0 {
                    anchors.insert(anchor, bytes);
                }
                bytes
            }
            _ => continue,
        };
        if let Some((_, total)) = open.last_mut() {
            *total = total.saturating_add(bytes);
        }
    }
    Ok(())
}

/// The usual cause of a YAML error just after a literal block: the block takes its
/// indentation from its first line, so a table whose header line is indented more than
/// its rows ends at the first row. Says so when that is what happened.
fn block_indent_hint(text: &str, error_line: usize) -> &'static str {
    let lines: Vec<&str> = text.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let Some(err) = lines.get(error_line.saturating_sub(1)) else {
        return "";
    };
    for i in (0..error_line.saturating_sub(1)).rev() {
        let l = lines[i].trim_end();
        if l.trim().is_empty() {
            continue;
        }
        let is_block_start = ["|", "|-", "|+", ">", ">-", ">+"].iter().any(|ind| {
            l.strip_suffix(ind).is_some_and(|rest| {
                rest.trim_end().ends_with(':') || rest.trim_end().ends_with('-')
            })
        });
        if is_block_start {
            let first = lines[i + 1..].iter().find(|l| !l.trim().is_empty());
            return match first {
                Some(f) if indent(f) > indent(err) && indent(err) > indent(l) => {
                    "; the block above takes its indentation from its first line, which is indented more than this one: \
                     give the indentation explicitly (`|2` when the rows sit 2 spaces deeper than the key)"
                }
                _ => "",
            };
        }
        if indent(lines[i]) <= indent(err) {
            return "";
        }
    }
    ""
}

fn loc(m: &saphyr::Marker) -> Location {
    Location {
        line: m.line(),
        column: m.col() + 1,
    }
}

struct Converter<'a> {
    file: &'a Path,
    positions: &'a mut Positions,
}

impl Converter<'_> {
    fn err(&self, node: &MarkedYaml, path: &str, message: impl Into<String>) -> ScenarioError {
        ScenarioError::new(self.file, Some(loc(&node.span.start)), path, message)
    }

    fn node(&mut self, node: &MarkedYaml, path: &str) -> Result<Value, ScenarioError> {
        match &node.data {
            YamlData::Representation(text, style, tag) => {
                if *style == ScalarStyle::Literal {
                    self.positions.literal_blocks.insert(path.to_string());
                }
                self.scalar(node, path, text, *style, tag.as_ref())
            }
            YamlData::Value(s) => self.resolved(node, path, s),
            YamlData::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let p = join_index(path, i);
                    let l = loc(&item.span.start);
                    self.positions.record(p.clone(), l, l);
                    out.push(self.node(item, &p)?);
                }
                Ok(Value::Array(out))
            }
            YamlData::Mapping(map) => {
                let mut out = serde_json::Map::new();
                for (k, v) in map {
                    let key = self.key(k, path)?;
                    let p = join_key(path, &key);
                    if out.contains_key(&key) {
                        return Err(self.err(
                            k,
                            &p,
                            format!("the key `{key}` appears twice in the same mapping"),
                        ));
                    }
                    self.positions
                        .record(p.clone(), loc(&k.span.start), loc(&v.span.start));
                    let value = self.node(v, &p)?;
                    out.insert(key, value);
                }
                Ok(Value::Object(out))
            }
            YamlData::Tagged(tag, _) => Err(self.err(
                node,
                path,
                format!("YAML tags such as `{tag}` are not supported here"),
            )),
            // The loader resolves aliases to copies of their anchor; an alias left over
            // points at an anchor that does not exist.
            YamlData::Alias(_) => Err(self.err(node, path, "this alias names no anchor")),
            YamlData::BadValue => Err(self.err(node, path, "this value cannot be read")),
        }
    }

    fn scalar(
        &self,
        node: &MarkedYaml,
        path: &str,
        text: &str,
        style: ScalarStyle,
        tag: Option<&Cow<'_, saphyr::Tag>>,
    ) -> Result<Value, ScenarioError> {
        if let Some(t) = tag
            && !t.is_yaml_core_schema()
        {
            return Err(self.err(
                node,
                path,
                format!("YAML tags such as `{t}` are not supported here"),
            ));
        }
        match Scalar::parse_from_cow_and_metadata(Cow::Borrowed(text), style, tag) {
            Some(s) => self.resolved(node, path, &s),
            None => Err(self.err(node, path, format!("`{text}` does not match its tag"))),
        }
    }

    fn resolved(&self, node: &MarkedYaml, path: &str, s: &Scalar) -> Result<Value, ScenarioError> {
        Ok(match s {
            Scalar::Null => Value::Null,
            Scalar::Boolean(b) => Value::Bool(*b),
            Scalar::Integer(i) => Value::from(*i),
            Scalar::FloatingPoint(f) => match serde_json::Number::from_f64(f.into_inner()) {
                Some(n) => Value::Number(n),
                None => {
                    return Err(self.err(node, path, "infinite and NaN numbers are not allowed"));
                }
            },
            Scalar::String(s) => Value::String(s.to_string()),
        })
    }

    /// Mapping keys become strings, as `kubectl` reads them (`80: x` has the key `"80"`).
    fn key(&self, k: &MarkedYaml, path: &str) -> Result<String, ScenarioError> {
        let v = match &k.data {
            YamlData::Representation(text, style, tag) => {
                self.scalar(k, path, text, *style, tag.as_ref())?
            }
            YamlData::Value(s) => self.resolved(k, path, s)?,
            _ => return Err(self.err(k, path, "mapping keys must be plain scalars")),
        };
        match v {
            Value::String(s) => Ok(s),
            Value::Null => Err(self.err(k, path, "a mapping key is empty")),
            other => Ok(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse1(text: &str) -> (Value, Positions) {
        let (mut docs, pos) = parse(Path::new("t.yaml"), text, false).unwrap();
        (docs.remove(0).unwrap(), pos)
    }

    fn at(line: usize, column: usize) -> Option<Location> {
        Some(Location { line, column })
    }

    #[test]
    fn records_keys_values_and_items() {
        let (v, pos) = parse1("a:\n  b: [1, \"2\", x]\n  c:\n    - {d: ~}\n");
        assert_eq!(
            v,
            serde_json::json!({"a": {"b": [1, "2", "x"], "c": [{"d": null}]}})
        );
        assert_eq!(pos.key("a.b"), at(2, 3));
        assert_eq!(pos.value("a.b"), at(2, 6));
        assert_eq!(pos.key("a.b[1]"), at(2, 10));
        assert_eq!(pos.key("a.c[0].d"), at(4, 8));
        // Unknown paths fall back to the nearest ancestor.
        assert_eq!(pos.key("a.c[0].d.e.f"), at(4, 8));
        assert_eq!(pos.key("a.zz"), at(1, 1));
    }

    #[test]
    fn literal_blocks_are_marked_with_their_first_content_line() {
        let (v, pos) = parse1("t: |\n  x y\n  z\nu: >\n  a\n");
        assert_eq!(v["t"], "x y\nz\n");
        assert!(pos.literal_blocks.contains("t"));
        assert!(!pos.literal_blocks.contains("u"));
        assert_eq!(pos.value("t"), at(2, 3));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let e = parse(Path::new("t.yaml"), "a: 1\nb: 2\na: 3\n", false).unwrap_err();
        assert_eq!(e.location, at(3, 1), "{e}");
        // Keys that differ only in quoting are still the same key.
        let e = parse(Path::new("t.yaml"), "x:\n  80: 1\n  \"80\": 2\n", false).unwrap_err();
        assert_eq!(e.location, at(3, 3), "{e}");
        assert_eq!(e.path, "x.80");
    }

    #[test]
    fn multi_document_paths() {
        let (docs, pos) = parse(Path::new("m.yaml"), "a: 1\n---\n---\nb:\n  c: 2\n", true).unwrap();
        assert_eq!(docs.len(), 3);
        assert!(docs[1].is_none());
        assert_eq!(pos.key("documents[2].b.c"), at(5, 3));
    }

    #[test]
    fn aliases_may_not_copy_a_large_anchor_thousands_of_times() {
        let big = "x".repeat(100_000);
        let aliases = vec!["*b"; 200].join(", ");
        let text = format!("big: &b \"{big}\"\nlist: [{aliases}]\n");
        let e = parse(Path::new("t.yaml"), &text, false).unwrap_err();
        assert!(e.message.contains("copy more than 16 MiB"), "{e}");
        assert_eq!(e.location.map(|l| l.line), Some(2), "{e}");
        // Nested anchors count their aliases' copies too.
        let text = format!(
            "a: &a \"{big}\"\nb: &b [{}]\nc: [{}]\n",
            vec!["*a"; 100].join(","),
            ["*b"; 2].join(",")
        );
        let e = parse(Path::new("t.yaml"), &text, false).unwrap_err();
        assert!(e.message.contains("copy more than 16 MiB"), "{e}");
        // A few aliases of small anchors, as scenarios use them, are fine.
        let (docs, _) = parse(Path::new("t.yaml"), "x: &x [1, 2]\ny: *x\nz: *x\n", false).unwrap();
        assert_eq!(docs[0].as_ref().unwrap()["z"], serde_json::json!([1, 2]));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse(Path::new("t.yaml"), "a: [1, 2\nb: 3\n", false).unwrap_err();
        assert!(e.location.is_some(), "{e}");
        assert!(e.message.starts_with("not valid YAML"), "{e}");
    }
}
