//! Agent, catalog and health endpoints of the fake: service registration with checks, TTL
//! check updates, and the catalog and health reads (blocking on the catalog index).

// Handlers bail out early with ready-made responses; boxing them would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::Shared;
use super::http::{Req, Route, blocking, ok_json, parse_duration, reply, text};
use super::state::{Check, Service, State};

/// Which agent, catalog or health endpoint a request is for.
pub(crate) enum AgentRoute {
    Register,
    Deregister(String),
    Services,
    Checks,
    CheckStatus(&'static str, String),
    CheckUpdate(String),
    CatalogServices,
    CatalogService(String),
    HealthService(String),
    Leader,
}

fn decode(s: &str) -> String {
    // Service and check IDs used in tests are plain; decode the common escapes.
    s.replace("%3A", ":")
        .replace("%3a", ":")
        .replace("%20", " ")
        .replace("%2F", "/")
        .replace("%2f", "/")
}

/// Routes `/v1/agent/...`, `/v1/catalog/...`, `/v1/health/...` and `/v1/status/leader`.
pub(crate) fn route(path: &str) -> Option<(&'static [Method], Route)> {
    const GET: &[Method] = &[Method::GET];
    const PUT: &[Method] = &[Method::PUT];
    let r = |m: &'static [Method], a: AgentRoute| Some((m, Route::Agent(a)));
    if path == "/v1/agent/service/register" {
        return r(PUT, AgentRoute::Register);
    }
    if let Some(id) = path.strip_prefix("/v1/agent/service/deregister/") {
        return r(PUT, AgentRoute::Deregister(decode(id)));
    }
    if path == "/v1/agent/services" {
        return r(GET, AgentRoute::Services);
    }
    if path == "/v1/agent/checks" {
        return r(GET, AgentRoute::Checks);
    }
    for (verb, status) in [
        ("pass", "passing"),
        ("warn", "warning"),
        ("fail", "critical"),
    ] {
        if let Some(id) = path.strip_prefix(&format!("/v1/agent/check/{verb}/")) {
            return r(PUT, AgentRoute::CheckStatus(status, decode(id)));
        }
    }
    if let Some(id) = path.strip_prefix("/v1/agent/check/update/") {
        return r(PUT, AgentRoute::CheckUpdate(decode(id)));
    }
    if path == "/v1/catalog/services" {
        return r(GET, AgentRoute::CatalogServices);
    }
    if let Some(name) = path.strip_prefix("/v1/catalog/service/") {
        return r(GET, AgentRoute::CatalogService(decode(name)));
    }
    if let Some(name) = path.strip_prefix("/v1/health/service/") {
        return r(GET, AgentRoute::HealthService(decode(name)));
    }
    if path == "/v1/status/leader" {
        return r(GET, AgentRoute::Leader);
    }
    None
}

/// Handles an agent, catalog or health request.
pub(crate) async fn handle(shared: &Arc<Shared>, req: &Req, route: AgentRoute) -> Response {
    match route {
        AgentRoute::Register => register(shared, req),
        AgentRoute::Deregister(id) => {
            let existed = {
                let mut st = shared.lock();
                let existed = st.remove_service(&id);
                if existed {
                    st.bump_catalog();
                }
                existed
            };
            if !existed {
                return text(
                    StatusCode::NOT_FOUND,
                    format!(
                        "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
                    ),
                );
            }
            shared.notify();
            reply(StatusCode::OK, None, Vec::new())
        }
        AgentRoute::Services => {
            let st = shared.lock();
            let map: serde_json::Map<String, Value> = st
                .services
                .values()
                .map(|s| (s.id.clone(), service_json(s)))
                .collect();
            ok_json(&Value::Object(map))
        }
        AgentRoute::Checks => {
            let st = shared.lock();
            let map: serde_json::Map<String, Value> = st
                .checks
                .values()
                .map(|c| (c.id.clone(), check_json(&st, c)))
                .collect();
            ok_json(&Value::Object(map))
        }
        AgentRoute::CheckStatus(status, id) => {
            let note = req.param("note").unwrap_or("").to_string();
            set_ttl_status(shared, &id, status, note)
        }
        AgentRoute::CheckUpdate(id) => {
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(json!({}));
            let status = body
                .get("Status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let status = match status.as_str() {
                "passing" => "passing",
                "warning" => "warning",
                "critical" => "critical",
                _ => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("Invalid check status: '{status}'"),
                    );
                }
            };
            let output = body
                .get("Output")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            set_ttl_status(shared, &id, status, output)
        }
        AgentRoute::CatalogServices => {
            blocking(shared, req, |st| {
                let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
                map.insert("consul".into(), Vec::new());
                for s in st.services.values() {
                    let tags = map.entry(s.name.clone()).or_default();
                    for t in &s.tags {
                        if !tags.contains(t) {
                            tags.push(t.clone());
                        }
                    }
                }
                (ok_json(&json!(map)), st.catalog_index)
            })
            .await
        }
        AgentRoute::CatalogService(name) => {
            if name.is_empty() {
                return text(StatusCode::BAD_REQUEST, "Missing service name");
            }
            let tag = req.param("tag").map(str::to_string);
            blocking(shared, req, |st| {
                let list: Vec<Value> = instances(st, &name, tag.as_deref())
                    .map(|s| {
                        json!({
                            "ID": st.node_id, "Node": st.node, "Address": "127.0.0.1", "Datacenter": "dc1",
                            "TaggedAddresses": {}, "NodeMeta": {}, "ServiceKind": "", "ServiceID": s.id,
                            "ServiceName": s.name, "ServiceTags": s.tags, "ServiceAddress": s.address,
                            "ServiceTaggedAddresses": {}, "ServiceWeights": {"Passing": 1, "Warning": 1},
                            "ServiceMeta": s.meta, "ServicePort": s.port, "ServiceEnableTagOverride": false,
                            "CreateIndex": s.create_index, "ModifyIndex": s.modify_index,
                        })
                    })
                    .collect();
                (ok_json(&Value::Array(list)), st.catalog_index)
            })
            .await
        }
        AgentRoute::HealthService(name) => {
            if name.is_empty() {
                return text(StatusCode::BAD_REQUEST, "Missing service name");
            }
            let passing = match req.param("passing") {
                None | Some("false") => false,
                Some("") | Some("true") => true,
                Some(_) => return text(StatusCode::BAD_REQUEST, "Invalid value for ?passing"),
            };
            let tag = req.param("tag").map(str::to_string);
            blocking(shared, req, |st| {
                let list: Vec<Value> = instances(st, &name, tag.as_deref())
                    .filter_map(|s| {
                        let mut checks = vec![serf_health(st)];
                        checks.extend(st.checks.values().filter(|c| c.service_id == s.id).map(|c| check_json(st, c)));
                        if passing && checks.iter().any(|c| c["Status"] != "passing") {
                            return None;
                        }
                        Some(json!({
                            "Node": {"ID": st.node_id, "Node": st.node, "Address": "127.0.0.1", "Datacenter": "dc1",
                                     "TaggedAddresses": {}, "Meta": {}, "CreateIndex": 5, "ModifyIndex": 5},
                            "Service": service_json(s),
                            "Checks": checks,
                        }))
                    })
                    .collect();
                (ok_json(&Value::Array(list)), st.catalog_index)
            })
            .await
        }
        AgentRoute::Leader => ok_json(&json!("127.0.0.1:8300")),
    }
}

