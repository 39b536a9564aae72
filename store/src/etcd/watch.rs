//! Watches on etcd that survive broken connections and etcd restarts.
//!
//! etcd-client does not resume a broken watch stream, so this task tracks the last revision
//! delivered and re-creates the watch from the next one, with exponential backoff and jitter.
//! Progress notifications become empty batches. A watch canceled because its start revision
//! was compacted yields [`StoreError::Compacted`] and ends the stream. A watch canceled, or
//! refused, because its auth token had expired or predates a change of users and roles is
//! re-created with a new token.
//!
//! The watch asks etcd to split a response larger than its `--max-request-bytes` (plus
//! 512 KiB etcd allows for gRPC's framing: 2 MiB by default) into fragments. A watcher that fell behind is otherwise sent up to 1,000 revisions in one
//! message, and the client keeps a receive buffer as large as the largest message its stream
//! has carried for as long as the stream lives (10 MB in a busy agent). Fragments may split a
//! revision, so they are held until the last one arrives and delivered as one batch: a
//! consumer never sees half a transaction, and a broken stream mid-response resumes from the
//! revision it had not finished.

use etcd_client::{Client, EventType, WatchOptions, WatchResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use super::auth::{self, Auth};
use super::{MAX_DECODING_MESSAGE, convert_kv, map_err, readable};
use crate::retry::Backoff;
use crate::{Revision, StoreError, WatchBatch, WatchEvent, WatchStream};
use std::sync::Arc;

/// Starts a watch of `prefix` from `from` (inclusive; `<= 0` = from the next revision).
pub(super) fn spawn(
    client: Client,
    auth: Arc<Auth>,
    prefix: String,
    from: Revision,
) -> WatchStream {
    let (tx, rx) = mpsc::channel(16);
    let span = tracing::info_span!("etcd_watch", prefix = %prefix);
    tokio::spawn(
        async move {
            let mut watch = Watch {
                client,
                auth,
                prefix,
                next: from,
                fragments: Vec::new(),
                tx,
            };
            watch.run().await;
        }
        .instrument(span),
    );
    Box::pin(ReceiverStream::new(rx))
}

struct Watch {
    client: Client,
    auth: Arc<Auth>,
    prefix: String,
    /// Next revision to deliver (`<= 0` until the first watch is created).
    next: Revision,
    /// Events of a response etcd is sending in fragments, until its last fragment arrives.
    fragments: Vec<WatchEvent>,
    tx: mpsc::Sender<Result<WatchBatch, StoreError>>,
}

/// How one watch session ended.
enum Ended {
    /// The consumer dropped the stream, or the stream was terminated (compaction).
    Done,
    /// The connection broke; reconnect.
    Broken(String),
    /// etcd refused the auth token the watch was made with; get a new one and reconnect.
    StaleToken(String),
}

impl Watch {
    async fn run(&mut self) {
        let mut delays = Backoff::STORE.delays();
        let mut attempt = 0u32;
        // A refused token is renewed and the watch re-created at once, but only once between
        // two working sessions, so a token etcd keeps refusing falls back to the backoff.
        let mut quick_retry = true;
        loop {
            let generation = match self.auth.ensure(&self.client).await {
                Ok(g) => Some(g),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot authenticate the etcd watch; retrying");
                    None
                }
            };
            let (ended, healthy) = match generation {
                Some(_) => self.session().await,
                None => (Ended::Broken("authentication failed".into()), false),
            };
            quick_retry |= healthy;
            let ended = match ended {
                Ended::StaleToken(reason) => {
                    tracing::debug!(%reason, "etcd refused the watch's auth token; authenticating again");
                    match self.auth.renew(&self.client, generation.unwrap_or(0)).await {
                        Ok(_) if quick_retry => {
                            quick_retry = false;
                            continue;
                        }
                        Ok(_) => Ended::Broken(reason),
                        Err(e) => Ended::Broken(format!("{reason}; authenticating again: {e}")),
                    }
                }
                other => other,
            };
            match ended {
                Ended::Done => return,
                Ended::StaleToken(reason) | Ended::Broken(reason) => {
                    if healthy {
                        delays.reset();
                        attempt = 0;
                    }
                    attempt += 1;
                    let delay = delays.next_delay();
                    tracing::warn!(
                        next_revision = self.next,
                        attempt,
                        ?delay,
                        %reason,
                        "etcd watch broken; re-establishing"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.tx.closed() => return,
                    }
                }
            }
        }
    }

    /// One watch session; returns how it ended and whether it got as far as a created watch.
    async fn session(&mut self) -> (Ended, bool) {
        let mut opts = if self.prefix.is_empty() {
            WatchOptions::new().with_all_keys()
        } else {
            WatchOptions::new().with_prefix()
        }
        .with_progress_notify()
        .with_fragment();
        // A response cut short by a broken stream is sent again, whole, from `next`.
        self.fragments.clear();
        if self.next > 0 {
            opts = opts.with_start_revision(self.next);
        }
        let key = if self.prefix.is_empty() {
            vec![0u8]
        } else {
            self.prefix.as_bytes().to_vec()
        };
        let mut watch_client = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_DECODING_MESSAGE);
        let created = tokio::select! {
            r = watch_client.watch(key, Some(opts)) => r,
            () = self.tx.closed() => return (Ended::Done, false),
        };
        let mut stream = match created {
            Ok(stream) => stream,
            Err(e) if self.auth.enabled() && auth::needs_new_token(&e) => {
                return (Ended::StaleToken(map_err(e).to_string()), false);
            }
            Err(e) => return (Ended::Broken(map_err(e).to_string()), false),
        };
        let mut healthy = false;
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                () = self.tx.closed() => return (Ended::Done, healthy),
            };
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    return (
                        Ended::Broken("etcd closed the watch stream".into()),
                        healthy,
                    );
                }
                Err(e) => return (Ended::Broken(map_err(e).to_string()), healthy),
            };
            if healthy_resp(&resp) && !healthy {
                healthy = true;
                tracing::debug!(next_revision = self.next, "etcd watch established");
            }
            match self.handle(resp).await {
                Ok(()) => {}
                Err(ended) => return (ended, healthy),
            }
        }
    }

    /// Delivers one response. `Err` ends the session.
    async fn handle(&mut self, mut resp: WatchResponse) -> Result<(), Ended> {
        let header_rev = resp.header().map_or(0, |h| h.revision());
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                let err = StoreError::Compacted {
                    requested: self.next,
                    compact_revision: resp.compact_revision(),
                };
                // The consumer may be gone; the stream ends either way.
                let _ = self.tx.send(Err(err)).await;
                return Err(Ended::Done);
            }
            let reason = format!("watch canceled by etcd: {}", resp.cancel_reason());
            if self.auth.enabled()
                && (auth::is_token_problem(resp.cancel_reason())
                    || resp.cancel_reason().contains("permission denied"))
            {
                // Older etcd reports an expired token on a watch as "permission denied".
                return Err(Ended::StaleToken(reason));
            }
            return Err(Ended::Broken(reason));
        }
        if resp.created() {
            if self.next <= 0 {
                self.next = header_rev + 1;
            }
            if resp.events().is_empty() {
                return Ok(());
            }
        }
        let received = !resp.events().is_empty();
        for ev in std::mem::take(&mut resp.0.events) {
            let deleted = ev.r#type == EventType::Delete as i32;
            let Some(kv) = ev.kv else { continue };
            let Some(kv) = readable(convert_kv(kv)) else {
                continue;
            };
            if kv.mod_revision < self.next {
                // Already delivered before a reconnect.
                continue;
            }
            self.fragments.push(if deleted {
                WatchEvent::Delete {
                    key: kv.key,
                    mod_revision: kv.mod_revision,
                }
            } else {
                WatchEvent::Put(kv)
            });
        }
        if resp.0.fragment {
            return Ok(());
        }
        let events = std::mem::take(&mut self.fragments);
        let batch = if events.is_empty() && !received {
            // A progress notification: etcd is at `header_rev` with nothing new for us.
            if header_rev < self.next - 1 || header_rev == 0 {
                return Ok(());
            }
            self.next = self.next.max(header_rev + 1);
            WatchBatch {
                events,
                revision: header_rev,
            }
        } else if let Some(last) = events.last().map(WatchEvent::mod_revision) {
            self.next = last + 1;
            WatchBatch {
                events,
                revision: last,
            }
        } else {
            return Ok(());
        };
        if self.tx.send(Ok(batch)).await.is_err() {
            return Err(Ended::Done);
        }
        Ok(())
    }
}

/// Whether a response shows a working watch (resets the reconnect backoff).
fn healthy_resp(resp: &WatchResponse) -> bool {
    !resp.canceled()
}
