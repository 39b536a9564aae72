//! Every example in `manifests/` parses, validates, and matches the JSON Schema.

use std::path::{Path, PathBuf};

fn manifest_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let mut files = Vec::new();
    walk(&dir, &mut files);
    files.sort();
    files
}

#[test]
fn every_example_parses_and_validates() {
    let files = manifest_files();
    assert!(files.len() >= 7, "examples: {files:?}");
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let name = f.display().to_string();
        let services = match shoal_core::parse(&text, &name) {
            Ok(s) => s,
            Err(errors) => {
                panic!(
                    "{}",
                    errors
                        .iter()
                        .map(|e| e.render())
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            }
        };
        assert!(!services.is_empty(), "{name} holds no service");
        for p in &services {
            assert!(shoal_core::validate::validate(&p.service).is_empty());
            // A document's own text parses back to the same service.
            let again = shoal_core::parse(&p.text, &name).unwrap();
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].service, p.service, "{name}:{}", p.line);
        }
    }
}

#[test]
fn the_examples_cover_what_users_expect() {
    use shoal_core::manifest::{FailureAction, Mode, RuntimeKind, UpdateOrder};
    let load = |file: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manifests")
            .join(file);
        shoal_core::parse(&std::fs::read_to_string(&path).unwrap(), file).unwrap()
    };
    let web = &load("web.yaml")[0].service.spec;
    assert_eq!(
        (web.replicas, web.ports[0].published),
        (Some(3), Some(8080))
    );

    let pg = &load("postgres.yaml")[0].service.spec;
    assert_eq!(pg.placement.constraints, vec!["node.labels.storage == ssd"]);
    assert!(!pg.mounts.is_empty());

    assert_eq!(
        load("node-exporter.yaml")[0].service.spec.mode,
        Mode::Global
    );

    let api = &load("api-with-healthcheck.yaml")[0].service.spec;
    assert!(api.healthcheck.is_some());
    assert_eq!(
        (api.update.order, api.update.failure_action),
        (UpdateOrder::StartFirst, FailureAction::Rollback)
    );
    assert!(
        api.discovery
            .as_ref()
            .and_then(|d| d.consul.as_ref())
            .is_some()
    );

    assert!(load("stack.yaml").len() >= 2);

    let hello = &load("local/hello-httpd.yaml")[0].service.spec;
    assert_eq!(hello.image.as_deref(), Some("shoal-test/busybox:latest"));

    let sleeper = &load("local/sleeper-process.yaml")[0].service.spec;
    assert_eq!(
        (sleeper.runtime, sleeper.command.as_slice()),
        (
            RuntimeKind::Process,
            &["sleep".to_string(), "3600".to_string()][..]
        )
    );
}

#[test]
fn every_example_matches_the_json_schema() {
    let schema = shoal_core::schema::service_schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    for f in manifest_files() {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in yaml_serde::Deserializer::from_str(&text) {
            let value = yaml_serde::Value::deserialize(doc).unwrap();
            let docs = match value {
                yaml_serde::Value::Null => continue,
                yaml_serde::Value::Sequence(items) => items,
                other => vec![other],
            };
            for d in docs {
                let json = serde_json::to_value(&d).unwrap();
                let errors: Vec<String> = validator
                    .iter_errors(&json)
                    .map(|e| format!("{} at {}", e, e.instance_path()))
                    .collect();
                assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
            }
        }
    }
}

use serde::Deserialize;
