//! Manifest parsing: positions of every kind of error, multi-document files, JSON, defaults.

use shoal_core::manifest::{FailureAction, Mode, RuntimeKind, UpdateOrder};
use shoal_core::units::Dur;
use shoal_core::{ManifestError, ParsedService, parse};

const BASE: &str = "\
apiVersion: shoal/v1
kind: Service
metadata:
  name: web
spec:
  image: nginx:1.27
";

fn ok(text: &str) -> Vec<ParsedService> {
    match parse(text, "test.yaml") {
        Ok(s) => s,
        Err(errors) => panic!("unexpected errors:\n{}", render(&errors)),
    }
}

fn errs(text: &str) -> Vec<ManifestError> {
    match parse(text, "test.yaml") {
        Ok(s) => panic!("expected errors, parsed {} service(s)", s.len()),
        Err(e) => e,
    }
}

fn render(errors: &[ManifestError]) -> String {
    errors
        .iter()
        .map(ManifestError::render)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The single error of `text`, with its position.
fn one(text: &str) -> ManifestError {
    let e = errs(text);
    assert_eq!(e.len(), 1, "expected one error, got:\n{}", render(&e));
    e.into_iter().next().unwrap()
}

#[test]
fn unknown_field_names_the_field_and_points_at_it() {
    let e = one(&format!("{BASE}  replica: 3\n"));
    assert_eq!(
        (e.source.as_str(), e.line, e.column),
        ("test.yaml", 7, 3),
        "{}",
        e.render()
    );
    assert!(
        e.message.contains("unknown field `replica`"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("expected one of `mode`, `replicas`"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("did you mean `replicas`?"),
        "{}",
        e.message
    );
    assert!(e.message.starts_with("spec: "), "{}", e.message);
    assert_eq!(e.snippet.as_deref(), Some("  replica: 3"));
}

#[test]
fn unknown_field_in_a_nested_struct() {
    let e = one(&format!(
        "{BASE}  update:\n    parallelism: 2\n    failure_action: rollback\n"
    ));
    assert_eq!((e.line, e.column), (9, 5), "{}", e.render());
    assert!(
        e.message.contains("unknown field `failure_action`"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("did you mean `failureAction`?"),
        "{}",
        e.message
    );
}

#[test]
fn a_consul_meta_key_consul_refuses_is_located() {
    let e = one(&format!(
        "{BASE}  ports: [{{target: 80}}]\n  discovery:\n    consul:\n      meta:\n        app.version: \"2\"\n"
    ));
    assert_eq!(e.line, 11, "{}", e.render());
    assert!(e.message.contains("app.version"), "{}", e.message);
    assert!(e.message.contains("only letters, digits"), "{}", e.message);
}

#[test]
fn bad_duration_points_at_the_value() {
    let e = one(&format!(
        "{BASE}  restart:\n    condition: any\n    delay: 5 sec\n"
    ));
    assert_eq!((e.line, e.column), (9, 12), "{}", e.render());
    assert!(
        e.message
            .starts_with("spec.restart.delay: invalid duration \"5 sec\": "),
        "{}",
        e.message
    );
}

#[test]
fn bad_size_points_at_the_value() {
    let e = one(&format!(
        "{BASE}  resources:\n    limits:\n      memory: 12 parsecs\n"
    ));
    assert_eq!((e.line, e.column), (9, 15), "{}", e.render());
    assert!(
        e.message
            .contains("spec.resources.limits.memory: invalid size \"12 parsecs\""),
        "{}",
        e.message
    );
}

#[test]
fn wrong_type_points_at_the_value() {
    let e = one(&format!("{BASE}  replicas: three\n"));
    assert_eq!((e.line, e.column), (7, 13), "{}", e.render());
    assert!(
        e.message
            .contains("spec.replicas: invalid type: string \"three\", expected u64"),
        "{}",
        e.message
    );

    let e = one(&format!(
        "{BASE}  ports:\n    - target: 80\n      published: 99999\n"
    ));
    assert_eq!((e.line, e.column), (9, 18), "{}", e.render());
    assert!(
        e.message.contains("spec.ports[0].published"),
        "{}",
        e.message
    );
}

#[test]
fn unknown_enum_variant_is_suggested() {
    let e = one(&format!("{BASE}  mode: gloabl\n"));
    assert_eq!((e.line, e.column), (7, 9));
    assert!(
        e.message
            .contains("unknown variant `gloabl` (did you mean `global`?)"),
        "{}",
        e.message
    );
}

#[test]
fn broken_constraint_points_at_that_constraint() {
    let text = format!(
        "{BASE}  placement:\n    constraints:\n      - node.labels.storage == ssd\n      - node.color == red\n      - node.hostname != a\n"
    );
    let e = one(&text);
    assert_eq!((e.line, e.column), (10, 9), "{}", e.render());
    assert!(
        e.message.starts_with(
            "spec.placement.constraints[1]: constraint \"node.color == red\": unknown attribute"
        ),
        "{}",
        e.message
    );

    // Flow style: the column is the element's.
    let e = one(&format!(
        "{BASE}  placement: {{constraints: [\"node.id == a\", \"node.labels.x = y\"]}}\n"
    ));
    assert_eq!((e.line, e.column), (7, 45), "{}", e.render());
    assert!(e.message.contains("has no operator"), "{}", e.message);
}

#[test]
fn broken_spread_preference() {
    let e = one(&format!(
        "{BASE}  placement:\n    preferences:\n      - spread: zone\n"
    ));
    assert_eq!((e.line, e.column), (9, 17), "{}", e.render());
    assert!(
        e.message
            .starts_with("spec.placement.preferences[0].spread: invalid spread attribute \"zone\"")
    );
}

#[test]
fn error_in_second_document_has_its_line_in_the_file() {
    let text = format!(
        "# two services\n{BASE}---\n{}  replicas: 2\n  stop_grace_period: 3s\n",
        BASE.replace("web", "api")
    );
    let e = one(&text);
    // 1 comment + 6 lines + `---` = 8 lines before the second document, which starts on line 9.
    assert_eq!((e.line, e.column), (16, 3), "{}", e.render());
    assert!(
        e.message.contains("unknown field `stop_grace_period`"),
        "{}",
        e.message
    );
    assert_eq!(e.snippet.as_deref(), Some("  stop_grace_period: 3s"));
}

#[test]
fn every_error_of_every_document_is_reported() {
    let text = format!(
        "{}  replicas: x\n---\n{}  mode: global\n  replicas: 2\n  ports:\n    - {{target: 80, published: 80}}\n    - {{target: 81, published: 80}}\n---\n{}",
        BASE.replace("web", "a"),
        BASE.replace("web", "b"),
        BASE.replace("web", "Bad_Name"),
    );
    let e = errs(&text);
    let got: Vec<(usize, &str)> = e
        .iter()
        .map(|e| (e.line, e.message.split(':').next().unwrap()))
        .collect();
    assert_eq!(
        got,
        vec![
            (7, "spec.replicas"),
            (16, "spec.replicas"),
            (19, "spec.ports[1].published"),
            (24, "metadata.name"),
        ],
        "{}",
        render(&e)
    );
}

#[test]
fn a_syntax_error_does_not_hide_later_documents() {
    let text = format!(
        "{}  ports: [\n---\n{}  replicas: -1\n",
        BASE.replace("web", "a"),
        BASE.replace("web", "b")
    );
    let e = errs(&text);
    assert_eq!(e.len(), 2, "{}", render(&e));
    assert!(
        e[0].message.starts_with("invalid YAML: "),
        "{}",
        e[0].message
    );
    // The parser notices at the next document's `---`; the error is put at the end of the
    // broken document instead.
    assert_eq!((e[0].line, e[0].column), (7, 11), "{}", render(&e));
    assert!(!e[0].message.contains("at line"), "{}", e[0].message);
    assert_eq!(e[1].line, 15, "{}", render(&e));
    assert!(e[1].message.contains("spec.replicas"), "{}", e[1].message);
}

#[test]
fn syntax_error_position() {
    let e = one(&format!("{BASE}  foo: bar: baz\n"));
    assert_eq!((e.line, e.column), (7, 11), "{}", e.render());
    assert_eq!(
        e.message,
        "invalid YAML: mapping values are not allowed in this context"
    );
}

#[test]
fn duplicate_keys_are_reported_at_the_second_occurrence() {
    let e = one(&format!("{BASE}  replicas: 2\n  image: nginx:1.26\n"));
    assert_eq!((e.line, e.column), (8, 3), "{}", e.render());
    assert_eq!(
        e.message,
        "duplicate key \"image\" in spec (first defined at line 6)"
    );

    // In a map (which serde would silently overwrite) and at the top level, all of them.
    let e = errs(&format!(
        "{BASE}  env:\n    A: \"1\"\n    B: \"2\"\n    A: \"3\"\nkind: Service\n"
    ));
    assert_eq!(e.len(), 2, "{}", render(&e));
    assert_eq!((e[0].line, e[0].column), (10, 5));
    assert_eq!(
        e[0].message,
        "duplicate key \"A\" in spec.env (first defined at line 8)"
    );
    assert_eq!((e[1].line, e[1].column), (11, 1));
    assert_eq!(
        e[1].message,
        "duplicate key \"kind\" (first defined at line 2)"
    );
}

#[test]
fn duplicate_keys_in_json() {
    let e = one(
        "{\"apiVersion\": \"shoal/v1\", \"kind\": \"Service\",\n \"metadata\": {\"name\": \"a\", \"name\": \"b\"},\n \"spec\": {\"image\": \"x\"}}\n",
    );
    assert_eq!((e.line, e.column), (2, 28), "{}", e.render());
    assert!(
        e.message.starts_with("duplicate key \"name\" in metadata"),
        "{}",
        e.message
    );
}

#[test]
fn replicas_with_global_mode() {
    let e = one(&format!("{BASE}  mode: global\n  replicas: 3\n"));
    assert_eq!((e.line, e.column), (8, 13), "{}", e.render());
    assert!(
        e.message
            .starts_with("spec.replicas: replicas cannot be set with mode: global"),
        "{}",
        e.message
    );
}

#[test]
fn port_published_twice() {
    let text = format!(
        "{BASE}  ports:\n    - target: 80\n      published: 8080\n    - target: 443\n      published: 8080\n    - target: 53\n      published: 8080\n      protocol: udp\n"
    );
    let e = one(&text);
    assert_eq!((e.line, e.column), (11, 18), "{}", e.render());
    assert_eq!(
        e.message,
        "spec.ports[1].published: host port 8080/tcp is already published by spec.ports[0]"
    );
}

#[test]
fn same_target_twice() {
    let e = one(&format!(
        "{BASE}  ports: [{{target: 80}}, {{target: 80}}, {{target: 80, protocol: udp}}]\n"
    ));
    assert_eq!((e.line, e.column), (7, 34), "{}", e.render());
    assert!(
        e.message
            .starts_with("spec.ports[1].target: target port 80/tcp is already listed"),
        "{}",
        e.message
    );
}

#[test]
fn api_version_and_kind_are_checked_at_their_lines() {
    let e = errs(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template: {}\n",
    );
    assert_eq!(e.len(), 2, "{}", render(&e));
    assert_eq!((e[0].line, e[0].column), (1, 13));
    assert_eq!(
        e[0].message,
        "apiVersion: unsupported apiVersion \"apps/v1\": expected \"shoal/v1\""
    );
    assert_eq!((e[1].line, e[1].column), (2, 7));
    assert_eq!(
        e[1].message,
        "kind: unsupported kind \"Deployment\": expected \"Service\""
    );
}

#[test]
fn missing_field_of_a_rule_points_at_the_parent() {
    // The docker runtime needs an image: there is no `image` line, so the error is on `spec:`.
    let e =
        one("apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  replicas: 2\n");
    assert_eq!((e.line, e.column), (5, 1), "{}", e.render());
    assert_eq!(e.message, "spec.image: the docker runtime needs an image");

    let e = one("apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\n");
    assert!(e.message.contains("missing field `spec`"), "{}", e.message);
}

#[test]
fn json_object() {
    let text = r#"{
  "apiVersion": "shoal/v1",
  "kind": "Service",
  "metadata": {"name": "web", "namespace": "shop"},
  "spec": {"image": "nginx", "replicas": 2, "ports": [{"target": 80, "published": 8080}]}
}
"#;
    let s = ok(text);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].service.metadata.namespace, "shop");
    assert_eq!(s[0].service.spec.replicas, Some(2));
    assert_eq!(s[0].line, 1);
    assert_eq!(s[0].text, text);

    // Tabs and CRLF, and an error located in it.
    let e = one(
        "{\r\n\t\"apiVersion\": \"shoal/v1\",\r\n\t\"kind\": \"Service\",\r\n\t\"metadata\": {\"name\": \"x\"},\r\n\t\"spec\": {\"image\": \"a\", \"replica\": 2}\r\n}\r\n",
    );
    assert_eq!((e.line, e.column), (5, 25), "{}", e.render());
    assert_eq!(
        e.snippet.as_deref(),
        Some("\t\"spec\": {\"image\": \"a\", \"replica\": 2}")
    );
    assert!(
        e.render().ends_with("\n  | \t                       ^"),
        "{}",
        e.render()
    );
}

#[test]
fn json_array_of_services() {
    let text = r#"[
  {"apiVersion": "shoal/v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"image": "x"}},
  {"apiVersion": "shoal/v1", "kind": "Service",
   "metadata": {"name": "b"},
   "spec": {"image": "x", "command": ["run"]}}
]
"#;
    let s = ok(text);
    let names: Vec<(&str, usize)> = s
        .iter()
        .map(|p| (p.service.metadata.name.as_str(), p.line))
        .collect();
    assert_eq!(names, vec![("a", 2), ("b", 3)]);
    assert_eq!(
        s[1].text,
        "{\"apiVersion\": \"shoal/v1\", \"kind\": \"Service\",\n \"metadata\": {\"name\": \"b\"},\n \"spec\": {\"image\": \"x\", \"command\": [\"run\"]}}\n"
    );

    // Each element's errors are its own, at their place in the file.
    let bad = text.replace("{\"name\": \"a\"}, \"spec\": {\"image\": \"x\"}", "{\"name\": \"a\"}, \"spec\": {\"image\": \"x\", \"mode\": \"global\", \"replicas\": 2}").replace("\"command\"", "\"comand\"");
    let e = errs(&bad);
    assert_eq!(e.len(), 2, "{}", render(&e));
    assert_eq!((e[0].line, e[0].column), (2, 129), "{}", render(&e));
    assert_eq!(
        e[0].message,
        "spec.replicas: replicas cannot be set with mode: global (a global service runs one task per node)"
    );
    assert_eq!((e[1].line, e[1].column), (5, 27), "{}", render(&e));
    assert!(
        e[1].message
            .starts_with("spec: unknown field `comand` (did you mean `command`?)"),
        "{}",
        e[1].message
    );
}

#[test]
fn yaml_list_of_services() {
    let text = "- apiVersion: shoal/v1\n  kind: Service\n  metadata: {name: a}\n  spec:\n    image: x\n- apiVersion: shoal/v1\n  kind: Service\n  metadata: {name: b}\n  spec:\n    image: x\n";
    let s = ok(text);
    assert_eq!(s.len(), 2);
    assert_eq!(
        (s[1].line, s[1].text.as_str()),
        (
            6,
            "apiVersion: shoal/v1\nkind: Service\nmetadata: {name: b}\nspec:\n  image: x\n"
        )
    );
}

#[test]
fn documents_keep_their_own_text_and_line_and_empty_ones_are_skipped() {
    let text = format!(
        "# leading comment only\n---\n{BASE}...\n--- # the api\n{}---\n\n---\n",
        BASE.replace("web", "api")
    );
    let s = ok(&text);
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].line, s[0].text.as_str()), (3, BASE));
    assert_eq!(s[1].line, 11);
    assert_eq!(s[1].text, BASE.replace("web", "api"));
    assert_eq!(s[1].service.metadata.name, "api");

    assert!(ok("").is_empty());
    assert!(ok("# nothing here\n---\n---\n").is_empty());
}

