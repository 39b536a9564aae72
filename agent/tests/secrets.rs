//! Secrets and configs delivered to host processes by a real agent, from a real API server
//! over the same store: the files sit in the task's in-memory directory named by
//! `SHOAL_SECRETS_DIR` / `SHOAL_CONFIGS_DIR` with their modes, are gone when the task ends,
//! never reach the agent's data directory, and a task waits in `preparing` (saying why)
//! while the API is down, then starts when it answers, without disturbing running tasks.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_agent::runtime::process::ProcessRuntime;
use shoal_agent::{Agent, AgentConfig, ApiEndpoint};
use shoal_api::ApiState;
use shoal_api::secrets::crypto::KeyRing;
use shoal_core::manifest::RuntimeKind;
use shoal_core::model::{TaskState, TaskTemplate};
use shoal_core::secret::{FileKind, FileMode, FileRef};
use shoal_tests::leaks::files_with;
use shoal_tests::tasks::{TestStore, task, template};
use shoal_tests::wait::eventually;

const VALUE: &str = "pr0cess-secret-7d2e";

/// An API server over `ts`'s store on `port` (0: any), with a fresh cluster key.
struct ApiServer {
    url: String,
    port: u16,
    state: ApiState,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl ApiServer {
    async fn start(ts: &TestStore, keys_dir: &Path, port: u16) -> Self {
        let key_file = keys_dir.join("secret.key");
        if !key_file.exists() {
            KeyRing::create_file(&key_file, "k1").unwrap();
        }
        let state = ApiState::new(ts.store.clone(), ts.keys.clone())
            .with_secret_keys(KeyRing::load(&key_file).unwrap());
        Self::serve(state, port).await
    }

    async fn serve(state: ApiState, port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("the API port is free");
        let port = listener.local_addr().unwrap().port();
        let s = state.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            let _ = shoal_api::serve_listener(s, listener, shutdown).await;
        });
        ApiServer {
            url: format!("http://127.0.0.1:{port}"),
            port,
            state,
            stop,
            task,
        }
    }

    /// Stops answering: the listener and every connection are closed.
    async fn kill(self) -> (ApiState, u16) {
        let _ = self.stop.send(());
        let _ = self.task.await;
        (self.state, self.port)
    }
}

fn file(source: &str, target: &str, mode: u32) -> FileRef {
    FileRef {
        source: source.into(),
        target: Some(target.into()),
        mode: Some(FileMode(mode)),
        uid: None,
        gid: None,
    }
}

/// A process task that copies its secret and config to `out`, then sleeps.
fn reader(out: &Path) -> TaskTemplate {
    let script = format!(
        "cat \"$SHOAL_SECRETS_DIR/db_password\" > {o}.tmp && cat \"$SHOAL_CONFIGS_DIR/etc/app.conf\" >> {o}.tmp && mv {o}.tmp {o}; exec sleep 600",
        o = out.display()
    );
    let mut t = template(RuntimeKind::Process, None, &["sh", "-c", &script]);
    t.stop_grace_period = shoal_core::units::Dur::secs(2);
    t.secrets = vec![file("db-password", "db_password", 0o400)];
    t.configs = vec![file("app", "/etc/app.conf", 0o440)];
    t
}

/// One node of a secrets test: a store, an API server holding the cluster key and some
/// files, and an agent running host processes whose files live under `/dev/shm`.
struct Node {
    agent: shoal_agent::AgentHandle,
    api: ApiServer,
    ts: TestStore,
    /// The API's key directory.
    _keys: tempfile::TempDir,
    /// The agent's data directory.
    data: tempfile::TempDir,
    /// The agent's secrets directory.
    shm: tempfile::TempDir,
    /// Where the tasks copy what they read.
    out: tempfile::TempDir,
}

/// Starts node `name` with an API server holding `files` (kind, name, value).
async fn node(name: &str, files: &[(FileKind, &str, &str)]) -> Node {
    let ts = TestStore::open().await;
    let keys = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let out = tempfile::tempdir().unwrap();
    let api = ApiServer::start(&ts, keys.path(), 0).await;
    for (kind, file, value) in files {
        create(&api, *kind, file, value).await;
    }
    let mut config = AgentConfig::new(name);
    config.api = Some(ApiEndpoint {
        url: api.url.clone(),
        token: None,
    });
    config.secrets_dir = shm.path().to_path_buf();
    let runtime = Arc::new(ProcessRuntime::new(data.path()));
    let agent = Agent::new(ts.store.clone(), ts.keys.clone(), config, runtime).spawn();
    Node {
        agent,
        api,
        ts,
        _keys: keys,
        data,
        shm,
        out,
    }
}

