//! The dashboard's pages on the router over a real embedded store: the HTML is parsed with
//! `scraper` and its figures are compared with what `/v1` (and so `shoal get`) reports.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use scraper::{Html, Selector};
use serde_json::Value;
use shoal_api::TokenTable;
use shoal_api::auth::{Principal, Role, Token, Tokens};
use shoal_api::sample::{SampleCluster, SampleSize, write_sample};
use shoal_api::types::ServiceResource;
use shoal_tests::api::Api;

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn texts(doc: &Html, s: &str) -> Vec<String> {
    doc.select(&sel(s))
        .map(|e| e.text().collect::<String>().trim().to_string())
        .collect()
}

fn attr(doc: &Html, s: &str, a: &str) -> Option<String> {
    doc.select(&sel(s))
        .next()
        .and_then(|e| e.value().attr(a))
        .map(str::to_string)
}

async fn sample(api: &Api, services: usize, replicas: usize, nodes: usize) -> SampleCluster {
    let size = SampleSize {
        services,
        replicas,
        nodes,
    };
    write_sample(api.store.as_ref(), &api.keys, size)
        .await
        .unwrap()
}

async fn page(api: &Api, uri: &str, cookie: Option<&str>) -> (StatusCode, Html) {
    let headers: Vec<(&str, &str)> = cookie.map(|c| ("cookie", c)).into_iter().collect();
    let (s, _, body) = api.call("GET", uri, "", &headers).await;
    (s, Html::parse_document(&body))
}

/// Status and headers of a GET, without reading the body (the watch stream never ends).
async fn head(api: &Api, uri: &str, cookie: &str) -> (StatusCode, axum::http::HeaderMap) {
    use tower::ServiceExt;
    let req = axum::http::Request::get(uri)
        .header("cookie", cookie)
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = api.router.clone().oneshot(req).await.unwrap();
    (resp.status(), resp.headers().clone())
}

/// `data-count` of every `<dd>` under `#id`.
fn counts(doc: &Html, id: &str) -> BTreeMap<String, usize> {
    doc.select(&sel(&format!("#{id} dd")))
        .map(|e| {
            let k = e.value().attr("data-count").unwrap().to_string();
            (k, e.text().collect::<String>().trim().parse().unwrap())
        })
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn tally<'a>(words: impl Iterator<Item = String> + 'a) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for w in words {
        *m.entry(w).or_insert(0) += 1;
    }
    m
}

#[tokio::test]
async fn the_overview_counts_what_the_api_reports() {
    let api = Api::new().await;
    sample(&api, 12, 3, 4).await;
    let (s, doc) = page(&api, "/ui/", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(texts(&doc, "h1"), ["Overview"]);
    assert!(
        doc.select(&sel("header nav[aria-label=Main]"))
            .next()
            .is_some()
    );
    assert!(doc.select(&sel("main#main")).next().is_some());

    let (_, v) = api.json("GET", "/v1/services", "").await;
    let list: Vec<ServiceResource> = serde_json::from_value(v).unwrap();
    let phases = tally(list.iter().map(|s| s.phase()));
    assert_eq!(counts(&doc, "service-counts"), phases);
    assert_eq!(phases.get("Paused"), Some(&1), "{phases:?}");
    assert_eq!(phases.get("Unschedulable"), Some(&1), "{phases:?}");

    let (_, tasks) = api.json("GET", "/v1/tasks?history=false", "").await;
    let states = tally(tasks.as_array().unwrap().iter().map(|t| {
        t["status"]["state"]
            .as_str()
            .unwrap_or("assigned")
            .to_string()
    }));
    assert_eq!(counts(&doc, "task-counts"), states);
    assert_eq!(states.values().sum::<usize>(), 36);

    let (_, nodes) = api.json("GET", "/v1/nodes", "").await;
    assert_eq!(
        counts(&doc, "node-counts"),
        BTreeMap::from([("Ready".to_string(), nodes.as_array().unwrap().len())])
    );
    let warnings = texts(&doc, "#warnings tbody tr");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("TaskFailed"), "{warnings:?}");
}

