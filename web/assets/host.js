// Host controls: invite link, lock, record, broadcast, new invite link, end for all, the lobby.
// Everything goes over the same signaling socket as the call itself.

const $ = (id) => document.getElementById(id);

export class HostControls {
  constructor(send) {
    this.send = send;
    this.inviteUrl = '';
    this.locked = false;
    this.recording = false;
    this.broadcast = null;
    this.lobby = [];
    $('invite-button').onclick = () => this.toggle('invite-popover');
    $('lobby-button').onclick = () => this.toggle('lobby-panel');
    $('invite-copy').onclick = () => {
      navigator.clipboard?.writeText(this.inviteUrl).catch(() => {});
      $('invite-link').select();
      $('invite-copy').textContent = 'Copied';
      setTimeout(() => { $('invite-copy').textContent = 'Copy'; }, 1500);
    };
    $('lock').onclick = () => this.send({ type: 'set_locked', locked: !this.locked });
    $('rotate-invite').onclick = () => {
      this.send({ type: 'rotate_invite' });
      $('invite-popover').hidden = false;
    };
    $('record').onclick = () => {
      $('record').disabled = true;
      this.send(this.recording ? { type: 'stop_recording' } : { type: 'start_recording', kind: 'composite', format: 'mp4' });
      // Re-enabled by the room_updated that follows (or after a moment if refused).
      setTimeout(() => { $('record').disabled = false; }, 3000);
    };
    $('broadcast').onclick = () => {
      $('broadcast').disabled = true;
      this.send({ type: this.broadcast ? 'stop_broadcast' : 'start_broadcast' });
      setTimeout(() => { $('broadcast').disabled = false; }, 3000);
    };
    $('watch-copy').onclick = () => {
      navigator.clipboard?.writeText($('watch-link').href).catch(() => {});
      $('watch-copy').textContent = 'Copied';
      setTimeout(() => { $('watch-copy').textContent = 'Copy'; }, 1500);
    };
    $('close-room').onclick = () => this.send({ type: 'close_room' });
  }

  toggle(id) {
    for (const other of ['invite-popover', 'lobby-panel']) {
      if (other !== id) $(other).hidden = true;
    }
    $(id).hidden = !$(id).hidden;
  }

  show(isHost) {
    $('host-bar').hidden = !isHost;
    if (!isHost) {
      $('invite-popover').hidden = true;
      $('lobby-panel').hidden = true;
    }
  }

  setRoom(room, inviteUrl) {
    this.locked = !!room.locked;
    const lock = $('lock');
    lock.setAttribute('aria-pressed', String(this.locked));
    lock.textContent = this.locked ? 'Unlock room' : 'Lock room';
    lock.title = this.locked ? 'Let newcomers in again' : 'Keep newcomers out';
    this.recording = !!room.recording;
    const rec = $('record');
    rec.disabled = false;
    rec.setAttribute('aria-pressed', String(this.recording));
    $('record-label').textContent = this.recording ? 'Stop recording' : 'Record';
    rec.title = this.recording ? 'Stop and save the recording' : 'Record the call (grid of everyone plus the mixed sound)';
    this.broadcast = room.broadcast || null;
    const live = $('broadcast');
    live.disabled = false;
    live.setAttribute('aria-pressed', String(!!this.broadcast));
    live.textContent = this.broadcast ? 'End broadcast' : 'Go live';
    live.title = this.broadcast ? 'Stop the live stream' : 'Stream the call live: anyone with the watch link can follow it';
    $('watch-row').hidden = !this.broadcast?.watch_url;
    if (this.broadcast?.watch_url) $('watch-link').href = this.broadcast.watch_url;
    $('lobby-button').hidden = !room.lobby && this.lobby.length === 0;
    if (inviteUrl) {
      this.inviteUrl = inviteUrl;
      $('invite-link').value = inviteUrl;
    }
  }

  setLobby(lobby) {
    this.lobby = lobby;
    $('lobby-count').textContent = String(lobby.length);
    $('lobby-button').hidden = lobby.length === 0 && $('lobby-button').hidden;
    if (lobby.length > 0) $('lobby-button').hidden = false;
    $('lobby-empty').hidden = lobby.length > 0;
    $('lobby-list').replaceChildren(...lobby.map((p) => {
      const li = document.createElement('li');
      li.dataset.participantId = p.id;
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = p.display_name;
      const admit = document.createElement('button');
      admit.className = 'btn small primary';
      admit.setAttribute('data-testid', 'admit');
      admit.textContent = 'Admit';
      admit.onclick = () => this.send({ type: 'admit', participant_id: p.id });
      const deny = document.createElement('button');
      deny.className = 'btn small';
      deny.setAttribute('data-testid', 'deny');
      deny.textContent = 'Deny';
      deny.onclick = () => this.send({ type: 'deny', participant_id: p.id });
      li.append(name, admit, deny);
      return li;
    }));
    // A newcomer waiting is worth interrupting the host for.
    if (lobby.length > 0) $('lobby-panel').hidden = false;
  }

  act(action, participantId) {
    switch (action) {
      case 'kick':
        this.send({ type: 'remove_participant', participant_id: participantId, ban: false });
        break;
      case 'ban':
        this.send({ type: 'remove_participant', participant_id: participantId, ban: true });
        break;
      case 'mute':
        this.send({ type: 'mute_participant', participant_id: participantId, audio: true });
        break;
      case 'unmute':
        this.send({ type: 'mute_participant', participant_id: participantId, audio: false });
        break;
      default:
        break;
    }
  }
}
