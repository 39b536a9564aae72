//! Consul registration of running tasks (`shoal_agent::discovery`) against the fake Consul.

use std::collections::BTreeSet;

use shoal_agent::discovery::{ConsulRegistrar, DiscoveryError};
use shoal_core::manifest::{ConsulCheck, ConsulDiscovery, PortSpec, Protocol, RuntimeKind};
use shoal_core::model::{PortBinding, Task};
use shoal_store::consul::{ConsulClient, ConsulConfig, QueryOptions};
use shoal_tests::consul_fake::ConsulFake;
use shoal_tests::tasks::{self, http_check, template};

/// A docker task of `default/web` on `n1` publishing port 80 (dynamic) and 9090 (host).
fn task(id: &str, consul: Option<ConsulDiscovery>) -> Task {
    let mut template = template(RuntimeKind::Docker, Some("nginx"), &[]);
    template.ports = vec![
        PortSpec {
            target: 80,
            published: None,
            protocol: Protocol::Tcp,
            mode: shoal_core::manifest::PortMode::Ingress,
        },
        PortSpec {
            target: 9090,
            published: Some(9090),
            protocol: Protocol::Tcp,
            mode: shoal_core::manifest::PortMode::Host,
        },
    ];
    template.consul = consul;
    tasks::task(id, "web", "n1", template)
}

fn discovery(check: Option<ConsulCheck>) -> ConsulDiscovery {
    ConsulDiscovery {
        name: Some("web-public".into()),
        tags: vec!["http".into()],
        meta: [("team".to_string(), "a".to_string())].into(),
        port: None,
        check,
    }
}

fn ports() -> Vec<PortBinding> {
    vec![
        PortBinding {
            target: 80,
            published: 32768,
            protocol: Protocol::Tcp,
        },
        PortBinding {
            target: 9090,
            published: 9090,
            protocol: Protocol::Tcp,
        },
    ]
}

fn client(fake: &ConsulFake) -> ConsulClient {
    ConsulClient::new(ConsulConfig::new(fake.http_url())).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_a_running_task_with_meta_port_and_check() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    let reg = ConsulRegistrar::new(c.clone(), "n1", "10.0.0.7");
    let t = task("web.1.abc", Some(discovery(Some(http_check()))));
    assert!(reg.register(&t, &ports()).await.expect("register"));
    let services = c.agent_services().await.expect("services");
    let svc = &services["web.1.abc"];
    assert_eq!(
        (svc.service.as_str(), svc.port, svc.address.as_str()),
        ("web-public", 32768, "10.0.0.7")
    );
    assert_eq!(svc.tags.as_deref(), Some(&["http".to_string()][..]));
    let meta = svc.meta.clone().unwrap_or_default();
    assert_eq!(meta["shoal-service"], "default/web");
    assert_eq!(meta["shoal-node"], "n1");
    assert_eq!(meta["shoal-task"], "web.1.abc");
    assert_eq!(meta["team"], "a");
    let checks = c.agent_checks().await.expect("checks");
    let check = &checks["service:web.1.abc"];
    assert_eq!(
        (check.check_type.as_str(), check.service_id.as_str()),
        ("http", "web.1.abc")
    );
    // Registering again replaces, it does not duplicate.
    assert!(reg.register(&t, &ports()).await.expect("register again"));
    assert_eq!(c.agent_services().await.expect("services").len(), 1);
    let (inst, _) = c
        .catalog_service("web-public", None, QueryOptions::default())
        .await
        .expect("catalog");
    assert_eq!(inst.len(), 1);
    // Deregistration (before the container stops) removes it with its check; twice is fine.
    reg.deregister("web.1.abc").await.expect("deregister");
    reg.deregister("web.1.abc").await.expect("deregister again");
    assert!(c.agent_services().await.expect("services").is_empty());
    assert!(c.agent_checks().await.expect("checks").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chosen_port_tcp_check_and_defaults() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    let reg = ConsulRegistrar::new(c.clone(), "n1", "10.0.0.7");
    let mut d = discovery(Some(ConsulCheck {
        http: None,
        tcp: true,
        ..http_check()
    }));
    d.port = Some(9090);
    d.name = None;
    let r = reg
        .registration(&task("t", Some(d)), &ports())
        .expect("registration")
        .expect("some");
    assert_eq!(
        (r.name.as_str(), r.port),
        ("web", 9090),
        "service name and the chosen target's host port"
    );
    assert_eq!(r.checks[0].tcp.as_deref(), Some("10.0.0.7:9090"));
    assert_eq!(
        r.checks[0].deregister_critical_service_after.as_deref(),
        Some("60s")
    );
    // No discovery block: nothing to register.
    assert!(
        !reg.register(&task("plain", None), &ports())
            .await
            .expect("register")
    );
    // A target without a bound host port is an error, not a wrong registration.
    let mut d = discovery(None);
    d.port = Some(1234);
    assert!(matches!(
        reg.registration(&task("t", Some(d)), &ports()),
        Err(DiscoveryError::NoPort { target: 1234, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_removes_only_stale_registrations_of_this_node() {
    let fake = ConsulFake::start().await;
    let c = client(&fake);
    let n1 = ConsulRegistrar::new(c.clone(), "n1", "10.0.0.7");
    let n2 = ConsulRegistrar::new(c.clone(), "n2", "10.0.0.8");
    for id in ["a", "b", "c"] {
        n1.register(&task(id, Some(discovery(None))), &ports())
            .await
            .expect("register");
    }
    n2.register(&task("other-node", Some(discovery(None))), &ports())
        .await
        .expect("register");
    let foreign = shoal_store::consul::AgentServiceRegistration {
        id: "not-shoal".into(),
        name: "db".into(),
        port: 5432,
        ..Default::default()
    };
    c.agent_service_register(&foreign)
        .await
        .expect("register foreign");
    let running: BTreeSet<String> = ["b".to_string()].into();
    let removed = n1.remove_stale(&running).await.expect("remove stale");
    assert_eq!(removed, ["a", "c"]);
    let left: Vec<String> = c
        .agent_services()
        .await
        .expect("services")
        .into_keys()
        .collect();
    assert_eq!(left, ["b", "not-shoal", "other-node"]);
}
