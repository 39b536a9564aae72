//! Request bodies as manifests (parsed by `shoal_core::parse`), putting a manifest into the
//! namespace an apply names, editing the replica count in place, and label selectors.

use std::collections::BTreeMap;

use shoal_core::{ManifestError, ParsedService};

/// Parses and validates every document of a request body with [`shoal_core::parse()`] (YAML
/// documents, a JSON object, or a list of services; each service keeps its own text, which is
/// what gets stored). A body without any service is an error.
pub fn parse_body(body: &str, source: &str) -> Result<Vec<ParsedService>, Vec<ManifestError>> {
    let services = shoal_core::parse(body, source)?;
    if services.is_empty() {
        return Err(vec![ManifestError {
            source: source.to_string(),
            line: 0,
            column: 0,
            message: "the body holds no manifest".to_string(),
            snippet: None,
        }]);
    }
    Ok(services)
}

/// Why a document cannot go into the namespace an apply names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{file}:{line}: service {name} names namespace {found:?}, not {wanted:?} (-n): drop one of them"
)]
pub struct NamespaceMismatch {
    /// Where the document came from.
    pub file: String,
    /// Its first line.
    pub line: usize,
    /// The service name.
    pub name: String,
    /// The namespace the document names.
    pub found: String,
    /// The namespace asked for.
    pub wanted: String,
}

/// Puts a document into namespace `ns`, as `kubectl apply -n` does: a document that names no
/// namespace gets `metadata.namespace: ns` written into its text (so the stored text says where
/// it lives); one that names `ns` is kept; one that names another namespace is refused.
pub fn place_in_namespace(
    doc: &mut ParsedService,
    ns: &str,
    source: &str,
) -> Result<(), NamespaceMismatch> {
    let named = yaml_serde::from_str::<serde_json::Value>(&doc.text)
        .ok()
        .and_then(|v| {
            v.get("metadata")?
                .get("namespace")?
                .as_str()
                .map(str::to_owned)
        });
    let found = doc.service.metadata.namespace.clone();
    if named.is_some() || found == ns {
        if found == ns {
            return Ok(());
        }
        return Err(NamespaceMismatch {
            file: source.to_string(),
            line: doc.line,
            name: doc.service.metadata.name.clone(),
            found,
            wanted: ns.to_string(),
        });
    }
    let text = with_namespace(&doc.text, ns);
    if let Ok(mut parsed) = shoal_core::parse(&text, source)
        && parsed.len() == 1
    {
        let mut p = parsed.remove(0);
        p.line = doc.line;
        p.text = text;
        *doc = p;
    }
    Ok(())
}

/// `text` with `metadata.namespace: ns` added: one line under a block `metadata:` (comments and
/// layout kept), else the document written again (JSON, flow-style metadata).
fn with_namespace(text: &str, ns: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    if let Some(i) = lines.iter().position(|l| {
        let l = l.trim_end();
        l == "metadata:" || (l.starts_with("metadata:") && l[9..].trim_start().starts_with('#'))
    }) {
        let indent = lines[i + 1..]
            .iter()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|l| l.len() - l.trim_start().len())
            .filter(|n| *n > 0)
            .unwrap_or(2);
        let quoted = serde_json::to_string(ns).unwrap_or_default();
        let mut out: String = lines[..=i].concat();
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{}namespace: {quoted}\n", " ".repeat(indent)));
        out.push_str(&lines[i + 1..].concat());
        return out;
    }
    let json = text.trim_start().starts_with('{');
    let Ok(mut v) = yaml_serde::from_str::<serde_json::Value>(text) else {
        return text.to_string();
    };
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.insert("namespace".into(), serde_json::Value::String(ns.into()));
    }
    let written = if json {
        serde_json::to_string_pretty(&v).map(|s| s + "\n").ok()
    } else {
        yaml_serde::to_string(&v).ok()
    };
    written.unwrap_or_else(|| text.to_string())
}

/// Why a label selector is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    /// The selector given.
    pub selector: String,
    /// What is wrong.
    pub reason: String,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
}

/// A label selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated (all must hold).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses a selector; the empty string matches everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let err = |reason: &str| SelectorError {
            selector: s.to_string(),
            reason: reason.to_string(),
        };
        let mut requirements = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(k.trim().to_string())
            } else {
                Requirement::Exists(part.to_string())
            };
            let key = match &req {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::Exists(k)
                | Requirement::NotExists(k) => k,
            };
            if key.is_empty() || key.contains(char::is_whitespace) {
                return Err(err(&format!("{part:?} has no valid label key")));
            }
            requirements.push(req);
        }
        Ok(Selector { requirements })
    }

    /// Whether the selector has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }
}

/// Sets `spec.replicas` in YAML text, keeping every other byte (comments included). `None`
/// when the text is not block-style YAML this can edit safely.
pub fn set_replicas_in_text(text: &str, replicas: u64) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let spec_idx = lines.iter().position(|l| {
        l.trim_end() == "spec:" || l.starts_with("spec:") && l[5..].trim_start().starts_with('#')
    })?;
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    let mut child_indent = None;
    let mut end = lines.len();
    for (i, l) in lines.iter().enumerate().skip(spec_idx + 1) {
        let t = l.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let ind = indent_of(l);
        if ind == 0 {
            end = i;
            break;
        }
        if child_indent.is_none() {
            child_indent = Some(ind);
        }
        if Some(ind) == child_indent
            && let Some(rest) = l.trim_start().strip_prefix("replicas:")
        {
            let (value, comment) = match rest.find(" #") {
                Some(p) => (&rest[..p], &rest[p..]),
                None => (rest, ""),
            };
            if value.trim().is_empty() {
                return None;
            }
            let nl = if l.ends_with('\n') { "\n" } else { "" };
            let new = format!(
                "{}replicas: {replicas}{}{nl}",
                " ".repeat(ind),
                comment.trim_end()
            );
            let mut out: String = lines[..i].concat();
            out.push_str(&new);
            out.push_str(&lines[i + 1..].concat());
            return Some(out);
        }
    }
    let _ = end;
    let ind = child_indent?;
    let mut out: String = lines[..=spec_idx].concat();
    if !out.ends_with('\n') {
        return None;
    }
    out.push_str(&format!("{}replicas: {replicas}\n", " ".repeat(ind)));
    out.push_str(&lines[spec_idx + 1..].concat());
    Some(out)
}

