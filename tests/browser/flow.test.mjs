// flow.test.mjs - the page's main flow against a real server: a drop with live progress to a
// downloaded result, a batch of three, the viewer (slider by keyboard, view modes, zoom, two
// models compared), history and options after a reload, a server error as a sentence, 390 px.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  FAST, SECOND, browserTest, chooseOptions, drop, fileServer, imageInfo, job, openPage, pick, png,
  recordStates, seen, sharedPng, shot, stopsCleanly, until, waitState,
} from './harness.mjs';

const srv = fileServer('flow');

/** Download a completed job's result through its a.job-download: {buffer, info, name}. */
async function download(page, name) {
  const link = job(page, name).locator('a.job-download');
  const href = await link.getAttribute('href');
  assert.match(href || '', /\/download\/[0-9a-f-]{36}/, `a.job-download href ${href}`);
  assert.notEqual(await link.getAttribute('download'), null, 'a.job-download has a download attribute');
  const [dl] = await Promise.all([page.waitForEvent('download'), link.click()]);
  const buffer = fs.readFileSync(await dl.path());
  return { buffer, info: imageInfo(buffer), name: dl.suggestedFilename() };
}

/** One file through the picker to completed, with the fast model: the li's job id. */
async function runOne(page, name, buffer, opts = {}) {
  await chooseOptions(page, { scale: 4, format: 'png', ...opts });
  await pick(page, [{ name, buffer }]);
  assert.equal(await waitState(page, name, ['completed', 'failed', 'cancelled']), 'completed',
    await job(page, name).locator('.job-error').textContent().catch(() => ''));
  return job(page, name).getAttribute('data-job-id');
}

/** The viewer's two images have loaded; their natural widths [before, after]. */
async function viewerWidths(page) {
  await page.locator('#viewer').waitFor({ state: 'visible' });
  await until(page, 'both images of the viewer loaded', () => ['before-img', 'after-img'].every((id) => {
    const im = document.getElementById(id);
    return im && im.complete && im.naturalWidth > 0;
  }));
  return page.evaluate(() => ['before-img', 'after-img'].map((id) => document.getElementById(id).naturalWidth));
}

browserTest('drop a PNG: live progress, then the result in the viewer, and the download is a 1024x1024 PNG', srv,
  { init: recordStates }, async ({ page, server, guard }) => {
    await chooseOptions(page, { scale: 4, format: 'png' });
    // 256 px in 64 px tiles: 16 of them, so that the server has progress to report on the way
    // (a 64 px image finishes before its stream says anything but 0 and 100)
    await page.locator('#advanced').evaluate((d) => { d.open = true; });
    await page.fill('#tile', '64');
    await drop(page, [{ name: 'photo.png', buffer: png(256, 256, 11) }]);
    await waitState(page, 'photo.png', ['processing', 'completed']);
    await shot(page, '03-progress');
    assert.equal(await waitState(page, 'photo.png', ['completed', 'failed', 'cancelled']), 'completed');
    const li = job(page, 'photo.png');
    const id = await li.getAttribute('data-job-id');
    assert.match(id || '', /^[0-9a-f-]{36}$/, 'data-job-id once the server answered');
    const rec = (await seen(page)).jobs['photo.png'];
    assert.ok(rec.states.some((s) => ['uploading', 'queued', 'processing'].includes(s)),
      `states before completed: ${rec.states}`);
    assert.equal(rec.states[rec.states.length - 1], 'completed');
    assert.ok(rec.progress.some((v) => v > 0 && v < 100), `progress shown on the way: ${rec.progress}`);
    assert.equal(Number(await li.locator('progress.job-progress').evaluate((p) => p.value)), 100);
    const size = (await li.locator('.job-size').textContent()).replace(/\s+/g, ' ');
    assert.match(size, /256\s*\u00d7\s*256\s*\u2192\s*1024\s*\u00d7\s*1024/, `.job-size: ${size}`);
    // the job went through the API the contract names, with the fast model
    assert.ok(guard.requestsTo('/upload').length >= 1, 'POST /upload');
    const st = await server.json('/status/' + id);
    assert.equal(st.body.job.upscale_model, FAST, JSON.stringify(st.body.job));
    // the first completed job is viewed by itself: before 256 px wide, after 1024
    assert.deepEqual(await viewerWidths(page), [256, 1024]);
    await shot(page, '04-slider');
    const d = await download(page, 'photo.png');
    assert.deepEqual(d.info, { format: 'png', width: 1024, height: 1024 }, `downloaded ${d.name}`);
    assert.match(d.name, /\.png$/);
  });

