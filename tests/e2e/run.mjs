// End-to-end tests in headless Chromium with fake camera/microphone.
// Starts its own roomcast server (ROOMCAST_BIN, default target/debug/roomcast),
// drives the web client through the contract's data-testid hooks and checks
// media the way users experience it: RTCPeerConnection.getStats().
//
// Run inside a network namespace that has only loopback (scripts/test does).

import { chromium } from 'playwright-core';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

const ROOT = resolve(new URL('../..', import.meta.url).pathname);
const BIN = process.env.ROOMCAST_BIN || join(ROOT, 'target/debug/roomcast');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ADMIN = 'e2e-admin-token-0123456789';
const only = process.argv[2];

function log(...args) {
  console.log(`[e2e ${new Date().toISOString().slice(11, 23)}]`, ...args);
}

async function waitFor(what, timeoutMs, fn, intervalMs = 200) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(`assertion failed: ${message}`);
}

// Elements any server of this run disposed while not in NULL.
const disposedRunning = [];

class Server {
  constructor({ listen = '127.0.0.1:0', iceIp = '127.0.0.1' } = {}) {
    this.dataDir = mkdtempSync(join(tmpdir(), 'roomcast-e2e-'));
    this.listen = listen;
    this.iceIp = iceIp;
  }

  async start() {
    this.proc = spawn(BIN, ['serve', '--listen', this.listen, '--data-dir', this.dataDir,
      '--ice-local-ip', this.iceIp, '--admin-token', ADMIN], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.E2E_SERVER_LOG || 'warn' },
    });
    // The server's stderr goes on to ours; elements it let go of while
    // still running (GStreamer's "Trying to dispose element …, but it is in
    // PAUSED") are collected: they fail the run at the end.
    createInterface({ input: this.proc.stderr }).on('line', (line) => {
      process.stderr.write(`${line}\n`);
      const m = line.match(/^Trying to dispose element (\S+), but it is in (\S+)/);
      if (m) disposedRunning.push(`${m[1]} (${m[2]})`);
    });
    const lines = createInterface({ input: this.proc.stdout });
    this.base = await new Promise((resolveUrl, reject) => {
      const timer = setTimeout(() => reject(new Error('server did not start')), 20000);
      lines.on('line', (line) => {
        const m = line.match(/^roomcast listening on (\S+)/);
        if (m) {
          clearTimeout(timer);
          resolveUrl(m[1]);
        }
      });
      this.proc.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
    });
    this.listen = this.base.replace('http://', '');
    log('server at', this.base);
  }

  async kill() {
    if (!this.proc) return;
    // A server that is already gone (crashed) never emits 'exit' again.
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) {
      this.crashed = this.crashed || !this.killing;
      this.proc = null;
      return;
    }
    this.killing = true;
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGKILL');
    await exited;
    this.killing = false;
    this.proc = null;
  }

  // SIGTERM, and the exit (code 0) within 15 s.
  async stop() {
    const proc = this.proc;
    this.killing = true;
    const exited = new Promise((r) => proc.once('exit', (code, signal) => r({ code, signal })));
    proc.kill('SIGTERM');
    const t0 = Date.now();
    const { code, signal } = await Promise.race([
      exited,
      new Promise((_, reject) => setTimeout(() => reject(new Error('no exit within 15 s of SIGTERM')), 15000)),
    ]);
    this.killing = false;
    this.proc = null;
    assert(code === 0, `exit after SIGTERM: code ${code} signal ${signal}`);
    log(`server stopped ${Date.now() - t0} ms after SIGTERM`);
  }

  async api(method, path, body, token = ADMIN) {
    const resp = await fetch(this.base + path, {
      method,
      headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(body ? { 'Content-Type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await resp.text();
    return { status: resp.status, body: text ? JSON.parse(text) : null };
  }

  async cleanup() {
    await this.kill();
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}

async function launchBrowser(executablePath = CHROMIUM, extraArgs = []) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required',
      ...extraArgs,
    ],
  });
}

