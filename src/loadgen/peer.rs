//! A synthetic participant: a real WebRTC peer on webrtcbin that speaks our
//! signaling protocol and publishes a test picture and tone. What it
//! receives it either decodes (tests: frames, colour and tone per remote
//! participant) or only counts (load: packets, loss, jitter, first keyframe),
//! per remote participant.

use super::media::{LocalCandidate, MediaOptions, PeerMedia, Shared, lock};
pub use super::media::{PeerStats, RemoteStats, SharedMedia, SinkMode};
use super::source::SourceSpec;
pub use super::source::VideoCodec;
use crate::ids::ParticipantId;
use crate::media::MediaError;
use crate::signaling::{ClientMessage, ServerMessage};
use anyhow::{Context, anyhow, bail};
use futures::{SinkExt, StreamExt};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// How a test peer behaves.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// Invite or host URL (`http://host/r/r_…#t=…`).
    pub link: String,
    /// Display name.
    pub name: String,
    /// Solid colour published, 0xRRGGBB.
    pub color: u32,
    /// Tone published, Hz.
    pub freq: f64,
    /// Video codec.
    pub codec: VideoCodec,
    /// Publish media at all.
    pub publish: bool,
    /// Addresses for ICE host candidates (tests: 127.0.0.1).
    pub ice_local_ips: Vec<IpAddr>,
    /// Session token to resume as an earlier participant.
    pub session: Option<String>,
    /// Tone volume, 0.0 (silent) to 1.0; sent as RFC 6464 audio levels too.
    pub volume: f64,
    /// Decode or only count what arrives.
    pub sink: SinkMode,
    /// Use this pipeline and source instead of an own pipeline and encoders.
    pub shared: Option<SharedMedia>,
    /// RFC 6464 level sent on audio (`None`: the level of the tone); can be
    /// changed while running through [`TestPeer::set_level`].
    pub level: Option<u8>,
    /// Browser id sent at join (what a ban bars).
    pub device: Option<String>,
    /// How long to wait in a lobby for a host.
    pub lobby_wait: Duration,
    /// Publish sync marks (see [`SourceSpec::pulse`](super::source::SourceSpec)).
    pub pulse: bool,
}

impl PeerConfig {
    /// A peer with defaults for `link`.
    pub fn new(link: &str, name: &str) -> Self {
        Self {
            link: link.to_owned(),
            name: name.to_owned(),
            color: 0xff0000,
            freq: 440.0,
            codec: VideoCodec::Vp8,
            publish: true,
            ice_local_ips: vec![IpAddr::from([127, 0, 0, 1])],
            session: None,
            volume: 0.4,
            sink: SinkMode::Decode,
            shared: None,
            level: None,
            device: Some(crate::ids::random_string(20)),
            lobby_wait: Duration::from_secs(30),
            pulse: false,
        }
    }
}

/// Outgoing signaling from GStreamer callbacks.
enum Out {
    Msg(ClientMessage),
    Raw(String),
    Leave,
}

/// A running test peer. Dropping it stops its media and socket abruptly.
pub struct TestPeer {
    media: Arc<PeerMedia>,
    out: mpsc::UnboundedSender<Out>,
    task: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
    /// Our participant id.
    pub id: ParticipantId,
    /// When the server said `joined` (stream times count from here).
    pub joined_at: Instant,
}

impl Drop for TestPeer {
    fn drop(&mut self) {
        self.task.abort();
        self.reader.abort();
    }
}

/// `http://host:port/r/r_x#t=TOKEN` → (`ws://host:port/ws`, TOKEN).
pub fn split_link(link: &str) -> anyhow::Result<(String, String)> {
    let url = url::Url::parse(link).context("invalid link")?;
    let token = url
        .fragment()
        .and_then(|f| f.strip_prefix("t="))
        .ok_or_else(|| anyhow!("link has no #t= token"))?
        .to_owned();
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    let host = url.host_str().ok_or_else(|| anyhow!("link has no host"))?;
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok((format!("{scheme}://{host}{port}/ws"), token))
}

