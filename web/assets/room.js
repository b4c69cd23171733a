// Join page and call: pre-join preview, then two peer connections
// (publish: we offer; subscribe: the server offers), a grid of remote tiles,
// mute / camera / leave, automatic reconnection.

import { HostControls } from './host.js';
import { Signaling } from './signaling.js';
import { Tiles } from './tiles.js';

const $ = (id) => document.getElementById(id);
const roomId = decodeURIComponent(location.pathname.split('/')[2] || '');
const token = new URLSearchParams(location.hash.slice(1)).get('t');
const sessionKey = `roomcast:session:${roomId}`;

// A random id this browser keeps: what a host's ban bars.
function deviceId() {
  let id = localStorage.getItem('roomcast:device');
  if (!id) {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    id = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
    localStorage.setItem('roomcast:device', id);
  }
  return id;
}

const state = {
  local: null, // MediaStream from getUserMedia
  audioOn: true,
  videoOn: true,
  signaling: null,
  pub: null,
  sub: null,
  subQueue: Promise.resolve(),
  pendingSubIce: [],
  mids: new Map(), // subscribe mid -> participant id
  me: null,
  role: null,
  participants: new Map(),
  leaving: false,
};
const tiles = new Tiles($('tiles'), $('empty-room'), {
  root: $('pager'), prev: $('page-prev'), next: $('page-next'), label: $('page-label'),
});
// Only the video of the tiles on screen is sent to us.
tiles.onVisibleChange = (visible) => state.signaling?.send({ type: 'set_visible', participants: visible });
const host = new HostControls((msg) => state.signaling?.send(msg));
tiles.onHostAction = (action, pid) => host.act(action, pid);

function toast(text) {
  const t = $('toast');
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}
window.roomcast = state; // for debugging and automated tests

const COMPOSITE = {
  id: 'p_composite',
  display_name: 'Everyone',
  role: 'guest',
  audio: { published: true, muted: false },
  video: { published: true, muted: false },
};

// Everyone sees when the call is recorded; a change is worth a toast.
let wasRecording = false;
function showRecording(room) {
  const on = !!room.recording;
  $('rec-chip').hidden = !on;
  if (on !== wasRecording) toast(on ? 'Recording started' : 'Recording stopped');
  wasRecording = on;
}

// Likewise when it is streamed live (the chip is dimmed until it is on air).
let wasLive = false;
function showBroadcast(room) {
  const on = !!room.broadcast;
  $('live-chip').hidden = !on;
  $('live-chip').dataset.state = room.broadcast?.state || '';
  if (on !== wasLive) toast(on ? 'The call is being streamed live' : 'The live stream ended');
  wasLive = on;
}

function setState(value, detail = '') {
  const chip = $('room-state');
  chip.textContent = value;
  chip.dataset.state = value;
  chip.title = detail;
}

const ENDINGS = {
  left: ['You left the room', '', true],
  kicked: ['You were removed from the room', 'The host removed you from this call.', false],
  denied: ['The host did not let you in', '', false],
  closed: ['This room is closed', 'The host ended the room.', false],
  full: ['This room is full', 'Try again later, or ask the host to raise the limit.', true],
  locked: ['This room is locked', 'The host is not letting anyone new in right now.', true],
  error: ['Cannot join this room', '', true],
};

function showEnded(kind, message) {
  const [title, text, canRetry] = ENDINGS[kind] || ENDINGS.error;
  $('ended-title').textContent = title;
  $('ended-text').textContent = message || text;
  $('rejoin').hidden = !canRetry;
  $('prejoin').hidden = true;
  $('call').hidden = true;
  $('waiting').hidden = true;
  $('ended').hidden = false;
}

// ---------- pre-join ----------

async function startPreview() {
  try {
    state.local = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true },
      video: { width: { ideal: 640 }, height: { ideal: 360 }, frameRate: { ideal: 30 } },
    });
    $('preview').srcObject = state.local;
    $('media-note').textContent = '';
  } catch (e) {
    state.local = null;
    $('preview-off').hidden = false;
    $('media-note').textContent = 'No camera or microphone available: you can still join to watch and listen.';
  }
}

function applyTrackState() {
  for (const t of state.local?.getAudioTracks() ?? []) t.enabled = state.audioOn;
  for (const t of state.local?.getVideoTracks() ?? []) t.enabled = state.videoOn;
  for (const id of ['pre-audio', 'toggle-audio']) $(id).setAttribute('aria-pressed', String(state.audioOn));
  for (const id of ['pre-video', 'toggle-video']) $(id).setAttribute('aria-pressed', String(state.videoOn));
  $('toggle-audio').title = state.audioOn ? 'Mute microphone' : 'Unmute microphone';
  $('toggle-video').title = state.videoOn ? 'Turn camera off' : 'Turn camera on';
  $('preview-off').hidden = !!state.local && state.videoOn;
}

// ---------- signaling ----------

