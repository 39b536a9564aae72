//! Semantic validation rules, one by one, on services built from a valid base.

use shoal_core::Service;
use shoal_core::manifest::{
    ConsulCheck, ConsulDiscovery, Discovery, FailureAction, Healthcheck, Mode, Mount, MountType,
    PlacementPreference, PortSpec, Protocol, RuntimeKind,
};
use shoal_core::units::{ByteSize, Dur};
use shoal_core::validate::{ValidationError, validate};

fn base() -> Service {
    yaml_serde::from_str(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  image: nginx:1.27\n",
    )
    .unwrap()
}

/// `(path, message)` pairs of `s`'s errors.
fn problems(s: &Service) -> Vec<(String, String)> {
    validate(s)
        .into_iter()
        .map(|ValidationError { path, message }| (path, message))
        .collect()
}

/// The paths of `s`'s errors.
fn paths(s: &Service) -> Vec<String> {
    validate(s).into_iter().map(|e| e.path).collect()
}

fn port(target: u16, published: Option<u16>, protocol: Protocol) -> PortSpec {
    PortSpec {
        target,
        published,
        protocol,
        mode: shoal_core::manifest::PortMode::Host,
    }
}

#[test]
fn the_base_is_valid() {
    assert_eq!(problems(&base()), vec![]);
}

#[test]
fn api_version_and_kind() {
    let mut s = base();
    s.api_version = "v1".into();
    s.kind = "Deployment".into();
    assert_eq!(
        problems(&s),
        vec![
            (
                "apiVersion".into(),
                "unsupported apiVersion \"v1\": expected \"shoal/v1\"".into()
            ),
            (
                "kind".into(),
                "unsupported kind \"Deployment\": expected \"Service\"".into()
            ),
        ]
    );
}

#[test]
fn names_and_namespaces_are_dns_labels() {
    for bad in [
        "",
        "Web",
        "web_1",
        "-web",
        "web-",
        "web.app",
        &"a".repeat(64),
    ] {
        let mut s = base();
        s.metadata.name = bad.to_string();
        assert_eq!(paths(&s), vec!["metadata.name"], "{bad:?}");
        let mut s = base();
        s.metadata.namespace = bad.to_string();
        assert_eq!(paths(&s), vec!["metadata.namespace"], "{bad:?}");
    }
    for good in ["web", "web-1", "1st", &"a".repeat(63)] {
        let mut s = base();
        s.metadata.name = good.to_string();
        assert_eq!(paths(&s), Vec::<String>::new(), "{good:?}");
    }
}

#[test]
fn label_keys() {
    let mut s = base();
    for k in [
        "app",
        "com.example/team",
        "tier_1",
        "bad key",
        "",
        "-x",
        "x/",
    ] {
        s.metadata.labels.insert(k.to_string(), "v".into());
    }
    assert_eq!(
        paths(&s),
        vec![
            "metadata.labels[\"\"]",
            "metadata.labels[\"-x\"]",
            "metadata.labels[\"bad key\"]",
            "metadata.labels[\"x/\"]"
        ]
    );
}

#[test]
fn replicas_and_global() {
    let mut s = base();
    s.spec.mode = Mode::Global;
    assert_eq!(paths(&s), Vec::<String>::new());
    s.spec.replicas = Some(2);
    assert_eq!(paths(&s), vec!["spec.replicas"]);
    s.spec.mode = Mode::Replicated;
    s.spec.replicas = Some(0);
    assert_eq!(
        paths(&s),
        Vec::<String>::new(),
        "0 replicas is a scaled-down service"
    );
}

#[test]
fn runtimes_need_an_image_or_a_command() {
    let mut s = base();
    s.spec.image = None;
    assert_eq!(
        problems(&s),
        vec![(
            "spec.image".into(),
            "the docker runtime needs an image".into()
        )]
    );
    s.spec.image = Some(" ".into());
    assert_eq!(paths(&s), vec!["spec.image"]);

    let mut s = base();
    s.spec.runtime = RuntimeKind::Process;
    s.spec.image = None;
    assert_eq!(
        problems(&s),
        vec![(
            "spec.command".into(),
            "the process runtime needs a command".into()
        )]
    );
    s.spec.command = vec!["sleep".into(), "3600".into()];
    assert_eq!(paths(&s), Vec::<String>::new());
    s.spec.command = vec!["".into()];
    assert_eq!(paths(&s), vec!["spec.command[0]"]);
}

