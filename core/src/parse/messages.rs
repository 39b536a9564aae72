//! Wording of errors: the parser's messages without its positions, paths as users write them,
//! and "did you mean" suggestions for misspelt field and variant names.

/// 1-based line and column of a parser error.
pub(super) fn location(e: &yaml_serde::Error) -> Option<(usize, usize)> {
    e.location()
        .map(|l| (l.line(), l.column()))
        .filter(|&(l, _)| l > 0)
}

/// Removes the parser's `at line L column C` (the error already carries it) and turns the
/// position of a context (`while parsing a block mapping at line 3 column 1`) into `started at
/// line 3`.
pub(super) fn strip_positions(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    let mut first = true;
    while let Some(i) = rest.find(" at line ") {
        let after = &rest[i + " at line ".len()..];
        let n_len = after.bytes().take_while(u8::is_ascii_digit).count();
        let col = &after[n_len..];
        if n_len == 0 || !col.starts_with(" column ") {
            out.push_str(&rest[..i + 1]);
            rest = &rest[i + 1..];
            continue;
        }
        let c_len = col[" column ".len()..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        out.push_str(&rest[..i]);
        if !first {
            out.push_str(&format!(" started at line {}", &after[..n_len]));
        }
        first = false;
        rest = &col[" column ".len() + c_len..];
    }
    out.push_str(rest);
    out
}

/// Splits `spec.restart: invalid duration ...` into the path and the message.
pub(super) fn split_error_path(msg: &str) -> (Option<String>, String) {
    if let Some((p, body)) = msg.split_once(": ")
        && !p.is_empty()
        && !p.contains([' ', '`', '"'])
    {
        return (Some(p.to_string()), body.to_string());
    }
    (None, msg.to_string())
}

/// A path as shown to users: the parser's `.[2].spec` loses the root dot and the index of the
/// top-level list (the line already tells which element it is).
pub(super) fn display_path(p: &str) -> String {
    let p = p.strip_prefix('.').unwrap_or(p);
    if let Some(rest) = p.strip_prefix('[')
        && let Some((idx, tail)) = rest.split_once(']')
        && idx.bytes().all(|b| b.is_ascii_digit())
    {
        return tail.strip_prefix('.').unwrap_or(tail).to_string();
    }
    p.to_string()
}

/// The string literal `"..."` at the start of `s` (as printed by `{:?}`).
pub(super) fn leading_string_literal(s: &str) -> Option<String> {
    if !s.starts_with('"') {
        return None;
    }
    serde_json::Deserializer::from_str(s)
        .into_iter::<String>()
        .next()?
        .ok()
}

/// Adds `(did you mean `x`?)` to an unknown field or variant error when a listed name is close.
pub(super) fn with_suggestion(body: &str) -> String {
    for kind in ["unknown field `", "unknown variant `"] {
        let Some(rest) = body.strip_prefix(kind) else {
            continue;
        };
        let Some((name, tail)) = rest.split_once('`') else {
            continue;
        };
        let Some(list) = tail.strip_prefix(", expected ") else {
            continue;
        };
        let candidates: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
        if let Some(best) = suggest(name, &candidates) {
            return format!("{kind}{name}` (did you mean `{best}`?), expected {list}");
        }
    }
    body.to_string()
}

/// The candidate closest to `name`: same letters ignoring case, `_` and `-`
/// (`stop_grace_period` for `stopGracePeriod`), or within a small edit distance.
fn suggest<'c>(name: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let norm = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let n = norm(name);
    if let Some(c) = candidates.iter().find(|c| norm(c) == n) {
        return Some(c);
    }
    let limit = (name.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(&n, &norm(c)), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_stripped() {
        assert_eq!(strip_positions("spec: bad at line 3 column 4"), "spec: bad");
        assert_eq!(
            strip_positions(
                "did not find expected key at line 9 column 3, while parsing a block mapping at line 5 column 3"
            ),
            "did not find expected key, while parsing a block mapping started at line 5"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("replica", &["mode", "replicas", "runtime"]),
            Some("replicas")
        );
        assert_eq!(
            suggest("stop_grace_period", &["stopSignal", "stopGracePeriod"]),
            Some("stopGracePeriod")
        );
        assert_eq!(suggest("zzz", &["mode", "replicas"]), None);
        assert_eq!(
            with_suggestion("unknown variant `gloabl`, expected `replicated` or `global`"),
            "unknown variant `gloabl` (did you mean `global`?), expected `replicated` or `global`"
        );
    }

    #[test]
    fn paths_for_display() {
        assert_eq!(display_path(".[2].spec.ports[0]"), "spec.ports[0]");
        assert_eq!(display_path("spec"), "spec");
        assert_eq!(display_path("."), "");
        assert_eq!(
            split_error_path("spec.restart: invalid duration \"5 sec\": x"),
            (
                Some("spec.restart".to_string()),
                "invalid duration \"5 sec\": x".to_string()
            )
        );
        assert_eq!(split_error_path("invalid type: unit value").0, None);
    }
}