function iceMessage(pc, candidate) {
  return { type: 'ice', pc, candidate: candidate.candidate, sdp_mline_index: candidate.sdpMLineIndex ?? 0 };
}

async function startPublishing(iceServers) {
  if (!state.local || state.local.getTracks().length === 0) return;
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
  state.pub = pc;
  for (const track of state.local.getTracks()) {
    pc.addTransceiver(track, { direction: 'sendonly', streams: [state.local] });
  }
  pc.onicecandidate = (e) => {
    if (e.candidate && e.candidate.candidate) state.signaling.send(iceMessage('publish', e.candidate));
  };
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  state.signaling.send({ type: 'publish_offer', sdp: offer.sdp });
}

function subscriber(iceServers) {
  if (state.sub) return state.sub;
  const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
  state.sub = pc;
  pc.onicecandidate = (e) => {
    if (e.candidate && e.candidate.candidate) state.signaling.send(iceMessage('subscribe', e.candidate));
  };
  pc.ontrack = (e) => {
    const pid = state.mids.get(e.transceiver.mid);
    if (pid) tiles.addTrack(pid, e.track);
  };
  return pc;
}

function onSubscribeOffer(msg) {
  // Offers are applied strictly in order.
  state.subQueue = state.subQueue.then(async () => {
    // Each offer lists every line that carries someone: a line left out
    // is parked (its publisher left) and may come back for someone else.
    state.mids = new Map(msg.tracks.map((t) => [t.mid, t.participant_id]));
    const pc = subscriber(state.iceServers);
    await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
    for (const c of state.pendingSubIce.splice(0)) await pc.addIceCandidate(c).catch(() => {});
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    state.signaling.send({ type: 'subscribe_answer', sdp: answer.sdp });
    // Tracks of m-lines that already existed keep flowing; map them again.
    for (const tr of pc.getTransceivers()) {
      const pid = state.mids.get(tr.mid);
      if (pid && tr.receiver.track && tr.currentDirection !== 'inactive') tiles.addTrack(pid, tr.receiver.track);
    }
  }).catch((e) => console.warn('subscribe negotiation failed', e));
}

function closePeers() {
  state.pub?.close();
  state.sub?.close();
  state.pub = null;
  state.sub = null;
  state.subQueue = Promise.resolve();
  state.pendingSubIce = [];
  state.mids.clear();
}

function onMessage(msg) {
  switch (msg.type) {
    case 'joined': {
      state.me = msg.participant_id;
      state.role = msg.role;
      state.iceServers = msg.ice_servers;
      sessionStorage.setItem(sessionKey, msg.session);
      $('room-title').textContent = msg.room.name;
      document.title = `${msg.room.name} — roomcast`;
      closePeers();
      tiles.clear();
      state.participants.clear();
      // MCU rooms send one picture of everyone and a mix of the others'
      // voices, as the participant "p_composite": one tile instead of many.
      state.mcu = msg.room.mode === 'mcu';
      document.body.classList.toggle('mcu', state.mcu);
      if (state.mcu) tiles.upsert(COMPOSITE);
      for (const p of msg.participants) {
        state.participants.set(p.id, p);
        if (!state.mcu) tiles.upsert(p);
      }
      $('prejoin').hidden = true;
      $('ended').hidden = true;
      $('waiting').hidden = true;
      $('call').hidden = false;
      host.show(msg.role === 'host');
      tiles.setHost(msg.role === 'host');
      host.setRoom(msg.room, msg.invite_url);
      showRecording(msg.room);
      showBroadcast(msg.room);
      if (msg.role === 'host') host.setLobby(msg.lobby || []);
      $('self-video').srcObject = state.local;
      tiles.lastVisible = null;
      tiles.layout();
      setState('joined');
      sendMuteState();
      startPublishing(msg.ice_servers).catch((e) => console.warn('publish failed', e));
      break;
    }
    case 'participant_joined':
    case 'participant_updated':
      if (msg.participant.id === state.me) break;
      state.participants.set(msg.participant.id, msg.participant);
      if (!state.mcu) tiles.upsert(msg.participant);
      break;
    case 'participant_left':
      state.participants.delete(msg.participant_id);
      tiles.remove(msg.participant_id);
      break;
    case 'publish_answer':
      state.pub?.setRemoteDescription({ type: 'answer', sdp: msg.sdp }).catch((e) => console.warn(e));
      break;
    case 'subscribe_offer':
      onSubscribeOffer(msg);
      break;
    case 'ice': {
      const candidate = { candidate: msg.candidate, sdpMLineIndex: msg.sdp_mline_index };
      if (msg.pc === 'publish') {
        state.pub?.addIceCandidate(candidate).catch(() => {});
      } else if (state.sub?.remoteDescription) {
        state.sub.addIceCandidate(candidate).catch(() => {});
      } else {
        state.pendingSubIce.push(candidate);
      }
      break;
    }
    case 'waiting':
      $('prejoin').hidden = true;
      $('waiting-room').textContent = msg.room.name;
      $('room-title').textContent = msg.room.name;
      $('waiting').hidden = false;
      setState('lobby');
      break;
    case 'room_updated':
      $('room-title').textContent = msg.room.name;
      if (state.role === 'host') host.setRoom(msg.room, msg.invite_url);
      showRecording(msg.room);
      showBroadcast(msg.room);
      break;
    case 'lobby_updated':
      if (state.role === 'host') host.setLobby(msg.lobby);
      break;
    case 'muted_by_host':
      if (msg.audio && state.audioOn) {
        state.audioOn = false;
        applyTrackState();
        sendMuteState();
      }
      if (msg.video && state.videoOn) {
        state.videoOn = false;
        applyTrackState();
        sendMuteState();
      }
      state.hostMuted = msg;
      toast(msg.audio || msg.video ? 'A host muted you.' : 'A host allowed you to speak again.');
      break;
    case 'active_speakers': {
      const offPage = tiles.setSpeakers(msg.speakers);
      const note = $('speaking-note');
      note.hidden = offPage.length === 0;
      note.textContent = offPage.length ? `Speaking: ${offPage.join(', ')}` : '';
      break;
    }
    case 'room_closed':
      end('closed');
      break;
    case 'error':
      onError(msg);
      break;
    default:
      break;
  }
}