fn instances<'a>(
    st: &'a State,
    name: &'a str,
    tag: Option<&'a str>,
) -> impl Iterator<Item = &'a Service> {
    st.services
        .values()
        .filter(move |s| s.name == name && tag.is_none_or(|t| s.tags.iter().any(|x| x == t)))
}

fn serf_health(st: &State) -> Value {
    json!({
        "Node": st.node, "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
        "Notes": "", "Output": "Agent alive and reachable", "ServiceID": "", "ServiceName": "",
        "ServiceTags": [], "Type": "", "CreateIndex": 5, "ModifyIndex": 5,
    })
}

fn service_json(s: &Service) -> Value {
    json!({
        "ID": s.id, "Service": s.name, "Tags": s.tags, "Meta": s.meta, "Port": s.port,
        "Address": s.address, "TaggedAddresses": {}, "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": false, "Datacenter": "dc1",
    })
}

fn check_json(st: &State, c: &Check) -> Value {
    let tags = st
        .services
        .get(&c.service_id)
        .map(|s| s.tags.clone())
        .unwrap_or_default();
    json!({
        "Node": st.node, "CheckID": c.id, "Name": c.name, "Status": c.status, "Notes": c.notes,
        "Output": c.output, "ServiceID": c.service_id, "ServiceName": c.service_name,
        "ServiceTags": tags, "Type": c.kind, "Definition": c.definition,
    })
}