#[tokio::test]
async fn the_services_table_is_paginated_and_filtered_like_shoal_get() {
    let api = Api::new().await;
    sample(&api, 120, 1, 2).await;
    let (_, doc) = page(&api, "/ui/services", None).await;
    assert_eq!(doc.select(&sel("#services tbody tr")).count(), 50);
    assert_eq!(texts(&doc, "#service-total"), ["120 services"]);
    let (_, doc) = page(&api, "/ui/services?page=3", None).await;
    assert_eq!(doc.select(&sel("#services tbody tr")).count(), 20);
    assert!(texts(&doc, ".pager span")[0].starts_with("Page 3 of 3"));

    let (_, shop) = api.json("GET", "/v1/services?namespace=shop", "").await;
    let shop: Vec<String> = shop
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    let (_, doc) = page(&api, "/ui/services?namespace=shop&page=1", None).await;
    assert_eq!(
        texts(&doc, "#service-total"),
        [format!("{} services", shop.len())]
    );
    let first: Vec<String> = texts(&doc, "#services tbody tr td:nth-child(2)");
    assert_eq!(first, shop[..first.len()].to_vec());
    assert!(
        doc.select(&sel("#services tbody tr")).all(|r| r
            .value()
            .attr("data-service")
            .unwrap()
            .starts_with("shop/"))
    );

    let (_, doc) = page(&api, "/ui/services?selector=app%3Dsvc-0007", None).await;
    assert_eq!(
        texts(&doc, "#services tbody tr td:nth-child(2)"),
        ["svc-0007"]
    );
    let row = texts(&doc, "#services tbody tr")[0].clone();
    assert!(row.contains("1/1") && row.contains("nginx:1.27"), "{row}");

    let (s, doc) = page(&api, "/ui/services?selector=%3D%3D", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(!texts(&doc, ".error").is_empty());
}

#[tokio::test]
async fn a_service_page_shows_its_tasks_rollout_placement_and_spec() {
    let api = Api::new().await;
    let c = sample(&api, 6, 6, 3).await;
    let paused = c.paused.unwrap();
    let (s, doc) = page(
        &api,
        &format!("/ui/services/{}/{}", paused.namespace, paused.name),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, tasks) = api
        .json("GET", &format!("/v1/tasks?service={paused}"), "")
        .await;
    let tasks = tasks.as_array().unwrap();
    assert_eq!(doc.select(&sel("#tasks tbody tr")).count(), tasks.len());
    let running = tasks
        .iter()
        .filter(|t| t["status"]["state"] == "running")
        .count();
    assert_eq!(texts(&doc, "#running-tasks"), [running.to_string()]);
    assert_eq!(doc.select(&sel("#tasks tr[data-state=failed]")).count(), 2);
    assert_eq!(texts(&doc, "#phase"), ["Paused"]);
    assert_eq!(attr(&doc, "#rollout-bar", "value").as_deref(), Some("3"));
    assert_eq!(attr(&doc, "#rollout-bar", "max").as_deref(), Some("6"));
    assert!(texts(&doc, "pre.spec")[0].contains("replicas: 6"));
    let watch = attr(&doc, "body", "data-watch").unwrap();
    assert_eq!(
        watch,
        format!("/ui/watch?service={}%2Fsvc-0003", paused.namespace)
    );

    let u = c.unschedulable.unwrap();
    let (_, doc) = page(
        &api,
        &format!("/ui/services/{}/{}", u.namespace, u.name),
        None,
    )
    .await;
    assert!(texts(&doc, "#placement")[0].contains("no node has 64 CPUs free"));
    let (s, _) = page(&api, "/ui/services/default/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Adds to slot 1 of `r` (the sample's first service) a task that failed before its current one, on `node` (not the
/// current task's node); returns its id.
async fn add_history_task(api: &Api, r: &shoal_core::ServiceRef, node: &str) -> String {
    let (_, v) = api.json("GET", &format!("/v1/tasks?service={r}"), "").await;
    let current = v
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["task"]["id"] == format!("{}.1.s0", r.name))
        .unwrap();
    assert_ne!(current["task"]["nodeId"], node);
    let mut task: shoal_core::model::Task =
        serde_json::from_value(current["task"].clone()).unwrap();
    task.id = format!("{}.1.earlier", r.name);
    task.node_id = node.to_string();
    task.created_at = shoal_core::model::Timestamp(task.created_at.0 - 60_000);
    task.desired_state = shoal_core::model::DesiredState::Shutdown;
    let mut status = shoal_core::model::TaskStatus::new(
        task.id.clone(),
        shoal_core::model::TaskState::Failed,
        task.created_at,
    );
    status.exit_code = Some(3);
    let put = |k: String, v: Vec<u8>| async move { api.store.put(&k, v, None).await.unwrap() };
    put(
        api.keys.task(node, &task.id),
        serde_json::to_vec(&task).unwrap(),
    )
    .await;
    put(
        api.keys.task_status(node, &task.id),
        serde_json::to_vec(&status).unwrap(),
    )
    .await;
    task.id
}

#[tokio::test]
async fn history_tasks_are_marked_filtered_and_counted_apart() {
    let api = Api::new().await;
    let c = sample(&api, 2, 2, 2).await;
    let r = &c.services[0];
    // The current task of slot 1 runs on node-000: the earlier one ran on node-001.
    let earlier = add_history_task(&api, r, "node-001").await;

    let ids = |v: &Value| -> Vec<(String, bool)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let id = t["task"]["id"].as_str().unwrap().to_string();
                (id, t["history"] == true)
            })
            .collect()
    };
    let (_, all) = api.json("GET", &format!("/v1/tasks?service={r}"), "").await;
    let all = ids(&all);
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all.iter().filter(|(_, h)| *h).count(), 1, "{all:?}");
    assert!(all.contains(&(earlier.clone(), true)), "{all:?}");
    let (_, current) = api
        .json("GET", &format!("/v1/tasks?service={r}&history=false"), "")
        .await;
    assert!(ids(&current).iter().all(|(id, h)| id != &earlier && !h));
    assert_eq!(ids(&current).len(), 2);
    let (_, only) = api.json("GET", "/v1/tasks?history=true", "").await;
    assert_eq!(ids(&only), [(earlier.clone(), true)]);
    // Judged against the slot's other tasks, wherever they run.
    let (_, on_node) = api.json("GET", "/v1/tasks?node=node-001", "").await;
    assert!(ids(&on_node).contains(&(earlier.clone(), true)));

    // The service page lists it after the slot's current task, marked.
    let (_, doc) = page(
        &api,
        &format!("/ui/services/{}/{}", r.namespace, r.name),
        None,
    )
    .await;
    let rows: Vec<String> = doc
        .select(&sel("#tasks tbody tr"))
        .map(|e| e.value().attr("data-task").unwrap().to_string())
        .collect();
    assert_eq!(rows[1], earlier, "{rows:?}");
    let marked = format!("#tasks tr[data-history][data-task=\"{earlier}\"]");
    assert_eq!(doc.select(&sel(&marked)).count(), 1);
    assert_eq!(doc.select(&sel("#tasks tr[data-history]")).count(), 1);
    assert!(texts(&doc, &format!("{marked} td"))[0].starts_with("\\_ "));

    // The overview counts current tasks by state, and the history apart.
    let (_, doc) = page(&api, "/ui/", None).await;
    assert_eq!(texts(&doc, "#history-count"), ["1"]);
    let states = counts(&doc, "task-counts");
    assert_eq!(states.get("failed"), None, "{states:?}");
    assert_eq!(states.get("running"), Some(&4), "{states:?}");
}

