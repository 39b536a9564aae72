//! `/v1/secrets`, `/v1/configs` and the node delivery routes against a real embedded store:
//! values sealed before they reach the store, metadata without values, immutability, size
//! and name limits, removal refused while in use, a node reading only what its tasks use,
//! re-sealing under a new key, and an API without a key still serving everything else.

use axum::http::StatusCode;
use base64::Engine as _;
use shoal_api::auth::{Principal, Role, Token, Tokens};
use shoal_api::secrets::crypto::KeyRing;
use shoal_api::{ApiState, TokenTable};
use shoal_core::manifest::RuntimeKind;
use shoal_core::model::{self, DesiredState, Task};
use shoal_core::secret::FileRef;
use shoal_core::units::Dur;
use shoal_tests::api::Api;
use shoal_tests::tasks::{self, template};

const VALUE: &str = "s3cr3t-Value-4f1c9a";

fn ring(lines: &[(&str, u8)]) -> KeyRing {
    let text: String = lines
        .iter()
        .map(|(id, b)| {
            format!(
                "{id} {}\n",
                base64::engine::general_purpose::STANDARD.encode([*b; 32])
            )
        })
        .collect();
    KeyRing::parse(&text, "keys").unwrap()
}

fn with_key(s: ApiState) -> ApiState {
    s.with_secret_keys(ring(&[("k1", 1)]))
}

fn web_manifest(secret: &str) -> String {
    format!(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: nginx\n  secrets:\n    - source: {secret}\n      target: db_password\n"
    )
}

fn task(node: &str, id: &str, secret: &str, desired: DesiredState) -> Task {
    let mut template = template(RuntimeKind::Docker, Some("nginx"), &[]);
    template.stop_grace_period = Dur::secs(1);
    template.secrets = vec![FileRef {
        source: secret.into(),
        target: None,
        mode: None,
        uid: None,
        gid: None,
    }];
    let mut task = tasks::task(id, "web", node, template);
    task.desired_state = desired;
    task
}

async fn assign(api: &Api, t: &Task) {
    api.put_stored(&api.keys.task(&t.node_id, &t.id), model::encode(t))
        .await;
}

#[tokio::test]
async fn secrets_are_sealed_in_the_store_and_shown_without_their_value() {
    let api = Api::with(with_key).await;
    let (s, v) = api
        .json("POST", "/v1/secrets/default/db-password", VALUE)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["size"], VALUE.len());
    assert!(v["digest"].as_str().unwrap().starts_with("hmac-sha256:k1:"));
    let stored = api
        .store
        .get(&api.keys.secret("default", "db-password"))
        .await
        .unwrap()
        .expect("stored under secrets/<ns>/<name>");
    let stored = String::from_utf8(stored.value).unwrap();
    assert!(stored.contains("shoal:enc:v1:k1:"), "{stored}");
    assert!(!stored.contains(VALUE), "no plaintext in the store");

    let (s, one) = api.json("GET", "/v1/secrets/default/db-password", "").await;
    assert_eq!(s, StatusCode::OK);
    let (_, all) = api.json("GET", "/v1/secrets?namespace=default", "").await;
    let (_, none) = api.json("GET", "/v1/secrets?namespace=other", "").await;
    assert_eq!(all.as_array().unwrap().len(), 1);
    assert_eq!(none.as_array().unwrap().len(), 0);
    for shown in [one.to_string(), all.to_string()] {
        assert!(!shown.contains(VALUE), "{shown}");
        assert!(!shown.contains("shoal:enc"), "not even sealed: {shown}");
    }

    let (s, v) = api
        .json("POST", "/v1/secrets/default/db-password", "other")
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("immutable"), "{v}");
    let big = "x".repeat(500 * 1024 + 1);
    let (s, v) = api.json("POST", "/v1/secrets/default/big", &big).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(v["error"].as_str().unwrap().contains("500 KiB"), "{v}");
    let (s, _) = api
        .json("POST", "/v1/secrets/default/exact", &"x".repeat(500 * 1024))
        .await;
    assert_eq!(s, StatusCode::CREATED, "500 KiB is allowed");
    let (s, v) = api.json("POST", "/v1/secrets/default/Bad_Name", "x").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("DNS label"), "{v}");
    let (s, _) = api.json("POST", "/v1/secrets/default/empty", "").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api.json("GET", "/v1/secrets/default/nope", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn without_a_key_secrets_fail_naming_the_flag_and_the_rest_works() {
    let api = Api::new().await;
    let (s, v) = api.json("POST", "/v1/secrets/default/db", VALUE).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("--secret-key-file"),
        "{v}"
    );
    let (s, v) = api
        .json("POST", "/v1/configs/default/app", "listen 80;\n")
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v["digest"].as_str().unwrap().starts_with("sha256:"));
    let (s, _, data) = api
        .call("GET", "/v1/configs/default/app/data", "", &[])
        .await;
    assert_eq!((s, data.as_str()), (StatusCode::OK, "listen 80;\n"));
    let (s, _) = api
        .json("PUT", "/v1/services/default/web", &web_manifest("db"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "services still work");
}

