// WebSocket signaling client (protocol v1, see docs/signaling.md).
// Reconnects by itself with back-off unless told to stop.

export const PROTOCOL_VERSION = 1;

// Errors after which reconnecting makes no sense.
const FINAL_CODES = new Set([
  'room_full', 'room_locked', 'room_closed', 'removed', 'banned', 'denied', 'forbidden', 'unauthorized',
  'not_found', 'invalid_request', 'unsupported_version',
]);

// Heartbeat: a ping every 2 s; a socket silent for 6 s (or not open after
// 5 s) is treated as lost and replaced.
const PING_INTERVAL_MS = 2000;
const SILENCE_TIMEOUT_MS = 6000;
const CONNECT_TIMEOUT_MS = 5000;

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
    let lastHeard = Date.now();
    // A socket that cannot open, or from which nothing is heard (the server
    // answers our pings), is given up at once: a network outage otherwise
    // leaves it "open" until TCP gives up, minutes later.
    const watchdog = setInterval(() => {
      if (ws.readyState === WebSocket.CONNECTING) {
        if (Date.now() - lastHeard > CONNECT_TIMEOUT_MS) lost();
      } else if (Date.now() - lastHeard > SILENCE_TIMEOUT_MS) {
        lost();
      } else if (ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify({ type: 'ping' }));
      }
    }, PING_INTERVAL_MS);
    const lost = () => {
      clearInterval(watchdog);
      if (this.ws !== ws) return;
      this.ws = null;
      ws.onclose = null;
      try { ws.close(); } catch { /* already closing */ }
      this.dispatchEvent(new CustomEvent('disconnected', { detail: { final: fatal || this.stopped } }));
      if (!this.stopped) {
        // At most 2 s apart (plus jitter, so a restarted server is not hit
        // by everyone at once): back within ~2 s of the server.
        const delay = Math.min(2000, 250 * 2 ** this.attempt++) + Math.random() * 250;
        setTimeout(() => this.connect(), delay);
      }
    };
    ws.onopen = () => {
      lastHeard = Date.now();
      ws.send(JSON.stringify({ type: 'join', version: PROTOCOL_VERSION, ...this.joinMessage() }));
    };
    ws.onmessage = (event) => {
      lastHeard = Date.now();
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (msg.type === 'pong') return;
      if (msg.type === 'joined') this.attempt = 0;
      if (msg.type === 'room_closed' || (msg.type === 'error' && msg.fatal && FINAL_CODES.has(msg.code))) {
        fatal = true;
        this.stopped = true;
      }
      this.dispatchEvent(new CustomEvent('message', { detail: msg }));
    };
    ws.onclose = lost;
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
