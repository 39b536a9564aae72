//! Compare-and-swap with retries, for the handlers that read, decide and write (apply, put,
//! rollback, node changes): each attempt reads what it changes, decides, and writes only if
//! nothing moved in between; when something did, it decides again, a bounded number of times.
//! Giving up is a `409 Conflict` that names the key's revision the last attempt expected and
//! the one the store holds now.

use shoal_store::{Revision, Store};

use crate::error::ApiError;

/// How many times a handler decides again before giving up.
pub const ATTEMPTS: usize = 8;

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt<T> {
    /// The write went through (or nothing needed writing): the answer.
    Done(T),
    /// The write lost a race: `key` was no longer at revision `expected`.
    Raced {
        /// The key whose revision moved.
        key: String,
        /// The revision the attempt read (0: absent).
        expected: Revision,
    },
}

/// Runs `attempt` (given the attempt number, from 0) until it is done, at most `attempts`
/// times. When every attempt raced, the error is a conflict on `what` with the revisions of
/// the last race.
pub async fn retry<T, F, Fut>(
    store: &dyn Store,
    what: &str,
    attempts: usize,
    mut attempt: F,
) -> Result<T, ApiError>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<Attempt<T>, ApiError>>,
{
    let mut last = None;
    for n in 0..attempts {
        match attempt(n).await? {
            Attempt::Done(t) => return Ok(t),
            Attempt::Raced { key, expected } => {
                tracing::debug!(attempt = n, %key, expected, "{what} raced a concurrent write; deciding again");
                last = Some((key, expected));
            }
        }
    }
    let (key, expected) = last.unwrap_or_default();
    let what = format!("{what} (it kept changing: gave up after {attempts} attempts)");
    Err(conflict(store, what, &key, expected).await)
}

/// The conflict error for a write that expected `key` at `expected`: reads the revision the
/// store holds now.
pub async fn conflict(store: &dyn Store, what: String, key: &str, expected: Revision) -> ApiError {
    match store.get(key).await {
        Ok(kv) => ApiError::Conflict {
            what,
            expected,
            current: kv.map_or(0, |kv| kv.mod_revision),
        },
        Err(e) => ApiError::Store(e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    use shoal_store::EmbeddedStore;

    use super::*;

    async fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
        (dir, store)
    }

    #[tokio::test]
    async fn giving_up_names_the_revision_expected_and_the_one_stored() {
        let (_dir, store) = store().await;
        let (rev, calls) = (&AtomicI64::new(0), &AtomicUsize::new(0));
        let store = &store;
        // Every attempt reads the key, then someone else writes it before the swap.
        let err = retry::<(), _, _>(&**store, "service default/web", ATTEMPTS, |_| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let read = store.get("k").await?.map_or(0, |kv| kv.mod_revision);
            rev.store(
                store.put("k", b"theirs".to_vec(), None).await?,
                Ordering::SeqCst,
            );
            match store
                .compare_and_put("k", b"ours".to_vec(), read, None)
                .await?
            {
                Some(_) => Ok(Attempt::Done(())),
                None => Ok(Attempt::Raced {
                    key: "k".into(),
                    expected: read,
                }),
            }
        })
        .await
        .unwrap_err();
        let rev = rev.load(Ordering::SeqCst);
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);
        assert_eq!(err.status(), axum::http::StatusCode::CONFLICT);
        let ApiError::Conflict {
            expected, current, ..
        } = &err
        else {
            panic!("not a conflict: {err}");
        };
        assert_eq!(*current, rev);
        assert!(*expected > 0 && *expected < rev, "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "service default/web (it kept changing: gave up after {ATTEMPTS} attempts) was \
                 modified: expected revision {expected}, current revision is {rev}"
            )
        );
        assert_eq!(err.body().current_revision, Some(rev));
    }

    #[tokio::test]
    async fn an_attempt_that_wins_after_races_is_the_answer() {
        let (_dir, store) = store().await;
        let answer = retry(&*store, "x", ATTEMPTS, |n| async move {
            Ok(if n < 3 {
                Attempt::Raced {
                    key: "k".into(),
                    expected: 1,
                }
            } else {
                Attempt::Done(n)
            })
        })
        .await
        .unwrap();
        assert_eq!(answer, 3);
    }

    #[tokio::test]
    async fn errors_of_an_attempt_end_the_retries() {
        let (_dir, store) = store().await;
        let calls = &AtomicUsize::new(0);
        let err = retry::<(), _, _>(&*store, "x", ATTEMPTS, |_| async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ApiError::Internal("boom".into()))
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(err.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    }
}