/// The manifest text of a service scaled to `replicas`: `text` edited in place when it can be
/// (`true`: comments and formatting kept), else `service` re-serialized as YAML (`false`).
pub fn scaled_manifest(
    text: &str,
    service: &shoal_core::Service,
    replicas: u64,
) -> Result<(String, bool), String> {
    let edited = set_replicas_in_text(text, replicas).filter(|t| {
        shoal_core::parse(t, "edit")
            .is_ok_and(|v| v.len() == 1 && v[0].service.spec.replicas == Some(replicas))
    });
    if let Some(t) = edited {
        return Ok((t, true));
    }
    let mut svc = service.clone();
    svc.spec.replicas = Some(replicas);
    yaml_serde::to_string(&svc)
        .map(|t| (t, false))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_like_kubectl() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "web".to_string()),
            ("tier".to_string(), "front".to_string()),
        ]
        .into();
        assert!(
            Selector::parse("app=web,tier!=back")
                .unwrap()
                .matches(&labels)
        );
        assert!(
            !Selector::parse("app=web,tier!=front")
                .unwrap()
                .matches(&labels)
        );
        assert!(Selector::parse("app,!zone").unwrap().matches(&labels));
        assert!(Selector::parse("").unwrap().matches(&labels));
        assert!(Selector::parse("=x").is_err());
    }

    const WEB: &str = "apiVersion: shoal/v1\nkind: Service\nmetadata: # who\n    name: web\nspec:\n  image: nginx\n";

    #[test]
    fn each_element_of_a_list_keeps_its_own_text() {
        let body = "- apiVersion: shoal/v1\n  kind: Service\n  metadata: {name: a}\n  spec: {image: nginx}\n- apiVersion: shoal/v1\n  kind: Service\n  metadata: {name: b}\n  spec: {image: redis}\n";
        let docs = parse_body(body, "list.yaml").unwrap();
        assert_eq!(docs.len(), 2);
        assert!(docs[0].text.contains("name: a") && !docs[0].text.contains("name: b"));
        assert!(docs[1].text.contains("redis") && !docs[1].text.contains("nginx"));
        assert_eq!(docs[1].line, 5);
        let json = r#"[{"apiVersion":"shoal/v1","kind":"Service","metadata":{"name":"a"},"spec":{"image":"nginx"}},
 {"apiVersion":"shoal/v1","kind":"Service","metadata":{"name":"b"},"spec":{"image":"redis"}}]"#;
        let docs = parse_body(json, "list.json").unwrap();
        assert_eq!(docs.len(), 2);
        assert!(docs[1].text.contains("redis") && !docs[1].text.contains("nginx"));
        for d in &docs {
            let again = parse_body(&d.text, "again").unwrap();
            assert_eq!(again[0].service, d.service);
        }
    }

    #[test]
    fn a_namespace_is_written_into_documents_that_name_none() {
        let mut d = parse_body(WEB, "web.yaml").unwrap().remove(0);
        place_in_namespace(&mut d, "shop", "web.yaml").unwrap();
        assert_eq!(d.service.metadata.namespace, "shop");
        assert!(
            d.text
                .contains("metadata: # who\n    namespace: \"shop\"\n    name: web\n"),
            "{}",
            d.text
        );
        // Placing again changes nothing; another namespace is refused.
        let before = d.clone();
        place_in_namespace(&mut d, "shop", "web.yaml").unwrap();
        assert_eq!(d, before);
        let err = place_in_namespace(&mut d, "prod", "web.yaml").unwrap_err();
        assert!(
            err.to_string()
                .contains("names namespace \"shop\", not \"prod\""),
            "{err}"
        );
        // JSON and flow-style metadata are written again.
        let json = r#"{"apiVersion":"shoal/v1","kind":"Service","metadata":{"name":"a"},"spec":{"image":"nginx"}}"#;
        let mut d = parse_body(json, "a.json").unwrap().remove(0);
        place_in_namespace(&mut d, "shop", "a.json").unwrap();
        assert_eq!(d.service.id().to_string(), "shop/a");
        assert!(d.text.contains("\"namespace\": \"shop\""), "{}", d.text);
        let flow =
            "apiVersion: shoal/v1\nkind: Service\nmetadata: {name: a}\nspec: {image: nginx}\n";
        let mut d = parse_body(flow, "f.yaml").unwrap().remove(0);
        place_in_namespace(&mut d, "shop", "f.yaml").unwrap();
        assert_eq!(d.service.id().to_string(), "shop/a");
        // A document naming the default namespace explicitly is not moved.
        let explicit = WEB.replace("    name: web\n", "    name: web\n    namespace: default\n");
        let mut d = parse_body(&explicit, "e.yaml").unwrap().remove(0);
        assert!(place_in_namespace(&mut d, "shop", "e.yaml").is_err());
    }
}
