//! The `none` engine: accepts every policy and enforces nothing, as flannel or the plain
//! bridge plugin would. Nothing is written to the nodes; with it, every probe passes
//! whatever the policies say, which is the lesson: a NetworkPolicy is only as real as
//! the plugin that implements it.

use std::time::Instant;

use sim::objects::ClusterObjects;
use sim::plan::Plan;

use super::{NodeSync, PolicyEngine, PolicyError, SyncReport};
use crate::system::NsRef;

/// Enforces nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoneEngine;

impl PolicyEngine for NoneEngine {
    fn name(&self) -> &'static str {
        "none"
    }

    fn sync_refs(
        &mut self,
        _plan: &Plan,
        nodes: &[(String, NsRef)],
        _objects: &ClusterObjects,
    ) -> Result<SyncReport, PolicyError> {
        let start = Instant::now();
        Ok(SyncReport {
            nodes: nodes
                .iter()
                .map(|(node, _)| NodeSync {
                    node: node.clone(),
                    changed: false,
                    elapsed: start.elapsed(),
                    rules: 0,
                    sets: 0,
                })
                .collect(),
            render: Default::default(),
            elapsed: start.elapsed(),
        })
    }
}
