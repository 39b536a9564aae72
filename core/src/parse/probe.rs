//! Positions from the YAML parser itself. The parser stamps an error raised by a visitor with the
//! line and column of the node being visited, so to find where something is, a document is
//! walked with a serde visitor that fails on purpose when it gets there:
//!
//! - [`locate_segs`] finds a field by path (`spec.ports[1].published`);
//! - [`Terminal::ChildWithScalar`] finds which field of a mapping holds a rejected value;
//! - [`scan_document`] finds every duplicate key, which the typed deserializer reports (if at all)
//!   at the start of their mapping;
//! - [`ElementSeed`] deserializes one element of a top-level list on its own.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::de::{self, DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::messages::location;
use crate::manifest::Service;
use crate::validate::key_path;

// ---------------------------------------------------------------------------------------------
// Paths

/// One step of a manifest path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    /// A mapping key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// Parses `spec.ports[1].published`, `metadata.labels["a.b/c"]`, and the parser's `.[0].spec`.
pub(super) fn parse_path(p: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'.' => i += 1,
            b'[' if b.get(i + 1) == Some(&b'"') => {
                let mut it = serde_json::Deserializer::from_str(&p[i + 1..]).into_iter::<String>();
                let Some(Ok(key)) = it.next() else { break };
                segs.push(Seg::Key(key));
                i += 1 + it.byte_offset();
                if b.get(i) == Some(&b']') {
                    i += 1;
                }
            }
            b'[' => {
                let end = p[i..].find(']').map_or(b.len(), |e| i + e);
                match p[i + 1..end].parse() {
                    Ok(n) => segs.push(Seg::Index(n)),
                    Err(_) => segs.push(Seg::Key(p[i + 1..end].to_string())),
                }
                i = end + 1;
            }
            _ => {
                let end = p[i..].find(['.', '[']).map_or(b.len(), |e| i + e);
                segs.push(Seg::Key(p[i..end].to_string()));
                i = end;
            }
        }
    }
    segs
}

/// `parent` followed by `key`.
pub(super) fn join_segs(parent: &[Seg], key: &str) -> Vec<Seg> {
    let mut v = parent.to_vec();
    v.push(Seg::Key(key.to_string()));
    v
}

// ---------------------------------------------------------------------------------------------
// Probes

/// Marks a probe's own errors.
const MARK: char = '\u{1}';

fn marker(kind: &str, payload: &str) -> String {
    format!("{MARK}{kind}{MARK}{payload}{MARK}")
}

/// The `(kind, payload)` of a probe's own error; `None` for a real parse error.
fn read_marker(e: &yaml_serde::Error) -> Option<(String, String)> {
    let s = e.to_string();
    let a = s.find(MARK)?;
    let b = s.rfind(MARK)?;
    let (kind, payload) = s.get(a + 1..b)?.split_once(MARK)?;
    Some((kind.to_string(), payload.to_string()))
}

/// Implements the scalar `visit_*` methods of a visitor by handing the scalar's text to
/// `self.text(..)`, and a null to `self.null()`.
macro_rules! visit_scalars {
    () => {
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            self.text(&v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            self.text(&v.to_string())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.text(&v.to_string())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            self.text(&v.to_string())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            self.text(v)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            self.null()
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            self.null()
        }
    };
}

/// Implements [`DeserializeSeed`] as `deserialize_any` with the seed as its own visitor.
macro_rules! seed_is_visitor {
    ($t:ty) => {
        impl<'de> DeserializeSeed<'de> for $t {
            type Value = <Self as Visitor<'de>>::Value;
            fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
        }
    };
}

fn drain_map<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_seq<'de, A: SeqAccess<'de>>(seq: &mut A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Which position a probe reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    /// The value's.
    Value,
    /// The key's (the path must end with a key).
    Key,
}

/// What a probe does at the end of its path.
pub(super) enum Terminal<'a> {
    /// Fail there: the hit's `kind` is `scalar`, `null`, `map`, `seq` (or `key` for
    /// [`Want::Key`]); its `payload` the scalar's text.
    Hit,
    /// The node is a mapping: fail at its first entry whose value is this scalar; the hit's
    /// `payload` is that entry's key.
    ChildWithScalar(&'a str),
}

/// Where a probe stopped.
#[derive(Debug)]
pub(super) struct Hit {
    pub(super) kind: String,
    pub(super) payload: String,
    pub(super) line: usize,
    pub(super) column: usize,
}

