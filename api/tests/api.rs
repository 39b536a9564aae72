//! The API router against a real embedded store: what a user of the REST API would notice.

use axum::http::StatusCode;
use serde_json::Value;
use shoal_api::{ApiState, TokenTable};
use shoal_core::ServiceRef;
use shoal_core::manifest::RuntimeKind;
use shoal_tests::api::{Api, manifest};
use shoal_tests::tasks::{task, template};

fn web() -> ServiceRef {
    ServiceRef {
        namespace: "default".into(),
        name: "web".into(),
    }
}

#[tokio::test]
async fn put_invalid_yaml_is_400_with_location_and_stores_nothing() {
    let api = Api::new().await;
    let body =
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  replicas: [oops\n";
    let (s, v) = api.json("PUT", "/v1/services/default/web", body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let d = &v["details"][0];
    assert!(
        d["line"].as_u64().unwrap() > 0 && d["column"].as_u64().is_some(),
        "{v}"
    );
    assert!(
        v["error"].as_str().unwrap().contains("invalid manifest"),
        "{v}"
    );
    assert!(api.stored(&api.keys.service(&web())).await.is_none());
}

#[tokio::test]
async fn unknown_field_is_400_naming_the_field() {
    let api = Api::new().await;
    let body = manifest("web", "", 1) + "  replica: 3\n";
    let (s, v) = api.json("PUT", "/v1/services/default/web", &body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["details"][0]["message"]
            .as_str()
            .unwrap()
            .contains("replica"),
        "{v}"
    );
    assert_eq!(v["details"][0]["line"], 9, "{v}");
}

#[tokio::test]
async fn put_get_roundtrip_keeps_text_and_checks_path() {
    let api = Api::new().await;
    let body = format!("# my comment\n{}", manifest("web", "app: web", 2));
    let (s, h, text) = api
        .call("PUT", "/v1/services/default/web", &body, &[])
        .await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
    assert!(h.get("etag").is_some());
    let (s, v) = api.json("GET", "/v1/services/default/web", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["manifest"], body.as_str());
    assert_eq!(v["service"]["spec"]["replicas"], 2);
    let (s, v) = api.json("PUT", "/v1/services/default/other", &body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("default/web"), "{v}");
    let (s, _) = api.json("GET", "/v1/services/default/nope", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn json_body_is_accepted() {
    let api = Api::new().await;
    let body = r#"{"apiVersion":"shoal/v1","kind":"Service","metadata":{"name":"web"},"spec":{"image":"nginx"}}"#;
    let (s, _, text) = api
        .call(
            "PUT",
            "/v1/services/default/web",
            body,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{text}");
}

#[tokio::test]
async fn stale_if_match_is_409_with_current_revision() {
    let api = Api::new().await;
    let (_, v) = api
        .json("PUT", "/v1/services/default/web", &manifest("web", "", 1))
        .await;
    let rev1 = v["revision"].as_i64().unwrap();
    let (s, _, t) = api
        .call(
            "PUT",
            "/v1/services/default/web",
            &manifest("web", "", 2),
            &[("if-match", &format!("\"{rev1}\""))],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{t}");
    let rev2 = serde_json::from_str::<Value>(&t).unwrap()["revision"]
        .as_i64()
        .unwrap();
    assert!(rev2 > rev1);
    let (s, _, t) = api
        .call(
            "PUT",
            "/v1/services/default/web",
            &manifest("web", "", 3),
            &[("if-match", &rev1.to_string())],
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{t}");
    let v: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(v["currentRevision"], rev2);
    let (_, v) = api.json("GET", "/v1/services/default/web", "").await;
    assert_eq!(v["service"]["spec"]["replicas"], 2);
}

#[tokio::test]
async fn apply_reports_created_configured_unchanged_pruned() {
    let api = Api::new().await;
    let both = format!(
        "{}---\n{}",
        manifest("web", "app: shop", 1),
        manifest("db", "app: shop", 1)
    );
    let (s, v) = api.json("POST", "/v1/apply", &both).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let actions: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "created"]);
    // Same spec, different text (comment, key order): unchanged.
    let again = format!(
        "# same\n{}---\n{}",
        manifest("web", "app: shop", 1),
        manifest("db", "app: shop", 1)
    );
    let (_, v) = api.json("POST", "/v1/apply", &again).await;
    assert_eq!(v["results"][0]["action"], "unchanged", "{v}");
    // Another service outside the selector must survive pruning.
    api.json("POST", "/v1/apply", &manifest("other", "app: else", 1))
        .await;
    let next = manifest("web", "app: shop", 3);
    let (s, v) = api
        .json("POST", "/v1/apply?prune=true&selector=app%3Dshop", &next)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][0]["action"], "configured");
    assert_eq!(v["results"][1]["name"], "db");
    assert_eq!(v["results"][1]["action"], "pruned");
    assert_eq!(v["results"].as_array().unwrap().len(), 2, "{v}");
    let (_, list) = api.json("GET", "/v1/services", "").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["other", "web"]);
}

#[tokio::test]
async fn prune_without_selector_is_refused() {
    let api = Api::new().await;
    let (s, v) = api
        .json("POST", "/v1/apply?prune=true", &manifest("web", "", 1))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("selector"));
}

#[tokio::test]
async fn dry_run_writes_nothing() {
    let api = Api::new().await;
    let (s, v) = api
        .json("POST", "/v1/apply?dryRun=true", &manifest("web", "", 1))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["dryRun"], true);
    assert_eq!(v["results"][0]["action"], "created");
    assert!(api.stored(&api.keys.service(&web())).await.is_none());
}

