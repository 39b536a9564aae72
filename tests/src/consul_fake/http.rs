//! HTTP layer of the fake: routing with Consul's method rules and error texts, blocking
//! queries, and the KV, transaction and session endpoints.

// Handlers bail out early with ready-made responses; boxing them would only add noise.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng as _;
use serde_json::{Value, json};

use super::Shared;
use super::state::{KvOp, Session, State, entry_json};

/// The fake's router for the agent of `node`: one fallback that routes by hand, as Consul's
/// mux does.
pub(crate) fn router(shared: Arc<Shared>, node: String) -> Router {
    Router::new()
        .fallback(handle)
        .with_state((shared, Arc::<str>::from(node)))
}

/// A parsed request.
pub(crate) struct Req {
    /// The node of the agent the request came through.
    pub node: Arc<str>,
    pub method: Method,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub(crate) fn has(&self, name: &str) -> bool {
        self.query.iter().any(|(k, _)| k == name)
    }

    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn token(&self) -> Option<String> {
        if let Some(t) = self.param("token") {
            return Some(t.to_string());
        }
        if let Some(t) = self
            .headers
            .get("X-Consul-Token")
            .and_then(|v| v.to_str().ok())
        {
            return Some(t.to_string());
        }
        let auth = self
            .headers
            .get("Authorization")
            .and_then(|v| v.to_str().ok())?;
        let (scheme, rest) = auth.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.split_whitespace().next().unwrap_or("").to_string())
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(&v.replace('+', " "))),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// A response with the headers every wrapped Consul response carries.
pub(crate) fn reply(status: StatusCode, content_type: Option<&str>, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        "X-Consul-Default-ACL-Policy",
        HeaderValue::from_static("allow"),
    );
    if let Some(ct) = content_type
        && let Ok(v) = HeaderValue::from_str(ct)
    {
        h.insert("Content-Type", v);
    }
    resp
}

/// A JSON 200.
pub(crate) fn ok_json(v: &Value) -> Response {
    reply(
        StatusCode::OK,
        Some("application/json"),
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

/// A plain-text error.
pub(crate) fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    reply(
        status,
        Some("text/plain; charset=utf-8"),
        msg.into().into_bytes(),
    )
}

/// Adds the read headers (`X-Consul-Index`, `KnownLeader`, `LastContact`).
pub(crate) fn with_index(mut resp: Response, index: u64) -> Response {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&index.max(1).to_string()) {
        h.insert("X-Consul-Index", v);
    }
    h.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    h.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
    resp
}

/// Parses a Go duration (`10s`, `1m30s`, `150ms`); a bare number has no unit and fails.
/// Same grammar as a manifest duration.
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    s.parse::<shoal_core::Dur>().ok().map(shoal_core::Dur::get)
}

/// Runs `query` as a blocking query: at once when `?index` is absent or 0 or the result's
/// index exceeds it, else when a change moves it past, else after `?wait` (default 5 min,
/// at most 10 min, plus up to wait/16 of jitter) with the same data.
pub(crate) async fn blocking<F>(shared: &Arc<Shared>, req: &Req, query: F) -> Response
where
    F: Fn(&State) -> (Response, u64),
{
    let index = match req.param("index") {
        None => 0,
        Some(v) => match v.parse::<u64>() {
            Ok(i) => i,
            Err(_) => return text(StatusCode::BAD_REQUEST, "Invalid index"),
        },
    };
    let mut wait = match req.param("wait") {
        None => Duration::ZERO,
        Some(v) => match parse_duration(v) {
            Some(d) => d,
            None => return text(StatusCode::BAD_REQUEST, "Invalid wait time"),
        },
    };
    if req.has("stale") && req.has("consistent") {
        return text(
            StatusCode::BAD_REQUEST,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        );
    }
    if wait.is_zero() {
        wait = Duration::from_secs(300);
    }
    wait = wait.min(Duration::from_secs(600));
    let jitter_ms = (wait.as_millis() / 16) as u64;
    if jitter_ms > 0 {
        wait += Duration::from_millis(rand::rng().random_range(0..jitter_ms));
    }
    let deadline = Instant::now() + wait;
    let mut rx = shared.changed.subscribe();
    let _counted = (index > 0).then(|| super::conn::BlockingGuard::enter(&shared.conns));
    loop {
        let (resp, idx) = {
            let st = shared.lock();
            query(&st)
        };
        if index == 0 || idx > index {
            return with_index(resp, idx);
        }
        let now = Instant::now();
        if now >= deadline {
            return with_index(resp, idx);
        }
        let _ = tokio::time::timeout(deadline - now, rx.changed()).await;
    }
}

