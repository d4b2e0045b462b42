// harness.mjs - what the browser tests share: a real `upres serve`, a real browser, and guards.
//
// Server: `upres serve` on 127.0.0.1:<free port> with its own data folder (a temporary folder,
// removed when it stops), the fast model realesr-animevideov3 as the Tinify model, stopped with
// SIGTERM; stop() returns the exit status, which the tests check is 0 (under the sanitizer build
// a leak makes it non-zero). Browser: Debian's chromium driven by playwright-core, launched once
// per test file (node --test runs each file in its own process); each test gets a fresh context
// (no localStorage, no cookies, a new guest session) through browserTest(), which also fails the
// test on a console error, an uncaught page error or a request to any origin but the server's.
//
// Paths and knobs, all from the environment (run.sh sets the first from its argument):
//   UPRES_BIN          the upres binary (default <repo>/build/upres)
//   UPRES_TEST_MODELS  the models folder (default <repo>/models), given to the server as UPRES_MODELS
//   UPRES_SHARED_DATA  the shared test data (default <repo>/../shared/data): small PNGs in ref/in
//   UPRES_CHROMIUM     the browser (default /usr/bin/chromium)
//   UPRES_ARTIFACTS    where screenshots and server logs go (default <binary's folder>/browser-artifacts)
//   UPRES_SANITIZE     ON/1/true: every time limit is multiplied by SLOW = 4
// Every wait is bounded in time (and the loops in count).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, '..', '..');
export const UPRES = path.resolve(process.env.UPRES_BIN || path.join(REPO, 'build', 'upres'));
export const MODELS = process.env.UPRES_TEST_MODELS || path.join(REPO, 'models');
export const SHARED = process.env.UPRES_SHARED_DATA || path.join(REPO, '..', 'shared', 'data');
export const CHROMIUM = process.env.UPRES_CHROMIUM || '/usr/bin/chromium';
export const SLOW = ['1', 'ON', 'on', 'true'].includes(process.env.UPRES_SANITIZE || '') ? 4 : 1;
export const ARTIFACTS = process.env.UPRES_ARTIFACTS || path.join(path.dirname(UPRES), 'browser-artifacts');
export const FAST = 'realesr-animevideov3'; // the fast model every test runs
export const SECOND = 'realesrgan-x4fast'; // the other model of the compare test

/** ms scaled for the build: a time limit. */
export const T = (ms) => ms * SLOW;

const SETUP = 'run scripts/setup.sh, which installs it';

