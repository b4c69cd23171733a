//! The same synthetic participants against Janus VideoRoom (Janus 1.x, HTTP
//! transport), so both servers can be measured side by side in one run.
//!
//! A participant is one Janus session with up to two handles, as in a
//! browser: a publisher (we offer) and a multistream subscriber (Janus
//! offers; we answer with `start`). Events arrive on the session's
//! long-poll, read by a task per session.

use super::media::{
    LocalCandidate, MediaOptions, PeerMedia, PeerStats, SharedMedia, SinkMode, lock,
};
use super::source::SourceSpec;
use crate::ids::ParticipantId;
use crate::signaling::PcKind;
use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

async fn http(method: &'static str, url: String, body: Option<Value>) -> anyhow::Result<Value> {
    tokio::task::spawn_blocking(move || {
        let req = ureq::request(method, &url).timeout(Duration::from_secs(40));
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        }
        .map_err(|e| anyhow!("{method} {url}: {e}"))?;
        resp.into_json::<Value>().map_err(|e| anyhow!("{url}: {e}"))
    })
    .await?
}

fn transaction() -> String {
    crate::ids::random_string(12)
}

/// A Janus session and the events of its handles.
struct Session {
    base: String,
    id: u64,
    events: Arc<(Mutex<VecDeque<Value>>, Notify)>,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

impl Session {
    async fn create(base: &str) -> anyhow::Result<Self> {
        let r = http(
            "POST",
            base.to_owned(),
            Some(json!({"janus": "create", "transaction": transaction()})),
        )
        .await?;
        let id = r["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("janus create: {r}"))?;
        let events: Arc<(Mutex<VecDeque<Value>>, Notify)> = Arc::default();
        let sink = events.clone();
        let url = format!("{base}/{id}?maxev=20");
        let poller = tokio::spawn(async move {
            loop {
                let Ok(v) = http("GET", url.clone(), None).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let batch = match v {
                    Value::Array(a) => a,
                    other => vec![other],
                };
                let mut q = sink.0.lock().unwrap_or_else(|p| p.into_inner());
                q.extend(batch.into_iter().filter(|e| e["janus"] != "keepalive"));
                drop(q);
                sink.1.notify_waiters();
            }
        });
        Ok(Self {
            base: base.to_owned(),
            id,
            events,
            poller,
        })
    }

    fn url(&self) -> String {
        format!("{}/{}", self.base, self.id)
    }

    async fn attach(&self) -> anyhow::Result<u64> {
        let r = http(
            "POST",
            self.url(),
            Some(json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": transaction()})),
        )
        .await?;
        r["data"]["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("janus attach: {r}"))
    }

    /// Sends a plugin message; returns the synchronous reply.
    async fn message(
        &self,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut msg = json!({"janus": "message", "transaction": transaction(), "body": body});
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let r = http("POST", format!("{}/{handle}", self.url()), Some(msg)).await?;
        if r["janus"] == "error" {
            bail!("janus: {}", r["error"]);
        }
        if let Some(code) = r["plugindata"]["data"]["error_code"].as_u64() {
            bail!(
                "videoroom error {code}: {}",
                r["plugindata"]["data"]["error"]
            );
        }
        Ok(r)
    }

    async fn trickle(&self, handle: u64, mline: u32, candidate: &str) -> anyhow::Result<()> {
        let msg = json!({"janus": "trickle", "transaction": transaction(),
            "candidate": {"candidate": candidate, "sdpMLineIndex": mline}});
        http("POST", format!("{}/{handle}", self.url()), Some(msg))
            .await
            .map(|_| ())
    }

    /// Waits for an event of `handle` whose videoroom field is one of `kinds`.
    async fn event(&self, handle: u64, kinds: &[&str]) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let notified = self.events.1.notified();
            {
                let mut q = self.events.0.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(i) = q.iter().position(|e| {
                    e["sender"].as_u64() == Some(handle)
                        && (kinds
                            .iter()
                            .any(|k| e["plugindata"]["data"]["videoroom"] == *k)
                            || e["plugindata"]["data"]["error_code"].is_u64())
                }) {
                    let e = q.remove(i).unwrap_or_default();
                    if let Some(code) = e["plugindata"]["data"]["error_code"].as_u64() {
                        bail!(
                            "videoroom error {code}: {}",
                            e["plugindata"]["data"]["error"]
                        );
                    }
                    return Ok(e);
                }
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                bail!("no {kinds:?} event from Janus");
            }
        }
    }
}

/// A Janus server under test.
#[derive(Debug, Clone)]
pub struct Janus {
    /// `http://host:8088/janus`.
    pub base: String,
}

impl Janus {
    /// Creates a VideoRoom room for up to `publishers` and returns its id.
    pub async fn create_room(&self, publishers: usize) -> anyhow::Result<u64> {
        let s = Session::create(&self.base).await?;
        let h = s.attach().await?;
        let room: u64 = rand::random::<u32>().into();
        s.message(
            h,
            json!({"request": "create", "room": room, "publishers": publishers.max(1),
                   "bitrate": 2_000_000, "audiocodec": "opus", "videocodec": "vp8",
                   "audiolevel_ext": true, "notify_joining": false}),
            None,
        )
        .await?;
        Ok(room)
    }
}

/// A synthetic participant in a Janus VideoRoom.
pub struct JanusPeer {
    session: Arc<Session>,
    media: Arc<PeerMedia>,
    sub_handle: Arc<Mutex<Option<u64>>>,
    room: u64,
    trickler: tokio::task::JoinHandle<()>,
    /// Our publisher feed id (as a participant id `p_<feed>`), or a random id.
    pub id: ParticipantId,
    /// When the session was joined.
    pub joined_at: Instant,
    /// Feed id when publishing.
    pub feed: Option<u64>,
}

impl Drop for JanusPeer {
    fn drop(&mut self) {
        self.trickler.abort();
    }
}

fn feed_participant(feed: u64) -> ParticipantId {
    ParticipantId::parse(&format!("p_{feed}")).unwrap_or_else(ParticipantId::generate)
}

impl JanusPeer {
    /// Joins `room`, publishing from `shared` when `publish`.
    pub async fn join(
        janus: &Janus,
        room: u64,
        name: &str,
        publish: bool,
        shared: SharedMedia,
        ice_local_ips: Vec<IpAddr>,
    ) -> anyhow::Result<Self> {
        let session = Arc::new(Session::create(&janus.base).await?);
        let joined_at = Instant::now();
        let (cand_tx, mut cand_rx) = mpsc::unbounded_channel::<LocalCandidate>();
        let stats = Arc::new(Mutex::new(PeerStats::default()));
        let media = Arc::new(PeerMedia::new(
            &MediaOptions {
                name: format!("janus_{name}"),
                ice_local_ips,
                publish,
                sink: SinkMode::Count,
                shared: Some(shared),
                own: SourceSpec::default(),
                level: Some(127),
            },
            stats,
            joined_at,
            cand_tx,
        )?);
        let pub_handle = if publish {
            Some(session.attach().await?)
        } else {
            None
        };
        let sub_handle: Arc<Mutex<Option<u64>>> = Arc::default();
        // Candidates go to whichever handle owns the connection.
        let trickler = {
            let session = session.clone();
            let sub_handle = sub_handle.clone();
            tokio::spawn(async move {
                while let Some((pc, mline, candidate)) = cand_rx.recv().await {
                    let handle = match pc {
                        PcKind::Publish => pub_handle,
                        PcKind::Subscribe => *sub_handle.lock().unwrap_or_else(|p| p.into_inner()),
                    };
                    if let Some(h) = handle {
                        let _ = session.trickle(h, mline, &candidate).await;
                    }
                }
            })
        };
        let mut feed = None;
        if let Some(h) = pub_handle {
            session
                .message(
                    h,
                    json!({"request": "join", "ptype": "publisher", "room": room, "display": name}),
                    None,
                )
                .await?;
            let joined = session.event(h, &["joined"]).await?;
            feed = joined["plugindata"]["data"]["id"].as_u64();
            let offer = media
                .publish_offer()
                .await?
                .ok_or_else(|| anyhow!("no publish offer"))?;
            session
                .message(
                    h,
                    json!({"request": "publish", "audio": true, "video": true}),
                    Some(json!({"type": "offer", "sdp": offer})),
                )
                .await?;
            let answer = session.event(h, &["event"]).await?;
            let sdp = answer["jsep"]["sdp"]
                .as_str()
                .ok_or_else(|| anyhow!("no answer: {answer}"))?;
            media.publish_answer(sdp).await?;
        }
        let id = feed
            .map(feed_participant)
            .unwrap_or_else(ParticipantId::generate);
        lock(&media.stats).participant_id = Some(id.clone());
        Ok(Self {
            session,
            media,
            sub_handle,
            room,
            trickler,
            id,
            joined_at,
            feed,
        })
    }