async function openPage(browser, url, name) {
  const context = await browser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') log(`${name} console:`, m.text());
  });
  page.on('pageerror', (e) => log(`${name} page error:`, e.message));
  await page.goto(url);
  return page;
}

async function joinAs(page, name) {
  await page.getByTestId('display-name').fill(name);
  await page.getByTestId('join').click();
  let state = null;
  try {
    await waitFor(`${name} to join`, 15000, async () => (state = await roomState(page)) === 'joined');
  } catch (e) {
    throw new Error(`${e.message}; room state ${JSON.stringify(state)}, at ${page.url()}`);
  }
  return page.evaluate(() => window.roomcast.me);
}

const roomState = (page) => page.getByTestId('room-state').textContent();

// Inbound video frames decoded and audio samples received, from the subscribe connection.
async function inbound(page) {
  return page.evaluate(async () => {
    const pc = window.roomcast.sub;
    const out = { framesDecoded: 0, audioSamples: 0, audioPackets: 0 };
    if (!pc) return out;
    const stats = await pc.getStats();
    stats.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      if (s.kind === 'video') out.framesDecoded += s.framesDecoded || 0;
      if (s.kind === 'audio') {
        out.audioSamples += s.totalSamplesReceived || 0;
        out.audioPackets += s.packetsReceived || 0;
      }
    });
    return out;
  });
}

async function expectMediaFlowing(page, name) {
  const first = await waitFor(`${name} to decode video and audio`, 20000, async () => {
    const s = await inbound(page);
    return s.framesDecoded > 0 && s.audioSamples > 0 ? s : null;
  });
  const later = await waitFor(`${name}'s counters to keep rising`, 10000, async () => {
    const s = await inbound(page);
    return s.framesDecoded > first.framesDecoded + 10 && s.audioSamples > first.audioSamples ? s : null;
  });
  log(`${name}: framesDecoded ${first.framesDecoded} -> ${later.framesDecoded}, audio samples ${later.audioSamples}`);
}

async function screenshot(page, name) {
  const dir = process.env.E2E_SCREENSHOTS;
  if (dir) await page.screenshot({ path: join(dir, `${name}.png`) });
}

async function tileIds(page) {
  return page.$$eval('[data-testid=tile]', (els) => els.map((e) => e.dataset.participantId));
}

// ---------- tests ----------

async function twoBrowsersSeeAndHearEachOther(server, browser) {
  const { status, body: room } = await server.api('POST', '/api/v1/rooms', { name: 'E2E call' });
  assert(status === 201, `create room: ${status}`);
  const ada = await openPage(browser, room.invite_url, 'ada');
  const bob = await openPage(browser, room.invite_url, 'bob');
  await screenshot(ada, 'prejoin');
  const adaId = await joinAs(ada, 'Ada');
  const bobId = await joinAs(bob, 'Bob');
  await waitFor('tiles', 10000, async () => {
    const [a, b] = [await tileIds(ada), await tileIds(bob)];
    return a.length === 1 && a[0] === bobId && b.length === 1 && b[0] === adaId;
  });
  await expectMediaFlowing(ada, 'ada');
  await expectMediaFlowing(bob, 'bob');
  await screenshot(ada, 'call');
  const { body: list } = await server.api('GET', `/api/v1/rooms/${room.id}/participants`);
  const names = list.participants.map((p) => p.display_name).sort();
  assert(JSON.stringify(names) === '["Ada","Bob"]', `participants ${names}`);

  // The server restarts (SIGTERM, then a new process on the same port and
  // data): both browsers come back by themselves within 5 s of the server,
  // and media resumes.
  await server.stop();
  await waitFor('pages to notice the restart', 10000, async () => (await roomState(ada)) !== 'joined' && (await roomState(bob)) !== 'joined');
  await server.start();
  const back = Date.now();
  await waitFor('both pages to rejoin', 5000, async () => (await roomState(ada)) === 'joined' && (await roomState(bob)) === 'joined');
  log(`both pages rejoined ${Date.now() - back} ms after the server was back`);
  assert(await ada.evaluate(() => window.roomcast.me) === adaId, 'ada keeps her participant id');
  await expectMediaFlowing(ada, 'ada after restart');
  await expectMediaFlowing(bob, 'bob after restart');

  // Leaving removes the tile on the other side.
  await bob.getByTestId('leave').click();
  await waitFor('bob tile to go', 5000, async () => (await tileIds(ada)).length === 0);
  await ada.context().close();
  await bob.context().close();
}