async fn create(api: &ApiServer, kind: FileKind, name: &str, value: &str) {
    shoal_api::Client::new(&api.url, None)
        .create_file(kind, "default", name, value.as_bytes().to_vec())
        .await
        .unwrap_or_else(|e| panic!("create {kind} {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_process_reads_its_files_from_its_in_memory_directories() {
    let n = node(
        "sp1",
        &[
            (FileKind::Secret, "db-password", VALUE),
            (FileKind::Config, "app", "listen 8080\n"),
        ],
    )
    .await;
    let t = task(
        "reader.1.a",
        "reader",
        "sp1",
        reader(&n.out.path().join("seen")),
    );
    n.ts.assign(&t).await;
    n.ts.wait_state(&t, TaskState::Running).await;
    let seen = n.out.path().join("seen");
    eventually("the process copied its files", || {
        let ok = seen.exists();
        async move { ok }
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        format!("{VALUE}listen 8080\n")
    );

    use std::os::unix::fs::PermissionsExt as _;
    let dir = n.shm.path().join("sp1").join("reader.1.a");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&dir.join("secrets/db_password")), 0o400);
    assert_eq!(mode(&dir.join("configs/etc/app.conf")), 0o440);
    assert_eq!(mode(&dir), 0o700, "the task's directory is private");
    assert!(
        files_with(n.data.path(), VALUE).is_empty(),
        "the agent's data dir holds no value"
    );

    n.ts.shut_down(&t).await;
    n.ts.wait_state(&t, TaskState::Shutdown).await;
    assert!(!dir.exists(), "the task's files are gone once it stopped");
    assert!(files_with(n.shm.path(), VALUE).is_empty());
    assert!(files_with(n.data.path(), VALUE).is_empty());
    n.agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_waits_in_preparing_while_the_api_is_down_and_running_tasks_carry_on() {
    let n = node(
        "sp2",
        &[
            (FileKind::Secret, "db-password", VALUE),
            (FileKind::Config, "app", "conf\n"),
        ],
    )
    .await;
    let first = task(
        "reader.1.a",
        "reader",
        "sp2",
        reader(&n.out.path().join("a")),
    );
    n.ts.assign(&first).await;
    let running = n.ts.wait_state(&first, TaskState::Running).await;

    let (state, port) = n.api.kill().await;
    let mut second = task(
        "reader.2.b",
        "reader",
        "sp2",
        reader(&n.out.path().join("b")),
    );
    second.slot = shoal_core::model::Slot::Replica(2);
    n.ts.assign(&second).await;
    let waiting =
        n.ts.wait_status(&second, "waiting in preparing", |s| {
            s.state == TaskState::Preparing && s.message.is_some()
        })
        .await;
    let why = waiting.message.unwrap();
    assert!(
        why.contains("waiting for the API") && why.contains("cannot reach"),
        "{why}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let still = n.ts.status(&second).await.unwrap();
    assert_eq!(still.state, TaskState::Preparing, "it keeps waiting");
    let first_now = n.ts.status(&first).await.unwrap();
    assert_eq!(
        first_now.state,
        TaskState::Running,
        "running tasks carry on"
    );
    assert_eq!(first_now.container_id, running.container_id);

    let back = Instant::now();
    let _api = ApiServer::serve(state, port).await;
    let s = n.ts.wait_state(&second, TaskState::Running).await;
    println!(
        "task started {:?} after the API came back (retries at most every {:?})",
        back.elapsed(),
        shoal_agent::task_runner::DELIVERY_RETRY_MAX
    );
    assert_eq!(s.message, None, "the waiting reason is cleared");
    assert!(back.elapsed() < Duration::from_secs(30));
    n.agent.stop().await.unwrap();
}

#[tokio::test]
async fn without_an_api_a_task_using_secrets_is_rejected_naming_the_flag() {
    let ts = TestStore::open().await;
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let a = Agent::new(
        ts.store.clone(),
        ts.keys.clone(),
        AgentConfig::new("sp3"),
        Arc::new(ProcessRuntime::new(data.path())),
    )
    .spawn();
    let t = task("reader.1.a", "reader", "sp3", reader(&out.path().join("x")));
    ts.assign(&t).await;
    let s = ts.wait_state(&t, TaskState::Rejected).await;
    assert!(s.message.unwrap().contains("--api URL"));
    a.stop().await.unwrap();
}

#[tokio::test]
async fn a_secret_that_is_gone_rejects_the_task_with_the_api_message() {
    let n = node("sp4", &[(FileKind::Config, "app", "conf\n")]).await;
    let t = task(
        "reader.1.a",
        "reader",
        "sp4",
        reader(&n.out.path().join("x")),
    );
    n.ts.assign(&t).await;
    let s = n.ts.wait_state(&t, TaskState::Rejected).await;
    let why = s.message.unwrap();
    assert!(
        why.contains("secret default/db-password not found"),
        "{why}"
    );
    assert!(!n.shm.path().join("sp4").join("reader.1.a").exists());
    n.agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stopping_the_agent_removes_the_files_of_its_host_processes() {
    let n = node(
        "sp5",
        &[
            (FileKind::Secret, "db-password", VALUE),
            (FileKind::Config, "app", "conf\n"),
        ],
    )
    .await;
    let t = task(
        "reader.1.a",
        "reader",
        "sp5",
        reader(&n.out.path().join("x")),
    );
    n.ts.assign(&t).await;
    n.ts.wait_state(&t, TaskState::Running).await;
    let dir = n.shm.path().join("sp5").join("reader.1.a");
    assert!(dir.join("secrets/db_password").exists());
    // Host processes end with the agent, and so do their files.
    n.agent.stop().await.unwrap();
    assert!(!dir.exists(), "the stopped process's files are gone");
    assert!(files_with(n.shm.path(), VALUE).is_empty());
}
