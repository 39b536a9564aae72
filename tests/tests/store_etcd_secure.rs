//! The etcd store over TLS with authentication, against a real etcd: the CA is verified,
//! passwords are checked, `rbac::apply` creates least-privilege users (idempotent, growing,
//! pruning), an agent's credentials reach only its own keys, and JWT tokens are renewed past
//! their expiry and after every change of users and roles.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_core::Keys;
use shoal_store::etcd::rbac;
use shoal_store::{
    Credentials, EtcdOptions, EtcdStore, EtcdTls, Store, StoreError, StoreOptions, Txn, TxnOp,
    WatchEvent, WatchStream,
};
use shoal_tests::etcd::{EtcdFixture, EtcdSecurity};
use shoal_tests::pki::Pki;

async fn secured(jwt_ttl: Option<Duration>) -> EtcdFixture {
    let mut etcd = EtcdFixture::start_with(EtcdSecurity {
        tls: Some(Arc::new(Pki::new("etcd test CA"))),
        client_cert_auth: false,
        jwt_ttl,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    etcd.enable_auth().await.expect("auth enabled");
    etcd
}

fn nodes(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

async fn login(etcd: &EtcdFixture, dir: &Path, user: &str) -> EtcdStore {
    let creds = Credentials::from_file(user, &dir.join(format!("{user}.password"))).unwrap();
    etcd.store_as(Some(creds)).await.unwrap()
}

fn denied<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) {
    match r {
        Err(StoreError::PermissionDenied(m)) => assert!(m.contains("permission denied"), "{m}"),
        other => panic!("{what}: expected etcd's permission denied, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_the_ca_and_passwords_are_checked() {
    let etcd = secured(None).await;
    let root = etcd.store().await.unwrap();
    root.put("/t/a", b"1".to_vec(), None).await.unwrap();

    // The same, the way the command line opens it: files for the CA and the password.
    let url = etcd.url();
    let options = StoreOptions {
        ca: etcd.pki().map(|p| p.ca_file()),
        user: Some("root".into()),
        password_file: etcd.root_password_file(),
        ..Default::default()
    };
    let store = shoal_store::open_store_with(&url, &options).await.unwrap();
    assert_eq!(store.get("/t/a").await.unwrap().unwrap().value, b"1");

    // Another CA's certificate is refused: the server is not who it claims to be.
    let stranger = Pki::new("some other CA");
    let wrong_ca = EtcdOptions {
        tls: Some(EtcdTls::new(stranger.ca_pem().into_bytes()).unwrap()),
        credentials: etcd.root(),
        ..EtcdOptions::default()
    };
    let e = EtcdStore::connect_with(&[etcd.endpoint()], wrong_ca)
        .await
        .unwrap()
        .get("/t/a")
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e}");
    println!("with another CA: {e}");

    // Cleartext to the TLS port gets nowhere.
    let cleartext = EtcdStore::connect(&[etcd.endpoint()]).await.unwrap();
    assert!(cleartext.get("/t/a").await.is_err());

    // A wrong password is an authentication failure, and no credentials at all get nothing.
    let wrong = etcd
        .store_as(Some(Credentials::new("root", "not-the-password")))
        .await
        .unwrap();
    let e = wrong.get("/t/a").await.unwrap_err();
    assert!(matches!(e, StoreError::AuthFailed(_)), "{e}");
    assert!(!e.to_string().contains("not-the-password"), "{e}");
    let anonymous = etcd.store_as(None).await.unwrap();
    assert!(anonymous.get("/t/a").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_apply_is_idempotent_grows_and_prunes() {
    let etcd = secured(None).await;
    let root = etcd.store().await.unwrap();
    let keys = Keys::default();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("creds");

    let first = rbac::apply(&root, &keys, &nodes(&["n1", "n2"]), &dir, false)
        .await
        .unwrap();
    assert_eq!(
        first.users_created,
        [
            "shoal-controller",
            "shoal-api",
            "shoal-agent-n1",
            "shoal-agent-n2"
        ]
    );
    use std::os::unix::fs::PermissionsExt as _;
    for (user, file) in &first.password_files {
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{user}");
    }
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let password = std::fs::read_to_string(dir.join("shoal-agent-n1.password")).unwrap();

    let again = rbac::apply(&root, &keys, &nodes(&["n1", "n2"]), &dir, false)
        .await
        .unwrap();
    assert!(
        !again.changed(),
        "a second apply changes nothing: {again:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("shoal-agent-n1.password")).unwrap(),
        password,
        "passwords are kept"
    );

    let grown = rbac::apply(&root, &keys, &nodes(&["n1", "n2", "n3"]), &dir, false)
        .await
        .unwrap();
    assert_eq!(grown.users_created, ["shoal-agent-n3"]);
    assert!(grown.revoked.is_empty(), "{grown:?}");

    let kept = rbac::apply(&root, &keys, &nodes(&["n1"]), &dir, false)
        .await
        .unwrap();
    assert_eq!(kept.stale, ["shoal-agent-n2", "shoal-agent-n3"]);
    assert!(kept.removed.is_empty());
    let pruned = rbac::apply(&root, &keys, &nodes(&["n1"]), &dir, true)
        .await
        .unwrap();
    assert_eq!(pruned.removed, ["shoal-agent-n2", "shoal-agent-n3"]);
    assert!(!dir.join("shoal-agent-n2.password").exists());
    let gone = Credentials::new("shoal-agent-n2", "whatever");
    let e = etcd.store_as(Some(gone)).await.unwrap().get("/x").await;
    assert!(matches!(e, Err(StoreError::AuthFailed(_))), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_apply_repairs_lost_passwords_and_foreign_permissions() {
    let etcd = secured(None).await;
    let root = etcd.store().await.unwrap();
    let keys = Keys::default();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_path_buf();
    rbac::apply(&root, &keys, &nodes(&["n1"]), &dir, false)
        .await
        .unwrap();
    let password = std::fs::read_to_string(dir.join("shoal-agent-n1.password")).unwrap();

    // A lost password file gets a new password; the old one stops working.
    std::fs::remove_file(dir.join("shoal-agent-n1.password")).unwrap();
    let reset = rbac::apply(&root, &keys, &nodes(&["n1"]), &dir, false)
        .await
        .unwrap();
    assert_eq!(reset.passwords_set, ["shoal-agent-n1"]);
    let old = Credentials::new("shoal-agent-n1", password.trim());
    let e = etcd.store_as(Some(old)).await.unwrap().get("/x").await;
    assert!(matches!(e, Err(StoreError::AuthFailed(_))), "{e:?}");
    login(&etcd, &dir, "shoal-agent-n1")
        .await
        .put(&keys.node("n1"), b"{}".to_vec(), None)
        .await
        .expect("the new password works");

    // A permission added by hand is revoked; `show` then matches the plan.
    let mut client = etcd_client::Client::connect(
        [format!("https://{}", etcd.endpoint())],
        Some(
            etcd_client::ConnectOptions::new()
                .with_user("root", etcd.root_password().unwrap())
                .with_tls(etcd_client::TlsOptions::new().ca_certificate(
                    etcd_client::Certificate::from_pem(etcd.pki().unwrap().ca_pem()),
                )),
        ),
    )
    .await
    .unwrap();
    client
        .role_grant_permission(
            "shoal-agent-n1",
            etcd_client::Permission::read_write("/shoal/services/").with_prefix(),
        )
        .await
        .unwrap();
    let fixed = rbac::apply(&root, &keys, &nodes(&["n1"]), &dir, false)
        .await
        .unwrap();
    assert_eq!(
        fixed.revoked,
        ["shoal-agent-n1: readwrite /shoal/services/*"]
    );
    let shown = rbac::show(&root, &keys).await.unwrap();
    let names: Vec<&str> = shown.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["shoal-agent-n1", "shoal-api", "shoal-controller"]);
    for role in &shown {
        assert!(role.missing.is_empty(), "{role:?}");
        assert_eq!(role.users, std::slice::from_ref(&role.name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_reaches_only_its_own_keys() {
    let etcd = secured(None).await;
    let root = etcd.store().await.unwrap();
    let keys = Keys::default();
    let out = tempfile::tempdir().unwrap();
    rbac::apply(&root, &keys, &nodes(&["n1", "n2"]), out.path(), false)
        .await
        .unwrap();
    root.put(&keys.task("n1", "web.1.a"), b"{}".to_vec(), None)
        .await
        .unwrap();
    root.put(&keys.task("n2", "web.2.b"), b"{}".to_vec(), None)
        .await
        .unwrap();
    root.put(
        &format!("{}default/db", keys.secrets_prefix()),
        b"x".to_vec(),
        None,
    )
    .await
    .unwrap();

    let agent = login(&etcd, out.path(), "shoal-agent-n1").await;
    // What it needs works: its assignments, its status, its node record with a lease.
    assert_eq!(
        agent
            .list(&keys.node_tasks_prefix("n1"))
            .await
            .unwrap()
            .kvs
            .len(),
        1
    );
    agent
        .put(&keys.task_status("n1", "web.1.a"), b"{}".to_vec(), None)
        .await
        .unwrap();
    let lease = agent.grant_lease(Duration::from_secs(5)).await.unwrap();
    agent
        .txn(Txn {
            compares: Vec::new(),
            ops: vec![TxnOp::Put {
                key: keys.node("n1"),
                value: b"{}".to_vec(),
                lease: Some(lease),
            }],
        })
        .await
        .unwrap();
    agent.keep_alive(lease).await.unwrap();

    // Everything else is denied by etcd.
    let foreign = [
        ("its own assignment", keys.task("n1", "forged")),
        ("another node's record", keys.node("n2")),
        ("a node whose ID starts with its own", keys.node("n10")),
        (
            "another node's task status",
            keys.task_status("n2", "web.2.b"),
        ),
        (
            "a service",
            format!("{}default/web", keys.services_prefix()),
        ),
        ("the leader key", keys.leader()),
    ];
    for (what, key) in &foreign {
        denied(what, agent.put(key, b"{}".to_vec(), None).await);
        let txn = Txn {
            compares: Vec::new(),
            ops: vec![TxnOp::Put {
                key: key.clone(),
                value: b"{}".to_vec(),
                lease: None,
            }],
        };
        denied(what, agent.txn(txn).await);
    }
    denied("delete the leader key", agent.delete(&keys.leader()).await);
    denied("read secrets", agent.list(&keys.secrets_prefix()).await);
    let n2_tasks = keys.node_tasks_prefix("n2");
    denied(
        "read another node's assignments",
        agent.list(&n2_tasks).await,
    );
    // And it keeps working with its own keys afterwards.
    agent.keep_alive(lease).await.unwrap();
    agent
        .put(
            &keys.task_status("n1", "web.1.a"),
            b"{\"s\":1}".to_vec(),
            None,
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_and_the_api_write_only_their_keys() {
    let etcd = secured(None).await;
    let root = etcd.store().await.unwrap();
    let keys = Keys::default();
    let out = tempfile::tempdir().unwrap();
    rbac::apply(&root, &keys, &nodes(&["n1", "n2"]), out.path(), false)
        .await
        .unwrap();
    let controller = login(&etcd, out.path(), "shoal-controller").await;
    denied(
        "controller writes a service",
        controller
            .put(
                &format!("{}default/web", keys.services_prefix()),
                b"x".to_vec(),
                None,
            )
            .await,
    );
    controller
        .put(&keys.task("n2", "web.2.c"), b"{}".to_vec(), None)
        .await
        .expect("the controller assigns tasks");
    let api = login(&etcd, out.path(), "shoal-api").await;
    denied(
        "API writes a task",
        api.put(&keys.task("n1", "x"), b"{}".to_vec(), None).await,
    );
    denied(
        "API takes the leader key",
        api.put(&keys.leader(), b"x".to_vec(), None).await,
    );
    api.put(
        &format!("{}default/web", keys.services_prefix()),
        b"x".to_vec(),
        None,
    )
    .await
    .expect("the API writes services");
}

/// Reads `watch` until a batch holds `key` (progress notifications are skipped); returns how
/// long that took. Fails after a generous 30 s.
async fn until_event(watch: &mut WatchStream, key: &str) -> Duration {
    let start = Instant::now();
    loop {
        let left = Duration::from_secs(30).saturating_sub(start.elapsed());
        let batch = tokio::time::timeout(left, watch.next())
            .await
            .unwrap_or_else(|_| panic!("the watch never delivered {key}"))
            .expect("the watch stream is open")
            .expect("no watch error");
        if batch.events.iter().any(|e| match e {
            WatchEvent::Put(kv) => kv.key == key,
            WatchEvent::Delete { key: k, .. } => k == key,
        }) {
            return start.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_are_renewed_past_expiry_and_after_auth_changes() {
    let ttl = Duration::from_secs(2);
    let etcd = secured(Some(ttl)).await;
    let root = etcd.store().await.unwrap();
    let keys = Keys::default();
    let out = tempfile::tempdir().unwrap();
    rbac::apply(&root, &keys, &nodes(&["n1"]), out.path(), false)
        .await
        .unwrap();
    let agent = login(&etcd, out.path(), "shoal-agent-n1").await;
    let prefix = keys.node_tasks_prefix("n1");
    let list = agent.list(&prefix).await.unwrap();
    let mut watch = agent.watch(&prefix, list.revision + 1).await.unwrap();

    // Calls and the watch keep working across several token lifetimes.
    let start = Instant::now();
    let mut round = 0u32;
    while start.elapsed() < ttl * 4 {
        round += 1;
        let key = keys.task("n1", &format!("t{round}"));
        root.put(&key, b"{}".to_vec(), None).await.unwrap();
        until_event(&mut watch, &key).await;
        let status = keys.task_status("n1", &format!("t{round}"));
        agent
            .put(&status, b"{}".to_vec(), None)
            .await
            .expect("the agent writes its status with a renewed token");
        tokio::time::sleep(ttl / 2).await;
    }
    println!(
        "{round} rounds over {:?} with a {ttl:?} JWT lifetime",
        start.elapsed()
    );

    // A watch opened with an expired token is created and at once cancelled by etcd as
    // unauthenticated; it is re-created with a new token.
    tokio::time::sleep(ttl + ttl / 2).await;
    let revision = root.list(&prefix).await.unwrap().revision;
    let mut late_watch = agent.watch(&prefix, revision + 1).await.unwrap();
    let late = keys.task("n1", "late");
    root.put(&late, b"{}".to_vec(), None).await.unwrap();
    let took = until_event(&mut late_watch, &late).await;
    println!("a watch opened after expiry delivered in {took:?}");

    // Adding a node changes users and roles: every token issued before is now stale.
    rbac::apply(&root, &keys, &nodes(&["n1", "n2"]), out.path(), false)
        .await
        .unwrap();
    let started = Instant::now();
    agent
        .put(&keys.task_status("n1", "after"), b"{}".to_vec(), None)
        .await
        .expect("a call after `rbac apply` succeeds with a new token");
    let after = keys.task("n1", "after");
    root.put(&after, b"{}".to_vec(), None).await.unwrap();
    until_event(&mut watch, &after).await;
    println!(
        "after the auth change: a call and a watch event in {:?}",
        started.elapsed()
    );
    let n2 = login(&etcd, out.path(), "shoal-agent-n2").await;
    n2.put(&keys.node("n2"), b"{}".to_vec(), None)
        .await
        .expect("the new node's agent works");
}
