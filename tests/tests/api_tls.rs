//! The API over TLS with a token of each role: certificates made here with rcgen, the token
//! file written by `shoal_api::auth::token::create` (the code behind `shoal token create`),
//! and the typed client the CLI uses, trusting only the test CA.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use shoal_api::auth::{NewToken, Role, Token, Tokens, token};
use shoal_api::client::{ApplyOptions, CaBundle};
use shoal_api::server::{ServeOptions, TlsFiles};
use shoal_api::types::NodePatch;
use shoal_api::{ApiState, Client, ClientError};
use shoal_store::{EmbeddedStore, Store};
use shoal_tests::pki::Pki;

/// Everything this test binary logs (at trace level), to check what reaches the logs.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_ansi(false)
            .with_writer(move || Sink(sink.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn manifest(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: shoal/v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  runtime: process\n  command: [sleep, \"60\"]\n  replicas: 1\n"
    )
}

fn new_token(file: &Path, id: &str, role: Role, namespaces: &[&str], node: Option<&str>) -> Token {
    token::create(
        file,
        &NewToken {
            id: Some(id.to_string()),
            role,
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
            node: node.map(str::to_string),
        },
    )
    .expect("create token")
}

fn status(r: Result<impl std::fmt::Debug, ClientError>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(e) => e.status().unwrap_or_else(|| panic!("no HTTP answer: {e}")),
    }
}

struct Server {
    url: String,
    store: Arc<dyn Store>,
    ca: CaBundle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), shoal_api::ServeError>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(pki: &Pki, tokens: &Path) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
        let state = ApiState::new(store.clone(), shoal_core::Keys::default())
            .with_tokens(Tokens::watch_file(tokens).expect("token file"));
        let cert = pki.server("api");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().unwrap().port()
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = ServeOptions {
            tls: Some(TlsFiles {
                cert: cert.cert,
                key: cert.key,
            }),
            insecure_listen: false,
        };
        let task = tokio::spawn(shoal_api::server::serve_with(
            state,
            listener,
            options,
            async move {
                let _ = stopped.await;
            },
        ));
        let ca = CaBundle::from_pem(pki.ca_pem().as_bytes(), "test CA").unwrap();
        Server {
            url,
            store,
            ca,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    fn client(&self, token: Option<&Token>) -> Client {
        Client::with_ca(&self.url, token.map(Token::reveal), &self.ca).unwrap()
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }
}

#[tokio::test]
async fn every_role_gets_exactly_its_rights_over_tls() {
    let logs = logs();
    let pki = Pki::new("shoal test CA");
    let files = tempfile::tempdir().unwrap();
    let tokens = files.path().join("tokens");
    let read = new_token(&tokens, "ci-read", Role::Read, &[], None);
    let team = new_token(&tokens, "team-a-deploy", Role::Write, &["team-a"], None);
    let admin = new_token(&tokens, "ops", Role::Admin, &[], None);
    let node = new_token(&tokens, "n1-agent", Role::Node, &[], Some("n1"));
    let server = Server::start(&pki, &tokens).await;
    let forged = Token::generate("ops").unwrap();
    read_and_namespaced_write(&server, &read, &team, &forged).await;
    admin_and_node(&server, &admin, &node).await;

    // The token file holds no token; revoking one takes effect on the next request.
    let text = std::fs::read_to_string(&tokens).unwrap();
    for t in [&read, &team, &admin, &node] {
        assert!(
            !text.contains(&secret_of(t)),
            "the token file holds a secret:\n{text}"
        );
    }
    let r = server.client(Some(&read));
    token::revoke(&tokens, "ci-read").unwrap();
    assert_eq!(status(r.list_services(None, None).await), 401);
    let late = new_token(&tokens, "late", Role::Read, &[], None);
    assert_eq!(
        status(server.client(Some(&late)).list_services(None, None).await),
        200,
        "a token added while the API runs is accepted"
    );

    // TLS only: a client that does not trust the CA fails; so does cleartext.
    let untrusting = Client::new(&server.url, Some(admin.reveal()));
    let e = untrusting.list_services(None, None).await.unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e}");
    let cleartext = Client::new(&server.url.replace("https", "http"), Some(admin.reveal()));
    assert!(cleartext.list_services(None, None).await.is_err());
    server.stop().await;

    // Mutating requests were audited with the token ID, never the secret.
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let audit: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("shoal_api::audit"))
        .collect();
    let audited = |token: &str, what: &str, code: &str| {
        audit
            .iter()
            .any(|l| l.contains(&format!("token={token} ")) && l.contains(what) && l.contains(code))
    };
    assert!(audited("team-a-deploy", "POST", "status=403"), "{audit:#?}");
    assert!(audited("ops", "PATCH", "status=200"), "{audit:#?}");
    for t in [&read, &team, &admin, &node, &forged, &late] {
        assert!(
            !text.contains(&secret_of(t)),
            "a token secret reached the logs"
        );
    }
}