#[tokio::test]
async fn apply_with_an_invalid_document_writes_nothing() {
    let api = Api::new().await;
    let body = format!(
        "{}---\n{}  bogus: 1\n",
        manifest("web", "", 1),
        manifest("db", "", 1)
    );
    let (s, v) = api.json("POST", "/v1/apply", &body).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["details"][0]["line"].as_u64().unwrap() > 9,
        "line counts from the body start: {v}"
    );
    assert!(api.stored(&api.keys.service(&web())).await.is_none());
}

#[tokio::test]
async fn list_filters_by_selector_and_namespace() {
    let api = Api::new().await;
    let body = format!(
        "{}---\n{}",
        manifest("web", "tier: front", 1),
        manifest("db", "tier: back", 1)
    );
    api.json("POST", "/v1/apply", &body).await;
    let (_, v) = api
        .json("GET", "/v1/services?selector=tier!%3Dback", "")
        .await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["name"], "web");
    let (_, v) = api.json("GET", "/v1/services?namespace=prod", "").await;
    assert_eq!(v.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn patch_node_drains_and_labels() {
    let api = Api::new().await;
    let info = serde_json::json!({"id":"n1","hostname":"h1","address":"10.0.0.1","runtimes":["docker"],
        "capacity":{"cpus":2.0,"memory":"1Gi"},"agentVersion":"0.1.0","startedAt":"2026-01-01T00:00:00Z"});
    api.put_stored(&api.keys.node("n1"), info.to_string().into_bytes())
        .await;
    let (s, v) = api
        .json(
            "PATCH",
            "/v1/nodes/n1",
            r#"{"availability":"drain","labels":{"zone":"a"}}"#,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["config"]["availability"], "drain");
    let (_, v) = api
        .json("PATCH", "/v1/nodes/n1", r#"{"labels":{"disk":"ssd"}}"#)
        .await;
    assert_eq!(
        v["config"]["labels"],
        serde_json::json!({"disk":"ssd","zone":"a"}),
        "earlier changes are kept"
    );
    let (_, v) = api.json("GET", "/v1/nodes", "").await;
    assert_eq!(v[0]["ready"], true);
    assert_eq!(v[0]["config"]["availability"], "drain");
    let (s, _) = api
        .json("PATCH", "/v1/nodes/ghost", r#"{"availability":"drain"}"#)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn node_rm_is_refused_while_ready_unless_forced_and_lists_down_nodes() {
    let api = Api::new().await;
    let info = serde_json::json!({"id":"n1","hostname":"h1","address":"10.0.0.1","runtimes":["docker"],
        "capacity":{"cpus":2.0,"memory":"1Gi"},"agentVersion":"0.1.0","startedAt":"2026-01-01T00:00:00Z"});
    api.put_stored(&api.keys.node("n1"), info.to_string().into_bytes())
        .await;
    // n2 is known only from a task: its agent is gone, and it is listed as down.
    api.put_stored(&api.keys.task("n2", "web.1.x"), b"{}".to_vec())
        .await;
    let (_, v) = api.json("GET", "/v1/nodes", "").await;
    let ids: Vec<(&str, bool)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n["ready"].as_bool().unwrap()))
        .collect();
    assert_eq!(ids, [("n1", true), ("n2", false)]);

    let (s, v) = api.json("DELETE", "/v1/nodes/n1", "").await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].as_str().unwrap().contains("--force"), "{v}");
    assert!(api.stored(&api.keys.node_config("n1")).await.is_none());

    let (s, v) = api.json("DELETE", "/v1/nodes/n2", "").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["config"]["removed"], true);
    let (s, _) = api.json("DELETE", "/v1/nodes/n1?force=true", "").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api.json("DELETE", "/v1/nodes/ghost", "").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn concurrent_node_patches_keep_every_label() {
    let api = std::sync::Arc::new(Api::new().await);
    api.put_stored(&api.keys.node_config("n1"), b"{}".to_vec())
        .await;
    let mut handles = Vec::new();
    for i in 0..8 {
        let api = api.clone();
        handles.push(tokio::spawn(async move {
            api.json(
                "PATCH",
                "/v1/nodes/n1",
                &format!(r#"{{"labels":{{"k{i}":"v"}}}}"#),
            )
            .await
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap().0, StatusCode::OK);
    }
    let (_, v) = api.json("GET", "/v1/nodes/n1", "").await;
    assert_eq!(v["config"]["labels"].as_object().unwrap().len(), 8, "{v}");
}

#[tokio::test]
async fn tokens_enforce_read_and_write_roles() {
    use shoal_api::auth::{Principal, Role, Token, Tokens};
    let mut t = TokenTable::new();
    let r0 = Token::generate("r0").unwrap();
    let w0 = Token::generate("w0").unwrap();
    let none = Default::default();
    t.insert(
        &r0,
        Principal::new("r0", Role::Read, Default::default(), None).unwrap(),
    )
    .unwrap();
    t.insert(&w0, Principal::new("w0", Role::Write, none, None).unwrap())
        .unwrap();
    let api = Api::with(|s| s.with_tokens(Tokens::fixed(t))).await;
    let bearer = |t: &Token| format!("Bearer {}", t.reveal());
    let (s, _, body) = api.call("GET", "/v1/services", "", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(body.contains("bearer token"), "{body}");
    let (s, _, _) = api
        .call(
            "GET",
            "/v1/services",
            "",
            &[("authorization", "Bearer nope")],
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = api
        .call(
            "GET",
            "/v1/services",
            "",
            &[("authorization", &bearer(&r0))],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let m = manifest("web", "", 1);
    let (s, _, body) = api
        .call("POST", "/v1/apply", &m, &[("authorization", &bearer(&r0))])
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(body.contains("write role"), "{body}");
    let (s, _, _) = api
        .call("POST", "/v1/apply", &m, &[("authorization", &bearer(&w0))])
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = api.call("GET", "/healthz", "", &[]).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn non_loopback_without_tokens_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(shoal_store::EmbeddedStore::open(dir.path()).await.unwrap());
    let state = ApiState::new(store, shoal_core::Keys::default());
    let err = shoal_api::serve(state, "0.0.0.0:0".parse().unwrap(), async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--token-file"), "{err}");
}

#[tokio::test]
async fn openapi_lists_the_paths() {
    let api = Api::new().await;
    let (s, v) = api.json("GET", "/v1/openapi.json", "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        v["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        v["openapi"]
    );
    for p in [
        "/v1/services",
        "/v1/services/{ns}/{name}",
        "/v1/apply",
        "/v1/watch",
        "/v1/nodes/{id}",
        "/metrics",
    ] {
        assert!(v["paths"].get(p).is_some(), "missing {p}");
    }
}

#[tokio::test]
async fn schema_describes_the_manifest() {
    let api = Api::new().await;
    let (s, v) = api.json("GET", "/v1/schema/service", "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["properties"]["spec"].is_object(), "{v}");
    assert!(v["$schema"].as_str().unwrap().contains("2020-12"));
}

#[tokio::test]
async fn metrics_count_tasks_and_requests() {
    let api = Api::new().await;
    api.json("GET", "/v1/services", "").await;
    let (s, _, text) = api.call("GET", "/metrics", "", &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains("shoal_tasks{state=\"running\"} 0"), "{text}");
    assert!(text.contains("shoal_services 0"), "{text}");
    assert!(
        text.contains(
            "shoal_api_requests_total{route=\"/v1/services\",method=\"GET\",status=\"200\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn readyz_reports_the_store() {
    let api = Api::new().await;
    let (s, _, _) = api.call("GET", "/readyz", "", &[]).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn metrics_include_the_process_registry() {
    let mut reg = prometheus_client::registry::Registry::default();
    let c = prometheus_client::metrics::counter::Counter::<u64>::default();
    c.inc();
    reg.register("shoal_reconciles", "Reconciles", c);
    let reg = std::sync::Arc::new(reg);
    let api = Api::with(|s| s.with_registry(reg)).await;
    let (_, _, text) = api.call("GET", "/metrics", "", &[]).await;
    assert!(text.contains("shoal_reconciles_total 1"), "{text}");
    assert!(text.contains("shoal_tasks"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
}

fn names_in(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["namespace"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            )
        })
        .collect()
}

/// `kubectl apply --prune` deletes only in the namespaces the apply is about; pruning every
/// namespace that happens to hold a matching label would wipe other teams' services.
#[tokio::test]
async fn prune_stays_inside_the_namespaces_of_the_apply() {
    let api = Api::new().await;
    let in_ns = |ns: &str, name: &str| {
        manifest(name, "app: shop", 1)
            .replace("metadata:\n", &format!("metadata:\n  namespace: {ns}\n"))
    };
    for (ns, name) in [("shop", "db"), ("prod", "db"), ("default", "old")] {
        let (s, v) = api.json("POST", "/v1/apply", &in_ns(ns, name)).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // Documents in default only: default/old goes, shop and prod stay.
    let (s, v) = api
        .json(
            "POST",
            "/v1/apply?prune=true&selector=app%3Dshop",
            &manifest("web", "app: shop", 1),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, list) = api.json("GET", "/v1/services", "").await;
    assert_eq!(
        names_in(&list),
        ["default/web", "prod/db", "shop/db"],
        "{v}"
    );

    // namespace=shop: a document without a namespace lands in shop, and only shop is pruned.
    let (s, v) = api
        .json(
            "POST",
            "/v1/apply?prune=true&selector=app%3Dshop&namespace=shop",
            &manifest("cache", "app: shop", 1),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["results"][0]["namespace"], "shop", "{v}");
    let (_, list) = api.json("GET", "/v1/services", "").await;
    assert_eq!(
        names_in(&list),
        ["default/web", "prod/db", "shop/cache"],
        "{v}"
    );
    let (_, got) = api.json("GET", "/v1/services/shop/cache", "").await;
    assert!(
        got["manifest"]
            .as_str()
            .unwrap()
            .contains("namespace: \"shop\""),
        "{got}"
    );

    // A document naming another namespace than the apply's is refused, and nothing changes.
    let (s, v) = api
        .json("POST", "/v1/apply?namespace=shop", &in_ns("prod", "db"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("names namespace \"prod\", not \"shop\""),
        "{v}"
    );
}

/// A JSON array or YAML list of services stores each element's own text under its own key.
#[tokio::test]
async fn a_list_of_manifests_stores_each_element_alone() {
    let api = Api::new().await;
    let list = "- apiVersion: shoal/v1\n  kind: Service\n  metadata: {name: a}\n  spec: {image: nginx}\n- apiVersion: shoal/v1\n  kind: Service\n  metadata: {name: b}\n  spec: {image: redis}\n";
    let (s, v) = api.json("POST", "/v1/apply", list).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, b) = api.json("GET", "/v1/services/default/b", "").await;
    let text = b["manifest"].as_str().unwrap();
    assert!(text.contains("redis") && !text.contains("nginx"), "{text}");
    assert_eq!(b["service"]["spec"]["image"], "redis");
    let json = r#"[{"apiVersion":"shoal/v1","kind":"Service","metadata":{"name":"c"},"spec":{"image":"nginx"}},{"apiVersion":"shoal/v1","kind":"Service","metadata":{"name":"d"},"spec":{"image":"redis"}}]"#;
    let (s, v) = api.json("POST", "/v1/apply", json).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, d) = api.json("GET", "/v1/services/default/d", "").await;
    let text = d["manifest"].as_str().unwrap();
    assert!(text.contains("redis") && !text.contains("nginx"), "{text}");
}

/// A docker task of `default/web` on `node`.
fn web_task(node: &str, id: &str) -> shoal_core::Task {
    let mut template = template(RuntimeKind::Docker, Some("nginx"), &[]);
    template.stop_grace_period = shoal_core::units::Dur::secs(1);
    task(id, "web", node, template)
}

/// A service read names the nodes holding its tasks whose agents published why names are
/// unavailable there, and no other node.
#[tokio::test]
async fn service_read_names_nodes_without_names_and_why() {
    let api = Api::new().await;
    let (s, _) = api
        .json(
            "PUT",
            "/v1/services/default/web",
            &manifest("web", "app: web", 3),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let why = "the agent lacks CAP_NET_ADMIN (iptables cannot read the nat table)";
    for (node, problem) in [("n1", None), ("n2", Some(why)), ("n3", Some(why))] {
        let mut info = serde_json::json!({"id":node,"hostname":node,"address":"10.0.0.1",
            "runtimes":["docker"],"capacity":{"cpus":2.0,"memory":"1Gi"},"agentVersion":"0.1.0",
            "startedAt":"2026-01-01T00:00:00Z"});
        if let Some(p) = problem {
            info["networkUnavailable"] = p.into();
        }
        api.put_stored(&api.keys.node(node), info.to_string().into_bytes())
            .await;
    }
    // n3 has the problem but none of web's tasks.
    for (node, id) in [("n1", "web.1.a"), ("n2", "web.2.b")] {
        let t = web_task(node, id);
        api.store
            .put(
                &api.keys.task(node, id),
                shoal_core::model::encode(&t),
                None,
            )
            .await
            .unwrap();
    }
    let (s, v) = api.json("GET", "/v1/services/default/web", "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["namesUnavailable"], serde_json::json!({"n2": why}), "{v}");
    let (_, list) = api.json("GET", "/v1/services", "").await;
    assert!(list[0].get("namesUnavailable").is_none(), "{list}");
}
