//! WebSocket signaling endpoint (`GET /ws`): one socket per participant.
//!
//! The first frame must be `join` (with the link token: tokens never appear
//! in URLs, so never in access logs). After that, frames are parsed and
//! handed to the room actor; whatever the room sends comes back out. A
//! socket that shows no sign of life for 9 s (pings go out every 2 s) is closed, which removes its
//! participant.

use super::endpoints::{self as ep, route0};
use super::{App, with_app};
use crate::control::room::Command;
use crate::signaling::{ClientMessage, MAX_MESSAGE_BYTES, ServerMessage, parse_client_message};
use futures::{SinkExt, StreamExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;
use warp::filters::ws::{Message, WebSocket, Ws};
use warp::{Filter, Rejection, Reply};

/// Time allowed between opening the socket and `join`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Ping interval.
const PING_EVERY: Duration = Duration::from_secs(2);
/// Silence after which the client is considered gone.
const SILENCE_LIMIT: Duration = Duration::from_secs(9);
/// Invalid frames tolerated on one socket before it is closed.
const MAX_BAD_FRAMES: u32 = 20;
/// Messages a client may send in a burst, and per second after that.
const MESSAGE_BURST: f64 = 200.0;
const MESSAGES_PER_SECOND: f64 = 50.0;

/// The `/ws` route.
pub fn route(
    app: Arc<App>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    route0(&ep::SIGNALING)
        .and(warp::ws())
        .and(with_app(app))
        .map(|ws: Ws, app: Arc<App>| {
            ws.max_message_size(MAX_MESSAGE_BYTES + 1024)
                .max_frame_size(MAX_MESSAGE_BYTES + 1024)
                .on_upgrade(move |socket| handle(socket, app))
                .into_response()
        })
}

fn to_frame(msg: &ServerMessage) -> Message {
    Message::text(serde_json::to_string(msg).unwrap_or_else(|_| "{}".to_owned()))
}

/// Close code of a frame or message over [`MAX_MESSAGE_BYTES`] (RFC 6455 "Message Too Big").
pub const CLOSE_TOO_BIG: u16 = 1009;

/// Whether a socket error is a frame or message over the size limit.
/// tungstenite refuses such a frame from its header, before reading (or
/// allocating) its payload.
fn is_too_big(e: &warp::Error) -> bool {
    use std::error::Error as _;
    matches!(
        e.source()
            .and_then(|s| s.downcast_ref::<tokio_tungstenite::tungstenite::Error>()),
        Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
    )
}

/// Tells the client its frame was too big (an error message, then close 1009).
async fn close_too_big<S>(sink: &mut S)
where
    S: futures::Sink<Message> + Unpin,
{
    tracing::info!("signaling frame over {MAX_MESSAGE_BYTES} bytes, closing");
    let _ = sink
        .send(to_frame(&ServerMessage::error(
            "message_too_big",
            format!("messages are limited to {MAX_MESSAGE_BYTES} bytes"),
            true,
        )))
        .await;
    let _ = sink
        .send(Message::close_with(CLOSE_TOO_BIG, "message too big"))
        .await;
}

async fn refuse(mut socket: WebSocket, code: &str, message: String) {
    let _ = socket
        .send(to_frame(&ServerMessage::error(code, message, true)))
        .await;
    let _ = socket.close().await;
}

async fn handle(mut socket: WebSocket, app: Arc<App>) {
    // 1. join
    let first = tokio::time::timeout(JOIN_TIMEOUT, async {
        loop {
            match socket.next().await {
                Some(Ok(m)) if m.is_text() => return Ok(m),
                Some(Ok(m)) if m.is_close() => return Err(false),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(is_too_big(&e)),
                None => return Err(false),
            }
        }
    })
    .await;
    let first = match first {
        Ok(Ok(first)) => first,
        Ok(Err(true)) => {
            close_too_big(&mut socket).await;
            let _ = socket.close().await;
            return;
        }
        Ok(Err(false)) | Err(_) => {
            return refuse(socket, "join_timeout", "send join first".into()).await;
        }
    };
    let text = first.to_str().unwrap_or("");
    let (token, session, display_name, device) = match parse_client_message(text) {
        Ok(ClientMessage::Join {
            version,
            token,
            session,
            display_name,
            device,
        }) => {
            if version != crate::signaling::PROTOCOL_VERSION {
                return refuse(
                    socket,
                    "unsupported_version",
                    format!("protocol version {version} is not supported"),
                )
                .await;
            }
            (token, session, display_name, device)
        }
        Ok(_) => {
            return refuse(
                socket,
                "join_first",
                "the first message must be join".into(),
            )
            .await;
        }
        Err(e) => return refuse(socket, "invalid_message", e).await,
    };
    let (out_tx, out_rx) = mpsc::channel::<ServerMessage>(256);
    let joined = match app
        .control
        .join(
            &token,
            session.as_deref(),
            &display_name,
            device.as_deref(),
            out_tx,
        )
        .await
    {
        Ok(j) => j,
        Err(e) => return refuse(socket, e.code(), e.to_string()).await,
    };
    let span = tracing::info_span!("participant", participant = %joined.participant);
    relay(socket, joined, out_rx).instrument(span).await;
}

/// Signaling sockets of joined participants that are open now.
static OPEN_SOCKETS: AtomicUsize = AtomicUsize::new(0);

/// Signaling sockets of joined participants open now (`/metrics`).
pub fn open_sockets() -> usize {
    OPEN_SOCKETS.load(Ordering::Relaxed)
}

/// Counts one open socket for as long as it lives.
struct OpenSocket;

impl OpenSocket {
    fn new() -> Self {
        OPEN_SOCKETS.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        OPEN_SOCKETS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Relays frames until either side is done.
async fn relay(
    socket: WebSocket,
    joined: crate::control::Joined,
    mut out_rx: mpsc::Receiver<ServerMessage>,
) {
    let _open = OpenSocket::new();
    let (room, pid, conn) = (joined.room, joined.participant, joined.connection);
    let (mut sink, mut stream) = socket.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    let mut bad_frames = 0u32;
    let mut left = false;
    let mut allowance = MESSAGE_BURST;
    let mut refilled = Instant::now();
    loop {
        tokio::select! {
            out = out_rx.recv() => {
                let Some(msg) = out else { break };
                let last = matches!(msg, ServerMessage::RoomClosed | ServerMessage::Error { fatal: true, .. });
                if sink.send(to_frame(&msg)).await.is_err() || last {
                    break;
                }
            }
            frame = stream.next() => {
                let frame = match frame {
                    Some(Ok(frame)) => frame,
                    Some(Err(e)) => {
                        if is_too_big(&e) {
                            close_too_big(&mut sink).await;
                        }
                        break;
                    }
                    None => break,
                };
                last_seen = Instant::now();
                if frame.is_close() {
                    break;
                }
                if frame.is_ping() || frame.is_pong() {
                    continue;
                }
                let now = Instant::now();
                allowance = (allowance + now.duration_since(refilled).as_secs_f64() * MESSAGES_PER_SECOND).min(MESSAGE_BURST);
                refilled = now;
                if allowance < 1.0 {
                    tracing::info!("signaling rate limit exceeded");
                    let _ = sink.send(to_frame(&ServerMessage::error("rate_limited", "too many messages", true))).await;
                    break;
                }
                allowance -= 1.0;
                let reply = match frame.to_str() {
                    Err(()) => Some(ServerMessage::error("invalid_message", "binary frames are not accepted", false)),
                    Ok(text) => match parse_client_message(text) {
                        Ok(ClientMessage::Leave) => {
                            left = true;
                            let _ = room.send(Command::Client { participant: pid.clone(), connection: conn, message: ClientMessage::Leave });
                            break;
                        }
                        Ok(message) => {
                            if room.send(Command::Client { participant: pid.clone(), connection: conn, message }).is_err() {
                                break;
                            }
                            None
                        }
                        Err(e) => Some(ServerMessage::error("invalid_message", e, false)),
                    },
                };
                if let Some(err) = reply {
                    bad_frames += 1;
                    tracing::info!(bad_frames, "invalid signaling frame");
                    let fatal = bad_frames > MAX_BAD_FRAMES;
                    let msg = if fatal {
                        ServerMessage::error("too_many_errors", "too many invalid messages", true)
                    } else {
                        err
                    };
                    if sink.send(to_frame(&msg)).await.is_err() || fatal {
                        break;
                    }
                }
            }
            _ = ping.tick() => {
                if last_seen.elapsed() > SILENCE_LIMIT {
                    tracing::info!("client silent for {:?}, dropping", SILENCE_LIMIT);
                    break;
                }
                if sink.send(Message::ping(Vec::new())).await.is_err() {
                    break;
                }
            }
        }
    }
    if !left {
        let _ = room.send(Command::Disconnected {
            participant: pid.clone(),
            connection: conn,
        });
    }
    let _ = sink.close().await;
}