async fn handle(
    AxState((shared, node)): AxState<(Arc<Shared>, Arc<str>)>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let raw_path = parts.uri.path().to_string();
    let query = parse_query(parts.uri.query().unwrap_or(""));
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let req = Req {
        node,
        method: parts.method.clone(),
        query,
        headers: parts.headers,
        body,
    };

    if raw_path.contains("//") || raw_path.split('/').any(|s| s == ".." || s == ".") {
        let mut cleaned: Vec<&str> = Vec::new();
        for seg in raw_path.split('/').filter(|s| !s.is_empty() && *s != ".") {
            if seg == ".." {
                cleaned.pop();
            } else {
                cleaned.push(seg);
            }
        }
        let mut resp = reply(StatusCode::MOVED_PERMANENTLY, None, Vec::new());
        if let Ok(v) = HeaderValue::from_str(&format!("/{}", cleaned.join("/"))) {
            resp.headers_mut().insert("Location", v);
        }
        return resp;
    }
    {
        let mut failures = shared.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.0 > 0 {
            failures.0 -= 1;
            let status =
                StatusCode::from_u16(failures.1).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return text(status, "injected failure");
        }
    }
    if let Some(expected) = &shared.options.acl_token {
        match req.token() {
            Some(t) if &t == expected => {}
            Some(_) => return text(StatusCode::FORBIDDEN, "ACL not found"),
            None => return text(StatusCode::FORBIDDEN, "Permission denied"),
        }
    }

    let path = raw_path.as_str();
    let (allowed, route): (&[Method], Route) = if let Some(key) = path.strip_prefix("/v1/kv/") {
        (
            &[Method::GET, Method::PUT, Method::DELETE],
            Route::Kv(percent_decode(key)),
        )
    } else if path == "/v1/kv" {
        (
            &[Method::GET, Method::PUT, Method::DELETE],
            Route::Kv(String::new()),
        )
    } else if path == "/v1/txn" {
        (&[Method::PUT], Route::Txn)
    } else if path == "/v1/status/leader" {
        (&[Method::GET], Route::StatusLeader)
    } else if let Some(rest) = path.strip_prefix("/v1/session/") {
        let (op, arg) = rest.split_once('/').unwrap_or((rest, ""));
        let arg = percent_decode(arg);
        match op {
            "create" => (&[Method::PUT], Route::SessionCreate),
            "renew" => (&[Method::PUT], Route::SessionRenew(arg)),
            "destroy" => (&[Method::PUT], Route::SessionDestroy(arg)),
            "info" => (&[Method::GET], Route::SessionInfo(arg)),
            "list" => (&[Method::GET], Route::SessionList(None)),
            "node" => (&[Method::GET], Route::SessionList(Some(arg))),
            _ => return not_recognized(),
        }
    } else if let Some(route) = super::agent::route(path) {
        route
    } else {
        return not_recognized();
    };
    if req.method == Method::OPTIONS {
        return allow(reply(StatusCode::OK, None, Vec::new()), allowed);
    }
    if !allowed.contains(&req.method) {
        let resp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed", req.method),
        );
        return allow(resp, allowed);
    }
    if let Route::Kv(key) = &route
        && !(req.method == Method::GET && (req.has("recurse") || req.has("keys")))
        && !shared.kv_allowed(key)
    {
        return text(StatusCode::FORBIDDEN, "Permission denied");
    }
    match route {
        Route::Kv(key) => kv(&shared, &req, &key).await,
        Route::Txn => txn(&shared, &req),
        Route::StatusLeader => ok_json(&json!("127.0.0.1:8300")),
        Route::SessionCreate => session_create(&shared, &req),
        Route::SessionRenew(id) => session_renew(&shared, &id),
        Route::SessionDestroy(id) => {
            if uuid::Uuid::parse_str(&id).is_err() {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("invalid session id {id:?}"),
                );
            }
            shared.lock().invalidate_session(&id);
            shared.notify();
            ok_json(&json!(true))
        }
        Route::SessionInfo(id) => {
            blocking(&shared, &req, |st| {
                let list: Vec<Value> = st
                    .sessions
                    .get(&id)
                    .map(|s| st.session_json(s))
                    .into_iter()
                    .collect();
                (ok_json(&Value::Array(list)), st.session_index.max(1))
            })
            .await
        }
        Route::SessionList(node) => {
            blocking(&shared, &req, |st| {
                let list: Vec<Value> = st
                    .sessions
                    .values()
                    .filter(|s| node.as_ref().is_none_or(|n| &s.node == n))
                    .map(|s| st.session_json(s))
                    .collect();
                (ok_json(&Value::Array(list)), st.session_index.max(1))
            })
            .await
        }
        Route::Agent(r) => super::agent::handle(&shared, &req, r).await,
    }
}

