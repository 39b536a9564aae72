//! Builders shared by the crate's unit tests.

use std::collections::BTreeMap;

use shoal_core::manifest::{RuntimeKind, Service};
use shoal_core::model::{Availability, Capacity, Node, NodeConfig, NodeInfo, Timestamp};
use shoal_core::units::ByteSize;

/// A ready, active docker node with 4 CPUs and 8Gi and the given labels.
pub(crate) fn node(id: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        info: NodeInfo {
            id: id.to_string(),
            hostname: format!("host-{id}"),
            address: "127.0.0.1".to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            runtimes: vec![RuntimeKind::Docker],
            capacity: Capacity {
                cpus: 4.0,
                memory: ByteSize(8 << 30),
            },
            role: "worker".to_string(),
            instance: String::new(),
            agent_version: "test".to_string(),
            network_unavailable: None,
            agent_url: None,
            started_at: Timestamp(0),
        },
        config: NodeConfig {
            availability: Availability::Active,
            labels: BTreeMap::new(),
            removed: false,
        },
        ready: true,
    }
}

/// Nodes keyed by id.
pub(crate) fn nodes(list: Vec<Node>) -> BTreeMap<String, Node> {
    list.into_iter().map(|n| (n.info.id.clone(), n)).collect()
}

/// A service parsed from a YAML `spec:` body (indented by four spaces in the caller's text).
pub(crate) fn service(name: &str, spec_yaml: &str) -> Service {
    let text = format!(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  image: nginx\n{spec_yaml}"
    );
    let mut parsed = shoal_core::parse(&text, "test.yaml").expect("test manifest parses");
    parsed.remove(0).service
}