#[test]
fn the_same_service_twice_in_a_file() {
    let e = one(&format!("{BASE}---\n{BASE}"));
    assert_eq!((e.line, e.column), (11, 9), "{}", e.render());
    assert_eq!(
        e.message,
        "metadata.name: service default/web is already defined at line 1"
    );
    // Another namespace is another service.
    assert_eq!(
        ok(&format!(
            "{BASE}---\n{}",
            BASE.replace("name: web", "name: web\n  namespace: b")
        ))
        .len(),
        2
    );
}

#[test]
fn a_scalar_document_is_not_a_service() {
    let e = one("hello\n");
    assert_eq!((e.line, e.column), (1, 1));
    assert!(e.message.contains("expected a Service"), "{}", e.message);
}

#[test]
fn label_keys_with_dots_are_located() {
    let e = one(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\n  labels:\n    com.example/team: a\n    \"bad key\": b\nspec:\n  image: x\n",
    );
    assert_eq!((e.line, e.column), (7, 5), "{}", e.render());
    assert!(
        e.message
            .starts_with("metadata.labels[\"bad key\"]: invalid label key"),
        "{}",
        e.message
    );

    let e = one(&format!("{BASE}  env:\n    GOOD: x\n    BAD=KEY: y\n"));
    assert_eq!((e.line, e.column), (9, 5), "{}", e.render());
    assert!(
        e.message
            .starts_with("spec.env[\"BAD=KEY\"]: invalid environment variable name"),
        "{}",
        e.message
    );
}

