//! Broadcasts as the control plane sees them: what was asked for, the state
//! the room actor moves them through, and the counters the edge and the
//! media plane update (viewers, RTMP targets). The registry is shared by the
//! REST API (reads) and the room actors (which own each broadcast's media).

use super::ControlError;
use crate::ids::{BroadcastId, ParticipantId, RoomId};
use crate::media::broadcast::{LADDER, Rendition, rendition};
use crate::media::rtmp::{RtmpState, RtmpStatus, valid_url};
use crate::model::now_rfc3339;
use crate::signaling::BroadcastSummary;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// RTMP targets per broadcast.
pub const MAX_RTMP_TARGETS: usize = 10;
/// An HLS client counts as watching this long after its last playlist request.
const HLS_VIEWER_WINDOW: Duration = Duration::from_secs(15);
/// Distinct HLS clients tracked per broadcast (beyond this they are not counted).
const MAX_HLS_CLIENTS: usize = 100_000;
/// Ended broadcasts are remembered (for `GET`) this long.
pub const KEEP_ENDED: Duration = Duration::from_secs(3600);

fn yes() -> bool {
    true
}

/// Body of `POST /api/v1/rooms/{id}/broadcasts`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBroadcast {
    /// Serve HLS (default on).
    #[serde(default = "yes")]
    pub hls: bool,
    /// Accept WHEP viewers (default on).
    #[serde(default = "yes")]
    pub whep: bool,
    /// RTMP URLs to push to.
    #[serde(default)]
    pub rtmp: Vec<String>,
    /// ABR ladder (`1080p`, `720p`, `480p`, `360p`, `240p`); empty: one, as the source is.
    #[serde(default)]
    pub renditions: Vec<String>,
    /// `composite` (default), a participant id, or `ingest` (the room's WHIP ingest).
    #[serde(default)]
    pub source: Option<String>,
}

impl Default for StartBroadcast {
    fn default() -> Self {
        Self {
            hls: true,
            whep: true,
            rtmp: Vec::new(),
            renditions: Vec::new(),
            source: None,
        }
    }
}

/// Where a broadcast takes its media from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The room's composite (grid + mixed audio).
    Composite,
    /// One participant's tracks.
    Participant(ParticipantId),
    /// The room's WHIP ingest (the first one that publishes).
    Ingest,
}

impl SourceSpec {
    /// The name the API shows.
    pub fn name(&self) -> String {
        match self {
            SourceSpec::Composite => "composite".into(),
            SourceSpec::Participant(p) => p.to_string(),
            SourceSpec::Ingest => "ingest".into(),
        }
    }
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct BroadcastSpec {
    /// HLS on.
    pub hls: bool,
    /// WHEP on.
    pub whep: bool,
    /// RTMP targets.
    pub rtmp: Vec<String>,
    /// Renditions, largest first.
    pub renditions: Vec<Rendition>,
    /// Source.
    pub source: SourceSpec,
}

impl StartBroadcast {
    /// Checks the request (422 on anything out of range).
    pub fn validate(self) -> Result<BroadcastSpec, ControlError> {
        let mut renditions = Vec::new();
        for name in &self.renditions {
            let r = rendition(name).ok_or_else(|| {
                ControlError::Invalid(format!(
                    "unknown rendition {name:?}: use {}",
                    LADDER.map(|r| r.name).join(", ")
                ))
            })?;
            if !renditions.contains(&r) {
                renditions.push(r);
            }
        }
        renditions.sort_by_key(|r| std::cmp::Reverse(r.height));
        if self.rtmp.len() > MAX_RTMP_TARGETS {
            return Err(ControlError::Invalid(format!(
                "at most {MAX_RTMP_TARGETS} RTMP targets"
            )));
        }
        if let Some(bad) = self.rtmp.iter().find(|u| !valid_url(u)) {
            return Err(ControlError::Invalid(format!(
                "not an RTMP URL (rtmp://host/app/key): {}",
                crate::media::rtmp::redact(bad)
            )));
        }
        if !self.hls && !self.whep && self.rtmp.is_empty() {
            return Err(ControlError::Invalid(
                "a broadcast needs an output: hls, whep or rtmp".into(),
            ));
        }
        let source = match self.source.as_deref() {
            None | Some("composite") => SourceSpec::Composite,
            Some("ingest") => SourceSpec::Ingest,
            Some(other) => {
                SourceSpec::Participant(ParticipantId::parse(other).ok_or_else(|| {
                    ControlError::Invalid(
                        "source must be \"composite\", \"ingest\" or a participant id".into(),
                    )
                })?)
            }
        };
        Ok(BroadcastSpec {
            hls: self.hls,
            whep: self.whep,
            rtmp: self.rtmp,
            renditions,
            source,
        })
    }
}

/// Lifecycle of a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BroadcastState {
    /// Waiting for its source or its first frame.
    Starting,
    /// Producing.
    Live,
    /// Stopped.
    Ended,
    /// Could not be built.
    Failed,
}