// Frames the <video> of `pid`'s tile has presented.
async function tileFrames(page, pid) {
  return page.evaluate((id) => {
    const v = document.querySelector(`[data-testid=tile][data-participant-id="${id}"] video`);
    return v && v.videoWidth > 0 ? v.getVideoPlaybackQuality().totalVideoFrames : 0;
  }, pid);
}

// People come and go: each newcomer's picture plays in its own tile on a
// page that stays, over m-lines the server recycles (the page's subscribe
// connection never holds more than one audio and one video transceiver).
async function peopleComeAndGo(server, browser) {
  const { body: room } = await server.api('POST', '/api/v1/rooms', { name: 'Drop-in' });
  const ada = await openPage(browser, room.invite_url, 'ada');
  await joinAs(ada, 'Ada');
  for (const name of ['Bob', 'Cy', 'Di']) {
    const page = await openPage(browser, room.invite_url, name.toLowerCase());
    const id = await joinAs(page, name);
    await waitFor(`${name}'s tile`, 10000, async () => JSON.stringify(await tileIds(ada)) === JSON.stringify([id]));
    const audio = (await inbound(ada)).audioPackets;
    const first = await waitFor(`${name}'s picture to play`, 20000, async () => (await tileFrames(ada, id)) || null);
    await waitFor(`${name}'s picture to keep playing`, 10000, async () => (await tileFrames(ada, id)) > first + 10);
    await waitFor(`${name}'s voice`, 10000, async () => (await inbound(ada)).audioPackets > audio + 50);
    const lines = await ada.evaluate(() => window.roomcast.sub.getTransceivers().map((t) => t.receiver.track.kind).sort().join());
    assert(lines === 'audio,video', `ada's subscribe transceivers with ${name}: ${lines}`);
    await page.getByTestId('leave').click();
    await waitFor(`${name}'s tile to go`, 5000, async () => (await tileIds(ada)).length === 0);
    await page.context().close();
  }
  await ada.context().close();
}

async function stateWithin(page, wanted, ms, what) {
  const t0 = Date.now();
  await waitFor(what || `room-state ${wanted}`, ms, async () => (await roomState(page)) === wanted, 50);
  return Date.now() - t0;
}

// Opens `url` afresh (a goto to the same URL with a fragment would not reload).
async function reopen(page, url) {
  await page.goto('about:blank');
  await page.goto(url);
}

async function joinExpecting(page, name, wanted) {
  await page.getByTestId('display-name').fill(name);
  await page.getByTestId('join').click();
  await stateWithin(page, wanted, 15000, `${name} to see ${wanted}`);
}