#[test]
fn port_ranges_and_duplicates() {
    let mut s = base();
    s.spec.ports = vec![
        port(80, Some(8080), Protocol::Tcp),
        port(0, None, Protocol::Tcp),
        port(443, Some(0), Protocol::Tcp),
        port(81, Some(8080), Protocol::Tcp),
        port(53, Some(8080), Protocol::Udp),
        port(80, None, Protocol::Tcp),
        port(53, None, Protocol::Tcp),
    ];
    assert_eq!(
        paths(&s),
        vec![
            "spec.ports[1].target",
            "spec.ports[2].published",
            "spec.ports[3].published",
            "spec.ports[5].target"
        ]
    );
    let msgs = problems(&s);
    assert_eq!(
        msgs[2].1,
        "host port 8080/tcp is already published by spec.ports[0]"
    );
    assert_eq!(
        msgs[3].1,
        "target port 80/tcp is already listed in spec.ports[0]"
    );
}

#[test]
fn constraints_and_preferences() {
    let mut s = base();
    s.spec.placement.constraints = vec![
        "node.labels.storage == ssd".into(),
        "node.labels.storage = ssd".into(),
        "node.role != manager".into(),
    ];
    s.spec.placement.preferences = vec![
        PlacementPreference {
            spread: "node.labels.zone".into(),
        },
        PlacementPreference {
            spread: "zone".into(),
        },
    ];
    let p = problems(&s);
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[0].0, "spec.placement.constraints[1]");
    assert!(p[0].1.contains("has no operator"), "{}", p[0].1);
    assert_eq!(p[1].0, "spec.placement.preferences[1].spread");
}

#[test]
fn resources() {
    let mut s = base();
    let r = &mut s.spec.resources;
    r.reservations.cpus = Some(1.0);
    r.limits.cpus = Some(0.5);
    r.reservations.memory = Some(ByteSize(256 << 20));
    r.limits.memory = Some(ByteSize(128 << 20));
    assert_eq!(
        problems(&s),
        vec![
            (
                "spec.resources.limits.cpus".into(),
                "cpus limit 0.5 is below the reservation 1".into()
            ),
            (
                "spec.resources.limits.memory".into(),
                "memory limit 128Mi is below the reservation 256Mi".into()
            ),
        ]
    );

    let mut s = base();
    s.spec.resources.limits.cpus = Some(0.0);
    s.spec.resources.reservations.cpus = Some(-1.0);
    s.spec.resources.limits.memory = Some(ByteSize(1 << 20));
    assert_eq!(
        paths(&s),
        vec![
            "spec.resources.limits.cpus",
            "spec.resources.limits.memory",
            "spec.resources.reservations.cpus"
        ]
    );
    // The process runtime enforces no limit at all: limits are refused, not ignored.
    s.spec.runtime = RuntimeKind::Process;
    s.spec.command = vec!["sleep".into()];
    s.spec.resources.limits.cpus = None;
    s.spec.resources.reservations.cpus = None;
    assert_eq!(paths(&s), vec!["spec.resources.limits"]);
    s.spec.resources.limits.memory = None;
    assert_eq!(paths(&s), Vec::<String>::new());
}

#[test]
fn the_process_runtime_refuses_what_it_cannot_do() {
    let mut s = base();
    s.spec.runtime = RuntimeKind::Process;
    s.spec.image = None;
    s.spec.command = vec!["httpd".into()];
    s.spec.ports = vec![
        port(8080, None, Protocol::Tcp),
        port(9090, Some(9091), Protocol::Tcp),
        port(7070, Some(7070), Protocol::Tcp),
    ];
    s.spec.resources.limits.memory = Some(ByteSize(64 << 20));
    s.spec.mounts = vec![Mount {
        kind: MountType::Volume,
        source: Some("data".into()),
        target: "/data".into(),
        read_only: false,
    }];
    let got = problems(&s);
    let paths: Vec<&str> = got.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.mounts",
            "spec.ports[0].published",
            "spec.ports[1].published",
            "spec.resources.limits"
        ]
    );
    assert!(got[1].1.contains("dynamic port"), "{got:?}");
    assert!(got[2].1.contains("published must equal target"), "{got:?}");
}

