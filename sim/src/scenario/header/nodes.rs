//! `cluster.nodes` as written: a count, a list of names, or a list of `{name, labels}`
//! (the labels a scheduler matches nodeSelectors and affinities against).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::ClusterHeader;
use crate::error::ScenarioError;
use crate::names;
use crate::scenario::source::Source;
use crate::scenario::yaml::{join_index, join_key};

/// `nodes: 2`, `nodes: [n1, n2]` or `nodes: [{name: n1, labels: {...}}, ...]`.
#[derive(Debug)]
pub(super) enum Nodes {
    Count(u64),
    Names(Vec<NodeEntry>),
}

/// One entry of a node list: a name, or a name with labels.
#[derive(Debug)]
pub(super) enum NodeEntry {
    Name(String),
    Labelled(LabelledNode),
}

impl<'de> Deserialize<'de> for NodeEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NodeEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string (a node name) or a mapping {name, labels}")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<NodeEntry, E> {
                Ok(NodeEntry::Name(s.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<NodeEntry, A::Error> {
                LabelledNode::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(NodeEntry::Labelled)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LabelledNode {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl NodeEntry {
    pub(super) fn name(&self) -> &str {
        match self {
            NodeEntry::Name(n) => n,
            NodeEntry::Labelled(l) => &l.name,
        }
    }
}

impl<'de> Deserialize<'de> for Nodes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Nodes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a node count (for example 2) or a list of node names (for example [n1, n2]) or of {name, labels}",
                )
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Nodes, E> {
                Ok(Nodes::Count(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Nodes, E> {
                u64::try_from(n)
                    .map(Nodes::Count)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(n), &self))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Nodes, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<NodeEntry>()? {
                    names.push(n);
                }
                Ok(Nodes::Names(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// `cluster.nodes[].labels`, checked as the API server checks labels.
pub(crate) fn node_labels(
    src: &Source,
    h: Option<&ClusterHeader>,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, ScenarioError> {
    let mut out = BTreeMap::new();
    let Some(Nodes::Names(entries)) = h.and_then(|h| h.nodes.as_ref()) else {
        return Ok(out);
    };
    for (i, e) in entries.iter().enumerate() {
        let NodeEntry::Labelled(l) = e else { continue };
        let lp = join_key(&join_index("cluster.nodes", i), "labels");
        for (k, v) in &l.labels {
            let kp = join_key(&lp, k);
            names::label_key(k).map_err(|e| src.at_key(&kp, e))?;
            names::label_value(v).map_err(|e| src.at_value(&kp, e))?;
        }
        out.insert(l.name.clone(), l.labels.clone());
    }
    Ok(out)
}
