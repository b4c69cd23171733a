//! Webhooks: room, participant, recording and broadcast events POSTed to
//! the configured endpoints, signed, retried and persisted.
//!
//! The control layer calls [`Webhooks::emit`] where an event happens; that
//! stores one row per endpoint in SQLite (so a restart does not lose it) and
//! wakes the endpoints' delivery tasks ([`delivery`]). Nothing on the
//! caller's path waits for the network: room actors only pay for one short
//! SQLite insert. Each endpoint has its own task and queue, so a receiver
//! that is down delays only its own events.

mod delivery;
pub mod event;
pub mod signature;

pub use event::{BroadcastInfo, Event, EventKind, RoomInfo, RtmpInfo};

use crate::store::Store;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Notify;
use tracing::Instrument;

/// Where webhooks go and how they are signed.
#[derive(Clone, Default)]
pub struct WebhookSettings {
    /// Endpoint URLs (`http://…`).
    pub urls: Vec<String>,
    /// Key of the HMAC-SHA256 signature.
    pub secret: String,
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // URLs may carry credentials in their path or query; the secret is one.
        f.debug_struct("WebhookSettings")
            .field(
                "endpoints",
                &self.urls.iter().map(|u| label(u)).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// `scheme://host:port` of an endpoint: what logs and metrics show (its
/// path and query may carry a receiver's credentials).
pub fn label(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "invalid-url".into(),
    }
}

/// Delivery outcomes since start.
#[derive(Debug, Default)]
struct Counters {
    /// Answered 2xx.
    delivered: AtomicU64,
    /// Attempts that failed (to be retried).
    failed: AtomicU64,
    /// Events given up after retrying for [`delivery::GIVE_UP_AFTER`].
    dropped: AtomicU64,
}

struct Endpoint {
    url: String,
    label: String,
    /// Rung when an event for this endpoint was queued.
    wake: Notify,
}

struct Inner {
    store: Arc<Store>,
    endpoints: Vec<Arc<Endpoint>>,
    urls: Vec<String>,
    secret: Vec<u8>,
    counters: Counters,
}

/// The webhook queue: cheap to clone, a no-op when no endpoint is configured.
#[derive(Clone, Default)]
pub struct Webhooks {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoints: Vec<&str> = self
            .inner
            .iter()
            .flat_map(|i| i.endpoints.iter().map(|e| e.label.as_str()))
            .collect();
        f.debug_struct("Webhooks")
            .field("endpoints", &endpoints)
            .finish()
    }
}

impl Webhooks {
    /// No endpoints: events are dropped at once.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Resumes what an earlier run left undelivered (deliveries to endpoints
    /// no longer configured are dropped) and starts one delivery task per
    /// endpoint. Must run inside the tokio runtime.
    pub fn start(
        store: Arc<Store>,
        settings: WebhookSettings,
    ) -> Result<Self, crate::store::StoreError> {
        let mut urls: Vec<String> = Vec::new();
        for u in settings.urls {
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
        let dropped = store.resume_webhooks(&urls)?;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "webhook deliveries to endpoints no longer configured dropped"
            );
        }
        if urls.is_empty() {
            return Ok(Self::disabled());
        }
        let endpoints: Vec<Arc<Endpoint>> = urls
            .iter()
            .map(|u| {
                Arc::new(Endpoint {
                    url: u.clone(),
                    label: label(u),
                    wake: Notify::new(),
                })
            })
            .collect();
        let inner = Arc::new(Inner {
            store,
            endpoints,
            urls,
            secret: settings.secret.into_bytes(),
            counters: Counters::default(),
        });
        for e in &inner.endpoints {
            tracing::info!(endpoint = %e.label, "webhooks enabled");
            let span = tracing::info_span!("webhook", endpoint = %e.label);
            tokio::spawn(delivery::run(inner.clone(), e.clone()).instrument(span));
        }
        Ok(Self { inner: Some(inner) })
    }

    /// Queues `event` for every endpoint (stored before this returns) and
    /// wakes the delivery tasks. Never waits for the network.
    pub fn emit(&self, event: Event) {
        let Some(inner) = &self.inner else {
            return;
        };
        let body = match serde_json::to_string(&event) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(event = event.event.as_str(), "cannot encode webhook: {e}");
                return;
            }
        };
        if let Err(e) = inner.store.enqueue_webhook(
            &inner.urls,
            &event.id,
            event.event.as_str(),
            &body,
            event.created_at,
        ) {
            tracing::error!(event = event.event.as_str(), id = %event.id, "cannot queue webhook: {e}");
            return;
        }
        tracing::debug!(event = event.event.as_str(), id = %event.id, "webhook queued");
        for e in &inner.endpoints {
            e.wake.notify_one();
        }
    }

    /// Prometheus lines: deliveries by result since start, and the queue.
    pub fn prometheus(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let Some(inner) = &self.inner else {
            return out;
        };
        let c = &inner.counters;
        let _ = writeln!(
            out,
            "# HELP roomcast_webhook_deliveries_total Webhook delivery attempts since start, by result.\n\
             # TYPE roomcast_webhook_deliveries_total counter"
        );
        for (result, n) in [
            ("delivered", &c.delivered),
            ("failed", &c.failed),
            ("dropped", &c.dropped),
        ] {
            let _ = writeln!(
                out,
                "roomcast_webhook_deliveries_total{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let pending: usize = match inner.store.pending_webhooks() {
            Ok(p) => p.iter().map(|(_, n)| n).sum(),
            Err(e) => {
                tracing::warn!("cannot count webhook deliveries: {e}");
                0
            }
        };
        let _ = writeln!(
            out,
            "# HELP roomcast_webhook_pending Webhook deliveries waiting (all endpoints).\n\
             # TYPE roomcast_webhook_pending gauge\nroomcast_webhook_pending {pending}"
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_hide_paths_queries_and_credentials() {
        assert_eq!(
            label("http://user:pw@hooks.example.org:8081/in/abc?token=x"),
            "http://hooks.example.org:8081"
        );
        assert_eq!(label("http://127.0.0.1/hook"), "http://127.0.0.1");
        assert_eq!(label("not a url"), "invalid-url");
        let s = WebhookSettings {
            urls: vec!["http://h/secret-path".into()],
            secret: "whsec-do-not-print".into(),
        };
        let text = format!("{s:?}");
        assert!(
            !text.contains("whsec") && !text.contains("secret-path"),
            "{text}"
        );
    }

    #[test]
    fn disabled_queue_ignores_events() {
        let w = Webhooks::disabled();
        let record = crate::model::RoomRecord {
            id: crate::ids::RoomId::generate(),
            name: "x".into(),
            max_participants: 1,
            visibility: crate::model::Visibility::Private,
            lobby: false,
            mode: crate::model::RoomMode::Sfu,
            locked: false,
            invites_enabled: true,
            invite_generation: 0,
            created_at: crate::model::now_rfc3339(),
            closed_at: None,
            invite_expires_at: None,
            creator_addr: None,
            host_generation: 0,
        };
        w.emit(Event::new(
            EventKind::RoomStarted,
            RoomInfo::new(&record, 0),
        ));
        assert!(w.prometheus().is_empty());
    }
}