// The host locks, removes, bans, rotates the link and closes the room, all from its page.
async function hostControls(server, browser) {
  const { body: room } = await server.api('POST', '/api/v1/rooms', { name: 'Moderated' });
  const hank = await openPage(browser, room.host_url, 'hank');
  const gina = await openPage(browser, room.invite_url, 'gina');
  await joinAs(hank, 'Hank');
  const ginaId = await joinAs(gina, 'Gina');
  await waitFor('Gina tile at the host', 10000, async () => (await tileIds(hank)).includes(ginaId));
  const ginaTile = () => hank.locator(`[data-testid=tile][data-participant-id="${ginaId}"]`);
  await screenshot(hank, 'host');

  // Lock: a third browser is kept out.
  await hank.getByTestId('lock').click();
  await waitFor('lock pressed', 3000, async () => (await hank.getByTestId('lock').getAttribute('aria-pressed')) === 'true');
  const tom = await openPage(browser, room.invite_url, 'tom');
  await joinExpecting(tom, 'Tom', 'locked');
  await hank.getByTestId('lock').click();
  await waitFor('unlocked', 3000, async () => (await hank.getByTestId('lock').getAttribute('aria-pressed')) === 'false');
  await tom.context().close();

  // Kick: gone within 1 s; without a ban the same browser may come back.
  await ginaTile().getByTestId('kick').click();
  const kickMs = await stateWithin(gina, 'kicked', 1000, 'Gina kicked within 1 s');
  log(`kicked shown after ${kickMs} ms`);
  await reopen(gina, room.invite_url);
  const ginaAgain = await joinAs(gina, 'Gina');
  await waitFor('Gina back at the host', 10000, async () => (await tileIds(hank)).includes(ginaAgain));

  // Ban: the same link and browser cannot come back.
  await hank.locator(`[data-testid=tile][data-participant-id="${ginaAgain}"]`).getByTestId('ban').click();
  await stateWithin(gina, 'kicked', 1000, 'Gina banned within 1 s');
  await reopen(gina, room.invite_url);
  await joinExpecting(gina, 'Gina', 'kicked');
  const { body: events } = await server.api('GET', `/api/v1/rooms/${room.id}/events`);
  assert(events.events.some((e) => e.action === 'participant_removed' && e.detail.ban === true), 'ban in the audit log');

  // Rotate: the old invite link is refused, the new one works.
  await hank.getByTestId('rotate-invite').click();
  const newInvite = await waitFor('a new invite link', 3000, async () => {
    const v = await hank.getByTestId('invite-link').inputValue();
    return v && v !== room.invite_url ? v : null;
  });
  const olga = await openPage(browser, room.invite_url, 'olga');
  await joinExpecting(olga, 'Olga', 'error');
  await reopen(olga, newInvite);
  await joinAs(olga, 'Olga');

  // Close: every page shows closed within 2 s.
  await hank.getByTestId('close-room').click();
  await Promise.all([
    stateWithin(hank, 'closed', 2000, 'host closed within 2 s'),
    stateWithin(olga, 'closed', 2000, 'guest closed within 2 s'),
  ]);
  const { status } = await server.api('GET', `/api/v1/rooms/${room.id}`);
  assert(status === 404, `closed room answers 404, got ${status}`);
  for (const p of [hank, gina, olga]) await p.context().close();
}

// Lobby: a newcomer waits, the host admits it, then it sees the others.
async function lobby(server, browser) {
  const { body: room } = await server.api('POST', '/api/v1/rooms', { name: 'Lobby', lobby: true });
  const hank = await openPage(browser, room.host_url, 'hank');
  const hankId = await joinAs(hank, 'Hank');
  const nina = await openPage(browser, room.invite_url, 'nina');
  await joinExpecting(nina, 'Nina', 'lobby');
  const admit = hank.getByTestId('admit');
  await waitFor('the host to see Nina waiting', 5000, async () => (await admit.count()) === 1);
  await screenshot(nina, 'waiting');
  await screenshot(hank, 'host-lobby');
  await admit.click();
  await stateWithin(nina, 'joined', 5000, 'Nina admitted');
  await waitFor('Nina to see the host', 10000, async () => (await tileIds(nina)).includes(hankId));
  await expectMediaFlowing(nina, 'nina');
  for (const p of [hank, nina]) await p.context().close();
}

