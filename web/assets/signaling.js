// WebSocket signaling client (protocol v1, see docs/signaling.md).
// Reconnects by itself with back-off unless told to stop.

export const PROTOCOL_VERSION = 1;

// Errors after which reconnecting makes no sense.
const FINAL_CODES = new Set([
  'room_full', 'room_locked', 'room_closed', 'removed', 'banned', 'denied', 'forbidden', 'unauthorized',
  'not_found', 'invalid_request', 'unsupported_version',
]);

export class Signaling extends EventTarget {
  constructor(joinMessage) {
    super();
    this.joinMessage = joinMessage;
    this.ws = null;
    this.stopped = false;
    this.attempt = 0;
  }

  url() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${location.host}/ws`;
  }

  connect() {
    if (this.stopped) return;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    let fatal = false;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: 'join', version: PROTOCOL_VERSION, ...this.joinMessage() }));
    };
    ws.onmessage = (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (msg.type === 'joined') this.attempt = 0;
      if (msg.type === 'room_closed' || (msg.type === 'error' && msg.fatal && FINAL_CODES.has(msg.code))) {
        fatal = true;
        this.stopped = true;
      }
      this.dispatchEvent(new CustomEvent('message', { detail: msg }));
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.dispatchEvent(new CustomEvent('disconnected', { detail: { final: fatal || this.stopped } }));
      if (!this.stopped) {
        // At most 2 s apart (plus jitter, so a restarted server is not hit
        // by everyone at once): back within ~2 s of the server.
        const delay = Math.min(2000, 250 * 2 ** this.attempt++) + Math.random() * 250;
        setTimeout(() => this.connect(), delay);
      }
    };
  }

  send(msg) {
    if (this.ws?.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(msg));
    }
  }

  close(sendLeave = true) {
    this.stopped = true;
    if (this.ws) {
      if (sendLeave) this.send({ type: 'leave' });
      this.ws.close();
    }
  }
}
