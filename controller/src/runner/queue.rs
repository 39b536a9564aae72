//! The work queue: service keys, de-duplicated and debounced, at most one reconcile per
//! service at a time, with per-service exponential backoff and jitter after errors
//! ([`Backoff::delay`] of the service's consecutive failures). Services due at the same time
//! are handed out in the order they were queued. Queued services are indexed by when they
//! are due, so handing the next one out costs a lookup, not a walk over everything queued
//! (a takeover queues every service in the store).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use shoal_core::manifest::ServiceRef;
use shoal_store::Backoff;
use tokio::sync::Notify;
use tokio::time::Instant;

/// When a queued service becomes due; equal times go in the order queued (`seq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Instant,
    seq: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Queued services and when they become due (never one being reconciled).
    due: BTreeMap<ServiceRef, Due>,
    /// The same services by when they become due ([`Due`]s are unique).
    order: BTreeMap<Due, ServiceRef>,
    /// Services queued so far (the next [`Due::seq`]).
    queued: u64,
    /// Services being reconciled now.
    running: BTreeSet<ServiceRef>,
    /// Services enqueued while running: re-queued when done, at the given time.
    again: BTreeMap<ServiceRef, Instant>,
    /// Consecutive failures per service.
    failures: BTreeMap<ServiceRef, u32>,
}

/// The queue.
#[derive(Debug)]
pub struct WorkQueue {
    state: Mutex<State>,
    notify: Notify,
    debounce: Duration,
    backoff: Backoff,
}

impl State {
    /// Queues `s` at `at`, unless it is already due earlier.
    fn schedule(&mut self, s: ServiceRef, at: Instant) {
        let due = Due {
            at,
            seq: self.queued,
        };
        self.queued += 1;
        match self.due.get_mut(&s) {
            Some(e) if e.at <= at => {}
            Some(e) => {
                self.order.remove(e);
                *e = due;
                self.order.insert(due, s);
            }
            None => {
                self.due.insert(s.clone(), due);
                self.order.insert(due, s);
            }
        }
    }

    /// Takes the service due first off the queue and marks it running, if it is due by
    /// `now`; else when the first one is due (`None`: nothing is queued).
    fn pop_due(&mut self, now: Instant) -> Result<ServiceRef, Option<Instant>> {
        match self.order.first_entry() {
            Some(first) if first.key().at <= now => {
                let s = first.remove();
                self.due.remove(&s);
                self.running.insert(s.clone());
                Ok(s)
            }
            Some(first) => Err(Some(first.key().at)),
            None => Err(None),
        }
    }
}

