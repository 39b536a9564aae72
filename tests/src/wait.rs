//! Waiting for a condition in a test: poll it until it holds, and fail the test with what
//! was awaited once a generous deadline passes. The deadline only bounds a test that would
//! otherwise hang: the helpers return the value waited for, or print and return how long
//! the condition took to hold.

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a condition is waited for unless a test says otherwise.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How often an async condition is checked.
const POLL: Duration = Duration::from_millis(50);

/// How often a blocking condition is checked (these usually run a command each time).
const POLL_BLOCKING: Duration = Duration::from_millis(200);

/// Polls `check` until it returns `Some`, or fails the test after [`DEADLINE`].
pub async fn wait_for<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_for_within(what, DEADLINE, check).await
}

/// Polls `check` until it returns `Some`, or fails the test after `deadline` (for steps
/// slower than [`DEADLINE`] allows, such as real containers).
pub async fn wait_for_within<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        // A check that never returns (a store call stuck on a lock, say) fails the test at
        // the deadline like a condition that never holds, instead of hanging it.
        let left = deadline.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, check()).await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(_) => panic!("timed out after {deadline:?} in a check of: {what}"),
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `cond` until it is true, or fails the test after [`DEADLINE`]; returns how long
/// it took.
pub async fn eventually<F, Fut>(what: &str, cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_within(what, DEADLINE, cond).await
}

/// Polls `cond` until it is true, or fails the test after `deadline`; returns how long it
/// took.
pub async fn eventually_within<F, Fut>(what: &str, deadline: Duration, mut cond: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    wait_for_within(what, deadline, || {
        let holds = cond();
        async move { holds.await.then_some(()) }
    })
    .await;
    let took = start.elapsed();
    println!("{what}: {took:?}");
    took
}

/// Checks `cond` until it is true, blocking the thread (for tests that drive processes
/// without an async runtime), or fails the test after `deadline`; returns how long it took.
pub fn blocking_eventually(
    what: &str,
    deadline: Duration,
    mut cond: impl FnMut() -> bool,
) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        std::thread::sleep(POLL_BLOCKING);
    }
    let took = start.elapsed();
    println!("{what}: {took:?}");
    took
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    #[should_panic(expected = "timed out after 200ms in a check of: a stuck store call")]
    async fn a_check_that_never_returns_fails_at_the_deadline() {
        wait_for_within("a stuck store call", Duration::from_millis(200), || {
            std::future::pending::<Option<()>>()
        })
        .await;
    }

    #[tokio::test]
    async fn a_check_that_holds_returns_its_value() {
        let mut calls = 0;
        let v = wait_for_within("the third call", Duration::from_secs(10), || {
            calls += 1;
            let n = calls;
            async move { (n == 3).then_some(n) }
        })
        .await;
        assert_eq!(v, 3);
    }
}