#[tokio::test]
async fn the_nodes_pages_show_reservations_and_tasks_per_node() {
    let api = Api::new().await;
    sample(&api, 10, 2, 4).await;
    let (_, doc) = page(&api, "/ui/nodes", None).await;
    assert_eq!(doc.select(&sel("#nodes tbody tr")).count(), 4);
    for id in ["node-000", "node-001", "node-002", "node-003"] {
        let (_, v) = api.json("GET", &format!("/v1/tasks?node={id}"), "").await;
        let n = v.as_array().unwrap().len();
        let row = texts(&doc, &format!("#nodes tr[data-node={id}] td:last-child"));
        assert_eq!(row, [n.to_string()], "{id}");
        let (_, nd) = page(&api, &format!("/ui/nodes/{id}"), None).await;
        assert_eq!(nd.select(&sel("#tasks tbody tr")).count(), n, "{id}");
    }
    assert_eq!(
        attr(&doc, "#nodes tr[data-node=node-000] meter", "max").as_deref(),
        Some("8")
    );
    let (s, _) = page(&api, "/ui/nodes/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

fn token(t: &mut TokenTable, id: &str, role: Role) -> Token {
    let tok = Token::generate(id).unwrap();
    t.insert(
        &tok,
        Principal::new(id, role, Default::default(), None).unwrap(),
    )
    .unwrap();
    tok
}

/// Signs in; returns the `Cookie` header value and the `Set-Cookie` line.
async fn sign_in(api: &Api, t: &Token) -> (String, String) {
    let body = format!("token={}", t.reveal());
    let (s, h, _) = api.call("POST", "/ui/login", &body, &[FORM]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let set = h["set-cookie"].to_str().unwrap().to_string();
    (set.split(';').next().unwrap().to_string(), set)
}

#[tokio::test]
async fn with_tokens_a_session_cookie_carries_the_role_and_forms_need_its_csrf_token() {
    let mut t = TokenTable::new();
    let read = token(&mut t, "r0", Role::Read);
    let write = token(&mut t, "w0", Role::Write);
    let admin = token(&mut t, "a0", Role::Admin);
    let api = Api::with(|s| s.with_tokens(Tokens::fixed(t))).await;
    sample(&api, 3, 2, 2).await;

    let (s, h, _) = api.call("GET", "/ui/", "", &[]).await;
    assert_eq!(
        (s, h["location"].to_str().unwrap()),
        (StatusCode::SEE_OTHER, "/ui/login")
    );
    let (s, _, _) = api.call("GET", "/ui/watch", "", &[]).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, body) = api
        .call("POST", "/ui/login", "token=r0.wrong", &[FORM])
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        body.contains("not accepted") && !body.contains("r0.wrong"),
        "{body}"
    );

    let (cookie, set) = sign_in(&api, &read).await;
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/ui"),
        "{set}"
    );
    assert!(
        !set.contains(&read.reveal()) && !set.contains("r0"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "served in cleartext: {set}");
    let (s, doc) = page(&api, "/ui/services/default/svc-0000", Some(&cookie)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc.select(&sel("details.action")).count(), 0);
    let (_, doc) = page(&api, "/ui/nodes/node-000", Some(&cookie)).await;
    assert_eq!(doc.select(&sel("details.action")).count(), 0);
    let read_csrf = attr(&doc, "form.signout input[name=csrf]", "value").unwrap();
    let (s, h) = head(&api, "/ui/watch", &cookie).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["content-type"], "text/event-stream");
    let body = format!("csrf={read_csrf}&replicas=5");
    let (s, _, _) = api
        .call(
            "POST",
            "/ui/services/default/svc-0000/scale",
            &body,
            &[FORM, ("cookie", &cookie)],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a read token may not scale");

    let (wcookie, _) = sign_in(&api, &write).await;
    let (_, doc) = page(&api, "/ui/services/default/svc-0000", Some(&wcookie)).await;
    assert_eq!(doc.select(&sel("details#scale")).count(), 1);
    let (_, doc) = page(&api, "/ui/nodes/node-000", Some(&wcookie)).await;
    assert_eq!(
        doc.select(&sel("details.action")).count(),
        0,
        "write tokens do not drain"
    );

    let (acookie, _) = sign_in(&api, &admin).await;
    let (_, doc) = page(&api, "/ui/nodes/node-000", Some(&acookie)).await;
    let csrf = attr(&doc, "#availability-action input[name=csrf]", "value").unwrap();
    assert_ne!(csrf, read_csrf, "each session has its own CSRF token");
    let drain = |c: &str| format!("csrf={c}&availability=drain");
    let (s, _, _) = api
        .call(
            "POST",
            "/ui/nodes/node-000/availability",
            &drain(&read_csrf),
            &[FORM, ("cookie", &acookie)],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "another session's CSRF token");
    let (_, v) = api.json("GET", "/v1/nodes/node-000", "").await;
    assert_eq!(
        v["error"].as_str().map(|_| ()),
        Some(()),
        "the bearer API still wants a token"
    );
    let (s, _, _) = api
        .call(
            "POST",
            "/ui/nodes/node-000/availability",
            &drain(&csrf),
            &[FORM, ("cookie", &acookie)],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (_, doc) = page(&api, "/ui/nodes/node-000", Some(&acookie)).await;
    assert_eq!(texts(&doc, "#availability"), ["drain"]);
    let (_, _, body) = api
        .call(
            "GET",
            "/v1/nodes/node-000",
            "",
            &[("authorization", &format!("Bearer {}", admin.reveal()))],
        )
        .await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["config"]["availability"], "drain");

    let (s, _, _) = api
        .call(
            "POST",
            "/ui/logout",
            &format!("csrf={csrf}"),
            &[FORM, ("cookie", &acookie)],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, _, _) = api.call("GET", "/ui/", "", &[("cookie", &acookie)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER, "signed out");
}

#[tokio::test]
async fn without_tokens_there_is_no_sign_in_and_scale_keeps_the_manifest_text() {
    let api = Api::new().await;
    let body = "# ours\napiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  replicas: 1 # count\n  image: nginx:1.27\n";
    let (s, _, _) = api.call("PUT", "/v1/services/default/web", body, &[]).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, h, _) = api.call("GET", "/ui/login", "", &[]).await;
    assert_eq!(
        (s, h["location"].to_str().unwrap()),
        (StatusCode::SEE_OTHER, "/ui/")
    );
    let (s, doc) = page(&api, "/ui/services/default/web", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc.select(&sel("form.signout")).next().is_none());
    let csrf = attr(&doc, "#scale input[name=csrf]", "value").unwrap();
    let (s, _, _) = api
        .call(
            "POST",
            "/ui/services/default/web/scale",
            "csrf=forged&replicas=3",
            &[FORM],
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = api
        .call(
            "POST",
            "/ui/services/default/web/scale",
            &format!("csrf={csrf}&replicas=many"),
            &[FORM],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, h, _) = api
        .call(
            "POST",
            "/ui/services/default/web/scale",
            &format!("csrf={csrf}&replicas=3"),
            &[FORM],
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "/ui/services/default/web");
    let (_, v) = api.json("GET", "/v1/services/default/web", "").await;
    assert_eq!(
        v["manifest"],
        body.replace("replicas: 1 # count", "replicas: 3 # count")
    );
}

#[tokio::test]
async fn pages_forbid_other_origins_and_the_assets_are_embedded() {
    let api = Api::new().await;
    let (_, h, body) = api.call("GET", "/ui/", "", &[]).await;
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    let doc = Html::parse_document(&body);
    for (s, a) in [
        ("script", "src"),
        ("link", "href"),
        ("a", "href"),
        ("form", "action"),
    ] {
        for e in doc.select(&sel(s)) {
            let v = e.value().attr(a).unwrap_or("/");
            assert!(v.starts_with('/') || v.starts_with('#'), "{s} {a}={v}");
        }
    }
    for (f, ty) in [
        ("ui.css", "text/css"),
        ("ui.js", "text/javascript"),
        ("icon.svg", "image/svg+xml"),
    ] {
        let (s, h, _) = api.call("GET", &format!("/ui/assets/{f}"), "", &[]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(h["content-type"].to_str().unwrap().starts_with(ty));
    }
    let (s, _, _) = api.call("GET", "/ui/assets/nope.js", "", &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_service_page_shows_the_last_lines_of_each_task_from_its_agent() {
    use axum::extract::{Path, Query};
    use shoal_api::logs::LogParams;
    use shoal_core::logs::{LogEvent, LogLine, OutputStream};
    // One node's agent serves its tasks' output (the agents' route and NDJSON events).
    let asked: std::sync::Arc<std::sync::Mutex<Vec<LogParams>>> = Default::default();
    let seen = asked.clone();
    let agent = axum::Router::new().route(
        "/v1/tasks/{id}/logs",
        axum::routing::get(move |Path(id): Path<String>, Query(q): Query<LogParams>| {
            seen.lock().unwrap().push(q);
            async move {
                let line = |stream, text: String| {
                    LogEvent::Line(LogLine {
                        task: id.clone(),
                        node: String::new(),
                        stream,
                        time: None,
                        line: text,
                    })
                    .to_ndjson()
                };
                let mut body = line(OutputStream::Stdout, format!("serving <b>{id}</b>"));
                body.push_str(&line(OutputStream::Stderr, "slow disk".to_string()));
                body
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, agent).await });

    let api = Api::new().await;
    let c = sample(&api, 1, 4, 2).await;
    let svc = &c.services[0];
    let nodes = api.store.list(&api.keys.nodes_prefix()).await.unwrap();
    let mut info: shoal_core::NodeInfo = serde_json::from_slice(&nodes.kvs[0].value).unwrap();
    info.agent_url = Some(format!("http://{addr}"));
    let served = info.id.clone();
    api.store
        .put(&nodes.kvs[0].key, serde_json::to_vec(&info).unwrap(), None)
        .await
        .unwrap();
    let (_, tasks) = api
        .json("GET", &format!("/v1/tasks?service={svc}"), "")
        .await;
    let on = |served_here: bool| -> Vec<(String, String)> {
        tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| (t["task"]["nodeId"] == served.as_str()) == served_here)
            .map(|t| {
                (
                    t["task"]["id"].as_str().unwrap().to_string(),
                    t["task"]["nodeId"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let (here, elsewhere) = (on(true), on(false));
    assert!(!here.is_empty() && !elsewhere.is_empty(), "{tasks}");

    let (s, doc) = page(
        &api,
        &format!("/ui/services/{}/{}", svc.namespace, svc.name),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for (id, _) in &here {
        let out = texts(&doc, &format!("#output pre[data-task=\"{id}\"]"));
        assert_eq!(
            out,
            [format!("serving <b>{id}</b>\n! slow disk")],
            "the task's lines, escaped, stderr marked"
        );
    }
    assert_eq!(
        doc.select(&sel("#output pre.output")).count(),
        here.len(),
        "one block per task of the serving node"
    );
    assert_eq!(doc.select(&sel("#output span.stderr")).count(), here.len());
    let other = &elsewhere[0].1;
    let notes = texts(&doc, "#output p.missing");
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with(&format!("node {other} unreachable: "))),
        "the node whose agent does not listen is named: {notes:?}"
    );
    let asked = asked.lock().unwrap();
    assert_eq!(asked.len(), here.len());
    assert!(
        asked
            .iter()
            .all(|q| q.tail.as_deref() == Some("10") && q.follow.is_none()),
        "{asked:?}"
    );
}

#[tokio::test]
async fn over_tls_the_session_cookie_is_secure() {
    let mut t = TokenTable::new();
    let read = token(&mut t, "r0", Role::Read);
    let api = Api::with(|s| shoal_api::ApiState {
        tls: true,
        ..s.with_tokens(Tokens::fixed(t))
    })
    .await;
    let (_, set) = sign_in(&api, &read).await;
    assert!(
        set.contains("Secure") && set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
}