/// Walks `doc` along `path`; `None` when the path is not there (or `doc` does not parse).
pub(super) fn run_probe(doc: &str, path: &[Seg], want: Want, term: &Terminal<'_>) -> Option<Hit> {
    let probe = Probe {
        rest: path,
        want,
        term,
    };
    let e = probe
        .deserialize(yaml_serde::Deserializer::from_str(doc))
        .err()?;
    let (kind, payload) = read_marker(&e)?;
    let (line, column) = location(&e)?;
    Some(Hit {
        kind,
        payload,
        line,
        column,
    })
}

/// Position of the key at the end of `path` (its first occurrence).
pub(super) fn locate_key(doc: &str, path: &[Seg]) -> Option<(usize, usize)> {
    run_probe(doc, path, Want::Key, &Terminal::Hit).map(|h| (h.line, h.column))
}

/// Position of the field at `path`: a scalar's value, otherwise (mapping, list, empty value) its
/// key; for a path that is not there, its closest present ancestor's.
pub(super) fn locate_segs(doc: &str, path: &[Seg]) -> Option<(usize, usize)> {
    for n in (0..=path.len()).rev() {
        let p = &path[..n];
        if let Some(hit) = run_probe(doc, p, Want::Value, &Terminal::Hit) {
            if hit.kind != "scalar"
                && matches!(p.last(), Some(Seg::Key(_)))
                && let Some(pos) = locate_key(doc, p)
            {
                return Some(pos);
            }
            return Some((hit.line, hit.column));
        }
    }
    None
}

#[derive(Clone, Copy)]
struct Probe<'a> {
    rest: &'a [Seg],
    want: Want,
    term: &'a Terminal<'a>,
}

seed_is_visitor!(Probe<'_>);

impl Probe<'_> {
    fn at_target(&self) -> bool {
        self.rest.is_empty() && matches!(self.term, Terminal::Hit)
    }
    fn text<E: de::Error>(self, text: &str) -> Result<(), E> {
        if self.at_target() {
            Err(E::custom(marker("scalar", text)))
        } else {
            Ok(())
        }
    }
    fn null<E: de::Error>(self) -> Result<(), E> {
        if self.at_target() {
            Err(E::custom(marker("null", "")))
        } else {
            Ok(())
        }
    }
    fn next(self) -> Self {
        Probe {
            rest: &self.rest[1..],
            ..self
        }
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }
    visit_scalars!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        match (self.rest.first(), self.term) {
            (None, Terminal::Hit) => Err(A::Error::custom(marker("map", ""))),
            (None, Terminal::ChildWithScalar(value)) => {
                while let Some((key, _)) = map.next_key_seed(KeyRead { target: None })? {
                    map.next_value_seed(ScalarEq { key: &key, value })?;
                }
                Ok(())
            }
            (Some(Seg::Key(k)), _) => {
                let fail = self.rest.len() == 1
                    && self.want == Want::Key
                    && matches!(self.term, Terminal::Hit);
                let target = Some((k.as_str(), fail));
                while let Some((_, matched)) = map.next_key_seed(KeyRead { target })? {
                    if matched {
                        map.next_value_seed(self.next())?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(())
            }
            (Some(Seg::Index(_)), _) => drain_map(&mut map),
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match (self.rest.first(), self.term) {
            (None, Terminal::Hit) => Err(A::Error::custom(marker("seq", ""))),
            (Some(Seg::Index(n)), _) => {
                for _ in 0..*n {
                    if seq.next_element::<IgnoredAny>()?.is_none() {
                        return Ok(());
                    }
                }
                if seq.next_element_seed(self.next())?.is_some() {
                    drain_seq(&mut seq)?;
                }
                Ok(())
            }
            _ => drain_seq(&mut seq),
        }
    }
}

/// Reads a mapping key as text; with a target `(name, fail)`, tells whether the key is that
/// name, and fails on it (for the key's position) when `fail`.
#[derive(Clone, Copy)]
struct KeyRead<'a> {
    target: Option<(&'a str, bool)>,
}

seed_is_visitor!(KeyRead<'_>);

impl KeyRead<'_> {
    fn text<E: de::Error>(self, k: &str) -> Result<(String, bool), E> {
        match self.target {
            Some((t, true)) if t == k => Err(E::custom(marker("key", k))),
            Some((t, false)) if t == k => Ok((k.to_string(), true)),
            _ => Ok((k.to_string(), false)),
        }
    }
    fn null<E: de::Error>(self) -> Result<(String, bool), E> {
        self.text("null")
    }
}

impl<'de> Visitor<'de> for KeyRead<'_> {
    type Value = (String, bool);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }
    visit_scalars!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        drain_map(&mut map).map(|()| (String::new(), false))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        drain_seq(&mut seq).map(|()| (String::new(), false))
    }
}

