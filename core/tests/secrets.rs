//! `spec.secrets` and `spec.configs` in manifests: defaults, Compose-style modes, located
//! errors, and the task template carrying references (whose change is a rollout).

use shoal_core::model::TaskTemplate;
use shoal_core::secret::FileKind;
use shoal_core::{ManifestError, parse};

const BASE: &str = "\
apiVersion: shoal/v1
kind: Service
metadata:
  name: web
spec:
  image: nginx:1.27
";

fn errs(text: &str) -> Vec<ManifestError> {
    match parse(text, "web.yaml") {
        Ok(_) => panic!("expected errors"),
        Err(e) => e,
    }
}

fn one(text: &str) -> ManifestError {
    let e = errs(text);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.into_iter().next().unwrap()
}

#[test]
fn secrets_and_configs_parse_with_compose_modes_and_defaults() {
    let text = format!(
        "{BASE}  secrets:\n    - source: db-password\n      target: db_password\n      mode: 0400\n      uid: \"0\"\n      gid: \"0\"\n    - source: api-key\n      mode: 256\n  configs:\n    - source: app\n    - {{source: nginx, target: /etc/nginx/nginx.conf, mode: \"0440\"}}\n"
    );
    let svc = parse(&text, "web.yaml").unwrap().remove(0).service;
    let s = &svc.spec.secrets;
    assert_eq!(s.len(), 2);
    assert_eq!(
        s[0].container_path(FileKind::Secret),
        "/run/secrets/db_password"
    );
    assert_eq!(s[0].mode_bits(), 0o400, "unquoted 0400 is octal");
    assert_eq!((s[0].uid(), s[0].gid()), (Some(0), Some(0)));
    assert_eq!(
        s[1].container_path(FileKind::Secret),
        "/run/secrets/api-key"
    );
    assert_eq!(s[1].mode_bits(), 0o400, "256 is 0400");
    let c = &svc.spec.configs;
    assert_eq!(c[0].container_path(FileKind::Config), "/app");
    assert_eq!(c[0].mode_bits(), 0o444);
    assert_eq!(
        c[1].container_path(FileKind::Config),
        "/etc/nginx/nginx.conf"
    );
    assert_eq!(c[1].mode_bits(), 0o440);

    // JSON manifests: a number is the mode's decimal value.
    let json = r#"{"apiVersion":"shoal/v1","kind":"Service","metadata":{"name":"web"},
        "spec":{"image":"x","secrets":[{"source":"db","mode":288}]}}"#;
    let svc = parse(json, "web.json").unwrap().remove(0).service;
    assert_eq!(svc.spec.secrets[0].mode_bits(), 0o440);
}

#[test]
fn an_unknown_field_in_a_secret_is_located() {
    let e = one(&format!(
        "{BASE}  secrets:\n    - source: db\n      owner: root\n"
    ));
    assert_eq!((e.line, e.column), (9, 7), "{}", e.render());
    assert!(e.message.contains("unknown field `owner`"), "{}", e.message);
}

#[test]
fn a_bad_mode_string_points_at_the_value() {
    let e = one(&format!(
        "{BASE}  secrets:\n    - source: db\n      mode: \"0800\"\n"
    ));
    assert_eq!((e.line, e.column), (9, 13), "{}", e.render());
    assert!(
        e.message
            .starts_with("spec.secrets[0].mode: invalid mode \"0800\""),
        "{}",
        e.message
    );
}

#[test]
fn a_mode_above_0777_is_refused_at_its_value() {
    let e = one(&format!(
        "{BASE}  secrets:\n    - source: db\n      mode: 1000\n"
    ));
    assert_eq!((e.line, e.column), (9, 13), "{}", e.render());
    assert!(
        e.message
            .starts_with("spec.secrets[0].mode: mode 1750 is above 0777"),
        "{}",
        e.message
    );
}

#[test]
fn bad_names_targets_and_owners_are_located() {
    let errors = errs(&format!(
        "{BASE}  secrets:\n    - source: DB_Password\n    - source: ok\n      target: a/b\n      uid: root\n  configs:\n    - source: app\n      target: etc/app.conf\n"
    ));
    let got: Vec<(usize, usize, &str)> = errors
        .iter()
        .map(|e| (e.line, e.column, e.message.split(':').next().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (8, 15, "spec.secrets[0].source"),
            (10, 15, "spec.secrets[1].target"),
            (11, 12, "spec.secrets[1].uid"),
            (14, 15, "spec.configs[0].target"),
        ],
        "{errors:#?}"
    );
}

#[test]
fn two_references_on_one_file_are_refused() {
    let e = one(&format!(
        "{BASE}  secrets:\n    - source: a\n      target: key\n    - source: b\n      target: key\n"
    ));
    assert_eq!(e.line, 11, "{}", e.render());
    assert!(
        e.message
            .contains("/run/secrets/key is already the file of spec.secrets[0]"),
        "{}",
        e.message
    );
}

#[test]
fn the_template_carries_references_and_a_new_source_is_a_new_template() {
    let v1 = format!("{BASE}  secrets:\n    - source: db-password\n      target: db_password\n");
    let v2 = v1.replace("source: db-password", "source: db-password-v2");
    let t = |text: &str| {
        let svc = parse(text, "web.yaml").unwrap().remove(0).service;
        TaskTemplate::from_spec(&svc.spec)
    };
    let (a, b) = (t(&v1), t(&v2));
    assert_eq!(a.secrets[0].source, "db-password");
    assert_ne!(a.hash(), b.hash(), "changing the source rolls out");
    let plain = t(BASE);
    let json = serde_json::to_string(&plain).unwrap();
    assert!(
        !json.contains("secrets") && !json.contains("configs"),
        "templates without secrets keep their hash: {json}"
    );
}