fn secret_of(t: &Token) -> String {
    let whole = t.reveal();
    whole
        .split_once('.')
        .map(|(_, s)| s.to_string())
        .unwrap_or(whole)
}

/// No token, a forged one, a read token, a namespace-limited write token.
async fn read_and_namespaced_write(server: &Server, read: &Token, team: &Token, forged: &Token) {
    let opts = ApplyOptions::default();

    // No token: 401. An unknown one: 401.
    assert_eq!(
        status(server.client(None).list_services(None, None).await),
        401
    );
    assert_eq!(
        status(server.client(Some(forged)).list_services(None, None).await),
        401,
        "a known ID with a wrong secret is refused"
    );

    // Read reads, and cannot write.
    let r = server.client(Some(read));
    assert_eq!(status(r.list_services(None, None).await), 200);
    let e = r
        .apply(&manifest("team-a", "web"), &opts)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("read role"), "{e}");

    // A namespace-limited write token writes its namespace, and only it.
    let w = server.client(Some(team));
    assert_eq!(
        status(w.apply(&manifest("team-a", "web"), &opts).await),
        200
    );
    let e = w
        .apply(&manifest("default", "web"), &opts)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("team-a"), "{e}");
    let both = format!(
        "{}---\n{}",
        manifest("team-a", "api"),
        manifest("team-b", "api")
    );
    assert_eq!(
        status(w.apply(&both, &opts).await),
        403,
        "one foreign document refuses all"
    );
    assert!(
        w.get_service("team-a", "api").await.unwrap().is_none(),
        "nothing was written"
    );
    assert_eq!(
        status(
            w.put_service("default", "web", &manifest("default", "web"), None)
                .await
        ),
        403
    );
    let prune_own = ApplyOptions {
        prune_selector: Some("app=x".into()),
        ..Default::default()
    };
    // Pruning stays inside the namespaces the applied set names, so a namespace-limited token
    // may prune its own namespace (as `kubectl apply --prune -n` does).
    assert_eq!(
        status(w.apply(&manifest("team-a", "web"), &prune_own).await),
        200,
        "pruning within the token's own namespace is allowed"
    );
    let patch = NodePatch {
        availability: None,
        labels: BTreeMap::from([("zone".to_string(), Some("a".to_string()))]),
    };
    assert_eq!(
        status(w.patch_node("n1", &patch).await),
        403,
        "nodes need admin"
    );
}

/// An admin may do everything; a node token reaches none of the operator routes.
async fn admin_and_node(server: &Server, admin: &Token, node: &Token) {
    let opts = ApplyOptions::default();
    let config = serde_json::to_vec(&shoal_core::NodeConfig::default()).unwrap();
    let keys = shoal_core::Keys::default();
    let n1 = keys.node_config("n1");
    server.store.put(&n1, config, None).await.unwrap();
    let patch = NodePatch {
        availability: None,
        labels: BTreeMap::from([("zone".to_string(), Some("a".to_string()))]),
    };

    // Admin may do everything.
    let a = server.client(Some(admin));
    assert_eq!(
        status(a.apply(&manifest("default", "web"), &opts).await),
        200
    );
    assert_eq!(status(a.patch_node("n1", &patch).await), 200);
    assert_eq!(status(a.delete_service("team-a", "web").await), 200);

    // A node token reaches none of the operator routes.
    let n = server.client(Some(node));
    assert_eq!(status(n.list_services(None, None).await), 403);
    assert_eq!(status(n.apply(&manifest("default", "x"), &opts).await), 403);
}

#[tokio::test]
async fn listening_beyond_loopback_needs_tokens_and_tls() {
    let pki = Pki::new("ca");
    let files = tempfile::tempdir().unwrap();
    let tokens = files.path().join("tokens");
    new_token(&tokens, "ops", Role::Admin, &[], None);
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    let bare = ApiState::new(store, shoal_core::Keys::default());
    let with_tokens = bare
        .clone()
        .with_tokens(Tokens::watch_file(&tokens).unwrap());
    let outside: std::net::SocketAddr = "0.0.0.0:7878".parse().unwrap();
    let cleartext = ServeOptions::default();
    let check = shoal_api::server::check_listen;
    let e = check(&bare, outside, &cleartext).unwrap_err().to_string();
    assert!(e.contains("--token-file"), "{e}");
    let e = check(&with_tokens, outside, &cleartext)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--tls-cert") && e.contains("--insecure-listen"),
        "{e}"
    );
    let server = pki.server("api");
    let tls = ServeOptions {
        tls: Some(TlsFiles {
            cert: server.cert,
            key: server.key,
        }),
        insecure_listen: false,
    };
    assert!(check(&with_tokens, outside, &tls).is_ok());
    let insecure = ServeOptions {
        tls: None,
        insecure_listen: true,
    };
    assert!(check(&with_tokens, outside, &insecure).is_ok());
    assert!(
        check(&bare, outside, &insecure).is_err(),
        "--insecure-listen never allows an API without tokens"
    );
    assert!(check(&bare, "127.0.0.1:7878".parse().unwrap(), &cleartext).is_ok());
}