fn allow(mut resp: Response, allowed: &[Method]) -> Response {
    let list: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
    if let Ok(v) = HeaderValue::from_str(&list.join(",")) {
        resp.headers_mut().insert("Allow", v);
    }
    resp
}

fn not_recognized() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "Invalid URL path: not a recognized HTTP API endpoint",
    )
}

/// Which endpoint a request is for.
pub(crate) enum Route {
    Kv(String),
    Txn,
    StatusLeader,
    SessionCreate,
    SessionRenew(String),
    SessionDestroy(String),
    SessionInfo(String),
    SessionList(Option<String>),
    Agent(super::agent::AgentRoute),
}

/// Consul's key validation since 1.21.6 (leading `/`, `..`, surrounding whitespace).
fn invalid_key(key: &str) -> bool {
    key.starts_with('/') || key.split('/').any(|s| s == "..") || key.trim() != key
}

async fn kv(shared: &Arc<Shared>, req: &Req, key: &str) -> Response {
    let recurse = req.has("recurse");
    if !key.is_empty() && invalid_key(key) {
        return text(StatusCode::BAD_REQUEST, format!("invalid key name {key:?}"));
    }
    match req.method {
        Method::GET => {
            let keys = req.has("keys");
            if key.is_empty() && !recurse && !keys {
                return text(StatusCode::BAD_REQUEST, "Missing key name");
            }
            let raw = req.has("raw");
            let separator = req
                .param("separator")
                .or(req.param("seperator"))
                .map(str::to_string);
            let key = key.to_string();
            blocking(shared, req, move |st| {
                if keys {
                    let mut out: Vec<String> = Vec::new();
                    for (k, _) in st
                        .list(&key)
                        .into_iter()
                        .filter(|(k, _)| shared.kv_allowed(k))
                    {
                        let cut = separator
                            .as_deref()
                            .filter(|s| !s.is_empty())
                            .and_then(|sep| {
                                k[key.len()..]
                                    .find(sep)
                                    .map(|p| k[..key.len() + p + sep.len()].to_string())
                            });
                        let k = cut.unwrap_or(k);
                        if out.last() != Some(&k) {
                            out.push(k);
                        }
                    }
                    let idx = st.prefix_index(&key);
                    if out.is_empty() && !key.is_empty() {
                        return (reply(StatusCode::NOT_FOUND, None, Vec::new()), idx);
                    }
                    return (ok_json(&json!(out)), idx);
                }
                if recurse {
                    let mut list = st.list(&key);
                    list.retain(|(k, _)| shared.kv_allowed(k));
                    let idx = st.prefix_index(&key);
                    if list.is_empty() {
                        return (reply(StatusCode::NOT_FOUND, None, Vec::new()), idx);
                    }
                    let arr: Vec<Value> =
                        list.iter().map(|(k, e)| entry_json(k, e, true)).collect();
                    return (ok_json(&Value::Array(arr)), idx);
                }
                match st.kv.get(&key) {
                    None => (
                        reply(StatusCode::NOT_FOUND, None, Vec::new()),
                        st.key_index(&key),
                    ),
                    Some(e) if raw => {
                        let mut resp = reply(StatusCode::OK, Some("text/plain"), e.value.clone());
                        let h = resp.headers_mut();
                        h.insert(
                            "X-Content-Type-Options",
                            HeaderValue::from_static("nosniff"),
                        );
                        h.insert(
                            "Content-Security-Policy",
                            HeaderValue::from_static("sandbox"),
                        );
                        (resp, e.modify_index)
                    }
                    Some(e) => (ok_json(&json!([entry_json(&key, e, true)])), e.modify_index),
                }
            })
            .await
        }
        Method::PUT => kv_put(shared, req, key),
        _ => kv_delete(shared, req, key, recurse),
    }
}

fn conflicting(req: &Req, names: &[&str]) -> bool {
    names.iter().filter(|n| req.has(n)).count() > 1
}

