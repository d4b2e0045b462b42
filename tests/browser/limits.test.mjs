// limits.test.mjs - the server's limits seen from the page: a file over --max-upload or
// --max-pixels is refused before any upload, and a key over --rate-per-minute gets a 429 that the
// page counts down in #notice.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import zlib from 'node:zlib';
import {
  browserTest, chooseOptions, fileServer, job, pick, png, pngChunk, recordStates, seen, sleep, stopsCleanly,
  waitState,
} from './harness.mjs';

const MAX_UPLOAD = 20 * 1024, MAX_PIXELS = 5000;
const srv = fileServer('limits', ['--max-upload', '20K', '--max-pixels', String(MAX_PIXELS),
  '--rate-per-minute', '2']);

/** A w x h PNG of noise (it does not compress): about w*h*3 bytes. */
function noisePng(w, h) {
  const rows = [];
  for (let y = 0; y < h; y++) rows.push(Buffer.concat([Buffer.from([0]), crypto.randomBytes(w * 3)]));
  const head = png(w, h).subarray(0, 33); // the signature and the IHDR chunk
  return Buffer.concat([head, pngChunk('IDAT', zlib.deflateSync(Buffer.concat(rows))), pngChunk('IEND', Buffer.alloc(0))]);
}

browserTest('a file over --max-upload or --max-pixels is refused before upload, with a sentence', srv,
  async ({ page, guard }) => {
    await chooseOptions(page, { scale: 2, format: 'png' });
    // 4500 px, under the pixel limit, and over 20 KB: 13.5 KB of noise, then 20 KB after IEND (still a PNG)
    const big = Buffer.concat([noisePng(90, 50), crypto.randomBytes(MAX_UPLOAD)]);
    const wide = png(100, 100, 30, true); // 10000 px > 5000, a few hundred bytes
    assert.ok(big.length > MAX_UPLOAD && wide.length < MAX_UPLOAD, `${big.length} ${wide.length}`);
    await pick(page, [{ name: 'big.png', buffer: big }, { name: 'wide.png', buffer: wide }]);
    for (const n of ['big.png', 'wide.png']) {
      assert.equal(await waitState(page, n, ['refused', 'uploading', 'queued', 'processing', 'completed', 'failed']),
        'refused', n);
      const err = (await job(page, n).locator('.job-error').textContent()).trim();
      assert.ok(err.length >= 15 && /\s/.test(err), `${n}: .job-error is a sentence: "${err}"`);
      assert.ok(await job(page, n).locator('.job-error').isVisible(), `${n}: the sentence shows`);
    }
    assert.ok(guard.requestsTo('/upload').length === 0, 'no request to /upload');
    // a file within the limits still goes through on this server
    await pick(page, [{ name: 'fine.png', buffer: png(24, 24) }]);
    assert.equal(await waitState(page, 'fine.png', ['refused', 'completed', 'failed', 'cancelled']), 'completed');
    assert.equal(guard.requestsTo('/upload').length, 1, 'one upload: the file within the limits');
  });

browserTest('a key over --rate-per-minute: #notice[data-kind=rate] counts down from Retry-After', srv,
  { init: recordStates, allowConsole: [/Failed to load resource: the server responded with a status of 429/] },
  async ({ page, server }) => {
    const k = await server.cli('keys', 'create', '--name', 'browser-rate');
    const key = k.stdout.split('\n')[0].trim();
    assert.match(key, /^upres_/, `keys create: ${k.code} ${k.stdout} ${k.stderr}`);
    await page.fill('#api-key', key);
    await page.click('#api-key-save');
    await chooseOptions(page, { scale: 2, format: 'png' });
    // two requests a minute for this key: some of these three uploads and their jobs get 429
    await pick(page, ['r1.png', 'r2.png', 'r3.png'].map((name, i) => ({ name, buffer: png(16, 16, i) })));
    const notice = page.locator('#notice[data-kind="rate"]');
    await notice.waitFor({ state: 'visible', timeout: 20000 });
    assert.equal(await page.locator('#notice').getAttribute('role'), 'alert');
    const secs = async () => {
      const t = await notice.textContent();
      const m = t.match(/(\d+)\s*s\b/);
      assert.ok(m, `a countdown in seconds: "${t}"`);
      return Number(m[1]);
    };
    const first = await secs();
    assert.ok(first >= 1 && first <= 60, `from Retry-After (<= 60 s): ${first}`);
    await sleep(2500);
    const { notice: said } = await seen(page);
    const counts = said.filter(([kind]) => kind === 'rate').map(([, t]) => Number((t.match(/(\d+)\s*s\b/) || [])[1]));
    const later = await secs();
    assert.ok(later < first, `counting down: ${first} then ${later} (${JSON.stringify(said)})`);
    assert.ok(counts.length >= 2, `the text changed each second: ${JSON.stringify(said)}`);
  });

stopsCleanly(srv);
