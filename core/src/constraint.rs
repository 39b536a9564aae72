//! Placement constraints: `node.labels.KEY == VALUE`, `node.hostname != h`, `node.id == x`,
//! `node.role == worker`, and spread preference attributes (`node.labels.zone`).

use std::collections::BTreeMap;
use std::fmt;

use crate::model::Node;

/// Why a constraint expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// No `==` or `!=` operator.
    #[error(
        "constraint {0:?} has no operator: expected `ATTRIBUTE == VALUE` or `ATTRIBUTE != VALUE`"
    )]
    NoOperator(String),
    /// The attribute is not one Shoal knows.
    #[error(
        "constraint {expr:?}: unknown attribute {attr:?} (expected node.labels.KEY, node.hostname, node.id or node.role)"
    )]
    UnknownAttribute {
        /// Whole expression.
        expr: String,
        /// Offending attribute.
        attr: String,
    },
    /// The value is empty.
    #[error("constraint {0:?} has an empty value")]
    EmptyValue(String),
    /// An operator other than `==` and `!=` (`===`, `!==`, `<=`...).
    #[error("constraint {0:?}: the operator must be exactly `==` or `!=`")]
    BadOperator(String),
    /// `node.role` compared with something other than a role.
    #[error("constraint {expr:?}: node.role is `manager` or `worker`, not {value:?}")]
    UnknownRole {
        /// Whole expression.
        expr: String,
        /// Offending value.
        value: String,
    },
    /// The value holds characters Swarm does not accept in one.
    #[error(
        "constraint {expr:?}: value {value:?} is invalid: a value is letters, digits, spaces and `- _ . : / * ( ) ? + [ ] \\ ^ $ |` (as in Swarm)"
    )]
    InvalidValue {
        /// Whole expression.
        expr: String,
        /// Offending value.
        value: String,
    },
}

/// Whether `c` may appear in a constraint value: Swarm's pattern
/// `^(?i)[a-z0-9:\-_\s\.\*\(\)\?\+\[\]\\\^\$\|\/]+$`.
fn value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c.is_whitespace() || ":-_.*()?+[]\\^$|/".contains(c)
}

/// The roles a node may have (`shoal agent --role`), as in Swarm.
pub const ROLES: [&str; 2] = ["manager", "worker"];

/// A node attribute a constraint or preference reads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attribute {
    /// `node.labels.KEY` (engine labels overlaid with operator labels).
    Label(String),
    /// `node.hostname`.
    Hostname,
    /// `node.id`.
    Id,
    /// `node.role`.
    Role,
}

impl Attribute {
    /// Parses `node.labels.KEY`, `node.hostname`, `node.id`, `node.role`.
    pub fn parse(s: &str) -> Option<Attribute> {
        let s = s.trim();
        match s {
            "node.hostname" => Some(Attribute::Hostname),
            "node.id" => Some(Attribute::Id),
            "node.role" => Some(Attribute::Role),
            _ => s
                .strip_prefix("node.labels.")
                .filter(|k| !k.is_empty() && !k.contains(char::is_whitespace))
                .map(|k| Attribute::Label(k.to_string())),
        }
    }

    /// The attribute's value on a node, if it has one.
    pub fn value<'a>(&self, view: &'a NodeView<'a>) -> Option<&'a str> {
        match self {
            Attribute::Label(k) => view.label(k),
            Attribute::Hostname => Some(view.hostname),
            Attribute::Id => Some(view.id),
            Attribute::Role => Some(view.role),
        }
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Attribute::Label(k) => write!(f, "node.labels.{k}"),
            Attribute::Hostname => f.write_str("node.hostname"),
            Attribute::Id => f.write_str("node.id"),
            Attribute::Role => f.write_str("node.role"),
        }
    }
}

/// The node facts constraints are evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    /// Node id.
    pub id: &'a str,
    /// Host name.
    pub hostname: &'a str,
    /// Role.
    pub role: &'a str,
    /// Labels the node's engine reports.
    pub labels: &'a BTreeMap<String, String>,
    /// Labels the operator set (`shoal node update --label-add`): they win over the
    /// engine's.
    pub overlay: &'a BTreeMap<String, String>,
}

impl<'a> NodeView<'a> {
    /// The effective value of label `key`: the operator's when set, else the engine's. Read
    /// in place, for every node of every placement, rather than merged into a new map.
    pub fn label(&self, key: &str) -> Option<&'a str> {
        self.overlay
            .get(key)
            .or_else(|| self.labels.get(key))
            .map(String::as_str)
    }
}

impl<'a> From<&'a Node> for NodeView<'a> {
    fn from(node: &'a Node) -> Self {
        NodeView {
            id: &node.info.id,
            hostname: &node.info.hostname,
            role: &node.info.role,
            labels: &node.info.labels,
            overlay: &node.config.labels,
        }
    }
}

/// A parsed constraint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Constraint {
    /// Attribute compared.
    pub attribute: Attribute,
    /// `true` for `==`, `false` for `!=`.
    pub equal: bool,
    /// Value compared with.
    pub value: String,
}