#[test]
fn defaults_are_filled_in() {
    let s = ok(BASE);
    let svc = &s[0].service;
    assert_eq!(svc.metadata.namespace, "default");
    let spec = &svc.spec;
    assert_eq!(spec.mode, Mode::Replicated);
    assert_eq!(spec.desired_replicas(), Some(1));
    assert_eq!(spec.runtime, RuntimeKind::Docker);
    assert_eq!(spec.restart.delay, Dur::secs(5));
    assert_eq!(spec.restart.max_attempts, 0);
    assert_eq!(spec.update.parallelism, 1);
    assert_eq!(spec.update.monitor, Dur::secs(5));
    assert_eq!(spec.update.order, UpdateOrder::StopFirst);
    assert_eq!(spec.update.failure_action, FailureAction::Pause);
    assert_eq!(spec.rollback.parallelism, 1);
    assert_eq!(spec.rollback.monitor, Dur::secs(5));
    assert_eq!(spec.stop_grace_period, Dur::secs(10));
    assert_eq!(spec.stop_signal, "SIGTERM");
    assert!(spec.healthcheck.is_none());

    // Defaults inside a section that is present but partial.
    let s = ok(&format!(
        "{BASE}  update:\n    order: start-first\n  healthcheck:\n    test: [CMD, true]\n"
    ));
    let spec = &s[0].service.spec;
    assert_eq!(spec.update.parallelism, 1);
    assert_eq!(spec.update.monitor, Dur::secs(5));
    let hc = spec.healthcheck.as_ref().unwrap();
    assert_eq!(
        (hc.interval, hc.timeout, hc.retries),
        (Dur::secs(30), Dur::secs(30), 3)
    );
}