// playwright-core is loaded here, not imported at the top, so that a missing node_modules is a
// sentence naming setup.sh rather than a module-resolution stack trace
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  throw new Error(`playwright-core is missing in tests/browser/node_modules (${e.code || e.message}): ${SETUP}`);
}
if (!fs.existsSync(CHROMIUM)) throw new Error(`no browser at ${CHROMIUM}: ${SETUP} (Debian's chromium package)`);
if (!fs.existsSync(UPRES)) throw new Error(`no upres binary at ${UPRES}: build it first (or pass its path to run.sh)`);
fs.mkdirSync(ARTIFACTS, { recursive: true });

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** promise's value, or null after ms (the timer does not keep the process alive). */
export function within(promise, ms) {
  let timer;
  const late = new Promise((r) => { timer = setTimeout(() => r(null), ms); });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** fetch with a time limit (scaled); resolves to the Response, rejects on a network error or the time. */
export async function get(url, opts = {}, ms = 10000) {
  return fetch(url, { ...opts, signal: AbortSignal.timeout(T(ms)) });
}

// ---- the server ---------------------------------------------------------------------

/**
 * `upres serve` on a free loopback port: .port, .origin, .data, .log, .proc.
 * args are added to the command line (after the defaults, so they win).
 */
export class Server {
  constructor(name, args = []) {
    this.name = name;
    this.args = args;
    this.data = fs.mkdtempSync(path.join(os.tmpdir(), `upres-browser-${name}-`));
    this.log = path.join(ARTIFACTS, `server-${name}.log`);
    this.proc = null;
    this.exit = null; // {code, signal} once it exited
  }

  async start() {
    this.port = await freePort();
    this.origin = `http://127.0.0.1:${this.port}`;
    const cmd = [
      'serve', '--listen', '127.0.0.1', '--port', String(this.port), '--data', this.data, '--threads', '2',
      '--tinify-model', FAST,
      // many fresh browser contexts from one address: no per-address cap on new guest sessions,
      // and no per-key rate limit unless a test asks for one
      '--guest-sessions-per-ip', '0', '--rate-per-minute', '0', '--rate-per-day', '0',
      ...this.args,
    ];
    const out = fs.openSync(this.log, 'w');
    this.proc = spawn(UPRES, cmd, { env: { ...process.env, UPRES_MODELS: MODELS }, stdio: ['ignore', out, out] });
    fs.closeSync(out);
    this.exited = new Promise((resolve) => this.proc.once('exit', (code, signal) => {
      this.exit = { code, signal };
      resolve(this.exit);
    }));
    const deadline = Date.now() + T(30000);
    for (let i = 0; i < 600 * SLOW && Date.now() < deadline && !this.exit; i++) {
      try {
        const r = await get(this.origin + '/health', {}, 2000);
        if (r.status === 200) return this;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    throw new Error(`server ${this.name} did not start (${JSON.stringify(this.exit)}); log:\n${this.tail()}`);
  }

  tail(n = 3000) {
    try {
      return fs.readFileSync(this.log, 'utf8').slice(-n);
    } catch {
      return '';
    }
  }

  /** SIGTERM, then wait (bounded): the exit code, or null when it had to be killed or died by a signal. */
  async stop() {
    if (!this.proc) return null;
    if (!this.exit) {
      this.proc.kill('SIGTERM');
      const t = await within(this.exited, T(60000));
      if (!t) {
        this.proc.kill('SIGKILL');
        await within(this.exited, 10000);
        this.cleanup();
        return null;
      }
    }
    this.cleanup();
    return this.exit.signal ? null : this.exit.code;
  }

  cleanup() {
    fs.rmSync(this.data, { recursive: true, force: true });
  }

  /** `upres ARGS --data DATA` (the command line on the server's folder): {code, stdout, stderr}. */
  cli(...args) {
    return new Promise((resolve) => {
      const p = spawn(UPRES, [...args, '--data', this.data], { env: { ...process.env, UPRES_MODELS: MODELS } });
      let stdout = '', stderr = '';
      p.stdout.on('data', (d) => (stdout += d));
      p.stderr.on('data', (d) => (stderr += d));
      const timer = setTimeout(() => p.kill('SIGKILL'), T(60000));
      p.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** GET path as JSON (with headers): {status, headers, body}. */
  async json(p, headers = {}) {
    const r = await get(this.origin + p, { headers });
    const text = await r.text();
    let body = null;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON: body stays null, text tells
    }
    return { status: r.status, headers: r.headers, body, text };
  }
}

/**
 * Start a server for this test file (in before()), and register a last test that stops it and
 * checks it exits 0. Returns a holder whose .server is set once started.
 */
export function fileServer(name, args = []) {
  const holder = { server: null };
  before(async () => {
    holder.server = await new Server(name, args).start();
  });
  after(async () => {
    if (holder.server && !holder.server.exit) await holder.server.stop();
    if (browser) await browser.close();
    browser = null;
  });
  return holder;
}

/** The last test of a file: SIGTERM stops the server with exit status 0. */
export function stopsCleanly(holder) {
  test(`server stops cleanly on SIGTERM (exit 0)`, { timeout: T(90000) }, async () => {
    const s = holder.server;
    if (!s) throw new Error('the server never started');
    const rc = await s.stop();
    if (rc !== 0) throw new Error(`server ${s.name} exit status ${rc} (${JSON.stringify(s.exit)}); log:\n${s.tail()}`);
  });
}

// ---- the browser -------------------------------------------------------------------------

let browser = null;

/** The browser of this process, launched on first use. */
export async function theBrowser() {
  if (!browser) {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'], headless: true,
      timeout: T(60000) });
  }
  return browser;
}

/**
 * A test in a fresh browser context on server's page. fn({page, context, server, guard}).
 * opts: viewport, colorScheme, allowConsole (regexps of console errors this test provokes on
 * purpose: a refused request shows in Chromium's console as "Failed to load resource ..."),
 * timeout (ms, unscaled), init(context) (before the page opens: recordStates), goto (false: do
 * not open the page first).
 * After fn, the guard fails the test on any console error or page error not allowed, or any
 * request to another origin; on a failure a screenshot goes to ARTIFACTS/FAILED-<name>.png.
 */
export function browserTest(name, holder, opts, fn) {
  if (typeof opts === 'function') [opts, fn] = [{}, opts];
  test(name, { timeout: T(opts.timeout || 60000) }, async () => {
    const server = holder.server;
    if (!server) throw new Error('the server never started');
    const b = await theBrowser();
    const context = await b.newContext({
      viewport: opts.viewport || { width: 1280, height: 900 },
      colorScheme: opts.colorScheme || 'light',
      acceptDownloads: true,
    });
    context.setDefaultTimeout(T(15000));
    const guard = new Guard(server.origin, opts.allowConsole || []);
    guard.watch(context);
    const page = await context.newPage();
    guard.watchPage(page);
    try {
      if (opts.init) await opts.init(context);
      if (opts.goto !== false) await openPage(page, server);
      await fn({ page, context, server, guard });
    } catch (e) {
      await shot(page, 'FAILED-' + name.replace(/[^A-Za-z0-9]+/g, '-')).catch(() => {});
      // what the guard saw may be the cause: say it with the failure
      if (guard.errors.length) throw new Error(`${e.message}\n(and the ${guard.report()})`, { cause: e });
      throw e;
    } finally {
      await context.close().catch(() => {});
    }
    guard.check();
  });
}

/** Open the server's page and wait until the model list is there (the page has loaded /api/v1/models). */
export async function openPage(page, server) {
  const r = await page.goto(server.origin + '/', { waitUntil: 'load', timeout: T(20000) });
  const type = (r && r.headers()['content-type']) || '';
  if (!r || r.status() !== 200 || !type.startsWith('text/html')) {
    throw new Error(`GET / in the browser did not serve the page: ${r && r.status()} ${type}`);
  }
  await page.waitForSelector(`#model option[value="${FAST}"]`, { state: 'attached', timeout: T(20000) });
}

/** Console errors, page errors and foreign requests, collected and then checked. */
export class Guard {
  constructor(origin, allow) {
    this.origin = origin;
    this.allow = allow;
    this.errors = [];
    this.requests = []; // every request's URL, in order
  }

  watch(context) {
    context.on('request', (r) => {
      const url = r.url();
      this.requests.push({ url, method: r.method() });
      if (url.startsWith('data:') || url.startsWith('blob:')) return;
      let origin = null;
      try {
        origin = new URL(url).origin;
      } catch {
        // unparsable: foreign
      }
      if (origin !== this.origin) this.errors.push(`request to another origin: ${r.method()} ${url}`);
    });
  }

  watchPage(page) {
    page.on('console', (m) => {
      if (m.type() !== 'error') return;
      const text = m.text();
      if (this.allow.some((re) => re.test(text))) return;
      const loc = m.location();
      this.errors.push(`console error: ${text}${loc && loc.url ? ` (${loc.url}:${loc.lineNumber})` : ''}`);
    });
    page.on('pageerror', (e) => this.errors.push(`page error: ${e.stack || e.message}`));
  }

  /** The requests whose path (no query) is p, e.g. '/upload'. */
  requestsTo(p) {
    return this.requests.filter((r) => {
      try {
        return new URL(r.url).pathname === p;
      } catch {
        return false;
      }
    });
  }

  report() {
    return 'guard:\n  ' + this.errors.join('\n  ');
  }

  check() {
    if (this.errors.length) throw new Error(this.report());
  }
}

/** A full-page screenshot to ARTIFACTS/name.png; returns the path. */
export async function shot(page, name) {
  const p = path.join(ARTIFACTS, name + '.png');
  await page.screenshot({ path: p, fullPage: true, timeout: T(15000) });
  return p;
}

// ---- files --------------------------------------------------------------------------

/** A test PNG of ../shared/data/ref/in (e.g. 'chelsea_lr64.png'): its bytes. */
export function sharedPng(name) {
  const p = path.join(SHARED, 'ref', 'in', name);
  if (!fs.existsSync(p)) throw new Error(`missing test image ${p} (UPRES_SHARED_DATA)`);
  return fs.readFileSync(p);
}

/** A valid RGB PNG of width x height with a pattern (flat: one colour, a few hundred bytes), built by hand. */
export function png(width, height, seed = 0, flat = false) {
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3);
    for (let x = 0; x < width; x++) {
      row[1 + x * 3] = flat ? seed : (x * 7 + seed) & 255;
      row[2 + x * 3] = flat ? 128 : (y * 5 + seed) & 255;
      row[3 + x * 3] = flat ? 200 : ((x ^ y) * 3) & 255;
    }
    rows.push(row);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), pngChunk('IHDR', ihdr),
    pngChunk('IDAT', zlib.deflateSync(Buffer.concat(rows))), pngChunk('IEND', Buffer.alloc(0))]);
}

