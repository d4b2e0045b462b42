/* upres web page. It speaks the Tinify dialect of its own origin: one POST /upload per file, one
 * POST /auto per job, progress over SSE with /status polling as the fallback. tests/browser finds
 * things by the ids and classes used here. The CSP forbids inline code and styles: looks live in
 * app.css, and this file sets only attributes, text and CSS custom properties. */
'use strict';

/* ---- helpers ---- */

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));
const int = s => (/^\s*\d+\s*$/.test(s) ? parseInt(s, 10) : 0);
const sleep = ms => new Promise(ok => setTimeout(ok, ms));
const mb = n => `${(n / 1e6).toFixed(n < 1e7 ? 1 : 0)} MB`;
const mp = n => `${(n / 1e6).toFixed(1)} MP`;
const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

function duration(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} days`;
}

/* localStorage can be off or full (private windows): then the page just forgets. */
function keep(fn, fallback) {
  try { return fn(localStorage); } catch { return fallback; }
}

const saved = {
  get: (name, fallback) => keep(ls => JSON.parse(ls.getItem('upres.' + name)) ?? fallback, fallback),
  set: (name, value) => keep(ls => ls.setItem('upres.' + name, JSON.stringify(value))),
  drop: name => keep(ls => ls.removeItem('upres.' + name)),
};

function announce(text) {
  $('#announce').textContent = text;
}

/* Show text on a button for a moment ("Copied"), then its own label again. */
function flash(button, text) {
  const label = button.dataset.label || (button.dataset.label = button.textContent);
  button.textContent = text;
  setTimeout(() => { button.textContent = label; }, 2000);
}

/* ---- server-wide notices ---- */

const notice = $('#notice');
let noticeTimer = 0;

/* "stopped" says the most, so nothing else replaces it until the server is back. */
function setNotice(kind, text) {
  if (notice.dataset.kind === 'stopped' && kind !== 'stopped') return;
  notice.dataset.kind = kind;
  notice.textContent = text;
  notice.hidden = false;
  clearTimeout(noticeTimer);
  if (kind === 'error') noticeTimer = setTimeout(() => clearNotice('error'), 10000);
}

function clearNotice(kind) {
  if (notice.dataset.kind !== kind) return;
  notice.hidden = true;
  notice.textContent = '';
  delete notice.dataset.kind;
}

let healthTimer = 0;

function serverDown() {
  setNotice('stopped', 'The server has stopped or is restarting. This page reconnects by itself.');
  clearTimeout(healthTimer);
  healthTimer = setTimeout(checkHealth, 3000);
}

function serverUp() {
  if (notice.dataset.kind !== 'stopped') return;
  clearNotice('stopped');
  follow();
  refreshCredits();
  refreshHistory();
}

async function checkHealth() {
  clearTimeout(healthTimer);
  try {
    const res = await fetch('/health', { cache: 'no-store' });
    if (!res.ok) throw new Error(String(res.status));
    serverUp();
    healthTimer = setTimeout(checkHealth, 30000); /* notice a stop even while idle */
  } catch {
    serverDown();
  }
}

/* One countdown for every request refused with 429; all of them retry when it ends. */
let rateWait = null;

function rateLimited(header) {
  rateWait = rateWait || new Promise(resolve => {
    let left = Math.max(1, Math.ceil(Number(header)) || 5); /* upres sends seconds, never a date */
    let timer = 0;
    const tick = () => {
      if (left > 0) {
        setNotice('rate', `Too many requests: retrying in ${left} s`);
        left--;
        return;
      }
      clearInterval(timer);
      clearNotice('rate');
      rateWait = null;
      resolve();
    };
    tick();
    timer = setInterval(tick, 1000);
  });
  return rateWait;
}

/* ---- the API client ---- */

/* The codes this page can meet, as sentences; any other falls back to the server's own text. */
const SENTENCES = {
  INSUFFICIENT_CREDITS: 'Not enough credits left. Guest credits come back at midnight UTC.',
  QUOTA_EXCEEDED: 'This API key has used its monthly quota.',
  TIER_LIMIT_EXCEEDED: 'The result is larger than your plan allows. Choose a smaller scale or size.',
  IMAGE_TOO_LARGE: 'This image is too large for the server.',
  UNSUPPORTED_IMAGE: 'The server cannot read this file as an image.',
  UNAUTHORIZED: 'The credentials were not accepted. Check the API key, or clear it to work as a guest.',
  TOO_MANY_SESSIONS: 'Too many guest sessions from this address today. Use an API key, or come back tomorrow.',
  NOT_FOUND: 'The server no longer has this: uploads and results are kept for a limited time.',
  INVALID_MODEL: 'This model is not installed on the server.',
  INSUFFICIENT_STORAGE: 'The server is out of disk space.',
  STORAGE_UNAVAILABLE: 'The server cannot store files right now.',
  UNAVAILABLE: 'The server is busy or stopping. Try again in a moment.',
  INTERNAL: 'Something went wrong on the server.',
};

class ApiError extends Error {
  constructor(status, body) {
    const code = body && body.code;
    const own = body && typeof body.error === 'string' ? body.error : '';
    let text = SENTENCES[code] || own || `The server answered ${status}.`;
    if (code === 'VALIDATION_ERROR') text = `A setting was not accepted: ${own}`;
    if (!status) text = 'The server could not be reached.';
    super(text);
    this.status = status;
    this.code = code;
  }
}

/* A key beats the guest token; with neither, the first upload opens a guest session. */
function credentials() {
  const key = saved.get('key');
  if (key) return { Authorization: 'Bearer ' + key };
  const token = saved.get('token');
  return token ? { 'X-Session-Token': token } : {};
}

const hasCredentials = () => Object.keys(credentials()).length > 0;

/* fetch + JSON: resolves with the body of a 2xx, rejects with an ApiError (or an AbortError).
 * A 429 waits for its Retry-After and goes again; no answer or a 503 means the server stops. */
async function api(path, { method = 'GET', json, body, signal } = {}) {
  const headers = credentials();
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  for (;;) {
    let res;
    try {
      res = await fetch(path, { method, headers, body, signal });
    } catch (e) {
      if (signal && signal.aborted) throw e;
      serverDown();
      throw new ApiError(0, null);
    }
    if (res.status === 429) {
      await rateLimited(res.headers.get('Retry-After'));
      if (signal && signal.aborted) throw new DOMException('cancelled', 'AbortError');
      continue;
    }
    const data = await res.json().catch(() => null);
    if (res.status === 503) serverDown();
    else serverUp();
    if (res.ok) return data;
    throw new ApiError(res.status, data);
  }
}

/* ---- server facts: limits and models ---- */

let config = {};
let models = [];

let tierName = ''; /* a key's tier from /usage/summary; guests get the server's first tier */

function tierLimits() {
  const tiers = Array.isArray(config.tiers) ? config.tiers : [];
  const t = saved.get('key') ? tiers.find(x => x.name === tierName) : tiers[0];
  return t && t.max_width > 0 && t.max_height > 0 ? t : null;
}

const limit = name => (Number.isFinite(config[name]) && config[name] > 0 ? config[name] : Infinity);

function scalesOf(name) {
  const m = models.find(x => x.name === name);
  const s = m && Array.isArray(m.supported_scales) && m.supported_scales.length ? m.supported_scales : [4];
  return [...s].sort((a, b) => a - b);
}

const FORMAT_NAMES = { original: 'Original', png: 'PNG', jpg: 'JPEG', webp: 'WebP', avif: 'AVIF', gif: 'GIF', ico: 'ICO' };

function fillSelect(select, values, label) {
  select.replaceChildren(...values.map(v => new Option(label(v), v)));
}

async function loadServer() {
  const [c, m] = await Promise.allSettled([api('/config'), api('/api/v1/models')]);
  if (c.status === 'fulfilled') config = c.value || {};
  if (m.status === 'fulfilled') models = (m.value && m.value.models) || [];
  if (c.status === 'rejected' || m.status === 'rejected') {
    setNotice('error', 'Could not read the server’s settings; the page works with defaults.');
  }
  const formats = (config.output_formats || []).filter(f => f !== 'svg');
  if (formats.length) fillSelect($('#format'), formats, f => FORMAT_NAMES[f] || f.toUpperCase());
  const select = $('#model');
  fillSelect(select, models.map(x => x.name), n => n);
  for (const opt of select.options) opt.disabled = models.find(x => x.name === opt.value).available === false;
  if (config.upscale_model) select.value = config.upscale_model;
}

/* ---- options ---- */

const form = $('#options');
const FIELDS = ['model', 'scale', 'width', 'height', 'format', 'quality', 'tile', 'alpha'];

function readOptions() {
  const v = id => $('#' + id).value;
  const tile = clamp(int(v('tile')), 0, 8192);
  return {
    model: v('model'),
    scale: v('scale'),
    width: clamp(int(v('width')), 0, 8192),
    height: clamp(int(v('height')), 0, 8192),
    format: v('format'),
    quality: clamp(int(v('quality')) || 90, 1, 100),
    tile: tile && tile < 16 ? 16 : tile, /* the server takes 0 (automatic) or 16..8192 */
    alpha: v('alpha'),
  };
}

function restoreOptions() {
  const kept = saved.get('options', {});
  for (const id of FIELDS) {
    const field = $('#' + id);
    if (typeof kept[id] !== 'string') continue;
    if (field.tagName !== 'SELECT' || [...field.options].some(o => o.value === kept[id] && !o.disabled)) {
      field.value = kept[id];
    }
  }
}

function saveOptions() {
  saved.set('options', Object.fromEntries(FIELDS.map(id => [id, $('#' + id).value])));
}

function showOptions() {
  $('#exact').hidden = $('#scale').value !== 'exact';
  const name = $('#model').value;
  const m = models.find(x => x.name === name);
  const info = $('#model-info');
  info.hidden = !m;
  if (!m) return;
  const scales = scalesOf(name).map(s => `×${s}`).join(', ');
  $('.model-desc', info).textContent = `${m.description || name}. Native scale ${scales}.`;
  const after = $('.preview-after', info);
  const src = `/page/preview/${encodeURIComponent(name)}.png`;
  if (after.getAttribute('src') !== src) {
    info.classList.add('loading'); /* the server renders a model's preview on first request */
    after.src = src;
  }
}

/* ---- jobs: one per file ----
 * A job: {li, file, name, label, opts, model, url (object URL of the file), w, h (input), out {w, h},
 * factor, tempId, id, state, progress, wait, error, stream, polled, abort, compareOf}. */

const FINISHED = new Set(['refused', 'completed', 'failed', 'cancelled']);
const jobs = [];
let batch = []; /* the jobs added since everything was last finished */

const isDone = job => FINISHED.has(job.state);
const IMAGE_NAME = /\.(png|jpe?g|webp|gif|avif|tiff?|bmp|heic|heif|jxl)$/i;
const isImage = file => file.type.startsWith('image/') || IMAGE_NAME.test(file.name);

function newJob(file, opts, label = file.name) {
  const li = $('#job-template').content.firstElementChild.cloneNode(true);
  li.dataset.name = file.name;
  for (const b of $$('button, a', li)) b.setAttribute('aria-label', `${b.textContent}: ${label}`);
  const job = { li, file, name: file.name, label, opts, model: opts.model, state: 'uploading', progress: 0 };
  $('.job-view', li).addEventListener('click', () => view(job, true));
  $('.job-copy', li).addEventListener('click', e => copyLink(job, e.currentTarget));
  $('.job-cancel', li).addEventListener('click', () => cancel(job));
  if (!batch.some(j => !isDone(j))) batch = [];
  batch.push(job);
  jobs.push(job);
  $('#jobs').append(li);
  return job;
}

function render(job) {
  const { li } = job;
  li.dataset.state = job.state;
  if (job.id) li.dataset.jobId = job.id;
  $('.job-name', li).textContent = job.label;
  $('.job-size', li).textContent = job.w
    ? `${job.w}×${job.h} → ${job.out ? `${job.out.w}×${job.out.h}` : '?'}`
    : job.state === 'refused' ? '' : 'Size: read by the server';
  const bar = $('.job-progress', li);
  if (job.state === 'uploading') bar.removeAttribute('value'); /* no upload progress with fetch: indeterminate */
  else bar.value = job.progress;
  $('.job-wait', li).textContent = isDone(job) ? '' : job.wait || '';
  $('.job-error', li).textContent = job.error || '';
  const thumb = $('.job-thumb', li);
  if (job.url && !job.noPreview) thumb.src = job.url;
  else thumb.removeAttribute('src');
  const link = $('.job-download', li);
  if (job.state === 'completed') {
    link.href = `/download/${job.id}`;
    link.download = job.outName || '';
  } else {
    link.removeAttribute('href');
  }
  renderBatch();
}

/* The size the job makes, and the factor the model runs at. */
function plan(job) {
  const { opts: o, w, h } = job;
  if (o.scale !== 'exact') {
    job.factor = Number(o.scale);
    job.out = { w: Math.round(w * job.factor), h: Math.round(h * job.factor) };
    return;
  }
  job.out = o.width && o.height ? { w: o.width, h: o.height }
    : o.width ? { w: o.width, h: Math.max(1, Math.round((h * o.width) / w)) }
    : { w: Math.max(1, Math.round((w * o.height) / h)), h: o.height };
  /* Exact size: the model upscales first, by the smallest of its native scales that covers the
   * size (else its largest), so the resample after it only shrinks and keeps the model's detail. */
  const scales = scalesOf(job.model);
  job.factor = scales.find(f => w * f >= job.out.w && h * f >= job.out.h) || scales[scales.length - 1];
}

function imageSize(url) {
  return new Promise(resolve => {
    const img = new Image();
    img.onload = () => resolve(img.naturalWidth ? { w: img.naturalWidth, h: img.naturalHeight } : null);
    img.onerror = () => resolve(null);
    img.src = url;
  });
}

function setState(job, state, error = '') {
  const was = job.state;
  job.state = state;
  job.error = error;
  render(job);
  if (FINISHED.has(state) && !FINISHED.has(was)) finished(job);
}

function refuse(job, text) {
  releaseUrl(job);
  setState(job, 'refused', text);
  return false;
}

/* The server's limits, before anything is sent: true when the job may go. */
async function check(job) {
  const { file, opts } = job;
  if (!isImage(file)) return refuse(job, 'This file is not an image.');
  if (file.size > limit('max_upload_bytes')) {
    return refuse(job, `This file is ${mb(file.size)}; the server takes files up to ${mb(config.max_upload_bytes)}.`);
  }
  if (opts.scale === 'exact' && !opts.width && !opts.height) {
    return refuse(job, 'Enter a width or a height for the exact size.');
  }
  job.url = job.url || URL.createObjectURL(file);
  const size = await imageSize(job.url);
  if (!size) {
    job.noPreview = true; /* a format this browser cannot show (TIFF, HEIC): the server decides */
    render(job);
    return true;
  }
  Object.assign(job, size);
  plan(job);
  const pixels = job.w * job.h;
  if (pixels > limit('max_input_pixels')) {
    return refuse(job, `This image has ${mp(pixels)}; the server takes images up to ${mp(config.max_input_pixels)}.`);
  }
  const peak = Math.max(job.out.w * job.out.h, pixels * job.factor * job.factor);
  if (peak > limit('max_output_pixels')) {
    return refuse(job, `This would make a ${mp(peak)} image; the server makes at most ${mp(config.max_output_pixels)}. Choose a smaller scale or size.`);
  }
  const tier = tierLimits();
  if (tier && (job.out.w > tier.max_width || job.out.h > tier.max_height)) {
    return refuse(job, `The result would be ${job.out.w}×${job.out.h}; your plan allows up to ${tier.max_width}×${tier.max_height}. Choose a smaller scale or size.`);
  }
  render(job);
  return true;
}

async function addFiles(files) {
  if (!files.length) return;
  const opts = readOptions();
  const added = files.map(f => newJob(f, opts));
  added.forEach(render);
  for (const job of added) if ((await check(job)) && !isDone(job)) enqueue(job);
}

/* Uploads go one or two at a time: the first one alone, since without a token each upload would
 * open a guest session of its own. */
const waiting = [];
let active = 0;

function enqueue(job) {
  job.wait = 'Waiting to upload';
  render(job);
  waiting.push(job);
  pump();
}

function pump() {
  const slots = hasCredentials() ? 2 : 1;
  while (active < slots && waiting.length) {
    const job = waiting.shift();
    if (isDone(job)) continue;
    active++;
    submit(job).finally(() => {
      active--;
      pump();
    });
  }
}

/* PNG below quality 100 is palette-quantised by the server: an upscale should stay lossless. */
function settingsOf(job) {
  const o = job.opts;
  const png = o.format === 'png' || (o.format === 'original' && job.file.type === 'image/png');
  const s = {
    model: job.model || undefined, /* none listed: the server's own */
    output_format: o.format,
    output_quality: png ? 100 : o.quality,
    tile_size: o.tile,
    alpha_mode: o.alpha,
  };
  if (o.scale !== 'exact') return { ...s, output_upscale_factor: Number(o.scale) };
  /* Both sides: "pad" (Tinify has pad and crop) keeps the whole picture, undistorted, in exactly
   * W×H; one side keeps the aspect. An input the browser could not measure: the largest scale. */
  const factor = job.factor || Math.max(...scalesOf(job.model));
  return { ...s, output_upscale_factor: factor, output_width: o.width || undefined, output_height: o.height || undefined, output_resize_behavior: 'pad' };
}

async function upload(job, signal) {
  const body = new FormData();
  body.append('file', job.file, job.name);
  let r;
  try {
    r = await api('/upload', { method: 'POST', body, signal });
  } catch (e) {
    if (e.status !== 401 || saved.get('key') || !saved.get('token')) throw e;
    saved.drop('token'); /* the server no longer knows our guest session: open a new one */
    r = await api('/upload', { method: 'POST', body, signal });
  }
  if (r.session_token) saved.set('token', r.session_token);
  job.tempId = r.temp_file_id;
}

async function submit(job) {
  job.abort = new AbortController();
  const { signal } = job.abort;
  job.wait = '';
  render(job);
  try {
    if (!job.tempId) await upload(job, signal);
    const r = await api('/auto', { method: 'POST', json: { temp_file_ids: [job.tempId], settings: settingsOf(job) }, signal });
    if (Number.isFinite(r.credits_remaining)) showCredits({ credits_remaining: r.credits_remaining });
    job.abort = null;
    job.id = r.jobs[0].id;
    remember(job);
    applyStatus(job, { job: r.jobs[0], progress: 0 });
    follow();
  } catch (e) {
    job.abort = null;
    if (!isDone(job)) setState(job, 'failed', e.message); /* a cancel has already said so */
  }
}

/* A StatusResponse, or {job} alone from a batch poll (which carries no progress). */
function applyStatus(job, s) {
  const j = s.job;
  if (!job.w && j.original_width) {
    Object.assign(job, { w: j.original_width, h: j.original_height });
    plan(job);
  }
  if (Number.isFinite(s.progress)) job.progress = s.progress;
  if (j.status === 'queued' && 'queue_position' in s) {
    const eta = Number.isFinite(s.estimated_wait_seconds) ? `, about ${duration(s.estimated_wait_seconds)} to wait` : '';
    job.wait = s.queue_position ? `Position ${s.queue_position} in the queue${eta}` : 'In the queue';
  } else if (j.status !== 'queued') {
    job.wait = '';
  }
  if (j.status === 'completed') {
    job.progress = 100;
    job.outName = j.processed_filename;
    if (j.processed_width) job.out = { w: j.processed_width, h: j.processed_height };
    setState(job, 'completed');
  } else if (j.status === 'failed' && (job.cancelling || tinifyStatus(j) === 'cancelled')) {
    setState(job, 'cancelled', 'Cancelled.');
  } else if (j.status === 'failed' || j.status === 'expired') {
    setState(job, 'failed', j.status === 'expired' ? 'The result has expired.' : j.error_message || 'The job failed.');
  } else {
    setState(job, j.status === 'processing' ? 'processing' : 'queued');
  }
}

function finished(job) {
  closeStream(job);
  if (job.id) refreshHistorySoon();
  if (job.state === 'completed') {
    if (job.compareOf) showPair(job.compareOf, job, false);
    else if (!viewer.job) view(job, false); /* the first result opens by itself */
  }
  follow();
}

/* ---- following jobs: SSE, with polling when a stream fails ---- */

const MAX_STREAMS = 3; /* HTTP/1.1 allows 6 connections per origin: leave room for uploads and calls */
const POLL_MS = 2000;
let pollTimer = 0;

function follow() {
  const live = jobs.filter(j => j.id && !isDone(j));
  let streams = live.filter(j => j.stream).length;
  for (const job of live) {
    if (!job.stream && !job.polled && streams < MAX_STREAMS) {
      openStream(job);
      streams++;
    }
  }
  if (!pollTimer && live.some(j => !j.stream)) pollTimer = setTimeout(poll, POLL_MS);
}

function openStream(job) {
  const es = new EventSource(`/status/${job.id}/stream`);
  job.stream = es;
  const update = e => {
    try {
      applyStatus(job, JSON.parse(e.data));
    } catch { /* a garbled event: the next one, or the poller, puts it right */ }
  };
  es.addEventListener('status', update);
  es.addEventListener('complete', update);
  es.addEventListener('timeout', () => { /* the server ends a stream after 5 minutes: open another */
    closeStream(job);
    follow();
  });
  es.addEventListener('error', () => {
    if (job.stream !== es) return;
    closeStream(job);
    job.polled = true;
    follow();
  });
}

function closeStream(job) {
  if (!job.stream) return;
  job.stream.close();
  job.stream = null;
}

async function poll() {
  const polled = jobs.filter(j => j.id && !isDone(j) && !j.stream);
  try {
    const known = await statusesOf(polled.map(j => j.id));
    for (const job of polled.filter(j => !isDone(j))) {
      const j = known.get(job.id);
      if (j) applyStatus(job, { job: j });
      else setState(job, 'failed', 'The server no longer knows this job.');
    }
  } catch { /* the notice tells why; the next round tries again */ }
  pollTimer = 0;
  follow();
}

/* ---- job actions ---- */

async function cancel(job) {
  if (isDone(job)) return;
  if (!job.id) { /* not at the server yet: stop the upload, or never start it */
    if (job.abort) job.abort.abort();
    setState(job, 'cancelled', 'Cancelled.');
    return;
  }
  job.cancelling = true;
  try {
    const r = await api(`/cancel/${job.id}`, { method: 'POST' });
    if (r && /failed|cancel/.test(r.status || '') && !isDone(job)) setState(job, 'cancelled', 'Cancelled.');
  } catch (e) {
    job.cancelling = false;
    if (e.status !== 409) setNotice('error', `Could not cancel ${job.label}: ${e.message}`);
  }
}

async function copyLink(job, button) {
  const field = $('.job-link', job.li);
  try {
    const r = await api(`/download/${job.id}/url`);
    const valid = Number.isFinite(r.expires_in) ? ` It works for ${duration(r.expires_in)}.` : '';
    try {
      await navigator.clipboard.writeText(r.url);
      field.hidden = true;
      flash(button, 'Copied');
      announce('Link copied.' + valid);
    } catch { /* no clipboard (plain http from another machine, or refused): show it to copy by hand */
      field.value = r.url;
      field.hidden = false;
      field.focus();
      field.select();
      announce('The link is selected: copy it with Ctrl+C or ⌘C.' + valid);
    }
  } catch (e) {
    setNotice('error', `No link for ${job.label}: ${e.message}`);
  }
}

function releaseUrl(job) {
  const { url } = job;
  job.url = null;
  if (url && !jobs.some(j => j.url === url)) URL.revokeObjectURL(url);
}

function clearFinished() {
  for (const job of jobs.filter(isDone)) {
    job.li.remove();
    jobs.splice(jobs.indexOf(job), 1);
    if (viewer.job === job || viewer.left === job) closeViewer();
    releaseUrl(job);
  }
  batch = batch.filter(j => !isDone(j));
  renderBatch();
  $('#drop').focus();
}

/* ---- the batch bar ---- */

function renderBatch() {
  const box = $('#batch');
  box.hidden = batch.length < 2;
  if (box.hidden) return;
  const done = batch.filter(isDone).length;
  const all = done === batch.length;
  const current = all ? batch[batch.length - 1]
    : batch.find(j => j.state === 'processing') || batch.find(j => !isDone(j));
  $('#batch-text').textContent = `${all ? done : done + 1} of ${batch.length}: ${current.label}`;
  const sum = batch.reduce((s, j) => s + (isDone(j) ? 100 : j.progress), 0);
  $('#batch-progress').value = Math.round(sum / batch.length);
  $('#cancel-all').disabled = all;
  $('#download-all').disabled = !batch.some(j => j.state === 'completed');
}

async function downloadAll() {
  for (const job of batch.filter(j => j.state === 'completed')) {
    $('.job-download', job.li).click();
    await sleep(400); /* browsers drop downloads started in the same instant */
  }
}

/* ---- the viewer: before/after slider, side by side, zoom with one pan for both ---- */

const viewer = { job: null, left: null, mode: 'slider', zoom: 100, split: 50, x: 0, y: 0, w: 0, h: 0, ratio: 1 };
const compare = $('#compare');
const slider = $('#slider');

function setImage(img, src) {
  if (src) img.src = src;
  else img.removeAttribute('src');
}

/* Show left against right (each a job: its input when it is the same job, else its result). */
function showPair(left, right, focus) {
  viewer.job = right;
  viewer.left = left === right ? null : left;
  const labelL = viewer.left ? left.model : 'Before';
  setImage($('#before-img'), viewer.left ? `/download/${left.id}` : right.noPreview ? '' : right.url);
  setImage($('#after-img'), `/download/${right.id}`);
  $('#before-img').alt = viewer.left ? `Result of ${left.model}` : 'Before';
  $('#after-img').alt = `Result of ${right.model}`;
  $('.tag-before').textContent = right.noPreview && !viewer.left ? 'No preview in this browser' : labelL;
  $('.tag-after').textContent = viewer.left ? right.model : `After · ${right.model}`;
  $('#viewer-title').textContent = viewer.left ? `${right.name}: ${left.model} and ${right.model}` : right.name;
  const size = right.w ? `${right.w}×${right.h} → ${right.out.w}×${right.out.h}` : '';
  $('.viewer-meta').textContent = [size, right.model].filter(Boolean).join(' · ');
  const link = $('.viewer-download');
  link.href = `/download/${right.id}`;
  link.download = right.outName || '';
  const others = models.filter(m => m.name !== right.model && m.available !== false).map(m => m.name);
  fillSelect($('#compare-model'), others, n => n);
  showCompareButton();
  viewer.ratio = right.out ? right.out.w / right.out.h : 1;
  $('#viewer').hidden = false;
  setZoom(100);
  if (focus) {
    $('#viewer-title').focus({ preventScroll: true });
    const still = matchMedia('(prefers-reduced-motion: reduce)').matches;
    $('#viewer').scrollIntoView({ behavior: still ? 'auto' : 'smooth', block: 'start' });
  }
}

function view(job, focus) {
  showPair(job, job, focus);
}

function closeViewer() {
  viewer.job = viewer.left = null;
  $('#viewer').hidden = true;
}

function showCompareButton() {
  const name = $('#compare-model').value;
  const button = $('#compare-run');
  button.textContent = name ? `Compare with ${name}` : 'No other model';
  button.disabled = !name || !viewer.job || !viewer.job.tempId;
}

/* Run the viewed job's upload again with another model; the viewer shows both when it is done. */
function compareRun() {
  const a = viewer.job;
  const model = $('#compare-model').value;
  if (!a || !model) return;
  const b = newJob(a.file, { ...a.opts, model }, `${a.name} · ${model}`);
  Object.assign(b, { compareOf: a, tempId: a.tempId, url: a.url, noPreview: a.noPreview, w: a.w, h: a.h });
  if (b.w) plan(b);
  announce(`Running ${model} on ${a.name}. The comparison opens when it is done.`);
  enqueue(b);
}

/* Box size from the room there is, then the shared pan, clamped so the image covers its pane. */
function layout() {
  if ($('#viewer').hidden) return;
  const room = $('.viewer-bar').clientWidth; /* the viewer's width inside its padding */
  const side = viewer.mode === 'side';
  const stacked = side && room < 640;
  let w = side && !stacked ? (room - 12) / 2 : room;
  let h = w / viewer.ratio;
  const maxH = Math.max(200, window.innerHeight * (stacked ? 0.4 : 0.7));
  if (h > maxH) {
    h = maxH;
    w = h * viewer.ratio;
  }
  Object.assign(viewer, { w, h });
  compare.classList.toggle('stacked', stacked);
  setVars({ '--w': `${w}px`, '--h': `${h}px` });
  pan(0, 0);
}

function pan(dx, dy) {
  const z = viewer.zoom / 100;
  viewer.x = clamp(viewer.x + dx, viewer.w - viewer.w * z, 0);
  viewer.y = clamp(viewer.y + dy, viewer.h - viewer.h * z, 0);
  setVars({ '--z': z, '--px': `${viewer.x}px`, '--py': `${viewer.y}px` });
}

function setVars(vars) {
  for (const [name, value] of Object.entries(vars)) compare.style.setProperty(name, value);
}

function setPressed(selector, pressed) {
  for (const b of $$(selector)) b.setAttribute('aria-pressed', String(pressed(b)));
}

/* Zoom about the middle of the view, so what was in the centre stays there. */
function setZoom(zoom) {
  const before = viewer.zoom / 100;
  const after = zoom / 100;
  const cx = (viewer.w / 2 - viewer.x) / before;
  const cy = (viewer.h / 2 - viewer.y) / before;
  viewer.zoom = zoom;
  viewer.x = viewer.w / 2 - cx * after;
  viewer.y = viewer.h / 2 - cy * after;
  compare.classList.toggle('zoomed', zoom > 100);
  compare.tabIndex = zoom > 100 ? 0 : -1; /* a stop for the arrow keys only when there is something to pan */
  setPressed('[data-zoom]', b => Number(b.dataset.zoom) === zoom);
  layout();
}

function setMode(mode) {
  viewer.mode = mode;
  compare.dataset.mode = mode;
  setPressed('#view-mode [data-mode]', b => b.dataset.mode === mode);
  layout();
}

function setSplit(v) {
  viewer.split = clamp(v, 0, 100);
  setVars({ '--split': `${viewer.split}%` });
  slider.setAttribute('aria-valuenow', String(Math.round(viewer.split)));
  slider.setAttribute('aria-valuetext', `${Math.round(viewer.split)}% before`);
}

const SLIDER_KEYS = { ArrowLeft: -5, ArrowDown: -5, ArrowRight: 5, ArrowUp: 5, PageDown: -20, PageUp: 20 };

function sliderKey(e) {
  const now = Math.round(viewer.split);
  const v = e.key === 'Home' ? 0 : e.key === 'End' ? 100 : e.key in SLIDER_KEYS ? now + SLIDER_KEYS[e.key] : null;
  if (v === null) return;
  e.preventDefault();
  e.stopPropagation();
  setSplit(v);
}

const PAN_KEYS = { ArrowLeft: [1, 0], ArrowRight: [-1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };

function panKey(e) {
  if (e.target !== compare || viewer.zoom === 100 || !(e.key in PAN_KEYS)) return;
  e.preventDefault();
  const [dx, dy] = PAN_KEYS[e.key];
  pan(dx * viewer.w * 0.1, dy * viewer.h * 0.1);
}

/* Dragging: the split in slider mode (on the handle, or anywhere at 100%), else the pan. */
function pointerDown(e) {
  if (e.button !== 0) return;
  const onHandle = slider.contains(e.target);
  const splitting = viewer.mode === 'slider' && (onHandle || viewer.zoom === 100);
  if (!splitting && viewer.zoom === 100) return;
  e.preventDefault();
  compare.setPointerCapture(e.pointerId);
  const drag = new AbortController();
  const on = { signal: drag.signal };
  let last = { x: e.clientX, y: e.clientY };
  const move = ev => {
    if (splitting) {
      const box = compare.getBoundingClientRect();
      setSplit(((ev.clientX - box.left) / box.width) * 100);
    } else {
      pan(ev.clientX - last.x, ev.clientY - last.y);
      last = { x: ev.clientX, y: ev.clientY };
    }
  };
  if (splitting) {
    move(e);
    slider.focus({ preventScroll: true });
  }
  compare.addEventListener('pointermove', move, on);
  compare.addEventListener('pointerup', () => drag.abort(), on);
  compare.addEventListener('pointercancel', () => drag.abort(), on);
}

/* ---- history and credits ---- */

const STATUS_WORDS = { pending: 'Queued', queued: 'Queued', processing: 'Processing', completed: 'Done', failed: 'Failed', cancelled: 'Cancelled', expired: 'Expired' };
let historyItems = [];

function remember(job) {
  const mine = saved.get('history', []).filter(x => x.id !== job.id);
  mine.unshift({ id: job.id, name: job.label, at: Date.now() });
  saved.set('history', mine.slice(0, 50));
  refreshHistorySoon();
}

/* Tinify reports a cancelled job as failed, saying so in its error message. */
const tinifyStatus = j => (j.status === 'failed' && /cancel/i.test(j.error_message || '') ? 'cancelled' : j.status);

async function statusesOf(ids) {
  if (!ids.length) return new Map();
  const r = await api('/status?job_ids=' + ids.slice(0, 100).join(','));
  return new Map(r.jobs.map(j => [j.id, j]));
}

/* Items: {id, name, at (ms), status, expires (ms; none when unknown)}. The key's jobs come from
 * /v1/jobs, which has no expires_at: the Tinify status gives it, for the jobs made in Tinify. */
async function refreshHistory() {
  try {
    const own = saved.get('key')
      ? ((await api('/v1/jobs?limit=50')).data || [])
        .map(j => ({ id: j.id, name: j.original_filename, at: Date.parse(j.created_at), status: j.status }))
      : saved.get('history', []).map(x => ({ ...x, status: 'expired' })); /* left out: deleted */
    const known = await statusesOf(own.map(x => x.id));
    historyItems = own.map(x => {
      const t = known.get(x.id);
      return t ? { ...x, status: tinifyStatus(t), expires: Date.parse(t.expires_at) } : x;
    });
    renderHistory();
  } catch (e) {
    if (e.status) setNotice('error', `Could not load the history: ${e.message}`);
  }
}

let historyTimer = 0;
function refreshHistorySoon() {
  clearTimeout(historyTimer);
  historyTimer = setTimeout(refreshHistory, 800);
}

function timeLeft(item) {
  if (item.status === 'expired') return 'expired';
  if (item.status !== 'completed' || !item.expires) return '';
  const s = (item.expires - Date.now()) / 1000;
  return s > 0 ? `${duration(s)} left` : 'expired';
}

function renderHistory() {
  const rows = historyItems.map(item => {
    const li = $('#history-template').content.firstElementChild.cloneNode(true);
    const left = timeLeft(item);
    li.dataset.jobId = item.id;
    $('.history-name', li).textContent = item.name;
    $('.history-status', li).textContent = STATUS_WORDS[item.status] || item.status;
    $('.history-time', li).textContent = Number.isFinite(item.at)
      ? new Date(item.at).toLocaleString([], { dateStyle: 'short', timeStyle: 'short' }) : '';
    $('.history-left', li).textContent = left;
    const link = $('.history-download', li);
    if (item.status === 'completed' && left !== 'expired') {
      link.href = `/download/${item.id}`;
      link.setAttribute('aria-label', `Download ${item.name}`);
    } else {
      link.remove();
    }
    return li;
  });
  $('#history').replaceChildren(...rows);
}

function showCredits(u) {
  const out = $('#credits');
  if (u.tier && u.tier !== 'guest') tierName = u.tier;
  if (u.unlimited) out.textContent = 'Unlimited credits';
  else if (Number.isFinite(u.quota) && Number.isFinite(u.credits_used_this_period)) {
    out.textContent = `${plural(Math.max(0, u.quota - u.credits_used_this_period), 'credit')} left this month`;
  } else if (Number.isFinite(u.credits_remaining)) {
    out.textContent = `${plural(u.credits_remaining, 'credit')} left${saved.get('key') ? '' : ' today'}`;
  }
}

async function refreshCredits() {
  if (!hasCredentials()) {
    if (Number.isFinite(config.guest_daily_credits)) showCredits({ credits_remaining: config.guest_daily_credits });
    return;
  }
  try {
    showCredits(await api('/usage/summary'));
  } catch (e) {
    if (e.status !== 401) return;
    if (saved.get('key')) {
      $('#credits').textContent = 'The API key was not accepted';
    } else {
      saved.drop('token'); /* a forgotten guest session: the next upload opens a fresh one */
      refreshCredits();
    }
  }
}

async function saveKey() {
  const field = $('#api-key');
  const key = field.value.trim();
  if (!key) return clearKey();
  saved.set('key', key);
  try {
    showCredits(await api('/usage/summary'));
    announce('The API key is saved.');
    flash($('#api-key-save'), 'Saved');
    refreshHistory();
  } catch (e) {
    if (e.status === 401) saved.drop('key');
    setNotice('error', e.status === 401 ? 'This API key was not accepted.' : e.message);
    refreshCredits();
  }
}

function clearKey() {
  saved.drop('key');
  $('#api-key').value = '';
  announce('The API key is cleared: you work as a guest.');
  refreshCredits();
  refreshHistory();
}

/* ---- input: picker, drop (files and folders), paste ---- */

async function filesOf(entry) {
  if (entry.isFile) return [await new Promise((ok, no) => entry.file(ok, no))];
  const reader = entry.createReader();
  const out = [];
  for (;;) {
    const some = await new Promise((ok, no) => reader.readEntries(ok, no));
    if (!some.length) return out.filter(isImage); /* a folder's other files are not errors */
    for (const e of some) out.push(...(await filesOf(e)));
  }
}

async function dropped(e) {
  e.preventDefault();
  document.body.classList.remove('dragging');
  /* the items are readable only during the event: take the entries now, walk them after */
  const items = [...e.dataTransfer.items].filter(i => i.kind === 'file');
  const entries = items.map(i => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  if (!entries.every(Boolean)) return addFiles([...e.dataTransfer.files]);
  try {
    addFiles((await Promise.all(entries.map(filesOf))).flat());
  } catch {
    setNotice('error', 'Could not read the dropped folder.');
  }
}

function pasted(e) {
  const files = [...((e.clipboardData && e.clipboardData.files) || [])].filter(isImage);
  if (!files.length) return;
  e.preventDefault();
  addFiles(files);
}

/* ---- start ---- */

function wire() {
  const picker = $('#file-input');
  $('#drop').addEventListener('click', () => picker.click());
  picker.addEventListener('change', () => {
    addFiles([...picker.files]);
    picker.value = '';
  });
  window.addEventListener('dragover', e => {
    e.preventDefault(); /* a file dropped anywhere is taken, not opened by the browser */
    document.body.classList.add('dragging');
  });
  window.addEventListener('dragleave', e => {
    if (!e.relatedTarget) document.body.classList.remove('dragging');
  });
  window.addEventListener('drop', dropped);
  document.addEventListener('paste', pasted);

  form.addEventListener('submit', e => e.preventDefault());
  form.addEventListener('change', () => {
    saveOptions();
    showOptions();
  });
  form.addEventListener('input', saveOptions);
  $('.preview-after').addEventListener('load', () => $('#model-info').classList.remove('loading'));
  $('.preview-after').addEventListener('error', () => $('#model-info').classList.remove('loading'));

  $('#cancel-all').addEventListener('click', () => batch.filter(j => !isDone(j)).forEach(cancel));
  $('#download-all').addEventListener('click', downloadAll);
  $('#clear-jobs').addEventListener('click', clearFinished);
  $('#history-refresh').addEventListener('click', refreshHistory);

  $('#view-mode').addEventListener('click', e => {
    const b = e.target.closest('[data-mode]');
    if (b) setMode(b.dataset.mode);
  });
  for (const b of $$('[data-zoom]')) b.addEventListener('click', () => setZoom(Number(b.dataset.zoom)));
  slider.addEventListener('keydown', sliderKey);
  compare.addEventListener('keydown', panKey);
  compare.addEventListener('pointerdown', pointerDown);
  $('#compare-model').addEventListener('change', showCompareButton);
  $('#compare-run').addEventListener('click', compareRun);
  $('#after-img').addEventListener('load', e => {
    const img = e.currentTarget;
    if (!viewer.job || !img.naturalWidth) return;
    viewer.ratio = img.naturalWidth / img.naturalHeight; /* the true shape, when the size was unknown */
    layout();
  });
  window.addEventListener('resize', layout);

  $('#api-key').value = saved.get('key', '');
  $('#key-form').addEventListener('submit', e => {
    e.preventDefault();
    saveKey();
  });
  $('#api-key-clear').addEventListener('click', clearKey);
  setInterval(renderHistory, 30000); /* the time left counts down */
}

async function start() {
  wire();
  setSplit(50);
  await loadServer();
  restoreOptions();
  showOptions();
  refreshCredits();
  refreshHistory();
  healthTimer = healthTimer || setTimeout(checkHealth, 30000); /* unless a failed start set one */
}

start();
