//! Following the API's watch (`GET /v1/watch`) for `apply --wait`, `rollout status` and
//! `get --watch`: one stream of status and task changes that survives a dropped connection
//! or a restarting API by reconnecting and resuming after the last revision it saw.

use std::time::Duration;

use futures::StreamExt;
use shoal_api::client::EventStream;
use shoal_api::types::WatchEvent;
use shoal_api::{Client, ClientError};
use shoal_store::Revision;

/// What one step of following brought.
#[derive(Debug)]
pub enum Followed {
    /// A change (or, on a fresh start, a current record).
    Event(WatchEvent),
    /// The stream is gone or cannot be opened right now; the next call tries again.
    Lost(ClientError),
}

/// A watch that reconnects and resumes by itself.
pub struct Follower {
    client: Client,
    service: Option<String>,
    stream: Option<EventStream>,
    last: Option<Revision>,
    failures: u32,
}

/// Longest pause between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Follower {
    /// Follows every service, or only `service` (`namespace/name`).
    pub fn new(client: Client, service: Option<String>) -> Self {
        Follower {
            client,
            service,
            stream: None,
            last: None,
            failures: 0,
        }
    }

    /// The next event, or why there is none right now. Errors only when the API refuses the
    /// watch itself (bad credentials, bad request) even when asked from the current state.
    pub async fn next(&mut self) -> Result<Followed, ClientError> {
        if self.stream.is_none() {
            if self.failures > 0 {
                let pause = Duration::from_millis(250) * 2u32.pow(self.failures.min(3));
                tokio::time::sleep(pause.min(MAX_BACKOFF)).await;
            }
            match self.client.watch(self.service.as_deref(), self.last).await {
                Ok(s) => self.stream = Some(s),
                Err(e) if e.is_transient() => return Ok(self.lost(e)),
                // The revision to resume from may be compacted away: start over from the
                // current state, which carries every record again.
                Err(e) if self.last.is_some() => {
                    tracing::debug!(error = %e, "cannot resume the watch; starting over");
                    self.last = None;
                    return Ok(self.lost(e));
                }
                Err(e) => return Err(e),
            }
        }
        let stream = self.stream.as_mut().expect("opened above");
        match stream.next().await {
            Some(Ok(ev)) => {
                self.failures = 0;
                self.last = Some(ev.revision);
                Ok(Followed::Event(ev))
            }
            Some(Err(e)) => {
                self.stream = None;
                if matches!(e, ClientError::Api { .. }) {
                    // The API said the stream cannot go on from there (it no longer holds
                    // the changes after `last`): start over from the current state.
                    self.last = None;
                }
                Ok(self.lost(e))
            }
            None => {
                self.stream = None;
                Ok(self.lost(ClientError::Decode {
                    url: format!("{}/v1/watch", self.client.base()),
                    message: "the watch stream ended".into(),
                }))
            }
        }
    }

    fn lost(&mut self, e: ClientError) -> Followed {
        self.failures = self.failures.saturating_add(1);
        tracing::debug!(error = %e, resume_after = ?self.last, "watch lost; reconnecting");
        Followed::Lost(e)
    }
}