fn kv_put(shared: &Arc<Shared>, req: &Req, key: &str) -> Response {
    if key.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    if conflicting(req, &["cas", "acquire", "release"]) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Conflicting flags: {}", req.headers.len()),
        );
    }
    let max = shared.options.kv_max_value_size;
    if req.body.len() > max {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request body({} bytes) too large, max size: {max} bytes. See https://developer.hashicorp.com/consul/docs/agent/config/config-files#kv_max_value_size.",
                req.body.len()
            ),
        );
    }
    let parse_u64 = |name: &str| -> Result<Option<u64>, Response> {
        match req.param(name) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("strconv.ParseUint: parsing {v:?}: invalid syntax"),
                )
            }),
        }
    };
    let flags = match parse_u64("flags") {
        Ok(f) => f,
        Err(r) => return r,
    };
    let cas = match parse_u64("cas") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut op = KvOp {
        verb: "set".into(),
        key: key.to_string(),
        value: Some(req.body.to_vec()),
        flags,
        index: None,
        session: None,
    };
    if let Some(c) = cas {
        op.verb = "cas".into();
        op.index = Some(c);
    } else if let Some(s) = req.param("acquire") {
        if s.is_empty() {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "missing session");
        }
        if !shared.lock().sessions.contains_key(s) {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("invalid session {s:?}"),
            );
        }
        op.verb = "lock".into();
        op.session = Some(s.to_string());
    } else if let Some(s) = req.param("release") {
        op.verb = "unlock".into();
        op.session = Some(s.to_string());
    }
    let res = shared.lock().apply(std::slice::from_ref(&op));
    shared.notify();
    ok_json(&json!(res.is_ok()))
}

fn kv_delete(shared: &Arc<Shared>, req: &Req, key: &str, recurse: bool) -> Response {
    if recurse && req.has("cas") {
        return text(
            StatusCode::BAD_REQUEST,
            "Conflicting flags: recurse and cas",
        );
    }
    if key.is_empty() && !recurse {
        return text(StatusCode::BAD_REQUEST, "Missing key name");
    }
    let mut op = KvOp {
        verb: "delete".into(),
        key: key.to_string(),
        value: None,
        flags: None,
        index: None,
        session: None,
    };
    if recurse {
        op.verb = "delete-tree".into();
    } else if let Some(c) = req.param("cas") {
        let Ok(c) = c.parse::<u64>() else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("strconv.ParseUint: parsing {c:?}: invalid syntax"),
            );
        };
        op.verb = "delete-cas".into();
        op.index = Some(c);
    }
    let res = shared.lock().apply(std::slice::from_ref(&op));
    shared.notify();
    ok_json(&json!(res.is_ok()))
}

fn txn(shared: &Arc<Shared>, req: &Req) -> Response {
    let max_value = shared.options.kv_max_value_size;
    if req.body.len() > max_value.max(512 * 1024) {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body({} bytes) too large", req.body.len()),
        );
    }
    let parsed: Result<Vec<Value>, _> = serde_json::from_slice(&req.body);
    let Ok(items) = parsed else {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "Failed to parse body: {}",
                parsed.err().map(|e| e.to_string()).unwrap_or_default()
            ),
        );
    };
    let max = shared.options.max_txn_ops;
    if items.len() > max {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Transaction contains too many operations ({} > {max})",
                items.len()
            ),
        );
    }
    let mut ops = Vec::with_capacity(items.len());
    for item in &items {
        let Some(kv) = item.get("KV") else {
            return text(
                StatusCode::BAD_REQUEST,
                "Failed to parse body: only KV operations are supported by this fake",
            );
        };
        let s = |name: &str| kv.get(name).and_then(Value::as_str).map(str::to_string);
        let value = match kv.get("Value") {
            Some(Value::String(b)) => match STANDARD.decode(b) {
                Ok(v) => Some(v),
                Err(e) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("Failed to parse body: {e}"),
                    );
                }
            },
            _ => None,
        };
        let key = s("Key").unwrap_or_default();
        if !shared.kv_allowed(&key) {
            // Simplification: Consul reports a denied op as a rollback error.
            return text(StatusCode::FORBIDDEN, "Permission denied");
        }
        if let Some(v) = &value
            && v.len() > max_value
        {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "Value for key {key:?} is too large ({} > {max_value} bytes)",
                    v.len()
                ),
            );
        }
        ops.push(KvOp {
            verb: s("Verb").unwrap_or_default(),
            key,
            value,
            flags: kv.get("Flags").and_then(Value::as_u64),
            index: kv.get("Index").and_then(Value::as_u64),
            session: s("Session").filter(|s| !s.is_empty()),
        });
    }
    let res = shared.lock().apply(&ops);
    shared.notify();
    match res {
        Ok(results) => {
            let results: Vec<Value> = results
                .into_iter()
                .flatten()
                .map(|e| json!({ "KV": e }))
                .collect();
            ok_json(&json!({ "Results": results, "Errors": Value::Null }))
        }
        Err(errors) => {
            let errors: Vec<Value> = errors
                .into_iter()
                .map(|(i, what)| json!({ "OpIndex": i, "What": what }))
                .collect();
            let body = serde_json::to_vec(&json!({ "Results": Value::Null, "Errors": errors }))
                .unwrap_or_default();
            reply(StatusCode::CONFLICT, Some("application/json"), body)
        }
    }
}