fn set_ttl_status(shared: &Arc<Shared>, id: &str, status: &str, output: String) -> Response {
    {
        let mut st = shared.lock();
        let scale = st.time_scale;
        let Some(c) = st.checks.get_mut(id) else {
            return text(
                StatusCode::NOT_FOUND,
                format!(
                    "Unknown check ID {id:?}. Ensure that the check ID is passed, not the check name."
                ),
            );
        };
        let Some(ttl) = c.ttl else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("CheckID {id:?} does not have associated TTL"),
            );
        };
        let now = Instant::now();
        if c.status != status {
            c.critical_since = (status == "critical").then_some(now);
        }
        c.status = status.to_string();
        c.output = output;
        c.ttl_deadline = Some(now + ttl.mul_f64(scale));
        st.bump_catalog();
    }
    shared.notify();
    reply(StatusCode::OK, None, Vec::new())
}

/// Reads a field in CamelCase or snake_case.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel)
        .or_else(|| v.get(snake))
        .filter(|x| !x.is_null())
}

fn str_field(v: &Value, camel: &str, snake: &str) -> String {
    field(v, camel, snake)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn dur_field(v: &Value, camel: &str, snake: &str) -> Result<Option<Duration>, String> {
    match field(v, camel, snake) {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => parse_duration(s)
            .map(Some)
            .ok_or_else(|| format!("invalid duration {s:?}")),
        Some(Value::Number(n)) => Ok(Some(Duration::from_nanos(n.as_u64().unwrap_or(0)))),
        Some(other) => Err(format!("invalid duration {other}")),
    }
}

/// Consul's service meta rules (`ValidateServiceMetadata` and `validateMetaPair` in
/// `agent/structs/structs.go`), with its messages.
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    if meta.len() > 64 {
        return Err("Node metadata cannot contain more than 64 key/value pairs".into());
    }
    for (key, value) in meta {
        let problem = if key.is_empty() {
            Some("Key cannot be blank".to_string())
        } else if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Some("Key contains invalid characters".into())
        } else if key.len() > 128 {
            Some("Key is too long (limit: 128 characters)".into())
        } else if key.starts_with("consul-") {
            Some("Key prefix 'consul-' is reserved for internal use".into())
        } else if value.len() > 512 {
            Some("Value is too long (limit: 512 characters)".into())
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(format!(
                "Couldn't load metadata pair ('{key}', '{value}'): {p}"
            ));
        }
    }
    Ok(())
}