// A listed room shows on the home page and the public list; a private one never does.
async function listedRooms(server, browser) {
  const home = await openPage(browser, `${server.base}/`, 'home');
  await home.getByTestId('room-name').fill('Open house');
  await home.getByTestId('room-listed').check();
  await home.getByTestId('create-room').click();
  const hostLink = await waitFor('the host link', 5000, async () => home.getByTestId('host-link').inputValue());
  assert(hostLink.includes('#t='), 'host link carries a token');
  const { body: priv } = await server.api('POST', '/api/v1/rooms', { name: 'Secret meeting' }, null);
  assert(priv.visibility === 'private', 'public creation defaults to private');
  const { body: pub } = await server.api('GET', '/api/v1/public/rooms', null, null);
  const names = pub.rooms.map((r) => r.name);
  assert(names.includes('Open house') && !names.includes('Secret meeting'), `public list: ${names}`);
  const visitor = await openPage(browser, `${server.base}/`, 'visitor');
  const list = visitor.getByTestId('public-rooms');
  await waitFor('the listed room on the home page', 5000, async () => (await list.textContent()).includes('Open house'));
  assert(!(await list.textContent()).includes('Secret meeting'), 'private room not on the home page');
  // Joining from the list. The room page's script is held back a second, as on
  // a slow link: a name typed into the field before it runs must be kept.
  await visitor.route('**/assets/room.js', async (route) => {
    await new Promise((r) => setTimeout(r, 1000));
    await route.continue();
  });
  await list.getByRole('link', { name: 'Join' }).first().click();
  await joinAs(visitor, 'Visitor');
  const roomId = new URL(visitor.url()).pathname.split('/').pop();
  const { body: people } = await server.api('GET', `/api/v1/rooms/${roomId}/participants`);
  const inRoom = people.participants.map((p) => p.display_name);
  assert(inRoom.includes('Visitor'), `the typed name reaches the room: ${inRoom}`);
  for (const p of [home, visitor]) await p.context().close();
}

// Record from the host's page: everyone sees the indicator, the file plays.
async function recordFromTheBrowser(server, browser) {
  const { body: room } = await server.api('POST', '/api/v1/rooms', { name: 'Recorded call' });
  const hank = await openPage(browser, room.host_url, 'hank');
  const gina = await openPage(browser, room.invite_url, 'gina');
  await joinAs(hank, 'Hank');
  const ginaId = await joinAs(gina, 'Gina');
  await waitFor('Gina tile at the host', 10000, async () => (await tileIds(hank)).includes(ginaId));
  assert(await gina.getByTestId('record').isHidden(), 'guests have no record button');
  const record = hank.getByTestId('record');
  await record.click();
  await waitFor('record pressed', 5000, async () => (await record.getAttribute('aria-pressed')) === 'true');
  for (const p of [hank, gina]) {
    await waitFor('the recording indicator', 5000, async () => p.getByTestId('recording-indicator').isVisible());
  }
  const { body: rooms } = await server.api('GET', `/api/v1/rooms/${room.id}`);
  assert(rooms.recording && rooms.recording.state === 'recording', `room shows its recording: ${JSON.stringify(rooms.recording)}`);
  await screenshot(hank, 'recording');
  await new Promise((r) => setTimeout(r, 5000));
  await record.click();
  await waitFor('record released', 5000, async () => (await record.getAttribute('aria-pressed')) === 'false');
  await waitFor('the indicator gone', 5000, async () => gina.getByTestId('recording-indicator').isHidden());
  const rec = await waitFor('the recording ready', 15000, async () => {
    const { body } = await server.api('GET', `/api/v1/recordings?room_id=${room.id}`);
    const r = body.recordings[0];
    return r && r.state === 'ready' ? r : null;
  });
  assert(rec.kind === 'composite' && rec.files.length === 1, JSON.stringify(rec));
  const resp = await fetch(rec.files[0].url, { headers: { Authorization: `Bearer ${ADMIN}` } });
  assert(resp.status === 200, `download: ${resp.status}`);
  const file = join(server.dataDir, 'download.mp4');
  writeFileSync(file, Buffer.from(await resp.arrayBuffer()));
  const probe = JSON.parse(execFileSync('ffprobe', ['-v', 'error', '-show_streams', '-show_format', '-of', 'json', file]));
  const kinds = probe.streams.map((st) => `${st.codec_type}:${st.codec_name}`).sort();
  assert(JSON.stringify(kinds) === JSON.stringify(['audio:aac', 'video:h264']), `streams ${kinds}`);
  const duration = Number(probe.format.duration);
  assert(duration >= 4 && duration <= 8, `duration ${duration}`);
  log(`browser recording: ${duration.toFixed(1)} s, ${rec.files[0].size} bytes`);
  for (const p of [hank, gina]) await p.context().close();
}