#[test]
fn update_and_rollback() {
    let mut s = base();
    s.spec.update.parallelism = 0;
    assert_eq!(
        paths(&s),
        Vec::<String>::new(),
        "parallelism 0 means all at once"
    );
    s.spec.update.max_failure_ratio = 1.5;
    s.spec.rollback.max_failure_ratio = -0.1;
    s.spec.update.monitor = Dur::default();
    s.spec.rollback.failure_action = FailureAction::Rollback;
    assert_eq!(
        paths(&s),
        vec![
            "spec.rollback.failureAction",
            "spec.rollback.maxFailureRatio",
            "spec.update.maxFailureRatio",
            "spec.update.monitor"
        ]
    );
    let mut s = base();
    s.spec.update.monitor = Dur::default();
    s.spec.update.failure_action = FailureAction::Continue;
    assert_eq!(
        paths(&s),
        Vec::<String>::new(),
        "monitor 0 is fine when failures are ignored"
    );
}

#[test]
fn healthchecks() {
    let hc = |test: &[&str]| Healthcheck {
        test: test.iter().map(|s| s.to_string()).collect(),
        interval: Dur::secs(5),
        timeout: Dur::secs(1),
        retries: 3,
        start_period: Dur::default(),
    };
    for (test, want) in [
        (&["CMD", "true"][..], None),
        (&["CMD-SHELL", "curl -f localhost"][..], None),
        (&["NONE"][..], None),
        (&[][..], Some("spec.healthcheck.test")),
        (&["CMD"][..], Some("spec.healthcheck.test")),
        (&["CMD-SHELL", "a", "b"][..], Some("spec.healthcheck.test")),
        (&["NONE", "x"][..], Some("spec.healthcheck.test")),
        (&["SHELL", "x"][..], Some("spec.healthcheck.test[0]")),
    ] {
        let mut s = base();
        s.spec.healthcheck = Some(hc(test));
        assert_eq!(
            paths(&s),
            want.into_iter().map(String::from).collect::<Vec<_>>(),
            "{test:?}"
        );
    }
    let mut s = base();
    let mut h = hc(&["CMD", "true"]);
    h.interval = Dur::default();
    h.timeout = Dur::default();
    s.spec.healthcheck = Some(h);
    assert_eq!(
        paths(&s),
        vec!["spec.healthcheck.interval", "spec.healthcheck.timeout"]
    );
}

#[test]
fn stop_signal() {
    let mut s = base();
    for ok in ["SIGTERM", "SIGINT", "quit", "9"] {
        s.spec.stop_signal = ok.into();
        assert_eq!(paths(&s), Vec::<String>::new(), "{ok}");
    }
    s.spec.stop_signal = "SIGSTOPPLEASE".into();
    assert_eq!(paths(&s), vec!["spec.stopSignal"]);
}

#[test]
fn mounts() {
    let m = |kind, source: Option<&str>, target: &str| Mount {
        kind,
        source: source.map(String::from),
        target: target.into(),
        read_only: false,
    };
    let mut s = base();
    s.spec.mounts = vec![
        m(MountType::Volume, Some("data"), "/data"),
        m(MountType::Bind, Some("/etc/app"), "/etc/app"),
        m(MountType::Tmpfs, None, "/tmp"),
        m(MountType::Volume, Some("data"), "relative"),
        m(MountType::Bind, Some("etc/app"), "/b"),
        m(MountType::Bind, None, "/c"),
        m(MountType::Volume, None, "/d"),
        m(MountType::Volume, Some("/host/path"), "/e"),
        m(MountType::Tmpfs, Some("x"), "/f"),
        m(MountType::Tmpfs, None, "/tmp"),
    ];
    assert_eq!(
        paths(&s),
        vec![
            "spec.mounts[3].target",
            "spec.mounts[4].source",
            "spec.mounts[5].source",
            "spec.mounts[6].source",
            "spec.mounts[7].source",
            "spec.mounts[8].source",
            "spec.mounts[9].target",
        ]
    );
}

#[test]
fn env_keys() {
    let mut s = base();
    for k in ["PATH", "", "A=B", "lower_ok"] {
        s.spec.env.insert(k.into(), "v".into());
    }
    assert_eq!(paths(&s), vec!["spec.env[\"\"]", "spec.env[\"A=B\"]"]);
}