#[tokio::test]
async fn removal_is_refused_while_a_manifest_or_a_task_uses_it() {
    let api = Api::with(with_key).await;
    api.json("POST", "/v1/secrets/default/db-password", VALUE)
        .await;
    let (s, _) = api
        .json(
            "PUT",
            "/v1/services/default/web",
            &web_manifest("db-password"),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let t = task("n1", "web.1.a", "db-password", DesiredState::Running);
    assert_eq!(
        t.template.secrets[0].source, "db-password",
        "tasks carry references"
    );
    assign(&api, &t).await;
    let (_, v) = api.json("GET", "/v1/secrets/default/db-password", "").await;
    assert_eq!(v["usedBy"][0]["service"], "default/web", "{v}");
    assert_eq!(v["usedBy"][0]["manifest"], true);
    assert_eq!(v["usedBy"][0]["tasks"], 1);

    let (s, v) = api
        .json("DELETE", "/v1/secrets/default/db-password", "")
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("in use by default/web"),
        "{v}"
    );

    // The manifest moved to v2; the old task still runs v1.
    api.json("POST", "/v1/secrets/default/db-password-v2", "v2")
        .await;
    api.json(
        "PUT",
        "/v1/services/default/web",
        &web_manifest("db-password-v2"),
    )
    .await;
    let (_, v) = api.json("GET", "/v1/secrets/default/db-password", "").await;
    assert_eq!(v["usedBy"][0]["manifest"], false, "{v}");
    assert_eq!(v["usedBy"][0]["tasks"], 1, "{v}");
    let (s, _) = api
        .json("DELETE", "/v1/secrets/default/db-password", "")
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "still used by a task");

    // The old task is told to stop: v1 is free.
    assign(
        &api,
        &task("n1", "web.1.a", "db-password", DesiredState::Shutdown),
    )
    .await;
    let (_, v) = api.json("GET", "/v1/secrets/default/db-password", "").await;
    assert_eq!(v["usedBy"], serde_json::json!([]), "{v}");
    let (s, v) = api
        .json("DELETE", "/v1/secrets/default/db-password", "")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _) = api.json("GET", "/v1/secrets/default/db-password", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_node_reads_only_what_its_own_tasks_use() {
    let mut t = TokenTable::new();
    let grant = |id: &str, role, node: Option<&str>| {
        Principal::new(id, role, Default::default(), node.map(String::from)).unwrap()
    };
    let n1 = Token::generate("n1").unwrap();
    let n2 = Token::generate("n2").unwrap();
    let admin = Token::generate("admin").unwrap();
    let reader = Token::generate("reader").unwrap();
    t.insert(&n1, grant("n1", Role::Node, Some("node-1")))
        .unwrap();
    t.insert(&n2, grant("n2", Role::Node, Some("node-2")))
        .unwrap();
    t.insert(&admin, grant("admin", Role::Admin, None)).unwrap();
    t.insert(&reader, grant("reader", Role::Read, None))
        .unwrap();
    let api = Api::with(|s| with_key(s).with_tokens(Tokens::fixed(t))).await;
    let auth = |t: &Token| ("authorization", format!("Bearer {}", t.reveal()));
    let get = |uri: &'static str, t: &Token| {
        let (k, v) = auth(t);
        let api = &api;
        async move { api.call("GET", uri, "", &[(k, &v)]).await }
    };
    let (k, v) = auth(&admin);
    let (s, _, _) = api
        .call("POST", "/v1/secrets/default/db-password", VALUE, &[(k, &v)])
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assign(
        &api,
        &task("node-1", "web.1.a", "db-password", DesiredState::Running),
    )
    .await;

    let mine = "/v1/nodes/node-1/secrets/default/db-password";
    let (s, h, body) = get(mine, &n1).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, VALUE));
    assert_eq!(h["cache-control"], "no-store");

    let (s, _, body) = get("/v1/nodes/node-2/secrets/default/db-password", &n2).await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "no task of node-2 uses it: {body}"
    );
    assert!(body.contains("node-2") && !body.contains(VALUE), "{body}");
    for (who, t) in [("node-2", &n2), ("admin", &admin), ("reader", &reader)] {
        let (s, _, body) = get(mine, t).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{who}: {body}");
        assert!(!body.contains(VALUE));
    }
    let (s, _, _) = get("/v1/secrets", &n1).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "node tokens only deliver");

    // Once the task is told to stop, its node no longer gets the value.
    assign(
        &api,
        &task("node-1", "web.1.a", "db-password", DesiredState::Shutdown),
    )
    .await;
    let (s, _, _) = get(mine, &n1).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn without_a_token_file_the_node_in_the_path_is_taken() {
    let api = Api::with(with_key).await;
    api.json("POST", "/v1/secrets/default/db-password", VALUE)
        .await;
    api.json("POST", "/v1/configs/default/app", "conf").await;
    assign(
        &api,
        &task("n1", "web.1.a", "db-password", DesiredState::Running),
    )
    .await;
    let (s, _, body) = api
        .call("GET", "/v1/nodes/n1/secrets/default/db-password", "", &[])
        .await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, VALUE));
    let (s, _, _) = api
        .call("GET", "/v1/nodes/n2/secrets/default/db-password", "", &[])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = api
        .call("GET", "/v1/nodes/n1/configs/default/app", "", &[])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the task uses no config");
}