// MCU room: each browser gets one composite picture and the others' voices.
async function mcuRoom(server, browser) {
  const { body: room } = await server.api('POST', '/api/v1/rooms', { name: 'Weak clients', mode: 'mcu' });
  const ann = await openPage(browser, room.invite_url, 'ann');
  const bob = await openPage(browser, room.invite_url, 'bob');
  await joinAs(ann, 'Ann');
  await joinAs(bob, 'Bob');
  for (const [page, name] of [[ann, 'ann'], [bob, 'bob']]) {
    await expectMediaFlowing(page, name);
    const ids = await tileIds(page);
    assert(JSON.stringify(ids) === '["p_composite"]', `${name} shows one composite tile: ${ids}`);
    const tracks = await page.evaluate(() => window.roomcast.sub.getReceivers().filter((r) => r.track && r.track.readyState === 'live').length);
    assert(tracks === 2, `${name} receives one video and one audio track, got ${tracks}`);
  }
  await screenshot(ann, 'mcu');
  for (const p of [ann, bob]) await p.context().close();
}

// What the watch page plays: its mode and state, WHEP frames from getStats(),
// and what the <video> element has shown (for HLS).
async function watchStats(page) {
  return page.evaluate(async () => {
    const text = (id) => document.querySelector(`[data-testid=${id}]`).textContent;
    const video = document.querySelector('[data-testid=player]');
    const out = {
      mode: text('playback-mode'),
      state: text('broadcast-state'),
      viewers: Number(text('viewer-count')),
      framesDecoded: 0,
      currentTime: video.currentTime,
      totalVideoFrames: video.getVideoPlaybackQuality().totalVideoFrames,
      hlsJs: !!window.roomcast.hls,
    };
    const pc = window.roomcast.pc;
    if (pc) {
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') out.framesDecoded += s.framesDecoded || 0;
      });
    }
    return out;
  });
}

// Waits until `ok` holds for the watch page; a timeout tells what it showed last.
async function watchUntil(page, what, ms, ok) {
  let last;
  try {
    return await waitFor(what, ms, async () => {
      last = await watchStats(page);
      return ok(last) ? last : null;
    }, 250);
  } catch (e) {
    throw new Error(`${e.message}; watch page: ${JSON.stringify(last)}`);
  }
}

