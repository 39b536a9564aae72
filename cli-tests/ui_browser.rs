//! The dashboard in a real browser (Debian's `chromium` driven through `chromedriver` with
//! `fantoccini`) against real `shoal dev`, `shoal api` and `shoal agent` processes: pages load
//! with no console error and no request off the API's origin, a scale shows up without a
//! reload (also after the API restarted), a node drained and activated from the CLI shows on
//! the open nodes pages without a reload, a read token sees no buttons, and an admin drains a
//! node from its page. Screenshots of every page go to `target/ui-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_shoal");
/// Generous: the machine may be busy; the time things took is printed.
const DEADLINE: Duration = Duration::from_secs(120);

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    /// Stops the process with SIGTERM, as an operator would, and waits for it to exit (it
    /// must, even with a browser's watch stream open).
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let start = Instant::now();
        while self.0.try_wait().unwrap().is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "shoal did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        println!("shoal stopped {:?} after SIGTERM", start.elapsed());
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn(args: &[&str], log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let err = out.try_clone().unwrap();
    Proc(
        Command::new(BIN)
            .args(args)
            .env_remove("SHOAL_TOKEN")
            .env("RUST_LOG", "info,tower_http=debug")
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("shoal starts"),
    )
}

/// Runs a `shoal` client command against `url`; returns stdout, failing on a non-zero exit.
fn shoal(url: &str, token: Option<&str>, args: &[&str]) -> String {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("SHOAL_SERVER", url)
        .env_remove("SHOAL_TOKEN");
    if let Some(t) = token {
        c.env("SHOAL_TOKEN", t);
    }
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "shoal {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn get_json(url: &str, token: Option<&str>) -> Option<Value> {
    let mut r = reqwest::Client::new().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().await.ok()?.json().await.ok()
}

/// Waits until `check` holds; returns how long it took.
async fn wait_for<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