/// What the media plane reported when it built the outputs.
#[derive(Debug, Clone, Default, Serialize, schemars::JsonSchema)]
pub struct Transcode {
    /// Video is re-encoded.
    pub video: bool,
    /// Audio is re-encoded.
    pub audio: bool,
}

#[derive(Debug)]
struct Status {
    state: BroadcastState,
    encoders: Vec<String>,
    transcode: Transcode,
    renditions: Vec<String>,
    ended_at: Option<String>,
    ended: Option<Instant>,
    error: Option<String>,
}

/// One broadcast.
#[derive(Debug)]
pub struct Broadcast {
    /// Id.
    pub id: BroadcastId,
    /// Room.
    pub room_id: RoomId,
    /// What was asked for.
    pub spec: BroadcastSpec,
    /// Start.
    pub started_at: String,
    /// Viewer token (private rooms): WHEP wants it as a bearer.
    pub viewer_token: Option<String>,
    status: Mutex<Status>,
    /// WHEP viewers connected now.
    pub whep_viewers: AtomicUsize,
    hls_clients: Mutex<HashMap<u64, Instant>>,
    /// RTMP targets.
    pub rtmp: Arc<Mutex<Vec<RtmpStatus>>>,
    /// How far each rendition's HLS has got (LL-HLS blocking requests wait on it).
    pub hls_live: crate::media::hls::HlsLive,
}

/// Viewer counts.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Viewers {
    /// HLS clients seen in the last 15 s.
    pub hls: usize,
    /// WHEP viewers connected.
    pub whep: usize,
}

/// A broadcast as the API shows it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct BroadcastView {
    /// Id.
    pub id: BroadcastId,
    /// Room.
    pub room_id: RoomId,
    /// State.
    pub state: BroadcastState,
    /// `composite`, `ingest` or a participant id.
    pub source: String,
    /// Master playlist (when HLS is on).
    pub hls_url: Option<String>,
    /// WHEP endpoint (when WHEP is on).
    pub whep_url: Option<String>,
    /// Viewer page.
    pub watch_url: String,
    /// RTMP targets.
    pub rtmp: Vec<RtmpStatus>,
    /// Viewers now.
    pub viewers: Viewers,
    /// Renditions produced.
    pub renditions: Vec<String>,
    /// Encoders this broadcast runs (element names; the room composite's own
    /// encoder is not counted).
    pub encoders: Vec<String>,
    /// What is re-encoded.
    pub transcode: Transcode,
    /// Start.
    pub started_at: String,
    /// End.
    pub ended_at: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the public viewer page may know.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PublicBroadcast {
    /// Id.
    pub id: BroadcastId,
    /// State.
    pub state: BroadcastState,
    /// Room name.
    pub room_name: String,
    /// Master playlist.
    pub hls_url: Option<String>,
    /// WHEP endpoint.
    pub whep_url: Option<String>,
    /// Viewers now.
    pub viewers: Viewers,
}

