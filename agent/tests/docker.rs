//! The agent on the docker runtime with real containers of `shoal-test/busybox:latest`
//! (built locally when absent). These tests fail, with a clear message, when Docker is not
//! reachable. Every test removes its containers (by node label) even when it fails.

use std::io::{Read, Write};
use std::sync::Arc;

use shoal_agent::runtime::{LABEL_NODE, LABEL_SERVICE, LABEL_TASK, Runtime};
use shoal_agent::test_support::{ContainerGuard, TEST_IMAGE, ensure_test_image};
use shoal_agent::{Agent, AgentConfig, RuntimeChoice};
use shoal_core::manifest::{Healthcheck, PortSpec, Protocol, RuntimeKind};
use shoal_core::model::TaskState;
use shoal_core::units::Dur;
use shoal_tests::docker::exists;
use shoal_tests::tasks::{TestStore, task, template};
use shoal_tests::wait::eventually;

/// A node id unique to this test run, and a guard removing its containers.
fn node(name: &str) -> (String, ContainerGuard) {
    ensure_test_image()
        .unwrap_or_else(|e| panic!("docker tests need Docker and the test image: {e}"));
    let id = format!("dk-{name}-{}", std::process::id());
    let guard = ContainerGuard::new(format!("{LABEL_NODE}={id}"));
    guard.cleanup();
    (id, guard)
}

async fn runtime(node: &str) -> Arc<dyn Runtime> {
    shoal_agent::open_runtime(RuntimeChoice::Docker, node, std::env::temp_dir())
        .await
        .unwrap_or_else(|e| panic!("Docker must be reachable for these tests: {e}"))
}

fn agent(ts: &TestStore, node: &str, rt: Arc<dyn Runtime>) -> shoal_agent::AgentHandle {
    Agent::new(
        ts.store.clone(),
        ts.keys.clone(),
        AgentConfig::new(node),
        rt,
    )
    .spawn()
}

/// `docker ARGS`, trimmed (one value per `inspect -f`).
fn docker(args: &[&str]) -> String {
    shoal_tests::docker::docker(args).trim().to_string()
}

fn http_get(port: u16) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn busybox(command: &[&str]) -> shoal_core::model::TaskTemplate {
    template(RuntimeKind::Docker, Some(TEST_IMAGE), command)
}

#[tokio::test]
async fn httpd_on_a_dynamic_port_is_reachable_and_labelled() {
    let (node, _guard) = node("httpd");
    let ts = TestStore::open().await;
    let a = agent(&ts, &node, runtime(&node).await);
    let mut tpl = busybox(&["httpd", "-f", "-p", "8080", "-h", "/www"]);
    tpl.ports = vec![PortSpec {
        target: 8080,
        published: None,
        protocol: Protocol::Tcp,
        mode: shoal_core::manifest::PortMode::Ingress,
    }];
    tpl.limits.cpus = Some(0.5);
    tpl.limits.memory = Some(shoal_core::units::ByteSize(64 << 20));
    let t = task("web.1.h", "web", &node, tpl);
    ts.assign(&t).await;
    let s = ts.wait_state(&t, TaskState::Running).await;
    let id = s.container_id.clone().expect("container id");
    assert_eq!(s.host_ports.len(), 1);
    let port = s.host_ports[0].published;
    assert_ne!(port, 0);
    eventually("httpd answers on the reported port", || {
        let ok = matches!(http_get(port), Ok(b) if b.contains("200 OK"));
        async move { ok }
    })
    .await;
    let body = http_get(port).expect("httpd answers");
    assert!(body.contains("shoal test image"));
    let labels = docker(&["inspect", "-f", "{{json .Config.Labels}}", &id]);
    let labels: std::collections::BTreeMap<String, String> = serde_json::from_str(&labels).unwrap();
    assert_eq!(labels.get(LABEL_TASK).map(String::as_str), Some("web.1.h"));
    assert_eq!(
        labels.get(LABEL_SERVICE).map(String::as_str),
        Some("default/web")
    );
    assert_eq!(labels.get(LABEL_NODE), Some(&node));
    assert_eq!(
        docker(&["inspect", "-f", "{{.HostConfig.RestartPolicy.Name}}", &id]),
        "no"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.HostConfig.NanoCpus}}", &id]),
        "500000000"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.HostConfig.Memory}}", &id]),
        (64u64 << 20).to_string()
    );

    ts.shut_down(&t).await;
    ts.wait_state(&t, TaskState::Shutdown).await;
    // Stopped, it stays (its output is there for `shoal logs`) as long as its assignment.
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &id]),
        "false"
    );
    ts.unassign(&t).await;
    eventually("the container is removed with its assignment", || {
        let gone = !exists(&id);
        async move { gone }
    })
    .await;
    a.stop().await.unwrap();
}

