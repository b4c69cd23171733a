//! One task per endpoint posts its queued events in order: the oldest row
//! first, the next one only after it was delivered (2xx) or given up. A
//! failed attempt is retried after 1, 2, 4 … s (at most 5 min between
//! attempts) until the event is a day old. The blocking HTTP call runs on
//! tokio's blocking pool with 5 s connect/read/write timeouts, so a receiver
//! that hangs holds up only its own queue.

use super::{Endpoint, Inner, signature};
use crate::store::PendingWebhook;
use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Wait before the first retry; doubled after each failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest wait between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(300);
/// An event still undelivered this long after it happened is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Connect, read and write timeouts of one attempt.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of a receiver's answer read (and thrown away) to keep the connection.
const MAX_ANSWER: u64 = 64 * 1024;
/// Pause after a database error before the queue is read again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// Wait after the `attempts`-th failure: 1 s, 2 s, 4 s … at most [`MAX_RETRY`].
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    FIRST_RETRY.saturating_mul(1u32 << doublings).min(MAX_RETRY)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The delivery loop of one endpoint; runs for the life of the process.
pub(super) async fn run(inner: Arc<Inner>, endpoint: Arc<Endpoint>) {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(IO_TIMEOUT)
        .timeout_read(IO_TIMEOUT)
        .timeout_write(IO_TIMEOUT)
        .redirects(0)
        .user_agent(concat!("roomcast/", env!("CARGO_PKG_VERSION")))
        .build();
    loop {
        let next = match inner.store.next_webhook(&endpoint.url) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("cannot read the webhook queue: {e}");
                tokio::time::sleep(STORE_RETRY).await;
                continue;
            }
        };
        let Some(d) = next else {
            // A permit stored by an `emit` since the read above ends this at once.
            endpoint.wake.notified().await;
            continue;
        };
        let now = now_ms();
        if d.next_attempt_ms > now {
            // Capped: a clock set back must not stall the queue.
            let wait = Duration::from_millis(d.next_attempt_ms - now).min(MAX_RETRY);
            tokio::time::sleep(wait).await;
        }
        let outcome = post(&agent, &endpoint.url, &inner.secret, &d).await;
        settle(&inner, &d, outcome);
    }
}

/// Deletes a delivered (or given up) row, or schedules the next attempt.
fn settle(inner: &Inner, d: &PendingWebhook, outcome: Result<u16, String>) {
    let c = &inner.counters;
    let attempts = d.attempts.saturating_add(1);
    let result = match outcome {
        Ok(status) => {
            c.delivered.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(id = %d.event_id, event = %d.event, status, attempts, "webhook delivered");
            inner.store.delete_webhook(d.seq)
        }
        Err(why) => {
            let age = crate::model::unix_now().saturating_sub(d.created_at);
            if age >= GIVE_UP_AFTER.as_secs() {
                c.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(id = %d.event_id, event = %d.event, attempts, "webhook given up after {age} s: {why}");
                inner.store.delete_webhook(d.seq)
            } else {
                c.failed.fetch_add(1, Ordering::Relaxed);
                let wait = backoff(attempts);
                if attempts == 1 || attempts.is_multiple_of(10) {
                    tracing::warn!(id = %d.event_id, event = %d.event, attempts, "webhook not delivered ({why}); retrying in {wait:?}");
                } else {
                    tracing::debug!(id = %d.event_id, attempts, "webhook not delivered ({why})");
                }
                let at = now_ms().saturating_add(wait.as_millis() as u64);
                inner.store.webhook_failed(d.seq, attempts, at, &why)
            }
        }
    };
    if let Err(e) = result {
        tracing::error!(id = %d.event_id, "cannot update the webhook queue: {e}");
    }
}

/// One attempt: `Ok(status)` for 2xx, else why not (no URL in it: the
/// endpoint's path may carry the receiver's credentials).
async fn post(
    agent: &ureq::Agent,
    url: &str,
    secret: &[u8],
    d: &PendingWebhook,
) -> Result<u16, String> {
    let timestamp = crate::model::unix_now();
    let sig = signature::sign(secret, timestamp, d.body.as_bytes());
    let request = agent
        .post(url)
        .set("Content-Type", "application/json")
        .set("X-Roomcast-Event", &d.event)
        .set("X-Roomcast-Delivery", &d.event_id)
        .set("X-Roomcast-Timestamp", &timestamp.to_string())
        .set("X-Roomcast-Signature", &sig);
    let body = d.body.clone();
    let call = tokio::task::spawn_blocking(move || {
        let drain = |r: ureq::Response| {
            let _ = std::io::copy(&mut r.into_reader().take(MAX_ANSWER), &mut std::io::sink());
        };
        match request.send_string(&body) {
            Ok(r) => {
                let status = r.status();
                drain(r);
                if (200..300).contains(&status) {
                    Ok(status)
                } else {
                    Err(format!("HTTP {status}"))
                }
            }
            Err(ureq::Error::Status(status, r)) => {
                drain(r);
                Err(format!("HTTP {status}"))
            }
            Err(ureq::Error::Transport(t)) => Err(match std::error::Error::source(&t) {
                Some(cause) => format!("{}: {cause}", t.kind()),
                None => t.kind().to_string(),
            }),
        }
    });
    call.await
        .unwrap_or_else(|e| Err(format!("delivery task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=11).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff(0), FIRST_RETRY);
        assert_eq!(backoff(u32::MAX), MAX_RETRY);
    }
}