browserTest('a batch of 3 through the picker: the batch bar counts "N of 3: name", every result a WebP at x2', srv,
  { init: recordStates }, async ({ page }) => {
    await chooseOptions(page, { scale: 2, format: 'webp' });
    const names = ['one.png', 'two.png', 'three.png'];
    await pick(page, names.map((name, i) => ({ name, buffer: png(40 + i * 4, 32, i * 50) })));
    await page.locator('#batch').waitFor({ state: 'visible' });
    assert.equal(await page.locator('#jobs li.job').count(), 3);
    await waitState(page, 'one.png', ['processing', 'queued', 'completed']);
    await shot(page, '06-batch');
    for (const n of names) assert.equal(await waitState(page, n, ['completed', 'failed', 'cancelled']), 'completed', n);
    await until(page, '#batch-text "3 of 3: ..."',
      () => /^3 of 3\b/.test(document.getElementById('batch-text').textContent.trim()), null,
      { now: (p) => p.locator('#batch-text').textContent() });
    const { batch } = await seen(page);
    const re = /^([1-3]) of 3: (one|two|three)\.png$/;
    assert.ok(batch.length >= 2 && batch.every((t) => re.test(t)), `#batch-text said: ${JSON.stringify(batch)}`);
    const counts = batch.map((t) => Number(t.match(re)[1]));
    assert.ok(counts.every((c, i) => i === 0 || c >= counts[i - 1]), `counts never go back: ${counts}`);
    assert.equal(Number(await page.locator('#batch-progress').evaluate((p) => p.value / (p.max || 1))), 1);
    assert.equal(await page.locator('#download-all').count(), 1);
    assert.equal(await page.locator('#cancel-all').count(), 1);
    const d = await download(page, 'three.png');
    assert.deepEqual(d.info, { format: 'webp', width: 96, height: 64 }, `downloaded ${d.name}`);
    assert.match(d.name, /\.webp$/);
  });

browserTest('the slider by keyboard: ArrowLeft/Right by 5, PageUp/Down by 20, Home/End to 0/100; Tab reaches it',
  srv, async ({ page }) => {
    await runOne(page, 'slide.png', png(32, 32));
    const s = page.locator('#slider');
    await s.waitFor({ state: 'visible' });
    assert.equal(await s.getAttribute('role'), 'slider');
    assert.equal(await s.getAttribute('tabindex'), '0');
    assert.equal(await s.getAttribute('aria-valuemin'), '0');
    assert.equal(await s.getAttribute('aria-valuemax'), '100');
    const now = async () => Number(await s.getAttribute('aria-valuenow'));
    await s.focus();
    const start = await now();
    assert.ok(start >= 10 && start <= 90, `starts inside: ${start}`);
    const steps = [['ArrowLeft', start - 5], ['ArrowRight', start], ['ArrowRight', start + 5], ['Home', 0],
      ['ArrowLeft', 0], ['PageUp', 20], ['End', 100], ['ArrowRight', 100], ['PageDown', 80]];
    for (const [key, want] of steps) {
      await page.keyboard.press(key);
      assert.equal(await now(), want, `after ${key}`);
    }
    // and from the top of the page, Tab alone gets there
    await page.evaluate(() => document.activeElement && document.activeElement.blur());
    await page.mouse.click(2, 2);
    let reached = false;
    for (let i = 0; i < 60 && !reached; i++) {
      await page.keyboard.press('Tab');
      reached = await page.evaluate(() => document.activeElement && document.activeElement.id === 'slider');
    }
    assert.ok(reached, 'Tab reaches #slider');
  });

browserTest('view modes and zoom buttons toggle aria-pressed; side by side at 200%', srv, async ({ page }) => {
  await runOne(page, 'modes.png', sharedPng('chelsea_lr64.png'));
  await page.locator('#viewer').waitFor({ state: 'visible' });
  const pressed = (sel) => page.locator(sel).getAttribute('aria-pressed');
  const slider = '#view-mode [data-mode=slider]', side = '#view-mode [data-mode=side]';
  assert.equal(await pressed(slider), 'true', 'slider mode first');
  assert.equal(await pressed(side), 'false');
  await page.click(side);
  assert.equal(await pressed(side), 'true');
  assert.equal(await pressed(slider), 'false');
  const zooms = ['100', '200', '400'];
  for (const z of ['200', '400', '100', '200']) {
    await page.click(`[data-zoom="${z}"]`);
    for (const o of zooms) assert.equal(await pressed(`[data-zoom="${o}"]`), String(o === z), `zoom ${z}: ${o}`);
  }
  await viewerWidths(page);
  await shot(page, '05-side-200');
  // the keyboard works the buttons too
  await page.focus(slider);
  await page.keyboard.press('Enter');
  assert.equal(await pressed(slider), 'true', 'Enter on the slider mode button');
  assert.equal(await pressed(side), 'false');
});

