// Viewer page of a broadcast: WHEP first (WebRTC, well under a second behind),
// HLS when WHEP fails or `?mode=hls` asks for it (the vendored hls.js, loaded
// only then, or native HLS). Polls the broadcast for its state and audience.

const $ = (id) => document.getElementById(id);
const broadcastId = decodeURIComponent(location.pathname.split('/')[2] || '');
const token = new URLSearchParams(location.hash.slice(1)).get('t');
const forceHls = new URLSearchParams(location.search).get('mode') === 'hls';
const auth = token ? { Authorization: `Bearer ${token}` } : {};

const POLL_MS = 3000;
const ICE_GATHERING_MS = 2000;
const WHEP_FIRST_FRAME_MS = 8000;
const HLS_JS = '/assets/vendor/hls.min.js';

const video = $('player');
const state = {
  info: null, // the last answer of the public broadcast endpoint
  mode: '', // 'whep' or 'hls' while playing (or trying to)
  pc: null, // WHEP peer connection
  resource: null, // WHEP session URL (the Location of the POST), for the DELETE
  hls: null, // hls.js instance
  whepFailed: false,
  over: false, // ended, failed or unknown: nothing more to play
};
window.roomcast = state; // for debugging and automated tests

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---------- what the page shows ----------

function setBroadcastState(value, detail = '') {
  const chip = $('broadcast-state');
  chip.textContent = value;
  chip.dataset.state = value;
  chip.title = detail;
  $('live-chip').hidden = value !== 'live';
}

function setMode(mode) {
  state.mode = mode;
  $('playback-mode').textContent = mode;
  $('playback-mode').parentElement.hidden = !mode;
}

function note(text, busy = false) {
  $('note').hidden = !text;
  $('note-text').textContent = text;
  $('note-spinner').hidden = !busy;
}

function show(info) {
  setBroadcastState(info.state);
  $('viewer-count').textContent = String((info.viewers?.hls || 0) + (info.viewers?.whep || 0));
  if (info.room_name) {
    $('room-title').textContent = info.room_name;
    document.title = `${info.room_name} — live on roomcast`;
  }
  if (info.state === 'starting') note('The broadcast is about to start…', true);
}

const ENDINGS = {
  ended: 'The broadcast has ended',
  failed: 'The broadcast stopped because of a server error',
  error: 'There is no broadcast here',
};

function finish(kind, message) {
  state.over = true;
  clearInterval(state.timer);
  stopPlayback();
  setBroadcastState(kind, message || '');
  note(message || ENDINGS[kind]);
  $('unmute').hidden = true;
}

// ---------- the broadcast's state ----------

async function refresh() {
  if (state.over) return;
  let resp;
  let data;
  try {
    resp = await fetch(`/api/v1/public/broadcasts/${encodeURIComponent(broadcastId)}`, { cache: 'no-store' });
    data = await resp.json().catch(() => null);
  } catch {
    return; // the network hiccupped: the next poll tries again
  }
  if (state.over) return;
  if (resp.status >= 400 && resp.status < 500) {
    finish('error', data?.error?.message);
    return;
  }
  if (!resp.ok || !data) return;
  state.info = data;
  show(data);
  if (data.state === 'ended' || data.state === 'failed') {
    finish(data.state);
  } else if (data.state === 'live' && !state.mode) {
    play();
  }
}

// ---------- playback ----------

function play() {
  const info = state.info;
  note('Connecting…', true);
  if (info.whep_url && !forceHls && !state.whepFailed) {
    playWhep(info.whep_url);
  } else if (info.hls_url) {
    playHls(info.hls_url);
  } else {
    note('This broadcast cannot be played in a browser');
  }
}

// Called when the current playback breaks. WHEP gives way to HLS at once,
// unless the broadcast simply ended (refresh asks); HLS is tried again on the
// next poll.
function playbackFailed(reason) {
  if (state.over || !state.mode) return;
  console.warn(`${state.mode} playback failed:`, reason);
  const wasWhep = state.mode === 'whep';
  stopPlayback();
  note('Reconnecting…', true);
  if (wasWhep) {
    state.whepFailed = true;
    refresh();
  }
}