#[tokio::test]
async fn rotate_key_reseals_every_secret_under_the_active_key() {
    let mut api = Api::with(with_key).await;
    for (name, v) in [("a", "value-a"), ("b", "value-b")] {
        let (s, _) = api
            .json("POST", &format!("/v1/secrets/default/{name}"), v)
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (_, before) = api.json("GET", "/v1/secrets/default/a", "").await;
    let rotated = ring(&[("k2", 2), ("k1", 1)]);
    api.router = shoal_api::router(
        ApiState::new(api.store.clone(), api.keys.clone()).with_secret_keys(rotated),
    );
    let (s, v) = api.json("POST", "/v1/secrets/rotate-key", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v,
        serde_json::json!({"activeKey": "k2", "resealed": 2, "unchanged": 0})
    );
    let (_, v) = api.json("POST", "/v1/secrets/rotate-key", "").await;
    assert_eq!(v["unchanged"], 2, "{v}");
    let (_, after) = api.json("GET", "/v1/secrets/default/a", "").await;
    assert!(
        after["digest"]
            .as_str()
            .unwrap()
            .starts_with("hmac-sha256:k2:")
    );
    assert_ne!(before["digest"], after["digest"]);
    assert_eq!(before["createdAt"], after["createdAt"]);

    // The old key can go: everything opens under k2 alone.
    api.router = shoal_api::router(
        ApiState::new(api.store.clone(), api.keys.clone()).with_secret_keys(ring(&[("k2", 2)])),
    );
    assign(&api, &task("n1", "web.1.a", "b", DesiredState::Running)).await;
    let (s, _, body) = api
        .call("GET", "/v1/nodes/n1/secrets/default/b", "", &[])
        .await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "value-b"));
}

#[tokio::test]
async fn only_admins_rotate_and_only_writers_create() {
    let mut t = TokenTable::new();
    let grant = |id: &str, role, ns: &[&str]| {
        Principal::new(id, role, ns.iter().map(|s| s.to_string()).collect(), None).unwrap()
    };
    let writer = Token::generate("w").unwrap();
    let reader = Token::generate("r").unwrap();
    t.insert(&writer, grant("w", Role::Write, &["team-a"]))
        .unwrap();
    t.insert(&reader, grant("r", Role::Read, &[])).unwrap();
    let api = Api::with(|s| with_key(s).with_tokens(Tokens::fixed(t))).await;
    let bearer = |t: &Token| format!("Bearer {}", t.reveal());
    let call = |m: &'static str, uri: &'static str, t: &Token| {
        let h = bearer(t);
        let api = &api;
        async move { api.call(m, uri, "v", &[("authorization", &h)]).await.0 }
    };
    assert_eq!(
        call("POST", "/v1/secrets/team-a/x", &writer).await,
        StatusCode::CREATED
    );
    assert_eq!(
        call("POST", "/v1/secrets/team-b/x", &writer).await,
        StatusCode::FORBIDDEN,
        "write tokens stay in their namespaces"
    );
    assert_eq!(
        call("POST", "/v1/configs/team-a/x", &reader).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call("GET", "/v1/secrets/team-a/x", &reader).await,
        StatusCode::OK
    );
    assert_eq!(
        call("DELETE", "/v1/secrets/team-a/x", &reader).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call("POST", "/v1/secrets/rotate-key", &writer).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call("DELETE", "/v1/secrets/team-a/x", &writer).await,
        StatusCode::OK
    );
}