#[test]
fn consul_discovery() {
    let check = |http: Option<&str>, tcp: bool| ConsulCheck {
        http: http.map(String::from),
        tcp,
        interval: Dur::secs(10),
        timeout: Dur::secs(2),
        deregister_critical_service_after: Dur::secs(60),
    };
    let consul = |port: Option<u16>, check: Option<ConsulCheck>| {
        Some(Discovery {
            consul: Some(ConsulDiscovery {
                name: None,
                tags: vec![],
                meta: Default::default(),
                port,
                check,
            }),
        })
    };
    let mut s = base();
    s.spec.discovery = consul(None, Some(check(Some("/health"), false)));
    assert_eq!(paths(&s), vec!["spec.discovery.consul"], "no ports");

    s.spec.ports = vec![
        port(8000, None, Protocol::Tcp),
        port(9000, Some(19000), Protocol::Tcp),
    ];
    assert_eq!(paths(&s), Vec::<String>::new());
    for (c, want) in [
        (check(None, true), None),
        (check(Some("/h"), true), Some("spec.discovery.consul.check")),
        (check(None, false), Some("spec.discovery.consul.check")),
        (
            check(Some("health"), false),
            Some("spec.discovery.consul.check.http"),
        ),
    ] {
        s.spec.discovery = consul(None, Some(c));
        assert_eq!(
            paths(&s),
            want.into_iter().map(String::from).collect::<Vec<_>>()
        );
    }
    s.spec.discovery = consul(Some(19000), None);
    assert_eq!(paths(&s), Vec::<String>::new());
    s.spec.discovery = consul(Some(7000), None);
    assert_eq!(paths(&s), vec!["spec.discovery.consul.port"]);
}

#[test]
fn consul_meta_follows_consuls_rules() {
    let mut s = base();
    s.spec.ports = vec![port(8000, None, Protocol::Tcp)];
    let with_meta = |pairs: Vec<(String, String)>| {
        Some(Discovery {
            consul: Some(ConsulDiscovery {
                name: None,
                tags: vec![],
                meta: pairs.into_iter().collect(),
                port: None,
                check: None,
            }),
        })
    };
    let one = |k: &str, v: &str| with_meta(vec![(k.to_string(), v.to_string())]);
    for ok in ["team", "app_version", "app-version", "A1"] {
        s.spec.discovery = one(ok, "x");
        assert_eq!(paths(&s), Vec::<String>::new(), "{ok}");
    }
    s.spec.discovery = one("team", &"v".repeat(512));
    assert_eq!(paths(&s), Vec::<String>::new());
    for (key, value, path) in [
        (
            "app.version",
            "1",
            "spec.discovery.consul.meta[\"app.version\"]",
        ),
        ("consul-x", "1", "spec.discovery.consul.meta.consul-x"),
        ("shoal-task", "1", "spec.discovery.consul.meta.shoal-task"),
        ("", "1", "spec.discovery.consul.meta[\"\"]"),
    ] {
        s.spec.discovery = one(key, value);
        assert_eq!(paths(&s), vec![path], "{key}");
    }
    s.spec.discovery = one("k".repeat(129).as_str(), "1");
    assert_eq!(paths(&s).len(), 1);
    s.spec.discovery = one("team", &"v".repeat(513));
    assert_eq!(problems(&s)[0].0, "spec.discovery.consul.meta.team");
    assert!(problems(&s)[0].1.contains("512"), "{:?}", problems(&s));
    s.spec.discovery = with_meta((0..62).map(|i| (format!("k{i}"), "v".into())).collect());
    assert_eq!(paths(&s), vec!["spec.discovery.consul.meta"]);
    s.spec.discovery = with_meta((0..61).map(|i| (format!("k{i}"), "v".into())).collect());
    assert_eq!(paths(&s), Vec::<String>::new());
}

#[test]
fn errors_are_sorted_by_path() {
    let mut s = base();
    s.spec.image = None;
    s.metadata.name = "Bad".into();
    s.spec.mode = Mode::Global;
    s.spec.replicas = Some(1);
    s.api_version = "x".into();
    let p = paths(&s);
    let mut sorted = p.clone();
    sorted.sort();
    assert_eq!(p, sorted);
    assert_eq!(
        p,
        vec!["apiVersion", "metadata.name", "spec.image", "spec.replicas"]
    );
}
