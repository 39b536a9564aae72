//! Builders shared by the crate's unit tests.

use std::collections::BTreeMap;

use shoal_core::manifest::Service;
use shoal_core::model::{Node, NodeConfig, NodeInfo, Timestamp};
use shoal_tests::cluster::node_info;

/// A ready, active docker node with 4 CPUs and 8Gi and the given labels (the test kit's
/// node, started at time 0 so that runs are reproducible).
pub(crate) fn node(id: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        info: NodeInfo {
            started_at: Timestamp(0),
            ..node_info(id, labels)
        },
        config: NodeConfig::default(),
        ready: true,
    }
}

/// Nodes keyed by id.
pub(crate) fn nodes(list: Vec<Node>) -> BTreeMap<String, Node> {
    list.into_iter().map(|n| (n.info.id.clone(), n)).collect()
}

/// The manifest of an `nginx` service with a YAML `spec:` body (indented by two spaces in
/// the caller's text), as an operator writes it to the store.
pub(crate) fn manifest_text(name: &str, spec_yaml: &str) -> String {
    format!(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  image: nginx\n{spec_yaml}"
    )
}

/// A service parsed from a YAML `spec:` body (indented by two spaces in the caller's text).
pub(crate) fn service(name: &str, spec_yaml: &str) -> Service {
    let text = manifest_text(name, spec_yaml);
    let mut parsed = shoal_core::parse(&text, "test.yaml").expect("test manifest parses");
    parsed.remove(0).service
}
