//! The agent's HTTP and TCP checks, run for real: every `Interval` the fake sends
//! `GET` to the check's URL (2xx: passing, 429: warning, anything else or no answer within
//! `Timeout`: critical) or opens a TCP connection to its address (connected: passing), as
//! Consul's `CheckHTTP` and `CheckTCP` do (`agent/checks/check.go`; the default timeout is
//! 10 s). A check critical for longer than its service's `DeregisterCriticalServiceAfter`
//! takes the service away (the reaping is in the state's timers).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Shared;

/// Consul's default timeout of HTTP and TCP checks.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One due check: its id, kind, target and timeout.
struct Due {
    id: String,
    kind: String,
    target: String,
    timeout: Duration,
}

/// Runs due checks until the fake is dropped.
pub(crate) async fn run(shared: Weak<Shared>) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::limited(10))
        .build()
        .expect("check client");
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some(s) = shared.upgrade() else { return };
        for due in take_due(&s, Instant::now()) {
            let client = client.clone();
            let weak = Arc::downgrade(&s);
            tokio::spawn(async move {
                let (status, output) = probe(&client, &due).await;
                if let Some(s) = weak.upgrade() {
                    record(&s, &due.id, status, output);
                }
            });
        }
    }
}

/// The HTTP and TCP checks due at `now`, each scheduled for its next run.
fn take_due(shared: &Shared, now: Instant) -> Vec<Due> {
    let mut st = shared.lock();
    let mut out = Vec::new();
    for c in st.checks.values_mut() {
        let Some(interval) = c.interval else { continue };
        if c.next_run.is_some_and(|t| t > now) {
            continue;
        }
        c.next_run = Some(now + interval);
        let field = if c.kind == "http" { "HTTP" } else { "TCP" };
        let target = c.definition[field].as_str().unwrap_or_default().to_string();
        out.push(Due {
            id: c.id.clone(),
            kind: c.kind.clone(),
            target,
            timeout: c.timeout.unwrap_or(DEFAULT_TIMEOUT),
        });
    }
    out
}

/// Runs one check: its status and output.
async fn probe(client: &reqwest::Client, due: &Due) -> (&'static str, String) {
    if due.kind == "tcp" {
        let connect = tokio::net::TcpStream::connect(due.target.as_str());
        return match tokio::time::timeout(due.timeout, connect).await {
            Ok(Ok(_)) => ("passing", format!("TCP connect {}: Success", due.target)),
            Ok(Err(e)) => ("critical", format!("dial tcp {}: {e}", due.target)),
            Err(_) => ("critical", format!("dial tcp {}: i/o timeout", due.target)),
        };
    }
    match client
        .get(&due.target)
        .timeout(due.timeout)
        .header("User-Agent", "Consul Health Check")
        .send()
        .await
    {
        Ok(r) => {
            let code = r.status();
            let output = format!("HTTP GET {}: {} Output: ", due.target, code);
            if code.is_success() {
                ("passing", output)
            } else if code.as_u16() == 429 {
                ("warning", output)
            } else {
                ("critical", output)
            }
        }
        Err(e) => ("critical", format!("Get \"{}\": {e}", due.target)),
    }
}

/// Records a check's result (a check removed meanwhile is left alone).
fn record(shared: &Shared, id: &str, status: &str, output: String) {
    let changed = {
        let mut st = shared.lock();
        let Some(c) = st.checks.get_mut(id) else {
            return;
        };
        let changed = c.status != status;
        if changed {
            c.critical_since = (status == "critical").then(Instant::now);
        }
        c.status = status.to_string();
        c.output = output;
        if changed {
            st.bump_catalog();
        }
        changed
    };
    if changed {
        shared.notify();
    }
}