#[tokio::test]
async fn stop_sends_the_stop_signal_and_waits_for_the_grace_period() {
    let (node, _guard) = node("grace");
    let ts = TestStore::open().await;
    let a = agent(&ts, &node, runtime(&node).await);
    // Traps SIGTERM and exits 0 after a second: within the 20 s grace period, so no SIGKILL.
    let mut polite = busybox(&[
        "sh",
        "-c",
        "trap 'sleep 1; exit 0' TERM; while true; do sleep 0.2; done",
    ]);
    polite.stop_grace_period = Dur::secs(20);
    // PID 1 ignoring SIGTERM: killed once the 1 s grace period is over.
    let mut stubborn = busybox(&["sh", "-c", "trap '' TERM; while true; do sleep 0.2; done"]);
    stubborn.stop_grace_period = Dur::secs(1);
    let polite = task("polite.1.g", "polite", &node, polite);
    let stubborn = task("stubborn.1.g", "stubborn", &node, stubborn);
    ts.assign(&polite).await;
    ts.assign(&stubborn).await;
    ts.wait_state(&polite, TaskState::Running).await;
    ts.wait_state(&stubborn, TaskState::Running).await;
    ts.shut_down(&polite).await;
    ts.shut_down(&stubborn).await;
    let s = ts.wait_state(&polite, TaskState::Shutdown).await;
    assert_eq!(
        s.exit_code,
        Some(0),
        "the task finished its SIGTERM handler"
    );
    let s = ts.wait_state(&stubborn, TaskState::Shutdown).await;
    assert_eq!(s.exit_code, Some(137), "killed after the grace period");
    a.stop().await.unwrap();
}

#[tokio::test]
async fn container_killed_behind_shoals_back_is_reported_failed() {
    let (node, _guard) = node("kill");
    let ts = TestStore::open().await;
    let a = agent(&ts, &node, runtime(&node).await);
    let t = task("victim.1.k", "victim", &node, busybox(&["sleep", "3600"]));
    ts.assign(&t).await;
    let s = ts.wait_state(&t, TaskState::Running).await;
    docker(&["kill", &s.container_id.unwrap()]);
    let s = ts.wait_state(&t, TaskState::Failed).await;
    assert_eq!(s.exit_code, Some(137));
    assert!(s.message.unwrap_or_default().contains("137"));
    a.stop().await.unwrap();
}

#[tokio::test]
async fn missing_image_is_rejected_with_dockers_message() {
    let (node, _guard) = node("noimage");
    let ts = TestStore::open().await;
    let a = agent(&ts, &node, runtime(&node).await);
    let t = task(
        "ghost.1.m",
        "ghost",
        &node,
        template(
            RuntimeKind::Docker,
            Some("shoal-test/does-not-exist:1"),
            &[],
        ),
    );
    ts.assign(&t).await;
    let s = ts.wait_state(&t, TaskState::Rejected).await;
    let msg = s.message.unwrap_or_default();
    assert!(
        msg.contains("registry")
            || msg.contains("does-not-exist")
            || msg.contains("pull access denied"),
        "Docker's own message: {msg:?}"
    );
    a.stop().await.unwrap();
}

#[tokio::test]
async fn healthchecks_report_healthy_and_unhealthy() {
    let (node, _guard) = node("health");
    let ts = TestStore::open().await;
    let a = agent(&ts, &node, runtime(&node).await);
    let hc = |cmd: &str| Healthcheck {
        test: vec!["CMD-SHELL".into(), cmd.into()],
        interval: Dur::secs(1),
        timeout: Dur::secs(2),
        retries: 2,
        start_period: Dur::secs(0),
    };
    let mut good = busybox(&["sleep", "3600"]);
    good.healthcheck = Some(hc("true"));
    let mut bad = busybox(&["sleep", "3600"]);
    bad.healthcheck = Some(hc("false"));
    let good = task("good.1.hc", "good", &node, good);
    let bad = task("bad.1.hc", "bad", &node, bad);
    ts.assign(&good).await;
    ts.assign(&bad).await;
    let s = ts.wait_state(&good, TaskState::Running).await;
    assert!(
        s.health.is_some(),
        "a task with a healthcheck reports its health"
    );
    ts.wait_healthy(&good).await;
    // As in Swarm, the unhealthy container is stopped and its task fails.
    ts.wait_failed_unhealthy(&bad).await;
    a.stop().await.unwrap();
}

#[tokio::test]
async fn restarted_agent_adopts_its_container_and_removes_unassigned_ones() {
    let (node, _guard) = node("adopt");
    let ts = TestStore::open().await;
    let a = agent(&ts, &node, runtime(&node).await);
    let t = task("kept.1.a", "kept", &node, busybox(&["sleep", "3600"]));
    ts.assign(&t).await;
    let before = ts.wait_state(&t, TaskState::Running).await;
    let id = before.container_id.clone().unwrap();
    let started = docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]);
    a.stop().await.unwrap();

    // A Shoal container of this node and cluster whose task is not assigned.
    let cluster = shoal_store::cluster::cluster_id(ts.store.as_ref(), &ts.keys)
        .await
        .unwrap()
        .expect("the agent's cluster id");
    let stray = docker(&[
        "run",
        "-d",
        "--label",
        &format!("io.shoal.cluster={cluster}"),
        "--label",
        &format!("{LABEL_NODE}={node}"),
        "--label",
        &format!("{LABEL_TASK}=gone.1.a"),
        TEST_IMAGE,
        "sleep",
        "3600",
    ]);
    let a = agent(&ts, &node, runtime(&node).await);
    eventually("the unassigned container is removed", || {
        let gone = !exists(&stray);
        async move { gone }
    })
    .await;
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &id]),
        "true"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.StartedAt}}", &id]),
        started,
        "not restarted"
    );
    let now = ts.status(&t).await.unwrap();
    assert_eq!(now.state, TaskState::Running);
    assert_eq!(
        now.container_id.as_deref(),
        Some(id.as_str()),
        "same container"
    );
    // The adopted container is still watched.
    docker(&["kill", &id]);
    let s = ts.wait_state(&t, TaskState::Failed).await;
    assert_eq!(s.exit_code, Some(137));
    a.stop().await.unwrap();
}
