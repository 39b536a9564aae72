//! The generated JSON Schema: it compiles, accepts a full manifest, and rejects unknown fields
//! everywhere, like the types do.

use serde_json::{Value, json};

fn schema() -> Value {
    shoal_core::schema::service_schema()
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&schema()).expect("the schema compiles")
}

fn yaml_to_json(text: &str) -> Value {
    let v: yaml_serde::Value = yaml_serde::from_str(text).unwrap();
    serde_json::to_value(v).unwrap()
}

const FULL: &str = r#"
apiVersion: shoal/v1
kind: Service
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  mode: replicated
  replicas: 3
  runtime: docker
  image: nginx:1.27
  command: [nginx, -g, "daemon off;"]
  env: {LOG_LEVEL: info}
  ports: [{target: 80, published: 8080, protocol: tcp}]
  resources:
    reservations: {cpus: 0.25, memory: 64Mi}
    limits: {cpus: 1, memory: 268435456}
  placement:
    constraints: ["node.labels.storage == ssd"]
    preferences: [{spread: node.labels.zone}]
    maxReplicasPerNode: 2
    strategy: binpack
  restart: {condition: on-failure, delay: 5s, maxAttempts: 0, window: 0s}
  update: {parallelism: 1, delay: 0s, order: start-first, failureAction: rollback, monitor: 5s, maxFailureRatio: 0.5}
  rollback: {parallelism: 0, delay: 1m30s, order: stop-first, failureAction: pause, monitor: 500ms, maxFailureRatio: 0}
  healthcheck: {test: [CMD, wget, -q, -O-, http://127.0.0.1/], interval: 10s, timeout: 2s, retries: 3, startPeriod: 0s}
  stopSignal: SIGTERM
  stopGracePeriod: 10s
  mounts: [{type: volume, source: data, target: /data, readOnly: false}]
  discovery:
    consul: {name: web, tags: [http], meta: {team: a}, port: 80, check: {http: /, tcp: false, interval: 10s, timeout: 2s, deregisterCriticalServiceAfter: 1m}}
"#;

#[test]
fn a_full_manifest_is_valid() {
    let v = validator();
    let doc = yaml_to_json(FULL);
    let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // And the parser agrees.
    shoal_core::parse(FULL, "full.yaml").unwrap();
}

#[test]
fn unknown_fields_fail_at_every_level() {
    let v = validator();
    let base = yaml_to_json(FULL);
    let spots: &[&[&str]] = &[
        &[],
        &["metadata"],
        &["spec"],
        &["spec", "ports", "0"],
        &["spec", "resources"],
        &["spec", "resources", "limits"],
        &["spec", "placement"],
        &["spec", "placement", "preferences", "0"],
        &["spec", "restart"],
        &["spec", "update"],
        &["spec", "rollback"],
        &["spec", "healthcheck"],
        &["spec", "mounts", "0"],
        &["spec", "discovery"],
        &["spec", "discovery", "consul"],
        &["spec", "discovery", "consul", "check"],
    ];
    for spot in spots {
        let mut doc = base.clone();
        let mut at = &mut doc;
        for step in *spot {
            at = match step.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*step],
            };
        }
        at.as_object_mut()
            .unwrap()
            .insert("unknownField".into(), json!(1));
        assert!(
            !v.is_valid(&doc),
            "unknownField under {spot:?} was accepted"
        );
    }
}

#[test]
fn a_yaml_manifest_with_a_typo_fails_the_schema() {
    let doc = yaml_to_json(
        "apiVersion: shoal/v1\nkind: Service\nmetadata: {name: web}\nspec:\n  image: nginx\n  replica: 3\n",
    );
    let v = validator();
    let errors: Vec<String> = v.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(!errors.is_empty());
    assert!(errors.iter().any(|e| e.contains("replica")), "{errors:#?}");
}

#[test]
fn bad_values_fail_the_schema() {
    let v = validator();
    for (path, bad) in [
        (&["spec", "restart", "delay"][..], json!("5 sec")),
        (
            &["spec", "resources", "limits", "memory"][..],
            json!("12 parsecs"),
        ),
        (&["spec", "mode"][..], json!("gloabl")),
        (&["spec", "ports", "0", "target"][..], json!(70000)),
        (&["spec", "replicas"][..], json!(-1)),
    ] {
        let mut doc = yaml_to_json(FULL);
        let mut at = &mut doc;
        for step in path {
            at = match step.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*step],
            };
        }
        *at = bad.clone();
        assert!(!v.is_valid(&doc), "{path:?} = {bad} was accepted");
    }
}

/// Every object schema in the document (root and `$defs`) lists its properties and forbids
/// others.
#[test]
fn every_struct_denies_additional_properties() {
    let s = schema();
    let mut objects = vec![("root".to_string(), &s)];
    if let Some(defs) = s.get("$defs").and_then(Value::as_object) {
        objects.extend(defs.iter().map(|(k, v)| (k.clone(), v)));
    }
    let mut checked = 0;
    for (name, o) in objects {
        if o.get("properties").is_some() {
            assert_eq!(
                o.get("additionalProperties"),
                Some(&json!(false)),
                "{name} allows unknown fields"
            );
            checked += 1;
        }
    }
    // Service, Metadata, ServiceSpec, PortSpec, Resources, ResourceAmounts, Placement,
    // PlacementPreference, RestartPolicy, UpdateConfig, Healthcheck, Mount, Discovery,
    // ConsulDiscovery, ConsulCheck.
    assert!(checked >= 15, "only {checked} object schemas");
    assert_eq!(s["title"], json!("Shoal Service"));
}