impl Constraint {
    /// Parses `ATTRIBUTE ==|!= VALUE`.
    pub fn parse(expr: &str) -> Result<Constraint, ConstraintError> {
        let (lhs, rhs, equal) = if let Some((l, r)) = expr.split_once("==") {
            (l, r, true)
        } else if let Some((l, r)) = expr.split_once("!=") {
            (l, r, false)
        } else {
            return Err(ConstraintError::NoOperator(expr.to_string()));
        };
        if lhs.trim_end().ends_with(['!', '=', '<', '>']) || rhs.trim_start().starts_with('=') {
            return Err(ConstraintError::BadOperator(expr.to_string()));
        }
        let attribute = Attribute::parse(lhs).ok_or_else(|| ConstraintError::UnknownAttribute {
            expr: expr.to_string(),
            attr: lhs.trim().to_string(),
        })?;
        let value = rhs.trim();
        if value.is_empty() {
            return Err(ConstraintError::EmptyValue(expr.to_string()));
        }
        if !value.chars().all(value_char) || value.contains("==") || value.contains("!=") {
            return Err(ConstraintError::InvalidValue {
                expr: expr.to_string(),
                value: value.to_string(),
            });
        }
        if attribute == Attribute::Role && !ROLES.contains(&value) {
            return Err(ConstraintError::UnknownRole {
                expr: expr.to_string(),
                value: value.to_string(),
            });
        }
        Ok(Constraint {
            attribute,
            equal,
            value: value.to_string(),
        })
    }

    /// Whether the node satisfies the constraint. A missing label never equals anything
    /// (and so always satisfies `!=`), as in Swarm.
    pub fn matches(&self, node: &NodeView<'_>) -> bool {
        let actual = self.attribute.value(node);
        (actual == Some(self.value.as_str())) == self.equal
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}{}",
            self.attribute,
            if self.equal { "==" } else { "!=" },
            self.value
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node `n1` on host `core-01`, a worker, with these engine and operator labels.
    fn view<'a>(
        labels: &'a BTreeMap<String, String>,
        overlay: &'a BTreeMap<String, String>,
    ) -> NodeView<'a> {
        NodeView {
            id: "n1",
            hostname: "core-01",
            role: "worker",
            labels,
            overlay,
        }
    }

    #[test]
    fn constraints_parse_and_match() {
        let labels: BTreeMap<String, String> = [("storage".to_string(), "ssd".to_string())].into();
        let none = BTreeMap::new();
        let n = view(&labels, &none);
        assert!(
            Constraint::parse("node.labels.storage == ssd")
                .unwrap()
                .matches(&n)
        );
        assert!(
            !Constraint::parse("node.labels.storage != ssd")
                .unwrap()
                .matches(&n)
        );
        assert!(
            Constraint::parse("node.hostname!=core-02")
                .unwrap()
                .matches(&n)
        );
        assert!(
            !Constraint::parse("node.labels.zone == a")
                .unwrap()
                .matches(&n)
        );
        assert!(
            Constraint::parse("node.labels.zone != a")
                .unwrap()
                .matches(&n)
        );
        assert_eq!(
            Constraint::parse("node.labels.storage==ssd")
                .unwrap()
                .to_string(),
            "node.labels.storage==ssd"
        );
        assert!(matches!(
            Constraint::parse("node.labels.storage = ssd"),
            Err(ConstraintError::NoOperator(_))
        ));
        assert!(matches!(
            Constraint::parse("node.color == red"),
            Err(ConstraintError::UnknownAttribute { .. })
        ));
        assert!(matches!(
            Constraint::parse("node.id =="),
            Err(ConstraintError::EmptyValue(_))
        ));
    }

    /// Values follow Swarm's rules; a mistyped operator is named as such, not taken into the
    /// value or the attribute.
    #[test]
    fn values_and_operators_are_checked_as_swarm_does() {
        for (expr, want) in [
            (
                "node.labels.storage === ssd",
                "operator must be exactly `==` or `!=`",
            ),
            (
                "node.labels.storage !== ssd",
                "operator must be exactly `==` or `!=`",
            ),
            ("node.labels.storage <= ssd", "no operator"),
            ("node.labels.zone == a,b", "value \"a,b\" is invalid"),
            ("node.labels.zone == 'a'", "value \"'a'\" is invalid"),
            ("node.labels.zone == a == b", "value \"a == b\" is invalid"),
            (
                "node.role == boss",
                "node.role is `manager` or `worker`, not \"boss\"",
            ),
        ] {
            let err = Constraint::parse(expr).unwrap_err().to_string();
            assert!(err.contains(want), "{expr}: {err}");
        }
        for ok in [
            "node.labels.zone == eu-west-1a",
            "node.labels.rack == r1.b_2",
            "node.hostname == host:8080/x",
            "node.role == manager",
            "node.role != worker",
        ] {
            assert!(Constraint::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn operator_labels_win_over_the_engines_and_both_are_read() {
        let engine: BTreeMap<String, String> = [
            ("zone".to_string(), "a".to_string()),
            ("disk".to_string(), "hdd".to_string()),
        ]
        .into();
        let operator: BTreeMap<String, String> = [("zone".to_string(), "b".to_string())].into();
        let n = view(&engine, &operator);
        let holds = |c: &str| Constraint::parse(c).unwrap().matches(&n);
        assert!(holds("node.labels.zone == b"), "the operator's value");
        assert!(
            !holds("node.labels.zone == a"),
            "the engine's value is overlaid"
        );
        assert!(
            holds("node.labels.disk == hdd"),
            "an engine label left alone"
        );
        assert!(!holds("node.labels.rack == r1"), "a label neither set");
    }
}