browserTest(`compare two models: ${FAST} against ${SECOND} on the same upload`, srv, { timeout: 90000 },
  async ({ page, server, guard }) => {
    const first = await runOne(page, 'cmp.png', png(32, 32, 9));
    assert.deepEqual(await viewerWidths(page), [32, 128], 'before/after first');
    const uploads = guard.requestsTo('/upload').length;
    await page.selectOption('#compare-model', SECOND);
    await page.click('#compare-run');
    // a second job from the same upload: no new upload, and the viewer shows A (128) against B (128)
    await until(page, 'a second job (#compare-run)', (id) => [...document.querySelectorAll('#jobs li.job')]
      .some((li) => li.getAttribute('data-job-id') && li.getAttribute('data-job-id') !== id), first);
    const other = await page.locator('#jobs li.job').evaluateAll((lis, id) => lis
      .map((li) => li.getAttribute('data-job-id')).find((x) => x && x !== id), first);
    await until(page, `the ${SECOND} job to finish`, (id) => {
      const li = document.querySelector(`#jobs li.job[data-job-id="${id}"]`);
      return li && ['completed', 'failed', 'cancelled'].includes(li.getAttribute('data-state'));
    }, other, { ms: 60000 });
    assert.equal(await page.locator(`#jobs li.job[data-job-id="${other}"]`).getAttribute('data-state'), 'completed');
    assert.equal(guard.requestsTo('/upload').length, uploads, 'the same upload, not a new one');
    const st = await server.json('/status/' + other);
    assert.equal(st.body.job.upscale_model, SECOND, JSON.stringify(st.body.job));
    await until(page, 'model A (128 px) on the left of the viewer',
      () => document.getElementById('before-img').naturalWidth === 128, null,
      { now: (p) => p.evaluate(() => document.getElementById('before-img').naturalWidth) });
    assert.deepEqual(await viewerWidths(page), [128, 128], 'model A against model B');
  });

browserTest('history after a reload: the job with its time left', srv, async ({ page, server }) => {
  const id = await runOne(page, 'kept.png', png(24, 24, 3));
  await page.reload();
  await openPage(page, server);
  const item = page.locator(`#history li.history-item[data-job-id="${id}"]`);
  await item.waitFor({ state: 'visible' });
  const text = await item.textContent();
  assert.match(text, /kept\.png/, `the file name: ${text}`);
  assert.match(text, /\b(done|completed?)\b/i, `the status: ${text}`);
  const left = (await item.locator('.history-left').textContent()).trim();
  assert.match(left, /^1[45] min left$/, `.history-left (retention 15 min): ${left}`);
});

browserTest('options are remembered after a reload', srv, async ({ page, server }) => {
  await page.selectOption('#model', SECOND);
  await page.selectOption('#scale', '3');
  await page.selectOption('#format', 'webp');
  await page.fill('#quality', '67');
  await page.locator('#advanced').evaluate((d) => { d.open = true; });
  await page.fill('#tile', '128');
  await page.selectOption('#alpha', 'model');
  await page.locator('#alpha').blur();
  await page.reload();
  await openPage(page, server);
  await until(page, `#model restored to ${SECOND}`, (m) => document.getElementById('model').value === m, SECOND,
    { now: (p) => p.inputValue('#model') });
  assert.equal(await page.inputValue('#scale'), '3');
  assert.equal(await page.inputValue('#format'), 'webp');
  assert.equal(await page.inputValue('#quality'), '67');
  assert.equal(await page.inputValue('#tile'), '128');
  assert.equal(await page.inputValue('#alpha'), 'model');
  // and the exact size: width and height shown and kept
  await page.selectOption('#scale', 'exact');
  await page.locator('#width').waitFor({ state: 'visible' });
  await page.fill('#width', '300');
  await page.fill('#height', '200');
  await page.locator('#height').blur();
  await page.reload();
  await openPage(page, server);
  await until(page, '#scale restored to exact', () => document.getElementById('scale').value === 'exact', null,
    { now: (p) => p.inputValue('#scale') });
  assert.equal(await page.inputValue('#width'), '300');
  assert.equal(await page.inputValue('#height'), '200');
});

browserTest('a server error is a sentence: x.png that is no image (415)', srv,
  { allowConsole: [/Failed to load resource: the server responded with a status of 415/] }, async ({ page }) => {
    await chooseOptions(page, {});
    await pick(page, [{ name: 'x.png', buffer: Buffer.from('this is not an image at all, just some text\n') }]);
    assert.equal(await waitState(page, 'x.png', ['completed', 'failed', 'cancelled', 'refused']), 'failed');
    const err = (await job(page, 'x.png').locator('.job-error').textContent()).trim();
    assert.ok(err.length >= 15 && /\s/.test(err), `.job-error is a sentence: "${err}"`);
    assert.notEqual(err, 'UNSUPPORTED_IMAGE');
    assert.doesNotMatch(err, /^[A-Z_]+$/, 'not a bare code');
    assert.ok(await job(page, 'x.png').locator('.job-error').isVisible());
    await shot(page, '07-error');
  });

browserTest('390 px wide: no horizontal scroll, and a JPEG at x3 goes through', srv,
  { viewport: { width: 390, height: 844 } }, async ({ page }) => {
    const wide = () => page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(await wide() <= 390, `empty page: scrollWidth ${await wide()}`);
    await runOne(page, 'narrow.png', sharedPng('astronaut_lr64.png'), { scale: 3, format: 'jpg' });
    await viewerWidths(page);
    assert.ok(await wide() <= 390, `with a result: scrollWidth ${await wide()}`);
    await shot(page, '08-390px');
    const d = await download(page, 'narrow.png');
    assert.deepEqual(d.info, { format: 'jpg', width: 192, height: 192 }, `downloaded ${d.name}`);
    assert.match(d.name, /\.jpe?g$/);
  });

stopsCleanly(srv);