/// Fails on a scalar equal to `value`, with `key` as the payload.
struct ScalarEq<'a> {
    key: &'a str,
    value: &'a str,
}

seed_is_visitor!(ScalarEq<'_>);

impl ScalarEq<'_> {
    fn text<E: de::Error>(self, s: &str) -> Result<(), E> {
        if s == self.value {
            Err(E::custom(marker("found", self.key)))
        } else {
            Ok(())
        }
    }
    fn null<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

impl<'de> Visitor<'de> for ScalarEq<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }
    visit_scalars!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        drain_map(&mut map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        drain_seq(&mut seq)
    }
}

/// Deserializes element `.0` of a top-level list as a [`Service`], skipping the others, so each
/// element's errors are its own.
pub(super) struct ElementSeed(pub(super) usize);

impl<'de> DeserializeSeed<'de> for ElementSeed {
    type Value = Service;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Service, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ElementSeed {
    type Value = Service;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of services")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Service, A::Error> {
        for i in 0..self.0 {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(A::Error::invalid_length(i, &self));
            }
        }
        let service = seq
            .next_element::<Service>()?
            .ok_or_else(|| A::Error::invalid_length(self.0, &self))?;
        drain_seq(&mut seq)?;
        Ok(service)
    }
}

// ---------------------------------------------------------------------------------------------
// Duplicate keys and the shape of the root

/// What a document holds at its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Root {
    /// Nothing (an empty document, comments only).
    Null,
    /// A mapping: one service.
    Map,
    /// A list of `n` services.
    Seq(usize),
    /// A lone scalar.
    Scalar,
}

/// A key that appears twice in one mapping.
#[derive(Debug)]
pub(super) struct Duplicate {
    /// Path of the mapping (`spec.env`), empty at the root.
    pub(super) path: String,
    pub(super) key: String,
    pub(super) line: usize,
    pub(super) column: usize,
}

#[derive(Default)]
struct ScanState {
    /// Duplicates already reported: (mapping path, key, occurrence).
    reported: HashSet<(String, String, usize)>,
    root: Option<Root>,
}

/// Walks the whole document: its root shape, every duplicate key (one walk per duplicate, each
/// stopping at the first one not yet reported), and the syntax error if there is one.
pub(super) fn scan_document(
    doc: &str,
) -> (Option<Root>, Vec<Duplicate>, Option<yaml_serde::Error>) {
    const MAX_DUPLICATES: usize = 100;
    let state = RefCell::new(ScanState::default());
    let mut dups = Vec::new();
    while dups.len() < MAX_DUPLICATES {
        let walk = Scan {
            path: String::new(),
            depth: 0,
            state: &state,
        };
        let Err(e) = walk.deserialize(yaml_serde::Deserializer::from_str(doc)) else {
            break;
        };
        let dup = read_marker(&e)
            .filter(|(kind, _)| kind == "dup")
            .and_then(|(_, payload)| {
                serde_json::from_str::<(String, String, usize)>(&payload).ok()
            });
        let Some((path, key, n)) = dup else {
            return (None, dups, Some(e));
        };
        let (line, column) = location(&e).unwrap_or((0, 0));
        state
            .borrow_mut()
            .reported
            .insert((path.clone(), key.clone(), n));
        dups.push(Duplicate {
            path,
            key,
            line,
            column,
        });
    }
    let root = state.borrow().root;
    (root, dups, None)
}

struct Scan<'a> {
    path: String,
    depth: usize,
    state: &'a RefCell<ScanState>,
}

seed_is_visitor!(Scan<'_>);

impl Scan<'_> {
    fn root(&self, r: Root) {
        if self.depth == 0 {
            self.state.borrow_mut().root = Some(r);
        }
    }
    fn text<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.root(Root::Scalar);
        Ok(())
    }
    fn null<E: de::Error>(self) -> Result<(), E> {
        self.root(Root::Null);
        Ok(())
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }
    visit_scalars!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.root(Root::Map);
        let mut seen: HashMap<String, usize> = HashMap::new();
        while let Some(key) = map.next_key_seed(DupKey {
            path: &self.path,
            seen: &mut seen,
            state: self.state,
        })? {
            let path = key_path(&self.path, &key);
            map.next_value_seed(Scan {
                path,
                depth: self.depth + 1,
                state: self.state,
            })?;
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let path = format!("{}[{i}]", self.path);
            if seq
                .next_element_seed(Scan {
                    path,
                    depth: self.depth + 1,
                    state: self.state,
                })?
                .is_none()
            {
                break;
            }
            i += 1;
        }
        self.root(Root::Seq(i));
        Ok(())
    }
}