fn register(shared: &Arc<Shared>, req: &Req) -> Response {
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Request decode failed: {e}"),
            );
        }
    };
    let name = str_field(&body, "Name", "name");
    if name.is_empty() {
        return text(StatusCode::BAD_REQUEST, "Missing service name");
    }
    let id = Some(str_field(&body, "ID", "id"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| name.clone());
    let address = str_field(&body, "Address", "address");
    if address == "0.0.0.0" || address == "::" || address == "[::]" {
        return text(StatusCode::BAD_REQUEST, "Invalid service address");
    }
    let tags: Vec<String> = field(&body, "Tags", "tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let meta: BTreeMap<String, String> = field(&body, "Meta", "meta")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    if let Err(e) = validate_meta(&meta) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("Invalid Service Meta: {e}"),
        );
    }
    let port = field(&body, "Port", "port")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut defs: Vec<Value> = Vec::new();
    if let Some(c) = field(&body, "Check", "check") {
        defs.push(c.clone());
    }
    if let Some(Value::Array(cs)) = field(&body, "Checks", "checks") {
        defs.extend(cs.iter().cloned());
    }
    let n = defs.len();
    let mut checks = Vec::new();
    for (i, def) in defs.iter().enumerate() {
        let check_id = Some(str_field(def, "CheckID", "check_id"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                if n == 1 {
                    format!("service:{id}")
                } else {
                    format!("service:{id}:{}", i + 1)
                }
            });
        let parse = |c: &str, s: &str| {
            dur_field(def, c, s)
                .map_err(|e| text(StatusCode::BAD_REQUEST, format!("Invalid check: {e}")))
        };
        let (ttl, interval, dcsa, timeout) = match (
            parse("TTL", "ttl"),
            parse("Interval", "interval"),
            parse(
                "DeregisterCriticalServiceAfter",
                "deregister_critical_service_after",
            ),
            parse("Timeout", "timeout"),
        ) {
            (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
            (Err(r), _, _, _) | (_, Err(r), _, _) | (_, _, Err(r), _) | (_, _, _, Err(r)) => {
                return r;
            }
        };
        let http = str_field(def, "HTTP", "http");
        let tcp = str_field(def, "TCP", "tcp");
        let kind = if !http.is_empty() {
            "http"
        } else if !tcp.is_empty() {
            "tcp"
        } else {
            "ttl"
        };
        if ttl.is_some() && interval.is_some() {
            return text(
                StatusCode::BAD_REQUEST,
                "Invalid check: Interval and TTL cannot both be specified",
            );
        }
        if kind != "ttl" && interval.is_none_or(|d| d.is_zero()) {
            return text(
                StatusCode::BAD_REQUEST,
                "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, or TCP checks",
            );
        }
        if kind == "ttl" && ttl.is_none_or(|d| d.is_zero()) {
            return text(
                StatusCode::BAD_REQUEST,
                "Invalid check: TTL must be > 0 for TTL checks",
            );
        }
        let status = str_field(def, "Status", "status");
        if !status.is_empty() && !["passing", "warning", "critical"].contains(&status.as_str()) {
            return text(
                StatusCode::BAD_REQUEST,
                "Status for checks must 'passing', 'warning', 'critical'",
            );
        }
        let check_name = Some(str_field(def, "Name", "name"))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("Service '{name}' check"));
        checks.push(Check {
            id: check_id,
            name: check_name,
            status: if status.is_empty() { "critical".into() } else { status },
            output: String::new(),
            notes: str_field(def, "Notes", "notes"),
            service_id: id.clone(),
            service_name: name.clone(),
            kind: kind.to_string(),
            definition: json!({ "HTTP": http, "TCP": tcp, "Interval": interval.map(|d| format!("{}s", d.as_secs_f64())).unwrap_or_default() }),
            ttl,
            ttl_deadline: None,
            deregister_after: dcsa,
            critical_since: None,
            interval: if kind == "ttl" { None } else { interval },
            timeout,
            next_run: None,
        });
    }
    let replace_checks = matches!(
        req.param("replace-existing-checks"),
        Some("") | Some("true")
    );
    {
        let mut st = shared.lock();
        let now = Instant::now();
        let scale = st.time_scale;
        st.bump_catalog();
        let at = st.index;
        let create_index = st.services.get(&id).map(|s| s.create_index).unwrap_or(at);
        st.services.insert(
            id.clone(),
            Service {
                id: id.clone(),
                name: name.clone(),
                tags,
                address,
                port,
                meta,
                create_index,
                modify_index: at,
            },
        );
        let new_ids: Vec<String> = checks.iter().map(|c| c.id.clone()).collect();
        if replace_checks {
            st.checks
                .retain(|cid, c| c.service_id != id || new_ids.contains(cid));
        }
        for mut c in checks {
            if let Some(old) = st.checks.get(&c.id) {
                c.status = old.status.clone();
                c.output = old.output.clone();
                c.critical_since = old.critical_since;
                c.next_run = old.next_run;
            } else if c.status == "critical" {
                c.critical_since = Some(now);
            }
            if let Some(ttl) = c.ttl {
                c.ttl_deadline = Some(now + ttl.mul_f64(scale));
            }
            st.checks.insert(c.id.clone(), c);
        }
    }
    shared.notify();
    reply(StatusCode::OK, None, Vec::new())
}
