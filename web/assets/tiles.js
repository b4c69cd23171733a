// The grid of remote participants: one tile per person, laid out to fill the stage.

function initials(name) {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  return ((parts[0]?.[0] ?? '?') + (parts.length > 1 ? parts[parts.length - 1][0] : '')).toUpperCase();
}

export class Tiles {
  constructor(grid, empty) {
    this.grid = grid;
    this.empty = empty;
    this.tiles = new Map();
  }

  layout() {
    const n = this.tiles.size;
    const wide = this.grid.clientWidth >= this.grid.clientHeight;
    let cols = Math.ceil(Math.sqrt(n || 1));
    if (!wide) cols = Math.max(1, Math.floor(Math.sqrt(n || 1)));
    this.grid.style.setProperty('--cols', String(cols));
    this.grid.dataset.count = String(n);
    this.empty.hidden = n > 0;
  }

  upsert(participant) {
    let tile = this.tiles.get(participant.id);
    if (!tile) {
      const el = document.createElement('div');
      el.className = 'tile';
      el.dataset.testid = 'tile';
      el.setAttribute('data-testid', 'tile');
      el.dataset.participantId = participant.id;
      const video = document.createElement('video');
      video.autoplay = true;
      video.playsInline = true;
      const avatar = document.createElement('div');
      avatar.className = 'avatar';
      const badge = document.createElement('span');
      avatar.append(badge);
      const label = document.createElement('div');
      label.className = 'label';
      const mic = document.createElement('i');
      mic.className = 'muted-mic';
      mic.title = 'Microphone off';
      const name = document.createElement('span');
      name.className = 'name';
      label.append(mic, name);
      el.append(video, avatar, label);
      this.grid.append(el);
      tile = { el, video, badge, name, stream: new MediaStream() };
      video.srcObject = tile.stream;
      this.tiles.set(participant.id, tile);
      this.layout();
    }
    tile.name.textContent = participant.display_name;
    tile.badge.textContent = initials(participant.display_name);
    tile.el.dataset.audio = participant.audio?.muted ? 'muted' : 'on';
    const videoOn = participant.video?.published && !participant.video?.muted && tile.stream.getVideoTracks().length > 0;
    tile.el.dataset.video = videoOn ? 'on' : 'off';
    tile.participant = participant;
    return tile;
  }

  addTrack(participantId, track) {
    const tile = this.tiles.get(participantId);
    if (!tile) return;
    for (const old of tile.stream.getTracks()) {
      if (old.kind === track.kind) tile.stream.removeTrack(old);
    }
    tile.stream.addTrack(track);
    // Re-attach so the element picks up the new track at once.
    tile.video.srcObject = tile.stream;
    tile.video.play().catch(() => {});
    if (tile.participant) this.upsert(tile.participant);
  }

  remove(participantId) {
    const tile = this.tiles.get(participantId);
    if (!tile) return;
    tile.video.srcObject = null;
    tile.el.remove();
    this.tiles.delete(participantId);
    this.layout();
  }

  clear() {
    for (const id of [...this.tiles.keys()]) this.remove(id);
  }
}