impl WorkQueue {
    /// A queue that waits `debounce` after a change before reconciling.
    pub fn new(debounce: Duration, backoff: Backoff) -> Self {
        WorkQueue {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            debounce,
            backoff,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a service after the debounce delay.
    pub fn add(&self, s: ServiceRef) {
        self.add_after(s, self.debounce);
    }

    /// Queues a service after `delay` (an earlier pending time wins).
    pub fn add_after(&self, s: ServiceRef, delay: Duration) {
        let at = Instant::now() + delay;
        let mut st = self.lock();
        if st.running.contains(&s) {
            let e = st.again.entry(s).or_insert(at);
            if at < *e {
                *e = at;
            }
        } else {
            st.schedule(s, at);
        }
        drop(st);
        self.notify.notify_one();
    }

    /// Waits for the next due service that is not being reconciled, and marks it running.
    pub async fn next(&self) -> ServiceRef {
        loop {
            let notified = self.notify.notified();
            let wait = {
                let now = Instant::now();
                match self.lock().pop_due(now) {
                    Ok(s) => return s,
                    Err(at) => at.map(|at| at - now),
                }
            };
            match wait {
                Some(d) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep(d) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks a reconcile finished: `Ok(requeue)` resets the backoff, `Err` retries with
    /// backoff and jitter. Changes seen meanwhile queue the service again.
    pub fn done(&self, s: &ServiceRef, result: Result<Option<Duration>, ()>) {
        let mut st = self.lock();
        st.running.remove(s);
        let now = Instant::now();
        let mut next: Option<Instant> = st.again.remove(s);
        match result {
            Ok(requeue) => {
                st.failures.remove(s);
                if let Some(d) = requeue {
                    let at = now + d;
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
            }
            Err(()) => {
                let n = st.failures.entry(s.clone()).or_default();
                *n = n.saturating_add(1);
                let at = now + self.backoff.delay(*n);
                next = Some(next.map_or(at, |n| n.max(at)));
            }
        }
        if let Some(at) = next {
            st.schedule(s.clone(), at);
        }
        drop(st);
        self.notify.notify_one();
    }

    /// Number of services queued (not counting running ones).
    pub fn len(&self) -> usize {
        self.lock().due.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sref(n: &str) -> ServiceRef {
        ServiceRef {
            namespace: "default".into(),
            name: n.into(),
        }
    }

    fn queue() -> WorkQueue {
        WorkQueue::new(
            Duration::ZERO,
            Backoff {
                base: Duration::from_millis(10),
                max: Duration::from_secs(1),
            },
        )
    }

    #[tokio::test]
    async fn duplicates_collapse_and_running_services_wait() {
        let q = queue();
        q.add(sref("a"));
        q.add(sref("a"));
        q.add(sref("b"));
        assert_eq!(q.len(), 2);
        let first = q.next().await;
        q.add(first.clone());
        let second = q.next().await;
        assert_ne!(first, second, "a running service is not handed out twice");
        q.done(&first, Ok(None));
        assert_eq!(
            q.next().await,
            first,
            "changes seen while running queue it again"
        );
    }

    #[tokio::test]
    async fn services_due_together_go_in_the_order_queued() {
        let q = queue();
        let names = ["m", "z", "a", "k", "b"];
        for n in names {
            q.add_after(sref(n), Duration::ZERO);
        }
        for n in names {
            let s = q.next().await;
            assert_eq!(s, sref(n));
            q.done(&s, Ok(None));
        }
    }

    #[tokio::test]
    async fn an_earlier_time_moves_a_queued_service_ahead() {
        let q = queue();
        q.add_after(sref("late"), Duration::from_secs(3600));
        q.add_after(sref("soon"), Duration::ZERO);
        // Queued again for now: due now, not in an hour; a later time changes nothing.
        q.add_after(sref("late"), Duration::ZERO);
        q.add_after(sref("soon"), Duration::from_secs(3600));
        assert_eq!(q.len(), 2);
        for want in ["soon", "late"] {
            let s = q.next().await;
            assert_eq!(s, sref(want));
            q.done(&s, Ok(None));
        }
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn every_service_of_a_takeover_comes_out_once_in_order() {
        let q = queue();
        let names: Vec<String> = (0..2_000).rev().map(|i| format!("svc-{i:05}")).collect();
        for n in &names {
            q.add_after(sref(n), Duration::ZERO);
        }
        // Half of them are queued again while queued: they keep their place.
        for n in names.iter().step_by(2) {
            q.add_after(sref(n), Duration::ZERO);
        }
        assert_eq!(q.len(), names.len());
        for n in &names {
            let s = q.next().await;
            assert_eq!(&s.name, n);
            q.done(&s, Ok(None));
        }
        assert!(q.is_empty());
        let st = q.lock();
        assert!(st.order.is_empty() && st.running.is_empty());
    }

    #[tokio::test]
    async fn errors_back_off() {
        let q = queue();
        q.add(sref("a"));
        let s = q.next().await;
        q.done(&s, Err(()));
        let t0 = Instant::now();
        assert_eq!(q.next().await, s);
        assert!(t0.elapsed() >= Duration::from_millis(4));
    }
}
