//! Building the service status: counts, conditions, bounded events, and
//! the rule that a status which did not change keeps its `updatedAt` (so it is not rewritten).

use shoal_core::model::{Condition, Event, ServiceStatus, Timestamp};

use super::MAX_EVENTS;

/// Appends an event, dropping the oldest beyond [`MAX_EVENTS`].
pub(crate) fn push_event(
    st: &mut ServiceStatus,
    now: Timestamp,
    kind: &str,
    reason: &str,
    message: &str,
) {
    st.events.push(Event {
        time: now,
        kind: kind.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
    });
    if st.events.len() > MAX_EVENTS {
        let extra = st.events.len() - MAX_EVENTS;
        st.events.drain(..extra);
    }
}

/// Sets a condition; `lastTransition` moves only when `status` flips.
pub(crate) fn set_condition(
    st: &mut ServiceStatus,
    now: Timestamp,
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
) {
    match st.conditions.iter_mut().find(|c| c.kind == kind) {
        Some(c) => {
            if c.status != status {
                c.last_transition = now;
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message.to_string();
        }
        None => {
            st.conditions.push(Condition {
                kind: kind.to_string(),
                status,
                reason: reason.to_string(),
                message: message.to_string(),
                last_transition: now,
            });
            st.conditions.sort_by(|a, b| a.kind.cmp(&b.kind));
        }
    }
}

/// Stamps `updatedAt`: `now` when anything else changed, the previous stamp otherwise.
pub(crate) fn finish(
    mut st: ServiceStatus,
    previous: Option<&ServiceStatus>,
    now: Timestamp,
) -> ServiceStatus {
    match previous {
        Some(p) => {
            st.updated_at = p.updated_at;
            if &st != p {
                st.updated_at = now;
            }
        }
        None => st.updated_at = now,
    }
    st
}