#[test]
fn render_shows_the_line_and_a_caret() {
    let e = one(&format!("{BASE}  replicas: three\n"));
    let r = e.render();
    let lines: Vec<&str> = r.lines().collect();
    assert!(
        lines[0].starts_with("test.yaml:7:13: spec.replicas: invalid type"),
        "{r}"
    );
    assert_eq!(
        &lines[1..],
        &["  |", "7 |   replicas: three", "  |             ^"]
    );
}

#[test]
fn source_name_is_kept() {
    let e = parse("kind: [", "services/default/web").unwrap_err();
    assert_eq!(e[0].source, "services/default/web");
    assert!(
        e[0].to_string().starts_with("services/default/web:"),
        "{}",
        e[0]
    );
}

#[test]
fn locate_maps_paths_to_positions() {
    let doc = "spec:\n  ports:\n    - target: 80\n    - target: 81\n      published: 8081\n  env:\n    A.B: x\n";
    assert_eq!(
        shoal_core::parse::locate(doc, "spec.ports[1].published"),
        Some((5, 18))
    );
    assert_eq!(
        shoal_core::parse::locate(doc, "spec.ports[1]"),
        Some((4, 7))
    );
    assert_eq!(shoal_core::parse::locate(doc, "spec.ports"), Some((2, 3)));
    assert_eq!(
        shoal_core::parse::locate(doc, "spec.env[\"A.B\"]"),
        Some((7, 10))
    );
    assert_eq!(
        shoal_core::parse::locate(doc, "spec.ports[1].protocol"),
        Some((4, 7))
    );
    assert_eq!(shoal_core::parse::locate(doc, "spec.image"), Some((1, 1)));
}