/** A PNG chunk: length, kind, data, CRC. */
export function pngChunk(kind, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(kind, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/** CRC-32 (PNG's) of buf. */
export function crc32(buf) {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

/**
 * The format and size of image bytes, from the header: {format: 'png'|'jpg'|'webp', width, height},
 * or null when they are none of these.
 */
export function imageInfo(buf) {
  if (buf.length >= 24 && buf.subarray(0, 8).equals(Buffer.from('89504e470d0a1a0a', 'hex'))
      && buf.toString('latin1', 12, 16) === 'IHDR') {
    return { format: 'png', width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
  }
  if (buf.length >= 4 && buf[0] === 0xff && buf[1] === 0xd8) {
    // walk the segments to a start-of-frame (SOF0..SOF15 but DHT C4, JPG C8, DAC CC)
    let i = 2;
    for (let n = 0; n < 1000 && i + 9 < buf.length; n++) {
      if (buf[i] !== 0xff) return null;
      const m = buf[i + 1];
      if (m === 0xff) { i++; continue; }
      if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
        return { format: 'jpg', height: buf.readUInt16BE(i + 5), width: buf.readUInt16BE(i + 7) };
      }
      if (m === 0xd8 || (m >= 0xd0 && m <= 0xd7)) { i += 2; continue; }
      i += 2 + buf.readUInt16BE(i + 2);
    }
    return null;
  }
  if (buf.length >= 30 && buf.toString('latin1', 0, 4) === 'RIFF' && buf.toString('latin1', 8, 12) === 'WEBP') {
    const kind = buf.toString('latin1', 12, 16);
    if (kind === 'VP8 ' && buf[23] === 0x9d && buf[24] === 0x01 && buf[25] === 0x2a) {
      return { format: 'webp', width: buf.readUInt16LE(26) & 0x3fff, height: buf.readUInt16LE(28) & 0x3fff };
    }
    if (kind === 'VP8L' && buf[20] === 0x2f) {
      const b = buf.readUInt32LE(21);
      return { format: 'webp', width: (b & 0x3fff) + 1, height: ((b >>> 14) & 0x3fff) + 1 };
    }
    if (kind === 'VP8X') {
      const w = buf[24] | (buf[25] << 8) | (buf[26] << 16);
      const h = buf[27] | (buf[28] << 8) | (buf[29] << 16);
      return { format: 'webp', width: w + 1, height: h + 1 };
    }
  }
  return null;
}

// ---- page actions --------------------------------------------------------------------

/** Choose the fast model (and optionally a scale and a format) in the options form. */
export async function chooseOptions(page, { model = FAST, scale, format } = {}) {
  await page.selectOption('#model', model);
  if (scale !== undefined) await page.selectOption('#scale', String(scale));
  if (format !== undefined) await page.selectOption('#format', format);
}

/** Files through the picker: [{name, buffer, mimeType}]. */
export async function pick(page, files) {
  await page.setInputFiles('#file-input', files.map((f) => ({ mimeType: 'image/png', ...f })));
}

/** Files by a real drop on #drop: a DataTransfer made in the page from the bytes. */
export async function drop(page, files) {
  const dt = await page.evaluateHandle((list) => {
    const d = new DataTransfer();
    for (const f of list) {
      const bin = atob(f.b64);
      const bytes = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
      d.items.add(new File([bytes], f.name, { type: f.mimeType || 'image/png' }));
    }
    return d;
  }, files.map((f) => ({ name: f.name, mimeType: f.mimeType, b64: f.buffer.toString('base64') })));
  await page.dispatchEvent('#drop', 'dragenter', { dataTransfer: dt });
  await page.dispatchEvent('#drop', 'dragover', { dataTransfer: dt });
  await page.dispatchEvent('#drop', 'drop', { dataTransfer: dt });
  await dt.dispose();
}

/** The li.job of a file name (a Locator). */
export function job(page, name) {
  return page.locator(`#jobs li.job[data-name="${name}"]`);
}

/**
 * page.waitForFunction(fn, arg) with a failure that says what was awaited: what, and what
 * now(page) reads at the time (when given).
 */
export async function until(page, what, fn, arg, { ms = 15000, now } = {}) {
  try {
    return await page.waitForFunction(fn, arg, { timeout: T(ms), polling: 50 });
  } catch (e) {
    if (e.name !== 'TimeoutError') throw e;
    const got = now ? await now(page).catch((x) => `(unreadable: ${x.message})`) : '';
    throw new Error(`timed out (${T(ms)} ms) waiting for ${what}${now ? `; now: ${got}` : ''}`);
  }
}

/** Wait until the job of name has data-state in states (an array); returns the state. */
export async function waitState(page, name, states, ms = 60000) {
  await job(page, name).waitFor({ state: 'attached', timeout: T(ms) });
  const sel = `#jobs li.job[data-name="${name}"]`;
  const h = await until(page, `${name} to be ${states.join(' or ')}`, ([sel, want]) => {
    const el = document.querySelector(sel);
    const s = el && el.getAttribute('data-state');
    return want.includes(s) ? s : false;
  }, [sel, states], { ms, now: (p) => p.locator(sel).getAttribute('data-state') });
  return h.jsonValue();
}

/**
 * Record, in the page, every data-state and progress value each li.job goes through (a
 * MutationObserver installed before the page's own script): read with seen(page).
 */
export async function recordStates(context) {
  await context.addInitScript(() => {
    window.__seen = {};
    const note = (li) => {
      const name = li.getAttribute('data-name');
      if (!name) return;
      const rec = (window.__seen[name] ||= { states: [], progress: [] });
      const s = li.getAttribute('data-state');
      if (s && rec.states[rec.states.length - 1] !== s) rec.states.push(s);
      const p = li.querySelector('progress.job-progress');
      if (p) {
        const v = Number(p.value);
        if (rec.progress[rec.progress.length - 1] !== v) rec.progress.push(v);
      }
    };
    window.__batch = []; // every text #batch-text showed, in order
    window.__notice = []; // every [data-kind, text] #notice showed, in order
    const last = (a) => a[a.length - 1];
    const scan = () => {
      document.querySelectorAll('#jobs li.job').forEach(note);
      const b = document.getElementById('batch-text');
      const bt = b && b.textContent.trim();
      if (bt && last(window.__batch) !== bt) window.__batch.push(bt);
      const n = document.getElementById('notice');
      const nt = n && !n.hidden && n.textContent.trim();
      if (nt) {
        const k = n.getAttribute('data-kind');
        const l = last(window.__notice);
        if (!l || l[0] !== k || l[1] !== nt) window.__notice.push([k, nt]);
      }
    };
    new MutationObserver(scan).observe(document, { subtree: true, childList: true, characterData: true,
      attributes: true });
    // a progress element's value set as a property changes no attribute: look often too
    setInterval(scan, 20);
  });
}

export async function seen(page) {
  return page.evaluate(() => ({ jobs: window.__seen || {}, batch: window.__batch || [],
    notice: window.__notice || [] }));
}