    /// Subscribes to the audio and video of `feeds` (one multistream handle).
    pub async fn subscribe(&self, feeds: &[u64]) -> anyhow::Result<()> {
        if feeds.is_empty() {
            return Ok(());
        }
        let h = self.session.attach().await?;
        *self.sub_handle.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
        let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
        let join = json!({"request": "join", "ptype": "subscriber", "room": self.room, "streams": streams});
        // A feed can be subscribed to once its media is up: retry "no such feed" for a while.
        let mut tries = 0;
        let attached = loop {
            self.session.message(h, join.clone(), None).await?;
            match self.session.event(h, &["attached"]).await {
                Ok(a) => break a,
                Err(e) if tries < 40 && e.to_string().contains("428") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let sdp = attached["jsep"]["sdp"]
            .as_str()
            .ok_or_else(|| anyhow!("no offer: {attached}"))?;
        let tracks: Vec<(String, ParticipantId)> = attached["plugindata"]["data"]["streams"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        Some((
                            s["mid"].as_str()?.to_owned(),
                            feed_participant(s["feed_id"].as_u64()?),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let answer = self.media.subscribe_offer(sdp, tracks).await?;
        self.session
            .message(
                h,
                json!({"request": "start"}),
                Some(json!({"type": "answer", "sdp": answer})),
            )
            .await?;
        self.session.event(h, &["event"]).await.context("start")?;
        Ok(())
    }

    /// What was received.
    pub fn stats(&self) -> PeerStats {
        lock(&self.media.stats).clone()
    }

    /// RTP packets published so far: (video, audio).
    pub fn sent(&self) -> (u64, u64) {
        self.media.sent()
    }

    /// Changes the audio level sent.
    pub fn set_level(&self, level: u8) {
        self.media.set_level(level);
    }
}

/// Writes a minimal Janus configuration (HTTP transport on `ip:port`,
/// VideoRoom only, ICE on `interface`) into `dir`.
pub fn write_config(dir: &Path, ip: IpAddr, port: u16, interface: &str) -> anyhow::Result<PathBuf> {
    let lib = [
        "/usr/lib/x86_64-linux-gnu/janus",
        "/usr/lib/janus",
        "/usr/local/lib/janus",
    ]
    .into_iter()
    .find(|p| Path::new(p).join("plugins").exists())
    .ok_or_else(|| anyhow!("Janus plugins not found (apt-get install janus)"))?;
    let main = format!(
        "general: {{\n  configs_folder = \"{dir}\"\n  plugins_folder = \"{lib}/plugins\"\n  transports_folder = \"{lib}/transports\"\n  \
         events_folder = \"{lib}/events\"\n  loggers_folder = \"{lib}/loggers\"\n  debug_level = 2\n}}\n\
         certificates: {{}}\nmedia: {{ rtp_port_range = \"30000-39999\" }}\nnat: {{ ice_enforce_list = \"{interface}\" }}\n\
         plugins: {{ disable = \"libjanus_audiobridge.so,libjanus_echotest.so,libjanus_lua.so,libjanus_duktape.so,libjanus_nosip.so,\
         libjanus_recordplay.so,libjanus_sip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so\" }}\n\
         transports: {{ disable = \"libjanus_websockets.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so\" }}\n\
         loggers: {{ disable = \"libjanus_jsonlog.so\" }}\nevents: {{ broadcast = false }}\n",
        dir = dir.display()
    );
    std::fs::write(dir.join("janus.jcfg"), main)?;
    std::fs::write(
        dir.join("janus.transport.http.jcfg"),
        format!(
            "general: {{ json = \"compact\" base_path = \"/janus\" http = true port = {port} ip = \"{ip}\" }}\nadmin: {{ admin_http = false }}\n"
        ),
    )?;
    std::fs::write(dir.join("janus.plugin.videoroom.jcfg"), "general: { }\n")?;
    Ok(dir.join("janus.jcfg"))
}
