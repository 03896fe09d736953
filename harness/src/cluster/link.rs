//! Node failure: taking a node's underlay link down and bringing it back, as pulling and
//! re-plugging its cable at the switch would.
//!
//! The link cut is the node's port on the fabric bridge (`ulN`, in the fabric
//! namespace), not the node's own `eth0`: setting `eth0` down would make the kernel flush
//! every route through it (the host-gw routes, the routes to external hosts), which
//! bringing it up again does not restore. With the fabric port down the node keeps all
//! its state; its `eth0` only loses carrier (routes stay, marked linkdown), frames to it
//! die at the bridge and frames from it die in the veth, and when the port comes back up
//! everything works again as it was. Traffic inside the node (pod to pod on `cni0`,
//! node to its own pods) never touches the fabric and keeps flowing.

use anyhow::{Context, Result, anyhow};

use super::Cluster;
use crate::system::netlink::Netlink;

impl Cluster {
    /// Sets node `node`'s fabric port down (`up == false`) or up again.
    pub async fn set_node_underlay(&self, node: &str, up: bool) -> Result<()> {
        let plan = self
            .plan
            .node(node)
            .ok_or_else(|| anyhow!("node {node} is not part of the cluster"))?;
        let port = &plan.fabric_port;
        let fabric = self.fabric.name();
        let nl = Netlink::from_handle(self.fabric.netlink()?, fabric);
        nl.set_state(port, up).await.with_context(|| {
            format!(
                "set node {node}'s fabric port {port} in {fabric} {}",
                if up { "up" } else { "down" }
            )
        })
    }
}
