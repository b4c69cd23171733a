// The grid of remote participants: one tile per person, laid out to fill the stage.

function initials(name) {
  const parts = name.trim().split(/\s+/).filter(Boolean);
  return ((parts[0]?.[0] ?? '?') + (parts.length > 1 ? parts[parts.length - 1][0] : '')).toUpperCase();
}

// Most tiles shown at once; the others are on further pages and their video
// is not sent to us (the server is told which participants are visible).
export const PAGE_SIZE = 9;

export class Tiles {
  constructor(grid, empty, pager) {
    this.grid = grid;
    this.empty = empty;
    this.pager = pager;
    this.tiles = new Map();
    this.page = 0;
    this.onVisibleChange = () => {};
    this.onHostAction = () => {};
    this.isHost = false;
    this.lastVisible = null;
    pager.prev.onclick = () => this.turn(-1);
    pager.next.onclick = () => this.turn(1);
  }

  pages() {
    return Math.max(1, Math.ceil(this.tiles.size / PAGE_SIZE));
  }

  turn(delta) {
    this.page = Math.min(this.pages() - 1, Math.max(0, this.page + delta));
    this.layout();
  }

  // Ids of the participants on the current page (null: everyone fits).
  visible() {
    if (this.tiles.size <= PAGE_SIZE) return null;
    return [...this.tiles.keys()].slice(this.page * PAGE_SIZE, (this.page + 1) * PAGE_SIZE);
  }

  layout() {
    this.page = Math.min(this.page, this.pages() - 1);
    const visible = this.visible();
    const shown = visible ? new Set(visible) : null;
    for (const [id, tile] of this.tiles) tile.el.hidden = shown ? !shown.has(id) : false;
    const n = shown ? shown.size : this.tiles.size;
    const wide = this.grid.clientWidth >= this.grid.clientHeight;
    let cols = Math.ceil(Math.sqrt(n || 1));
    if (!wide) cols = Math.max(1, Math.floor(Math.sqrt(n || 1)));
    this.grid.style.setProperty('--cols', String(cols));
    this.grid.dataset.count = String(this.tiles.size);
    this.empty.hidden = this.tiles.size > 0;
    this.pager.root.hidden = this.pages() <= 1;
    this.pager.label.textContent = `${this.page + 1} / ${this.pages()}`;
    this.pager.prev.disabled = this.page === 0;
    this.pager.next.disabled = this.page >= this.pages() - 1;
    const key = JSON.stringify(visible);
    if (key !== this.lastVisible) {
      this.lastVisible = key;
      this.onVisibleChange(visible);
    }
  }

  setHost(isHost) {
    this.isHost = isHost;
    for (const tile of this.tiles.values()) tile.tools.hidden = !isHost;
  }

  setSpeakers(ids) {
    const speaking = new Set(ids);
    for (const [id, tile] of this.tiles) tile.el.classList.toggle('speaking', speaking.has(id));
    const hidden = ids.filter((id) => this.tiles.get(id)?.el.hidden);
    return hidden.map((id) => this.tiles.get(id).participant?.display_name).filter(Boolean);
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
      // Moderation (hosts only): always visible, so they are one click away.
      const tools = document.createElement('div');
      tools.className = 'host-tools';
      tools.hidden = !this.isHost;
      const tool = (testid, text, action, danger) => {
        const b = document.createElement('button');
        b.setAttribute('data-testid', testid);
        b.textContent = text;
        if (danger) b.className = 'danger';
        b.onclick = (e) => {
          e.stopPropagation();
          this.onHostAction(action(), participant.id);
        };
        return b;
      };
      const muteButton = tool('mute', 'Mute', () => (tile.participant?.audio?.muted ? 'unmute' : 'mute'), false);
      tools.append(muteButton, tool('kick', 'Remove', () => 'kick', true), tool('ban', 'Ban', () => 'ban', true));
      el.append(tools);
      this.grid.append(el);
      tile = { el, video, badge, name, tools, muteButton, stream: new MediaStream() };
      video.srcObject = tile.stream;
      this.tiles.set(participant.id, tile);
      this.layout();
    }
    tile.name.textContent = participant.display_name;
    tile.badge.textContent = initials(participant.display_name);
    tile.el.dataset.audio = participant.audio?.muted ? 'muted' : 'on';
    tile.muteButton.textContent = participant.audio?.muted ? 'Unmute' : 'Mute';
    const videoOn = participant.video?.published && !participant.video?.muted && tile.stream.getVideoTracks().length > 0;
    tile.el.dataset.video = videoOn ? 'on' : 'off';
    tile.participant = participant;
    return tile;
  }

  addTrack(participantId, track) {
    const tile = this.tiles.get(participantId);
    if (!tile) return;
    // The server recycles the m-line of someone who left for the next
    // person: the same receiver track may arrive for another participant.
    for (const [id, other] of this.tiles) {
      if (id !== participantId && other.stream.getTracks().includes(track)) other.stream.removeTrack(track);
    }
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
    this.lastVisible = null;
  }
}