function onError(msg) {
  if (!msg.fatal) {
    console.warn('server:', msg.code, msg.message);
    return;
  }
  const kinds = {
    room_full: 'full', room_locked: 'locked', room_closed: 'closed', removed: 'kicked', banned: 'kicked', denied: 'kicked',
  };
  const kind = kinds[msg.code];
  if (kind) {
    end(kind, msg.message);
  } else if (['forbidden', 'unauthorized', 'not_found', 'invalid_request', 'unsupported_version'].includes(msg.code)) {
    end('error', msg.message);
  }
  if (msg.code === 'denied') showEnded('denied', msg.message);
  // Other fatal errors (media failure, timeouts) end in a reconnect.
}

function end(kind, message) {
  state.signaling?.close(false);
  closePeers();
  tiles.clear();
  if (kind === 'kicked' || kind === 'closed') sessionStorage.removeItem(sessionKey);
  host.show(false);
  setState(kind === 'left' ? 'ready' : kind, message || '');
  showEnded(kind, message);
}

function sendMuteState() {
  state.signaling?.send({ type: 'set_muted', audio: !state.audioOn, video: !state.videoOn });
}

function join(name) {
  setState('connecting');
  const signaling = new Signaling(() => ({
    token,
    display_name: name,
    device: deviceId(),
    session: sessionStorage.getItem(sessionKey) || undefined,
  }));
  state.signaling = signaling;
  signaling.addEventListener('message', (e) => onMessage(e.detail));
  signaling.addEventListener('disconnected', (e) => {
    if (state.leaving || e.detail.final) return;
    closePeers();
    setState('reconnecting');
  });
  signaling.connect();
}

// ---------- wiring ----------

$('pre-audio').onclick = (e) => { e.preventDefault(); state.audioOn = !state.audioOn; applyTrackState(); };
$('pre-video').onclick = (e) => { e.preventDefault(); state.videoOn = !state.videoOn; applyTrackState(); };
$('toggle-audio').onclick = () => { state.audioOn = !state.audioOn; applyTrackState(); sendMuteState(); };
$('toggle-video').onclick = () => { state.videoOn = !state.videoOn; applyTrackState(); sendMuteState(); };
$('leave').onclick = () => {
  state.leaving = true;
  state.signaling?.close(true);
  closePeers();
  tiles.clear();
  sessionStorage.removeItem(sessionKey);
  setState('ready');
  showEnded('left');
};
$('rejoin').onclick = () => location.reload();
$('waiting-leave').onclick = () => {
  state.leaving = true;
  state.signaling?.close(true);
  setState('ready');
  showEnded('left');
};
$('join-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('display-name').value.trim();
  if (!name) return;
  localStorage.setItem('roomcast:name', name);
  $('join').disabled = true;
  join(name);
});
// Disabled in the page until here: a click before the script ran would
// submit the form natively and only reload the page.
$('join').disabled = false;
window.addEventListener('pagehide', () => {
  if (!state.leaving) state.signaling?.close(true);
});
window.addEventListener('resize', () => tiles.layout());

if (!token || !roomId) {
  setState('error', 'this link is incomplete');
  showEnded('error', 'This link is incomplete: ask for the invite link again.');
} else {
  // The page shows the field before this module runs: never overwrite what
  // someone already typed there with the name remembered from last time.
  const nameField = $('display-name');
  if (!nameField.value) nameField.value = localStorage.getItem('roomcast:name') || '';
  startPreview().then(applyTrackState);
}