function stopPlayback() {
  state.pc?.close();
  state.pc = null;
  if (state.resource) {
    fetch(state.resource, { method: 'DELETE', headers: auth, keepalive: true }).catch(() => {});
    state.resource = null;
  }
  state.hls?.destroy();
  state.hls = null;
  video.onerror = null;
  video.pause();
  video.srcObject = null;
  video.removeAttribute('src');
  video.load();
  setMode('');
}

function iceGathered(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState !== 'complete') return;
      clearTimeout(timer);
      resolve();
    });
  });
}

async function videoFramesDecoded(pc) {
  let frames = 0;
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
  });
  return frames;
}

async function firstFrames(pc, ms) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (pc.connectionState === 'failed' || pc.connectionState === 'closed') {
      throw new Error(`connection ${pc.connectionState}`);
    }
    if ((await videoFramesDecoded(pc)) > 0) return;
    await sleep(250);
  }
  throw new Error(`no video within ${ms / 1000} s`);
}

// WHEP (draft-ietf-wish-whep): one POST of a complete offer, a 201 with the
// answer and the session URL in Location; DELETE on that URL to leave.
async function playWhep(url) {
  setMode('whep');
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
  state.pc = pc;
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const stream = new MediaStream();
  pc.ontrack = (e) => {
    stream.addTrack(e.track);
    video.srcObject = stream;
    video.play().catch(() => {});
  };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(pc, ICE_GATHERING_MS);
    const resp = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', ...auth },
      body: pc.localDescription.sdp,
      signal: AbortSignal.timeout(WHEP_FIRST_FRAME_MS),
    });
    const location = resp.headers.get('Location');
    const resource = location && new URL(location, url).href;
    if (state.pc !== pc) { // stopped meanwhile: leave the session it opened
      if (resource) fetch(resource, { method: 'DELETE', headers: auth }).catch(() => {});
      return;
    }
    state.resource = resource;
    if (resp.status !== 201) throw new Error(`the server answered ${resp.status}`);
    await pc.setRemoteDescription({ type: 'answer', sdp: await resp.text() });
    await firstFrames(pc, WHEP_FIRST_FRAME_MS);
  } catch (e) {
    if (state.pc === pc) playbackFailed(e.message);
    return;
  }
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'failed' && state.pc === pc) playbackFailed('connection failed');
  };
}

let hlsJs = null;
function loadHlsJs() {
  hlsJs ??= new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = HLS_JS;
    script.onload = () => resolve(window.Hls);
    script.onerror = () => {
      hlsJs = null;
      reject(new Error('could not load hls.js'));
    };
    document.head.append(script);
  });
  return hlsJs;
}

// hls.js wherever the browser has Media Source Extensions, as hls.js itself
// advises: it plays low-latency HLS the same way everywhere, whereas native
// players differ (Chromium now answers "maybe" for HLS too). Native HLS where
// there is no MSE (older iPhones).
async function playHls(url) {
  setMode('hls');
  let Hls = null;
  if ('MediaSource' in window || 'ManagedMediaSource' in window) {
    try {
      Hls = await loadHlsJs();
    } catch (e) {
      playbackFailed(e.message);
      return;
    }
    if (state.mode !== 'hls' || state.hls) return; // stopped or restarted meanwhile
  }
  if (Hls?.isSupported()) {
    const hls = new Hls({ lowLatencyMode: true });
    state.hls = hls;
    hls.on(Hls.Events.ERROR, (_event, data) => {
      if (data.fatal && state.hls === hls) playbackFailed(`${data.type}: ${data.details}`);
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => video.play().catch(() => {}));
    hls.loadSource(url);
    hls.attachMedia(video);
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    video.onerror = () => playbackFailed(video.error?.message || 'media error');
    video.src = url;
    video.play().catch(() => {});
  } else {
    finish('error', 'This browser can play neither WebRTC nor HLS');
  }
}

// ---------- wiring ----------

video.addEventListener('playing', () => note(''));
video.addEventListener('volumechange', () => { $('unmute').hidden = !video.muted || state.over; });
$('unmute').onclick = () => {
  video.muted = false;
  video.play().catch(() => {});
};
// Leave the WHEP session rather than letting the server time it out.
window.addEventListener('pagehide', () => stopPlayback());

if (!broadcastId) {
  finish('error', 'This link is incomplete: ask for the watch link again.');
} else {
  refresh();
  state.timer = setInterval(refresh, POLL_MS);
}