/// Reads a duration field given as a Go duration string or a number (`LockDelay` rule: a
/// number below 1000 is seconds, otherwise nanoseconds).
fn duration_field(v: Option<&Value>) -> Result<Option<Duration>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => parse_duration(s).map(Some).ok_or_else(|| s.clone()),
        Some(Value::Number(n)) => {
            let n = n.as_u64().unwrap_or(0);
            Ok(Some(if n < 1000 {
                Duration::from_secs(n)
            } else {
                Duration::from_nanos(n)
            }))
        }
        Some(other) => Err(other.to_string()),
    }
}

fn session_create(shared: &Arc<Shared>, req: &Req) -> Response {
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("Request decode failed: {e}"),
                );
            }
        }
    };
    let mut st = shared.lock();
    // A session is bound to a registered node: the agent's own unless the body names one.
    let node = body
        .get("Node")
        .and_then(Value::as_str)
        .unwrap_or(&req.node)
        .to_string();
    if node != st.node && !st.other_nodes.contains(&node) {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Missing node registration for {node:?}"),
        );
    }
    let behavior = body
        .get("Behavior")
        .and_then(Value::as_str)
        .unwrap_or("release")
        .to_string();
    let behavior = if behavior.is_empty() {
        "release".to_string()
    } else {
        behavior
    };
    if behavior != "release" && behavior != "delete" {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Invalid Behavior setting '{behavior}'"),
        );
    }
    let ttl = match body.get("TTL") {
        Some(Value::String(s)) if !s.is_empty() => match parse_duration(s) {
            Some(d) => d,
            None => {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Session TTL '{s}' invalid: time: invalid duration {s:?}"),
                );
            }
        },
        _ => Duration::ZERO,
    };
    if !ttl.is_zero() && (ttl < Duration::from_secs(10) || ttl > Duration::from_secs(86400)) {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "Invalid Session TTL '{}', must be between [10s=24h0m0s]",
                ttl.as_nanos()
            ),
        );
    }
    let lock_delay = match duration_field(body.get("LockDelay")) {
        Ok(d) => d.unwrap_or(Duration::from_secs(15)),
        Err(s) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: invalid LockDelay {s}"),
            );
        }
    };
    let node_checks: Vec<String> = match body.get("NodeChecks").or(body.get("Checks")) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => vec!["serfHealth".to_string()],
    };
    let id = uuid::Uuid::new_v4().to_string();
    st.index += 1;
    let at = st.index;
    st.session_index = at;
    let deadline = (!ttl.is_zero()).then(|| Instant::now() + st.scaled(ttl * 2));
    let session = Session {
        id: id.clone(),
        name: body
            .get("Name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        node,
        lock_delay,
        behavior,
        ttl,
        node_checks,
        create_index: at,
        modify_index: at,
        deadline,
    };
    st.sessions.insert(id.clone(), session);
    drop(st);
    shared.notify();
    ok_json(&json!({ "ID": id }))
}

fn session_renew(shared: &Arc<Shared>, id: &str) -> Response {
    let mut st = shared.lock();
    let scale = st.time_scale;
    let Some(s) = st.sessions.get_mut(id) else {
        shared
            .renew_misses
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        return text(
            StatusCode::NOT_FOUND,
            format!("Session id '{id}' not found"),
        );
    };
    if !s.ttl.is_zero() {
        s.deadline = Some(Instant::now() + (s.ttl * 2).mul_f64(scale));
    }
    let s = s.clone();
    ok_json(&json!([st.session_json(&s)]))
}