impl Broadcast {
    /// A new broadcast in state `starting`.
    pub fn new(room_id: RoomId, spec: BroadcastSpec, viewer_token: Option<String>) -> Arc<Self> {
        let rtmp = spec
            .rtmp
            .iter()
            .map(|url| RtmpStatus {
                url: url.clone(),
                state: RtmpState::Connecting,
                attempts: 0,
                error: None,
            })
            .collect();
        Arc::new(Self {
            id: BroadcastId::generate(),
            room_id,
            spec,
            started_at: now_rfc3339(),
            viewer_token,
            status: Mutex::new(Status {
                state: BroadcastState::Starting,
                encoders: Vec::new(),
                transcode: Transcode::default(),
                renditions: Vec::new(),
                ended_at: None,
                ended: None,
                error: None,
            }),
            whep_viewers: AtomicUsize::new(0),
            hls_clients: Mutex::new(HashMap::new()),
            rtmp: Arc::new(Mutex::new(rtmp)),
            hls_live: Default::default(),
        })
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// State now.
    pub fn state(&self) -> BroadcastState {
        self.status().state
    }

    /// Not ended or failed.
    pub fn is_active(&self) -> bool {
        matches!(
            self.state(),
            BroadcastState::Starting | BroadcastState::Live
        )
    }

    /// The media plane built its outputs.
    pub fn built(&self, encoders: Vec<String>, transcode: Transcode, renditions: Vec<String>) {
        let mut s = self.status();
        s.encoders = encoders;
        s.transcode = transcode;
        s.renditions = renditions;
    }

    /// First frames went out. Returns whether the state changed.
    pub fn set_live(&self) -> bool {
        let mut s = self.status();
        if s.state == BroadcastState::Starting {
            s.state = BroadcastState::Live;
            return true;
        }
        false
    }

    /// Ends it (`failed` with an error). Returns whether it was active.
    pub fn end(&self, error: Option<String>) -> bool {
        let mut s = self.status();
        if !matches!(s.state, BroadcastState::Starting | BroadcastState::Live) {
            return false;
        }
        s.state = if error.is_some() {
            BroadcastState::Failed
        } else {
            BroadcastState::Ended
        };
        s.error = error;
        s.ended_at = Some(now_rfc3339());
        s.ended = Some(Instant::now());
        self.whep_viewers.store(0, Ordering::Relaxed);
        for t in self
            .rtmp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter_mut()
        {
            t.state = RtmpState::Ended;
        }
        true
    }

    /// Ended longer ago than `age`.
    fn ended_before(&self, age: Duration) -> bool {
        self.status().ended.is_some_and(|t| t.elapsed() > age)
    }

    /// An HLS client (hash of its address and agent) fetched a playlist.
    pub fn hls_seen(&self, client: u64) {
        let mut m = self.hls_clients.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_HLS_CLIENTS && !m.contains_key(&client) {
            m.retain(|_, t| t.elapsed() < HLS_VIEWER_WINDOW);
            if m.len() >= MAX_HLS_CLIENTS {
                return;
            }
        }
        m.insert(client, Instant::now());
    }

    /// Viewer counts now.
    pub fn viewers(&self) -> Viewers {
        let hls = {
            let mut m = self.hls_clients.lock().unwrap_or_else(|p| p.into_inner());
            m.retain(|_, t| t.elapsed() < HLS_VIEWER_WINDOW);
            if self.is_active() { m.len() } else { 0 }
        };
        Viewers {
            hls,
            whep: self.whep_viewers.load(Ordering::Relaxed),
        }
    }

    /// The viewer page, with the viewer token for private rooms.
    pub fn watch_url(&self, public_url: &str) -> String {
        let base = format!("{public_url}/watch/{}", self.id);
        match &self.viewer_token {
            Some(t) => format!("{base}#t={t}"),
            None => base,
        }
    }

    /// The API's view.
    pub fn view(&self, public_url: &str) -> BroadcastView {
        // Each lock is taken and released on its own line (temporaries in a
        // struct literal would live to its end).
        let (state, renditions, encoders, transcode, ended_at, error) = {
            let s = self.status();
            (
                s.state,
                s.renditions.clone(),
                s.encoders.clone(),
                s.transcode.clone(),
                s.ended_at.clone(),
                s.error.clone(),
            )
        };
        let rtmp = self.rtmp.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let viewers = self.viewers();
        BroadcastView {
            id: self.id.clone(),
            room_id: self.room_id.clone(),
            state,
            source: self.spec.source.name(),
            hls_url: self
                .spec
                .hls
                .then(|| format!("{public_url}/hls/{}/index.m3u8", self.id)),
            whep_url: self
                .spec
                .whep
                .then(|| format!("{public_url}/whep/{}", self.id)),
            watch_url: self.watch_url(public_url),
            rtmp,
            viewers,
            renditions,
            encoders,
            transcode,
            started_at: self.started_at.clone(),
            ended_at,
            error,
        }
    }

    /// What webhooks say about it: no viewer token, no RTMP stream keys.
    pub fn webhook_info(&self, public_url: &str) -> crate::webhooks::BroadcastInfo {
        let v = self.view(public_url);
        let state = serde_json::to_value(v.state)
            .ok()
            .and_then(|s| s.as_str().map(str::to_owned))
            .unwrap_or_default();
        crate::webhooks::BroadcastInfo {
            id: v.id,
            room_id: v.room_id,
            state,
            source: v.source,
            hls_url: v.hls_url,
            whep_url: v.whep_url,
            watch_url: format!("{public_url}/watch/{}", self.id),
            rtmp: v
                .rtmp
                .iter()
                .map(|t| crate::webhooks::RtmpInfo {
                    url: crate::media::rtmp::redact(&t.url),
                    state: serde_json::to_value(t.state)
                        .ok()
                        .and_then(|s| s.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                })
                .collect(),
            renditions: v.renditions,
            started_at: v.started_at,
            ended_at: v.ended_at,
            error: v.error,
        }
    }

    /// The room's announcement of it.
    pub fn summary(&self, public_url: &str) -> BroadcastSummary {
        BroadcastSummary {
            id: self.id.clone(),
            state: match self.state() {
                BroadcastState::Starting => "starting",
                BroadcastState::Live => "live",
                BroadcastState::Ended => "ended",
                BroadcastState::Failed => "failed",
            }
            .into(),
            watch_url: self.watch_url(public_url),
        }
    }
}

/// Every broadcast of this process (ended ones for an hour).
#[derive(Debug, Default)]
pub struct Registry {
    map: Mutex<HashMap<BroadcastId, Arc<Broadcast>>>,
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<BroadcastId, Arc<Broadcast>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one (and forgets broadcasts that ended long ago).
    pub fn insert(&self, b: Arc<Broadcast>) {
        let mut m = self.map();
        m.retain(|_, b| !b.ended_before(KEEP_ENDED));
        m.insert(b.id.clone(), b);
    }

    /// Finds one.
    pub fn get(&self, id: &BroadcastId) -> Option<Arc<Broadcast>> {
        self.map().get(id).cloned()
    }

    /// All, or those of one room, newest first.
    pub fn list(&self, room: Option<&RoomId>) -> Vec<Arc<Broadcast>> {
        let mut v: Vec<Arc<Broadcast>> = self
            .map()
            .values()
            .filter(|b| room.is_none_or(|r| &b.room_id == r))
            .cloned()
            .collect();
        v.sort_by(|a, b| b.started_at.cmp(&a.started_at));
        v
    }

    /// Active broadcasts (for metrics).
    pub fn active(&self) -> usize {
        self.map().values().filter(|b| b.is_active()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> Result<BroadcastSpec, ControlError> {
        serde_json::from_str::<StartBroadcast>(json)
            .map_err(|e| ControlError::Invalid(e.to_string()))?
            .validate()
    }

    #[test]
    fn requests_are_validated() {
        let s = req(r#"{"renditions": ["360p", "720p", "360p"]}"#).unwrap();
        assert_eq!(
            s.renditions.iter().map(|r| r.name).collect::<Vec<_>>(),
            ["720p", "360p"]
        );
        assert!(s.hls && s.whep);
        assert_eq!(s.source, SourceSpec::Composite);
        assert!(req(r#"{"renditions": ["4k"]}"#).is_err());
        assert!(req(r#"{"rtmp": ["http://x/y/z"]}"#).is_err());
        assert!(req(r#"{"hls": false, "whep": false}"#).is_err());
        assert!(req(r#"{"source": "../etc"}"#).is_err());
        assert_eq!(
            req(r#"{"source": "ingest"}"#).unwrap().source,
            SourceSpec::Ingest
        );
    }

    #[test]
    fn ending_is_final_and_zeroes_viewers() {
        let spec = req(r#"{"rtmp": ["rtmp://h/app/key"]}"#).unwrap();
        let b = Broadcast::new(RoomId::generate(), spec, None);
        b.whep_viewers.store(3, Ordering::Relaxed);
        assert!(b.set_live());
        assert!(b.end(None));
        assert!(!b.end(Some("again".into())));
        assert_eq!(b.state(), BroadcastState::Ended);
        let v = b.view("http://x");
        assert_eq!(v.viewers.whep, 0);
        assert_eq!(v.rtmp[0].state, RtmpState::Ended);
        assert!(v.ended_at.is_some());
    }

    #[test]
    fn webhook_info_has_no_viewer_token_or_stream_key() {
        let spec = req(r#"{"rtmp": ["rtmp://h/app/streamkey123"]}"#).unwrap();
        let b = Broadcast::new(RoomId::generate(), spec, Some("viewertoken456".into()));
        assert!(b.view("http://x").watch_url.contains("viewertoken456"));
        let info = b.webhook_info("http://x");
        assert_eq!(info.watch_url, format!("http://x/watch/{}", b.id));
        assert_eq!(info.state, "starting");
        assert_eq!(info.rtmp[0].url, "rtmp://h/app/…");
        let text = serde_json::to_string(&info).unwrap();
        assert!(
            !text.contains("viewertoken456") && !text.contains("streamkey123"),
            "{text}"
        );
    }
}
