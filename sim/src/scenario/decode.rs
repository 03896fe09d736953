//! Decoding manifests into `k8s-openapi` objects, strictly. (Stub: being written.)

use std::net::Ipv4Addr;

use crate::error::ScenarioError;
use crate::objects::{Object, PodRef};

use super::RawObject;

pub(super) fn referenced_pods(_value: &serde_json::Value) -> Vec<PodRef> {
    todo!()
}

pub(super) fn decode_object(
    _raw: &RawObject,
    _pod_ip: &dyn Fn(&PodRef) -> Option<Ipv4Addr>,
) -> Result<Object, ScenarioError> {
    todo!()
}