// The host goes live from its page: everyone sees LIVE, a viewer plays it
// over WHEP and is counted, another over HLS (with hls.js: the page prefers it
// wherever there is MSE); ending it ends the watch pages within 10 s.
async function watchBroadcast(server, browser) {
  const { body: room } = await server.api('POST', '/api/v1/rooms', { name: 'Show', visibility: 'listed' });
  const hank = await openPage(browser, room.host_url, 'hank');
  const gina = await openPage(browser, room.invite_url, 'gina');
  await joinAs(hank, 'Hank');
  const ginaId = await joinAs(gina, 'Gina');
  await waitFor('Gina tile at the host', 10000, async () => (await tileIds(hank)).includes(ginaId));
  assert(await gina.getByTestId('broadcast').isHidden(), 'guests have no broadcast button');
  const button = hank.getByTestId('broadcast');
  await button.click();
  await waitFor('broadcast pressed', 15000, async () => (await button.getAttribute('aria-pressed')) === 'true');
  for (const p of [hank, gina]) {
    await waitFor('the live indicator', 10000, async () => p.getByTestId('live-indicator').isVisible());
  }
  const link = hank.getByTestId('watch-link');
  const watchUrl = await waitFor('the watch link', 10000, async () => (await link.isVisible()) && link.getAttribute('href'));
  assert(/\/watch\/b_/.test(watchUrl), `watch link ${watchUrl}`);
  await screenshot(hank, 'broadcasting');

  const viewer = await openPage(browser, watchUrl, 'viewer');
  const whep = await watchUntil(viewer, 'WHEP playback decoding video', 30000,
    (s) => s.mode === 'whep' && s.framesDecoded > 30);
  log(`WHEP viewer: ${whep.framesDecoded} frames decoded, state ${whep.state}`);
  await watchUntil(viewer, 'the viewer to be counted', 10000, (s) => s.viewers >= 1);
  await screenshot(viewer, 'watch-whep');

  const hlsUrl = new URL(watchUrl);
  hlsUrl.searchParams.set('mode', 'hls');
  const hlsViewer = await openPage(browser, hlsUrl.href, 'hls-viewer');
  const hls = await watchUntil(hlsViewer, 'HLS playback', 45000,
    (s) => s.mode === 'hls' && s.hlsJs && (s.currentTime > 2 || s.totalVideoFrames > 30));
  log(`HLS viewer: ${hls.currentTime.toFixed(1)} s played, ${hls.totalVideoFrames} frames`);
  await screenshot(hlsViewer, 'watch-hls');

  const stopped = Date.now();
  await button.click();
  await Promise.all([
    (async () => {
      await waitFor('broadcast released', 5000, async () => (await button.getAttribute('aria-pressed')) === 'false');
      await waitFor('the live indicator gone', 5000, async () => gina.getByTestId('live-indicator').isHidden());
    })(),
    ...[[viewer, 'WHEP'], [hlsViewer, 'HLS']].map(([page, name]) => watchUntil(page,
      `the ${name} watch page to show ended within 10 s`, 10000, (s) => s.state === 'ended')),
  ]);
  log(`watch pages ended ${Date.now() - stopped} ms after the host stopped`);
  assert(await viewer.getByText('The broadcast has ended').isVisible(), 'the watch page says the broadcast ended');
  for (const p of [hank, gina, viewer, hlsViewer]) await p.context().close();
}