/// Reads a key and fails on its second (third, ...) occurrence in the mapping, unless that one
/// was already reported.
struct DupKey<'a> {
    path: &'a str,
    seen: &'a mut HashMap<String, usize>,
    state: &'a RefCell<ScanState>,
}

seed_is_visitor!(DupKey<'_>);

impl DupKey<'_> {
    fn text<E: de::Error>(self, k: &str) -> Result<String, E> {
        let n = self.seen.entry(k.to_string()).or_insert(0);
        *n += 1;
        let id = (self.path.to_string(), k.to_string(), *n);
        if *n > 1 && !self.state.borrow().reported.contains(&id) {
            let payload = serde_json::to_string(&id).unwrap_or_default();
            return Err(E::custom(marker("dup", &payload)));
        }
        Ok(k.to_string())
    }
    fn null<E: de::Error>(self) -> Result<String, E> {
        self.text("null")
    }
}

impl<'de> Visitor<'de> for DupKey<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping key")
    }
    visit_scalars!();
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        drain_map(&mut map)?;
        Ok(format!("<complex key {}>", self.seen.len()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<String, A::Error> {
        drain_seq(&mut seq)?;
        Ok(format!("<complex key {}>", self.seen.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locate(doc: &str, path: &str) -> Option<(usize, usize)> {
        locate_segs(doc, &parse_path(path))
    }

    #[test]
    fn paths_parse() {
        let k = |s: &str| Seg::Key(s.to_string());
        assert_eq!(
            parse_path("spec.ports[1].published"),
            vec![k("spec"), k("ports"), Seg::Index(1), k("published")]
        );
        assert_eq!(
            parse_path("metadata.labels[\"com.example/team\"]"),
            vec![k("metadata"), k("labels"), k("com.example/team")]
        );
        assert_eq!(
            parse_path("spec.env[\"\"].x"),
            vec![k("spec"), k("env"), k(""), k("x")]
        );
        assert_eq!(parse_path(".[2].spec"), vec![Seg::Index(2), k("spec")]);
        assert_eq!(parse_path("."), vec![]);
    }

    #[test]
    fn locate_finds_fields() {
        let doc = "a:\n  b:\n  - x\n  - y: 1\n    z: [1, 2]\nc: \"q\"\nd:\n";
        assert_eq!(locate(doc, "a.b[0]"), Some((3, 5)));
        assert_eq!(locate(doc, "a.b[1].y"), Some((4, 8)));
        assert_eq!(locate(doc, "a.b[1].z"), Some((5, 5)));
        assert_eq!(locate(doc, "a.b[1].z[1]"), Some((5, 12)));
        assert_eq!(locate(doc, "a.b"), Some((2, 3)));
        assert_eq!(locate(doc, "c"), Some((6, 4)));
        assert_eq!(
            locate(doc, "d"),
            Some((7, 1)),
            "an empty value points at its key"
        );
        assert_eq!(locate(doc, "a.missing"), Some((1, 1)));
        assert_eq!(locate(doc, "a.b[7]"), Some((2, 3)));
    }

    #[test]
    fn the_scan_finds_every_duplicate_and_the_root() {
        let (root, dups, err) = scan_document("a: 1\nb: {x: 1, x: 2}\na: 3\nl: [{k: 1, k: 2}]\n");
        assert_eq!(root, Some(Root::Map));
        assert!(err.is_none());
        let found: Vec<(&str, &str, usize, usize)> = dups
            .iter()
            .map(|d| (d.path.as_str(), d.key.as_str(), d.line, d.column))
            .collect();
        assert_eq!(
            found,
            vec![("b", "x", 2, 11), ("", "a", 3, 1), ("l[0]", "k", 4, 12)]
        );

        assert_eq!(scan_document("- 1\n- 2\n").0, Some(Root::Seq(2)));
        assert_eq!(scan_document("# nothing\n").0, Some(Root::Null));
        assert!(scan_document("a: [\n").2.is_some());
    }
}