impl TestPeer {
    /// Joins the room behind `cfg.link`; returns once the server said `joined`.
    pub async fn join(cfg: PeerConfig) -> anyhow::Result<Self> {
        gst::init()?;
        let (ws_url, token) = split_link(&cfg.link)?;
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .with_context(|| format!("connecting {ws_url}"))?;
        let (mut ws_tx, mut ws_rx) = ws.split();
        let join = ClientMessage::Join {
            version: crate::signaling::PROTOCOL_VERSION,
            token,
            session: cfg.session.clone(),
            display_name: cfg.name.clone(),
            device: cfg.device.clone(),
        };
        ws_tx
            .send(Message::Text(serde_json::to_string(&join)?))
            .await?;
        // Wait for joined (or a refusal).
        // In a lobby room, `waiting` comes first and `joined` once a host
        // lets us in: wait up to `lobby_wait` for that.
        let mut deadline = Instant::now() + Duration::from_secs(10);
        let (pid, session, present, invite_url, lobby) = loop {
            let frame = tokio::time::timeout_at(deadline.into(), ws_rx.next())
                .await
                .context("no answer to join")?
                .ok_or_else(|| anyhow!("socket closed before joined"))??;
            let Message::Text(text) = frame else { continue };
            match serde_json::from_str::<ServerMessage>(&text)? {
                ServerMessage::Joined {
                    participant_id,
                    session,
                    participants,
                    invite_url,
                    lobby,
                    ..
                } => break (participant_id, session, participants, invite_url, lobby),
                ServerMessage::Error { code, message, .. } => {
                    bail!("join refused: {code}: {message}")
                }
                ServerMessage::Waiting { .. } => {
                    deadline = Instant::now() + cfg.lobby_wait;
                    continue;
                }
                _ => continue,
            }
        };
        let joined_at = Instant::now();
        let stats: Shared = Arc::new(Mutex::new(PeerStats {
            participant_id: Some(pid.clone()),
            session: Some(session),
            present: present.into_iter().map(|p| p.id).collect(),
            invite_url,
            lobby: lobby.into_iter().map(|p| p.id).collect(),
            ..Default::default()
        }));
        let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
        let (cand_tx, mut cand_rx) = mpsc::unbounded_channel::<LocalCandidate>();
        let media = Arc::new(PeerMedia::new(
            &MediaOptions {
                name: format!("{}_{}", cfg.name, pid),
                ice_local_ips: cfg.ice_local_ips.clone(),
                publish: cfg.publish,
                sink: cfg.sink,
                shared: cfg.shared.clone(),
                own: SourceSpec {
                    color: Some(cfg.color),
                    freq: cfg.freq,
                    volume: cfg.volume,
                    codec: cfg.codec,
                    video_kbps: 300,
                    pulse: cfg.pulse,
                },
                level: cfg.level,
            },
            stats,
            joined_at,
            cand_tx,
        )?);
        if let Some(offer) = media.publish_offer().await? {
            let _ = out_tx.send(Out::Msg(ClientMessage::PublishOffer { sdp: offer }));
        }
        // The socket is read by its own task, so room state and the end of
        // the socket are seen at once, as a browser sees them, even while a
        // subscribe offer is being answered. What needs the media (answers,
        // offers, candidates) goes, in order, to the task that owns it.
        let (media_tx, mut media_rx) = mpsc::unbounded_channel::<ServerMessage>();
        let reader_stats = media.stats.clone();
        let reader = tokio::spawn(async move {
            while let Some(frame) = ws_rx.next().await {
                let text = match frame {
                    Ok(Message::Text(t)) => t,
                    Ok(_) => continue,
                    Err(_) => break,
                };
                let Ok(msg) = serde_json::from_str::<ServerMessage>(&text) else {
                    continue;
                };
                if let Some(msg) = note_state(msg, &reader_stats)
                    && media_tx.send(msg).is_err()
                {
                    break;
                }
            }
            lock(&reader_stats).disconnected = true;
        });
        let out = out_tx.clone();
        let task_media = media.clone();
        let task = tokio::spawn(async move {
            let media = task_media;
            loop {
                tokio::select! {
                    Some((pc, mline, candidate)) = cand_rx.recv() => {
                        let _ = out_tx.send(Out::Msg(ClientMessage::Ice { pc, candidate, sdp_mline_index: mline }));
                    }
                    out = out_rx.recv() => {
                        let frame = match out {
                            Some(Out::Msg(m)) => serde_json::to_string(&m).unwrap_or_default(),
                            Some(Out::Raw(t)) => t,
                            Some(Out::Leave) => {
                                let _ = ws_tx.send(Message::Text(r#"{"type":"leave"}"#.into())).await;
                                let _ = ws_tx.close().await;
                                break;
                            }
                            None => break,
                        };
                        if ws_tx.send(Message::Text(frame)).await.is_err() {
                            break;
                        }
                    }
                    msg = media_rx.recv() => {
                        // None: the socket ended (the reader said so).
                        let Some(msg) = msg else { break };
                        if let Err(e) = handle_media_message(msg, &media, &out_tx).await {
                            tracing::warn!("test peer: {e}");
                            lock(&media.stats).errors.push(format!("local: {e}"));
                        }
                    }
                }
            }
        });
        Ok(Self {
            media,
            out,
            task,
            reader,
            id: pid,
            joined_at,
        })
    }

    /// Changes the RFC 6464 level sent with this peer's audio (0 loudest, 127 silence).
    pub fn set_level(&self, level: u8) {
        self.media.set_level(level);
    }

    /// The subscribe connection's states (`connected/connected/stable`).
    pub fn subscribe_state(&self) -> String {
        self.media.subscribe_state()
    }

    /// RTP packets published so far: (video, audio).
    pub fn sent(&self) -> (u64, u64) {
        self.media.sent()
    }

    /// A copy of what was seen so far.
    pub fn stats(&self) -> PeerStats {
        lock(&self.media.stats).clone()
    }

    /// Session token from `joined` (to reconnect as the same participant).
    pub fn session(&self) -> Option<String> {
        lock(&self.media.stats).session.clone()
    }

    /// Tells the server whose video this peer shows (`None`: everyone's).
    pub fn set_visible(&self, participants: Option<Vec<ParticipantId>>) {
        let _ = self
            .out
            .send(Out::Msg(ClientMessage::SetVisible { participants }));
    }

    /// Sends a protocol message (host actions, for tests).
    pub fn send(&self, msg: ClientMessage) {
        let _ = self.out.send(Out::Msg(msg));
    }

    /// Sends a raw text frame (for bad-input tests).
    pub fn send_raw(&self, text: &str) {
        let _ = self.out.send(Out::Raw(text.to_owned()));
    }

    /// Says goodbye and closes the socket.
    pub async fn leave(self) {
        let _ = self.out.send(Out::Leave);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !self.task.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Answers, offers and candidates, in the order the server sent them.
async fn handle_media_message(
    msg: ServerMessage,
    media: &PeerMedia,
    out: &mpsc::UnboundedSender<Out>,
) -> Result<(), MediaError> {
    match msg {
        ServerMessage::PublishAnswer { sdp } => media.publish_answer(&sdp).await?,
        ServerMessage::SubscribeOffer { sdp, tracks } => {
            tracing::debug!(?tracks, "subscribe offer:\n{sdp}");
            let tracks = tracks.into_iter().map(|t| (t.mid, t.participant_id));
            let answer = media.subscribe_offer(&sdp, tracks).await?;
            let _ = out.send(Out::Msg(ClientMessage::SubscribeAnswer { sdp: answer }));
        }
        ServerMessage::Ice {
            pc,
            candidate,
            sdp_mline_index,
        } => {
            {
                let mut s = lock(&media.stats);
                if s.server_candidates.len() < 64 {
                    s.server_candidates.push(candidate.clone());
                }
            }
            media.add_candidate(pc, sdp_mline_index, &candidate);
        }
        _ => {}
    }
    Ok(())
}

/// Notes what a message says about the room; gives back the messages that
/// need the media.
fn note_state(msg: ServerMessage, stats: &Shared) -> Option<ServerMessage> {
    match msg {
        ServerMessage::PublishAnswer { .. }
        | ServerMessage::SubscribeOffer { .. }
        | ServerMessage::Ice { .. } => return Some(msg),
        ServerMessage::Joined {
            participants, room, ..
        } => {
            let mut s = lock(stats);
            s.present = participants.into_iter().map(|p| p.id).collect();
            s.room_recording = room.recording;
        }
        ServerMessage::ParticipantJoined { participant } => {
            let mut s = lock(stats);
            if !s.present.contains(&participant.id) {
                s.present.push(participant.id);
            }
        }
        ServerMessage::ParticipantLeft { participant_id, .. } => {
            lock(stats).present.retain(|p| *p != participant_id);
        }
        ServerMessage::ActiveSpeakers { speakers } => lock(stats).speakers = speakers,
        ServerMessage::MutedByHost { audio, video } => {
            lock(stats).muted_by_host = Some((audio, video))
        }
        ServerMessage::RoomUpdated { room, invite_url } => {
            let mut s = lock(stats);
            s.room_locked = room.locked;
            s.room_recording = room.recording;
            if invite_url.is_some() {
                s.invite_url = invite_url;
            }
        }
        ServerMessage::LobbyUpdated { lobby } => {
            lock(stats).lobby = lobby.into_iter().map(|p| p.id).collect();
        }
        ServerMessage::Error { code, .. } => lock(stats).errors.push(code),
        ServerMessage::RoomClosed => lock(stats).errors.push("room_closed".into()),
        _ => {}
    }
    None
}