// A browser in a network namespace of its own, joined to ours by a veth
// pair, loses its network for 10 s (link down) and gets it back: it
// reconnects by itself, as the same participant, and media flows again both
// ways. Needs root (ip netns); the server of this test listens on the veth.
async function networkOutage() {
  const ns = 'roomcast-e2e-client';
  const [hostIf, clientIf] = ['rce2e-h', 'rce2e-c'];
  const sh = (cmd) => execFileSync('sh', ['-c', cmd], { stdio: 'pipe' });
  const cleanup = () => {
    try { sh(`ip netns del ${ns}`); } catch { /* not there */ }
    try { sh(`ip link del ${hostIf}`); } catch { /* not there */ }
  };
  cleanup();
  sh(`ip netns add ${ns}`);
  sh(`ip link add ${hostIf} type veth peer name ${clientIf} netns ${ns}`);
  sh(`ip addr add 10.77.0.1/24 dev ${hostIf} && ip link set ${hostIf} up`);
  sh(`ip netns exec ${ns} sh -c 'ip addr add 10.77.0.2/24 dev ${clientIf} && ip link set ${clientIf} up && ip link set lo up'`);
  const wrapper = join(tmpdir(), `chromium-in-${ns}`);
  writeFileSync(wrapper, `#!/bin/sh\nexec ip netns exec ${ns} ${CHROMIUM} "$@"\n`, { mode: 0o755 });
  const own = new Server({ listen: '10.77.0.1:0', iceIp: '10.77.0.1' });
  let remote = null;
  let local = null;
  try {
    await own.start();
    // Camera, microphone and WebRTC need a secure context: plain http is
    // one only on loopback, so the veth address is declared one.
    const secure = [`--unsafely-treat-insecure-origin-as-secure=${own.base}`];
    remote = await launchBrowser(wrapper, secure);
    local = await launchBrowser(CHROMIUM, secure);
    const { status, body: room } = await own.api('POST', '/api/v1/rooms', { name: 'Outage' });
    assert(status === 201, `create room: ${status}`);
    const ada = await openPage(remote, room.invite_url, 'ada (own netns)');
    const bob = await openPage(local, room.invite_url, 'bob');
    const adaId = await joinAs(ada, 'Ada');
    await joinAs(bob, 'Bob');
    await expectMediaFlowing(ada, 'ada');
    await expectMediaFlowing(bob, 'bob');

    sh(`ip link set ${hostIf} down`);
    const down = Date.now();
    await waitFor('ada to notice the outage', 10000, async () => (await roomState(ada)) !== 'joined');
    log(`ada noticed the outage after ${Date.now() - down} ms`);
    const rest = 10000 - (Date.now() - down);
    if (rest > 0) await new Promise((r) => setTimeout(r, rest));
    sh(`ip link set ${hostIf} up`);
    const up = Date.now();
    await waitFor('ada to rejoin after the outage', 15000, async () => (await roomState(ada)) === 'joined');
    log(`ada rejoined ${Date.now() - up} ms after the network came back`);
    assert(await ada.evaluate(() => window.roomcast.me) === adaId, 'ada keeps her participant id');
    await waitFor('bob to see ada again', 10000, async () => (await tileIds(bob)).includes(adaId));
    await expectMediaFlowing(ada, 'ada after the outage');
    await expectMediaFlowing(bob, 'bob after the outage');
    const { body: list } = await own.api('GET', `/api/v1/rooms/${room.id}/participants`);
    assert(list.participants.length === 2, `participants after the outage: ${JSON.stringify(list.participants.map((p) => p.display_name))}`);
  } finally {
    if (remote) await remote.close();
    if (local) await local.close();
    await own.cleanup();
    cleanup();
    rmSync(wrapper, { force: true });
  }
}

const TESTS = { twoBrowsersSeeAndHearEachOther, peopleComeAndGo, networkOutage, hostControls, lobby, listedRooms, recordFromTheBrowser, mcuRoom, watchBroadcast };

async function main() {
  const server = new Server();
  await server.start();
  const browser = await launchBrowser();
  const failures = [];
  const fail = (what, detail = what) => {
    failures.push(what);
    log(`FAIL ${detail}`);
  };
  try {
    for (const [name, test] of Object.entries(TESTS)) {
      if (only && only !== name) continue;
      const t0 = Date.now();
      try {
        await test(server, browser);
        log(`PASS ${name} (${Date.now() - t0} ms)`);
      } catch (e) {
        fail(`${name}: ${e.message || e}`, `${name}: ${e.stack || e}`);
      }
    }
  } finally {
    await browser.close();
    await server.cleanup();
  }
  if (disposedRunning.length) {
    fail(`the server disposed ${disposedRunning.length} element(s) not in NULL: ${disposedRunning.slice(0, 8).join(', ')}`);
  }
  if (server.crashed) fail('the server exited by itself during the run');
  if (failures.length) {
    // Repeated last, so the end of a long log says what failed and why.
    log(`${failures.length} end-to-end test(s) failed:`);
    for (const f of failures) log(`  FAILED ${f}`);
    process.exit(1);
  }
  log('all end-to-end tests passed');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
