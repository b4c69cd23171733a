//! Accepting HTTP connections, with the bounds that protect the server
//! from clients that hold connections without finishing requests
//! (slow-loris): a deadline for each request's headers, a cap on the
//! connections one address may hold open, HTTP/1 only. Each request
//! carries its client address ([`ClientAddr`]) for the per-address limits.
//!
//! warp's own `serve` sets none of these, so connections are served here
//! with hyper's connection API and warp's filter as the service.

use super::ratelimit::address_key;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use warp::Filter;
use warp::hyper::{Body, Request, Response, service::Service};

/// Time a client has to send a request's headers, counted from the first
/// read (a new connection, or the end of the previous answer on a
/// keep-alive connection, so this is also the idle keep-alive timeout).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections one address (IPv6: one /64) may hold open at once. A
/// browser opens at most 6 per host; a reverse proxy in front should be
/// given `--rate-limit false` (or its own limits), since every request then
/// comes from its address. Upgraded WebSockets do not count: they have
/// their own bounds (join within 10 s, silence 9 s).
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 256;

/// Largest request head (request line and headers) hyper buffers.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The address of the client of a request (a request extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The client's address: from [`ClientAddr`] when served here, from warp
/// otherwise (`warp::test` requests may have none).
pub fn remote() -> impl Filter<Extract = (Option<SocketAddr>,), Error = Infallible> + Clone {
    warp::ext::optional::<ClientAddr>()
        .and(warp::addr::remote())
        .map(|ours: Option<ClientAddr>, warps: Option<SocketAddr>| ours.map(|c| c.0).or(warps))
}

/// Bounds on connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read_timeout: Duration,
    /// See [`MAX_CONNECTIONS_PER_ADDRESS`]; `None`: no cap.
    pub per_address: Option<usize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            per_address: Some(MAX_CONNECTIONS_PER_ADDRESS),
        }
    }
}

/// Open connections per address.
#[derive(Default)]
struct Counts {
    /// Per address: open connections, and whether a refusal was logged since it was last under the cap.
    open: Mutex<HashMap<IpAddr, (usize, bool)>>,
}

/// Connections cut off at the header deadline, summed into one log line
/// every [`HEADER_READ_TIMEOUT`] (one line per client would let an
/// attacker flood the log).
#[derive(Default)]
struct CutOff {
    /// Since the last line: how many, and when that line was written.
    since: Mutex<(u64, Option<std::time::Instant>)>,
}

impl CutOff {
    fn one(&self, peer: SocketAddr) {
        tracing::debug!(%peer, "headers not received in time, connection closed");
        let mut since = self.since.lock().unwrap_or_else(|p| p.into_inner());
        since.0 += 1;
        let now = std::time::Instant::now();
        if since
            .1
            .is_none_or(|at| now.duration_since(at) >= HEADER_READ_TIMEOUT)
        {
            tracing::info!(
                connections = since.0,
                "closed connections that did not send their request headers within {} s",
                HEADER_READ_TIMEOUT.as_secs()
            );
            *since = (0, Some(now));
        }
    }
}

/// One open connection of an address; counted down on drop.
struct Slot {
    counts: Arc<Counts>,
    addr: IpAddr,
}

impl Counts {
    /// A slot for `addr`, or `None` (with whether to log it) when it holds `cap` already.
    fn take(self: &Arc<Self>, addr: IpAddr, cap: Option<usize>) -> Result<Slot, bool> {
        let addr = address_key(addr);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (n, logged) = open.entry(addr).or_insert((0, false));
        if cap.is_some_and(|cap| *n >= cap) {
            let first = !*logged;
            *logged = true;
            return Err(first);
        }
        *n += 1;
        *logged = false;
        Ok(Slot {
            counts: self.clone(),
            addr,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((n, _)) = open.get_mut(&self.addr) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.addr);
            }
        }
    }
}

/// What an address over its cap is told before the connection is closed
/// (best effort: written only if the socket takes it at once).
const TOO_MANY_CONNECTIONS: &str = "HTTP/1.1 429 Too Many Requests\r\n\
content-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 89\r\n\r\n\
{\"error\":{\"code\":\"rate_limited\",\"message\":\"too many open connections from this address\"}}";

/// Serves `service` on `listener` until `shutdown` resolves, then lets open
/// connections finish their requests (the caller bounds how long).
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let counts = Arc::new(Counts::default());
    let cut_off = Arc::new(CutOff::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a sender; `recv` gives `None` once all are done.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut http = warp::hyper::server::conn::Http::new();
    http.http1_only(true)
        .http1_header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let slot = match counts.take(peer.ip(), limits.per_address) {
            Ok(slot) => slot,
            Err(log) => {
                refuse(stream, peer, log);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(stream, with_client_addr(service.clone(), peer));
        let mut stop = stop_rx.clone();
        let done = done_tx.clone();
        let cut_off = cut_off.clone();
        tokio::spawn(async move {
            let conn = conn.with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.changed() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            match result {
                // hyper has no public kind for it; its text is fixed.
                Err(e) if e.to_string().contains("read header from client timeout") => {
                    cut_off.one(peer);
                }
                // Resets, malformed requests: the client's doing.
                Err(e) => tracing::debug!(%peer, "connection ended: {e}"),
                Ok(()) => {}
            }
            drop(slot);
            drop(done);
        });
    }
    let _ = stop_tx.send(true);
    drop(done_tx);
    let _ = done_rx.recv().await;
}

/// Tells an address over its connection cap so, and closes.
fn refuse(stream: TcpStream, peer: SocketAddr, log: bool) {
    if log {
        tracing::info!(ip = %address_key(peer.ip()), "too many open connections from this address");
    }
    let _ = stream.try_write(TOO_MANY_CONNECTIONS.as_bytes());
}

/// `service` with the client's address put into each request.
fn with_client_addr<S>(
    service: S,
    peer: SocketAddr,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = S::Future>
+ Send
+ 'static
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
{
    let mut service = service;
    warp::hyper::service::service_fn(move |mut req: Request<Body>| {
        req.extensions_mut().insert(ClientAddr(peer));
        service.call(req)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_open_connections_per_address() {
        let counts = Arc::new(Counts::default());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = counts.take(a, Some(2)).ok().unwrap();
        let _second = counts.take(a, Some(2)).ok().unwrap();
        assert_eq!(counts.take(a, Some(2)).err(), Some(true), "logged once");
        assert_eq!(counts.take(a, Some(2)).err(), Some(false));
        let _other = counts.take(b, Some(2)).ok().unwrap();
        drop(first);
        assert!(
            counts.take(a, Some(2)).is_ok(),
            "a closed connection frees its slot"
        );
        assert!(counts.take(a, None).is_ok(), "no cap");
    }

    #[test]
    fn the_refusal_is_a_well_formed_answer() {
        let (head, body) = TOO_MANY_CONNECTIONS.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "rate_limited");
    }
}
