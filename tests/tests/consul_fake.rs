//! The fake Consul behaves like the reference (`shared/reference/consul-http-api.md`):
//! checked through the client, and through raw HTTP where the client would hide details.

use std::time::{Duration, Instant};

use shoal_store::consul::{
    AgentServiceCheck, AgentServiceRegistration, ConsulClient, ConsulConfig, ConsulError,
    PutOptions, QueryOptions, SessionBehavior, SessionRequest, TxnKvOp, TxnOutcome, TxnVerb,
};
use shoal_tests::consul_fake::{ConsulFake, FakeOptions};
use shoal_tests::health::HealthEndpoint;
use shoal_tests::wait::eventually;

fn client(fake: &ConsulFake) -> ConsulClient {
    ConsulClient::new(ConsulConfig::new(fake.http_url())).expect("client")
}

async fn raw(fake: &ConsulFake, method: &str, path: &str) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http")
        .request(method, format!("{}{path}", fake.http_url()))
        .send()
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_is_404_with_an_index_and_never_zero() {
    let fake = ConsulFake::start().await;
    let resp = raw(&fake, "GET", "/v1/kv/nope").await;
    assert_eq!(resp.status(), 404);
    let index: u64 = resp.headers()["X-Consul-Index"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(index >= 1);
    assert_eq!(resp.headers()["X-Consul-KnownLeader"], "true");
    assert!(resp.text().await.unwrap().is_empty());
    assert_eq!(
        raw(&fake, "GET", "/v1/kv/?recurse").await.status(),
        404,
        "empty root"
    );
    assert_eq!(
        raw(&fake, "GET", "/v1/kv/?keys").await.status(),
        200,
        "empty prefix keys"
    );
    assert_eq!(
        raw(&fake, "GET", "/v1/kv/").await.status(),
        400,
        "missing key name"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_paths_and_errors_follow_consul() {
    let fake = ConsulFake::start().await;
    let resp = raw(&fake, "GET", "/v1/txn").await;
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["Allow"], "PUT");
    assert_eq!(resp.text().await.unwrap(), "method GET not allowed");
    let resp = raw(&fake, "GET", "/v1/nothing").await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.text().await.unwrap(),
        "Invalid URL path: not a recognized HTTP API endpoint"
    );
    assert_eq!(raw(&fake, "GET", "/v1/kv//a").await.status(), 301);
    let resp = raw(&fake, "GET", "/v1/kv/a?index=x").await;
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.text().await.unwrap(), "Invalid index");
    assert_eq!(
        raw(&fake, "GET", "/v1/kv/a?index=1&wait=10").await.status(),
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recurse_is_sorted_and_entries_carry_indexes() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    for k in ["p/b", "p/a", "p/c/d", "q"] {
        assert!(
            c.kv_put(k, k.as_bytes().to_vec(), &PutOptions::default())
                .await
                .unwrap()
        );
    }
    let (entries, index) = c.kv_list("p/", QueryOptions::default()).await.unwrap();
    let keys: Vec<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["p/a", "p/b", "p/c/d"]);
    assert_eq!(index, entries.iter().map(|e| e.modify_index).max().unwrap());
    assert!(
        entries
            .iter()
            .all(|e| e.create_index == e.modify_index && e.session.is_none())
    );
    // A delete raises the prefix index through its tombstone.
    c.kv_delete("p/b", None).await.unwrap();
    let (_, after) = c.kv_list("p/", QueryOptions::default()).await.unwrap();
    assert!(after > index);
    // An idempotent write does not move the index.
    let before = fake.index();
    c.kv_put("q", b"q".to_vec(), &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(fake.index(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_conflicts_return_false() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    let create = PutOptions {
        cas: Some(0),
        ..PutOptions::default()
    };
    assert!(c.kv_put("k", b"1".to_vec(), &create).await.unwrap());
    assert!(
        !c.kv_put("k", b"2".to_vec(), &create).await.unwrap(),
        "cas=0 on an existing key"
    );
    let (e, _) = c.kv_get("k", QueryOptions::default()).await.unwrap();
    let e = e.unwrap();
    let stale = PutOptions {
        cas: Some(e.modify_index + 100),
        ..PutOptions::default()
    };
    assert!(!c.kv_put("k", b"3".to_vec(), &stale).await.unwrap());
    let ok = PutOptions {
        cas: Some(e.modify_index),
        ..PutOptions::default()
    };
    assert!(c.kv_put("k", b"4".to_vec(), &ok).await.unwrap());
    assert!(
        !c.kv_delete("k", Some(0)).await.unwrap(),
        "cas=0 never deletes"
    );
    assert!(
        c.kv_delete("absent", Some(7)).await.unwrap(),
        "a missing key is a no-op success"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_query_returns_on_change() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    c.kv_put("b/x", b"1".to_vec(), &PutOptions::default())
        .await
        .unwrap();
    let (_, index) = c.kv_list("b/", QueryOptions::default()).await.unwrap();
    let waiter = {
        let c = c.clone();
        tokio::spawn(async move {
            c.kv_list("b/", QueryOptions::blocking(index, Duration::from_secs(20)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    c.kv_put("other", b"1".to_vec(), &PutOptions::default())
        .await
        .unwrap();
    c.kv_put("b/y", b"2".to_vec(), &PutOptions::default())
        .await
        .unwrap();
    let (entries, new_index) = waiter.await.unwrap().unwrap();
    assert!(new_index > index);
    assert_eq!(entries.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_query_times_out_with_the_same_index() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    c.kv_put("t/x", b"1".to_vec(), &PutOptions::default())
        .await
        .unwrap();
    let (_, index) = c.kv_list("t/", QueryOptions::default()).await.unwrap();
    let started = Instant::now();
    let (entries, same) = c
        .kv_list(
            "t/",
            QueryOptions::blocking(index, Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert_eq!(same, index);
    assert_eq!(entries.len(), 1);
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn txn_is_atomic_with_real_errors_and_op_limit() {
    let fake = ConsulFake::start_with(FakeOptions {
        max_txn_ops: 64,
        ..FakeOptions::default()
    })
    .await;
    let c = client(&fake);
    c.kv_put("x/a", b"a".to_vec(), &PutOptions::default())
        .await
        .unwrap();
    let ops = vec![
        TxnKvOp::new(TxnVerb::Set, "x/b").value(b"b".to_vec()),
        TxnKvOp::new(TxnVerb::CheckNotExists, "x/a"),
        TxnKvOp::new(TxnVerb::CheckIndex, "x/missing").index(3),
    ];
    match c.txn(&ops).await.unwrap() {
        TxnOutcome::RolledBack(errors) => {
            assert_eq!(errors.len(), 2, "every failing op is listed: {errors:?}");
            assert_eq!(errors[0].op_index, 1);
            assert_eq!(errors[0].what, "key \"x/a\" exists");
            assert_eq!(
                errors[1].what,
                "failed to check index, key \"x/missing\" doesn't exist"
            );
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    assert!(
        c.kv_get("x/b", QueryOptions::default())
            .await
            .unwrap()
            .0
            .is_none(),
        "nothing applied"
    );
    let ops = vec![
        TxnKvOp::new(TxnVerb::Set, "x/b").value(b"b".to_vec()),
        TxnKvOp::new(TxnVerb::Delete, "x/a"),
        TxnKvOp::new(TxnVerb::Get, "x/b"),
    ];
    match c.txn(&ops).await.unwrap() {
        TxnOutcome::Committed(results) => {
            assert_eq!(results.len(), 2, "delete adds no result");
            assert_eq!(results[0].value, None);
            assert_eq!(results[1].value.as_deref(), Some(&b"b"[..]));
            assert_eq!(results[0].modify_index, results[1].modify_index);
        }
        other => panic!("expected a commit, got {other:?}"),
    }
    // The client refuses more than 64 ops itself.
    let many: Vec<TxnKvOp> = (0..65)
        .map(|i| TxnKvOp::new(TxnVerb::Delete, format!("m/{i}")))
        .collect();
    assert!(matches!(
        c.txn(&many).await,
        Err(ConsulError::TooManyOps { ops: 65, max: 64 })
    ));
    // The server answers 413 past its own limit.
    let body: Vec<serde_json::Value> = (0..65)
        .map(|i| serde_json::json!({"KV": {"Verb": "delete", "Key": format!("m/{i}")}}))
        .collect();
    let resp = reqwest::Client::new()
        .put(format!("{}/v1/txn", fake.http_url()))
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.text().await.unwrap(),
        "Transaction contains too many operations (65 > 64)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_deletes_held_keys() {
    let fake = ConsulFake::start_scaled(0.1).await;
    let c = client(&fake);
    let bad = SessionRequest {
        ttl: Some(Duration::from_secs(2)),
        ..SessionRequest::default()
    };
    match c.session_create(&bad).await {
        Err(ConsulError::Status { status: 500, body }) => {
            assert!(body.contains("Invalid Session TTL"), "{body}")
        }
        other => panic!("a TTL under 10s must be refused, got {other:?}"),
    }
    let req = SessionRequest {
        behavior: SessionBehavior::Delete,
        ttl: Some(Duration::from_secs(10)),
        lock_delay: Some(Duration::ZERO),
        ..SessionRequest::default()
    };
    let sid = c.session_create(&req).await.unwrap();
    let info = c.session_info(&sid).await.unwrap().expect("session");
    assert_eq!(
        (info.behavior.as_str(), info.ttl_duration()),
        ("delete", Some(Duration::from_secs(10)))
    );
    assert!(c.kv_acquire("s/held", b"v".to_vec(), &sid).await.unwrap());
    let (e, _) = c.kv_get("s/held", QueryOptions::default()).await.unwrap();
    assert_eq!(e.unwrap().session.as_deref(), Some(sid.as_str()));
    assert!(c.session_renew(&sid).await.unwrap().is_some());
    // Scaled: 2 x 10 s x 0.1 = 2 s after the last renewal.
    eventually("the session expired", || {
        std::future::ready(fake.sessions().is_empty())
    })
    .await;
    assert!(
        c.kv_get("s/held", QueryOptions::default())
            .await
            .unwrap()
            .0
            .is_none()
    );
    assert!(
        c.session_renew(&sid).await.unwrap().is_none(),
        "renew after expiry is 404"
    );
    assert!(
        c.session_info(&sid).await.unwrap().is_none(),
        "info of an unknown session is []"
    );
    c.session_destroy(&sid)
        .await
        .expect("destroy is idempotent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_release_and_lock_delay() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    let a = c.session_create(&SessionRequest::default()).await.unwrap();
    let b = c.session_create(&SessionRequest::default()).await.unwrap();
    assert!(c.kv_acquire("l", b"a".to_vec(), &a).await.unwrap());
    assert!(
        !c.kv_acquire("l", b"b".to_vec(), &b).await.unwrap(),
        "held by another session"
    );
    assert!(
        !c.kv_release("l", b"x".to_vec(), &b).await.unwrap(),
        "only the holder releases"
    );
    assert!(c.kv_release("l", b"a".to_vec(), &a).await.unwrap());
    assert!(
        c.kv_acquire("l", b"b".to_vec(), &b).await.unwrap(),
        "a release starts no lock-delay"
    );
    assert!(fake.expire_session(&b));
    let (e, _) = c.kv_get("l", QueryOptions::default()).await.unwrap();
    let e = e.expect("release behaviour keeps the key");
    assert_eq!((e.session, e.lock_index), (None, 2));
    assert!(
        !c.kv_acquire("l", b"a".to_vec(), &a).await.unwrap(),
        "lock-delay after invalidation"
    );
    match c
        .kv_acquire("l", b"x".to_vec(), "00000000-0000-0000-0000-000000000000")
        .await
    {
        Err(ConsulError::Status { status: 500, body }) => {
            assert!(body.starts_with("invalid session"))
        }
        other => panic!("expected a 500 for an unknown session, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_reset_after_tombstone_reaping() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    c.kv_put("r/a", b"1".to_vec(), &PutOptions::default())
        .await
        .unwrap();
    c.kv_put("r/b", b"1".to_vec(), &PutOptions::default())
        .await
        .unwrap();
    c.kv_delete("r/b", None).await.unwrap();
    let (_, with_tomb) = c.kv_list("r/", QueryOptions::default()).await.unwrap();
    fake.reap_tombstones();
    let (_, reaped) = c.kv_list("r/", QueryOptions::default()).await.unwrap();
    assert!(
        reaped < with_tomb,
        "the prefix index went backwards: {reaped} < {with_tomb}"
    );
    let mut tracker = shoal_store::consul::IndexTracker::new(with_tomb, Duration::from_millis(1));
    assert!(tracker.observe(reaped), "the tracker notices");
    assert_eq!(tracker.index(), 0, "and resets to a non-blocking read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_checks_catalog_and_health() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    let reg = AgentServiceRegistration {
        id: "t1".into(),
        name: "web".into(),
        tags: vec!["http".into()],
        address: "10.0.0.5".into(),
        port: 8080,
        meta: [("shoal-node".to_string(), "n1".to_string())].into(),
        checks: vec![AgentServiceCheck {
            ttl: Some("10s".into()),
            deregister_critical_service_after: Some("1m".into()),
            ..AgentServiceCheck::default()
        }],
    };
    c.agent_service_register(&reg).await.unwrap();
    let checks = c.agent_checks().await.unwrap();
    assert_eq!(
        checks["service:t1"].status, "critical",
        "checks start critical"
    );
    let (healthy, _) = c
        .health_service("web", None, true, QueryOptions::default())
        .await
        .unwrap();
    assert!(healthy.is_empty());
    c.check_pass("service:t1", "ok").await.unwrap();
    let (healthy, _) = c
        .health_service("web", None, true, QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(healthy.len(), 1);
    assert_eq!(healthy[0].checks.len(), 2, "node checks are included");
    let (svc, _) = c.catalog_services(QueryOptions::default()).await.unwrap();
    assert_eq!(svc["web"], ["http"]);
    assert!(svc.contains_key("consul"));
    let (inst, _) = c
        .catalog_service("web", Some("http"), QueryOptions::default())
        .await
        .unwrap();
    assert_eq!(
        (inst[0].service_port, inst[0].service_address.as_str()),
        (8080, "10.0.0.5")
    );
    assert!(matches!(
        c.check_pass("nope", "").await,
        Err(ConsulError::NotFound(_))
    ));
    c.agent_service_deregister("t1").await.unwrap();
    assert!(c.agent_services().await.unwrap().is_empty());
    assert!(
        c.agent_checks().await.unwrap().is_empty(),
        "its checks went too"
    );
    assert!(matches!(
        c.agent_service_deregister("t1").await,
        Err(ConsulError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_token_is_required_when_configured() {
    let fake = ConsulFake::start_with(FakeOptions {
        acl_token: Some("s3cret".into()),
        ..FakeOptions::default()
    })
    .await;
    let anonymous = client(&fake);
    assert!(matches!(
        anonymous.kv_get("a", QueryOptions::default()).await,
        Err(ConsulError::PermissionDenied(_))
    ));
    let mut config = ConsulConfig::new(fake.http_url());
    config.token = Some("s3cret".into());
    let c = ConsulClient::new(config).unwrap();
    assert!(
        c.kv_get("a", QueryOptions::default())
            .await
            .unwrap()
            .0
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_meta_breaking_consuls_rules_is_refused() {
    let fake = ConsulFake::start().await;
    let register = |meta: serde_json::Value| {
        let url = format!("{}/v1/agent/service/register", fake.http_url());
        async move {
            let resp = reqwest::Client::new()
                .put(url)
                .json(&serde_json::json!({"ID": "t1", "Name": "web", "Port": 80, "Meta": meta}))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    assert_eq!(
        register(serde_json::json!({"app_version": "1"})).await.0,
        200
    );
    let (status, body) = register(serde_json::json!({"app.version": "1"})).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        "Invalid Service Meta: Couldn't load metadata pair ('app.version', '1'): Key contains invalid characters"
    );
    let (status, body) = register(serde_json::json!({"consul-x": "1"})).await;
    assert_eq!((status, body.contains("reserved")), (400, true), "{body}");
    let (status, body) = register(serde_json::json!({"k": "v".repeat(513)})).await;
    assert_eq!((status, body.contains("Value is too long")), (400, true));
    let many: serde_json::Map<String, serde_json::Value> =
        (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    let (status, body) = register(serde_json::Value::Object(many)).await;
    assert_eq!((status, body.contains("64 key/value pairs")), (400, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restart_destroys_its_nodes_sessions() {
    let mut fake = ConsulFake::start().await;
    let c = client(&fake);
    let sid = c
        .session_create(&SessionRequest {
            ttl: Some(Duration::from_secs(3600)),
            behavior: SessionBehavior::Delete,
            lock_delay: Some(Duration::ZERO),
            node_checks: Some(vec![]),
            ..SessionRequest::default()
        })
        .await
        .unwrap();
    assert!(c.kv_acquire("n/1", b"x".to_vec(), &sid).await.unwrap());
    fake.restart_agent().await;
    // No check failed and the TTL is an hour away: the node left, so its sessions went.
    assert!(
        fake.sessions().is_empty(),
        "sessions: {:?}",
        fake.sessions()
    );
    assert!(
        !fake.keys().contains(&"n/1".to_string()),
        "the held key is deleted"
    );
    assert!(
        matches!(c.session_renew(&sid).await, Ok(None)),
        "renewing a destroyed session is a 404"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_reaped_after_the_tombstone_ttl_on_the_fakes_clock() {
    // 15 min × 0.0001 = 90 ms.
    let fake = ConsulFake::start_scaled(0.0001).await;
    let c = client(&fake);
    c.kv_put("r/a", b"1".to_vec(), &PutOptions::default())
        .await
        .unwrap();
    c.kv_put("r/b", b"1".to_vec(), &PutOptions::default())
        .await
        .unwrap();
    c.kv_delete("r/b", None).await.unwrap();
    let (_, with_tomb) = c.kv_list("r/", QueryOptions::default()).await.unwrap();
    let took = eventually("the tombstone is reaped", || async {
        let (_, now) = c.kv_list("r/", QueryOptions::default()).await.unwrap();
        now < with_tomb
    })
    .await;
    println!("tombstone reaped after {took:?} (ttl 90 ms)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_tcp_checks_run_against_real_ports_and_critical_services_are_reaped() {
    // Consul's timers 100 times faster: a 1 m DeregisterCriticalServiceAfter is 0.6 s.
    let fake = ConsulFake::start_scaled(0.01).await;
    let c = client(&fake);
    let endpoint = HealthEndpoint::start().await;
    let port = endpoint.port;
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let reg = |id: &str, check: AgentServiceCheck| AgentServiceRegistration {
        id: id.into(),
        name: "web".into(),
        address: "127.0.0.1".into(),
        port,
        checks: vec![AgentServiceCheck {
            interval: Some("100ms".into()),
            timeout: Some("1s".into()),
            deregister_critical_service_after: Some("1m".into()),
            ..check
        }],
        ..AgentServiceRegistration::default()
    };
    let http = |url: String| AgentServiceCheck {
        http: Some(url),
        ..AgentServiceCheck::default()
    };
    let tcp = |addr: String| AgentServiceCheck {
        tcp: Some(addr),
        ..AgentServiceCheck::default()
    };
    for (id, check) in [
        ("http", http(format!("http://127.0.0.1:{port}/health"))),
        ("tcp", tcp(format!("127.0.0.1:{port}"))),
        ("closed", tcp(format!("127.0.0.1:{closed_port}"))),
    ] {
        c.agent_service_register(&reg(id, check)).await.unwrap();
    }
    eventually("the HTTP and TCP checks pass against the real port", || {
        std::future::ready(
            fake.check_status("service:http").as_deref() == Some("passing")
                && fake.check_status("service:tcp").as_deref() == Some("passing"),
        )
    })
    .await;
    eventually("the service on a closed port is reaped", || {
        std::future::ready(fake.reaped_services() == ["closed"])
    })
    .await;
    endpoint.set(false);
    eventually("the failing HTTP service is reaped", || {
        std::future::ready(fake.reaped_services().contains(&"http".to_string()))
    })
    .await;
    let services = c.agent_services().await.unwrap();
    assert!(!services.contains_key("http") && !services.contains_key("closed"));
    assert!(
        services.contains_key("tcp"),
        "the passing TCP check keeps its service"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_client_limit_get_429() {
    let fake = ConsulFake::start_with(FakeOptions {
        max_conns_per_client: 4,
        ..FakeOptions::default()
    })
    .await;
    let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(fake.addr()).await.unwrap());
    }
    eventually("the four connections are counted", || {
        std::future::ready(fake.connections_from(ip) == 4)
    })
    .await;
    let resp = raw(&fake, "GET", "/v1/status/leader").await;
    assert_eq!(resp.status(), 429, "a fifth connection is refused");
    assert_eq!(fake.refused_connections(), 1);
    drop(held);
    eventually("the connections are closed", || {
        std::future::ready(fake.connections_from(ip) == 0)
    })
    .await;
    let resp = raw(&fake, "GET", "/v1/status/leader").await;
    assert_eq!(resp.status(), 200, "below the limit again");
}
