//! Replaying a parsed scenario without a cluster: the objects at the end of each step
//! (pod addresses are stand-ins), and what follows from them alone, such as the service
//! environment variables each pod got when it started.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::Scenario;
use crate::dns::env::{self, EnvVar};
use crate::objects::{ClusterObjects, PodRef};

/// The cluster's objects at the end of each step, with the step's name. Pod addresses
/// are stand-ins (`0.0.0.0`): use this only for what does not depend on them.
pub fn objects_per_step(scenario: &Scenario) -> Vec<(String, ClusterObjects)> {
    let mut objects = ClusterObjects::new(scenario.cluster.nodes.clone());
    let mut out = Vec::new();
    for step in &scenario.steps {
        for change in &step.changes {
            // A change that does not decode was refused by the parser already.
            let _ = change.apply_to(&mut objects, &|_| Some(Ipv4Addr::UNSPECIFIED));
        }
        out.push((step.name.clone(), objects.clone()));
    }
    out
}

/// The pods' service environment variables after each step ([`env::timeline`] over
/// [`objects_per_step`]; the variables hold only cluster IPs, which the parser
/// allocated).
pub fn env_timeline(scenario: &Scenario) -> Vec<(String, BTreeMap<PodRef, Vec<EnvVar>>)> {
    let steps = objects_per_step(scenario);
    env::timeline(steps.iter().map(|(name, objects)| (name.as_str(), objects)))
}