async fn wait_ready(url: &str) {
    let probe = format!("{url}/readyz");
    wait_for("the API to answer", || async {
        reqwest::get(&probe)
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
}

async fn running_tasks(url: &str, service: &str, token: Option<&str>) -> usize {
    let v = get_json(&format!("{url}/v1/tasks?service={service}"), token).await;
    v.and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter(|t| t["status"]["state"] == "running")
        .count()
}

/// chromedriver and one headless Chromium session.
struct Browser {
    client: Client,
    driver_url: String,
    _driver: Proc,
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    async fn start(log: &Path) -> Browser {
        let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect(
                "chromedriver not found: `make deps` installs Debian's chromium and \
                 chromium-driver (the browser tests need a real Chromium)",
            );
        let port = free_port();
        let out = std::fs::File::create(log).unwrap();
        let proc = Proc(
            Command::new(driver)
                .arg(format!("--port={port}"))
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("chromedriver starts"),
        );
        let driver_url = format!("http://127.0.0.1:{port}");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                            "--disable-gpu", "--window-size=1280,900", "--no-first-run"]}),
        );
        caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
        let start = Instant::now();
        let client = loop {
            let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&driver_url)
                .await;
            match c {
                Ok(c) => break c,
                Err(e) if start.elapsed() < Duration::from_secs(60) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot start a Chromium session: {e}"),
            }
        };
        Browser {
            client,
            driver_url,
            _driver: proc,
        }
    }

    async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn wait_text(&self, css: &str, want: &str) -> Duration {
        wait_for(&format!("{css} to read {want:?}"), || async {
            self.text(css).await.contains(want)
        })
        .await
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
    }

    /// Console entries at level SEVERE since the last call (chromedriver's log endpoint).
    async fn console_errors(&self) -> Vec<String> {
        let id = self.client.session_id().await.unwrap().unwrap();
        let v: Value = reqwest::Client::new()
            .post(format!("{}/session/{id}/se/log", self.driver_url))
            .json(&json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["value"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Every URL the page loaded (navigation and resources).
    async fn requests(&self) -> Vec<String> {
        let v = self
            .client
            .execute(
                "return [location.href].concat(performance.getEntriesByType('resource').map(function(e){return e.name;}));",
                vec![],
            )
            .await
            .unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }

    async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    async fn close(self) {
        let _ = self.client.close().await;
    }
}

fn process_manifest(name: &str, replicas: u64) -> String {
    format!(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  runtime: process\n  command: [sleep, \"600\"]\n  replicas: {replicas}\n  stopGracePeriod: 1s\n"
    )
}

/// Loads `path`, checks it for console errors and foreign requests, and keeps a screenshot.
async fn visit(b: &Browser, url: &str, path: &str, shot: &str) {
    b.client.goto(&format!("{url}{path}")).await.unwrap();
    b.wait_text("#live", "connected").await;
    for r in b.requests().await {
        assert!(
            r.starts_with(&format!("{url}/")),
            "{path} requested {r}, off the API's origin"
        );
    }
    let errors = b.console_errors().await;
    assert!(errors.is_empty(), "{path}: console errors {errors:?}");
    b.screenshot(shot).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_of_shoal_dev_follows_a_scale_live_and_after_an_api_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let data = dir.path().join("dev");
    let data = data.to_str().unwrap();
    let dev_args = [
        "dev",
        "--data-dir",
        data,
        "--listen",
        &listen,
        "--runtime",
        "process",
        "--node-id",
        "ui-dev",
    ];
    let dev = spawn(&dev_args, &dir.path().join("dev-1.log"));
    wait_ready(&url).await;
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, process_manifest("web", 1)).unwrap();
    shoal(&url, None, &["apply", "-f", file.to_str().unwrap()]);
    wait_for("web to run 1 task", || async {
        running_tasks(&url, "default/web", None).await == 1
    })
    .await;

    let b = Browser::start(&dir.path().join("chromedriver.log")).await;
    visit(&b, &url, "/ui/", "overview").await;
    assert!(b.text("#service-counts").await.contains("Converged"));
    b.client.set_window_size(390, 844).await.unwrap();
    let overflow = b
        .js("return document.documentElement.scrollWidth - window.innerWidth;")
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "the overview scrolls sideways on a phone: {overflow}"
    );
    b.screenshot("overview-phone").await;
    b.client.set_window_size(1280, 900).await.unwrap();
    visit(&b, &url, "/ui/services", "services").await;

    visit(&b, &url, "/ui/services/default/web", "service").await;
    b.wait_text("#running-tasks", "1").await;
    b.js("window.shoalNoReload = true; return null;").await;
    shoal(&url, None, &["scale", "web=3"]);
    let took = b.wait_text("#running-tasks", "3").await;
    println!("shoal scale web=3 -> service page shows 3 running tasks after {took:?} (goal 2 s)");
    assert_eq!(
        b.js("return window.shoalNoReload === true;").await,
        json!(true),
        "the page reloaded"
    );
    let rows = b
        .client
        .find_all(Locator::Css("#tasks tr[data-state=running]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    b.screenshot("service-scaled").await;

    // The API goes away and comes back: the page reconnects by itself.
    dev.stop();
    b.wait_text("#live", "reconnecting").await;
    let dev = spawn(&dev_args, &dir.path().join("dev-2.log"));
    wait_ready(&url).await;
    let back = b.wait_text("#live", "connected").await;
    println!("live updates reconnected {back:?} after the API answered again");
    shoal(&url, None, &["scale", "web=2"]);
    let took = b.wait_text("#running-tasks", "2").await;
    println!("after the restart, shoal scale web=2 -> page shows 2 running tasks after {took:?}");
    assert_eq!(
        b.js("return window.shoalNoReload === true;").await,
        json!(true),
        "the page reloaded"
    );
    let errors = b.console_errors().await;
    assert!(
        errors
            .iter()
            .all(|e| e.contains("ERR_CONNECTION_REFUSED") || e.contains("/ui/watch")),
        "only requests to the stopped API may fail: {errors:?}"
    );

    visit(&b, &url, "/ui/nodes/ui-dev", "node").await;
    assert!(b.text("#tasks").await.contains("web"));
    visit(&b, &url, "/ui/nodes", "nodes").await;
    // Node changes are on the watch stream: a drain from the CLI shows on the open page.
    let row = "#nodes tr[data-node=ui-dev]";
    assert!(
        b.text(row).await.contains("active"),
        "{}",
        b.text(row).await
    );
    b.js("window.shoalNoReload = true; return null;").await;
    shoal(&url, None, &["node", "drain", "ui-dev"]);
    let took = b.wait_text(row, "drain").await;
    println!(
        "shoal node drain ui-dev -> the open nodes page shows it drained after {took:?} (goal 2 s)"
    );
    assert_eq!(
        b.js("return window.shoalNoReload === true;").await,
        json!(true),
        "the nodes page reloaded"
    );
    b.screenshot("nodes-drained-live").await;
    visit(&b, &url, "/ui/nodes/ui-dev", "node-drained").await;
    b.js("window.shoalNoReload = true; return null;").await;
    shoal(&url, None, &["node", "activate", "ui-dev"]);
    let took = b.wait_text("#availability", "active").await;
    println!(
        "shoal node activate ui-dev -> the open node page shows it active after {took:?} (goal 2 s)"
    );
    assert_eq!(
        b.js("return window.shoalNoReload === true;").await,
        json!(true),
        "the node page reloaded"
    );
    b.close().await;

    shoal(&url, None, &["scale", "web=0"]);
    wait_for("web to stop its tasks", || async {
        running_tasks(&url, "default/web", None).await == 0
    })
    .await;
    dev.stop();
}

fn token(file: &Path, role: &str) -> String {
    let o = Command::new(BIN)
        .args(["token", "create", "--file"])
        .arg(file)
        .args(["--role", role])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

async fn sign_in(b: &Browser, url: &str, token: &str) {
    b.client.goto(&format!("{url}/ui/")).await.unwrap();
    assert_eq!(b.client.current_url().await.unwrap().path(), "/ui/login");
    b.client
        .find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    b.client
        .find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text("h1", "Overview").await;
    let here = b.client.current_url().await.unwrap();
    assert!(
        !here.as_str().contains(token) && here.query().is_none(),
        "{here}"
    );
    let cookie = b.client.get_named_cookie("shoal_session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.same_site(), Some(cookie::SameSite::Strict));
    assert!(!cookie.value().contains(token.split('.').nth(1).unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_sees_no_buttons_and_an_admin_drains_a_node_from_its_page() {
    let etcd = shoal_tests::etcd::EtcdFixture::start().expect("etcd (make deps installs it)");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let read = token(&tokens, "read");
    let admin = token(&tokens, "admin");
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("http://{listen}");
    let store = etcd.url();
    let _api = spawn(
        &[
            "api",
            "--store",
            &store,
            "--listen",
            &listen,
            "--token-file",
            tokens.to_str().unwrap(),
        ],
        &dir.path().join("api.log"),
    );
    let agent_dir = dir.path().join("agent");
    let secrets = dir.path().join("secrets");
    let _agent = spawn(
        &[
            "agent",
            "--store",
            &store,
            "--node-id",
            "ui-n1",
            "--runtime",
            "process",
            "--data-dir",
            agent_dir.to_str().unwrap(),
            "--secrets-dir",
            secrets.to_str().unwrap(),
        ],
        &dir.path().join("agent.log"),
    );
    wait_ready(&url).await;
    wait_for("node ui-n1 to register", || async {
        get_json(&format!("{url}/v1/nodes/ui-n1"), Some(&admin))
            .await
            .is_some_and(|v| v["ready"] == true)
    })
    .await;
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, process_manifest("web", 0)).unwrap();
    shoal(&url, Some(&admin), &["apply", "-f", file.to_str().unwrap()]);

    let b = Browser::start(&dir.path().join("chromedriver.log")).await;
    b.client.goto(&format!("{url}/ui/")).await.unwrap();
    b.screenshot("login").await;
    sign_in(&b, &url, &read).await;
    for path in [
        "/ui/",
        "/ui/services/default/web",
        "/ui/nodes",
        "/ui/nodes/ui-n1",
    ] {
        b.client.goto(&format!("{url}{path}")).await.unwrap();
        b.wait_text("#live", "connected").await;
        let buttons = b
            .client
            .find_all(Locator::Css("main button, main details"))
            .await
            .unwrap();
        assert!(
            buttons.is_empty(),
            "a read token sees {} action(s) on {path}",
            buttons.len()
        );
    }
    b.screenshot("node-read-only").await;
    assert!(b.console_errors().await.is_empty());
    b.client
        .find(Locator::Css("form.signout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_text("h1", "Sign in").await;

    sign_in(&b, &url, &admin).await;
    b.client
        .goto(&format!("{url}/ui/nodes/ui-n1"))
        .await
        .unwrap();
    b.wait_text("#availability", "active").await;
    b.client
        .find(Locator::Css("#availability-action summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.screenshot("node-drain-confirm").await;
    let confirm = b
        .client
        .find(Locator::Css("#availability-action button"))
        .await
        .unwrap();
    let clicked = tokio::time::timeout(Duration::from_secs(60), confirm.click()).await;
    if !matches!(clicked, Ok(Ok(_))) {
        b.screenshot("node-drain-failed").await;
        panic!("clicking the drain confirmation: {clicked:?}");
    }
    b.wait_text("#availability", "drain").await;
    b.screenshot("node-drained").await;
    assert!(b.console_errors().await.is_empty());
    b.close().await;

    let nodes = shoal(&url, Some(&admin), &["get", "nodes"]);
    let line = nodes
        .lines()
        .find(|l| l.starts_with("ui-n1"))
        .unwrap_or_default();
    assert!(line.contains("drain"), "shoal get nodes:\n{nodes}");
}
