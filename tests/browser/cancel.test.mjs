// cancel.test.mjs - cancelling from the page: a queued job (which shows its queue position first)
// and a running one end `cancelled`, and the server agrees (GET /status/{id}: failed, "cancelled").
// One worker (the server's default), so that of three large uploads one runs while the others wait.
import assert from 'node:assert/strict';
import {
  browserTest, chooseOptions, fileServer, job, pick, png, stopsCleanly, until, waitState,
} from './harness.mjs';

const srv = fileServer('cancel', ['--workers', '1']);

/** The server's word on the job of the li named name: {status, error_message}. */
async function serverSays(page, server, name) {
  const id = await job(page, name).getAttribute('data-job-id');
  assert.match(id || '', /^[0-9a-f-]{36}$/, `${name} has a data-job-id`);
  const st = await server.json('/status/' + id);
  assert.equal(st.status, 200, st.text);
  return st.body.job;
}

browserTest('cancel a queued job and a running one: both end cancelled, and the server agrees', srv,
  { timeout: 120000 }, async ({ page, server }) => {
    await chooseOptions(page, { scale: 4, format: 'png' });
    // 512 x 512 at x4 in 128 px tiles: a second or more each, one at a time, with a point to stop
    // at after every tile
    await page.locator('#advanced').evaluate((d) => { d.open = true; });
    await page.fill('#tile', '128');
    const names = ['run.png', 'wait.png', 'last.png'];
    await pick(page, names.map((name, i) => ({ name, buffer: png(512, 512, i * 40) })));
    assert.equal(await waitState(page, 'last.png', ['queued', 'processing', 'completed']), 'queued',
      'the last of three waits behind one worker');
    // while it waits the page says where it is in the queue (the stream's queue_position)
    await until(page, 'last.png shows its queue position',
      () => /^Position [1-9]\d* in the queue/.test(
        document.querySelector('#jobs li.job[data-name="last.png"] .job-wait').textContent), null,
      { now: (p) => job(p, 'last.png').locator('.job-wait').textContent() });
    await job(page, 'last.png').locator('button.job-cancel').click();
    assert.equal(await waitState(page, 'last.png', ['cancelled', 'completed', 'failed']), 'cancelled');
    let j = await serverSays(page, server, 'last.png');
    assert.equal(j.status, 'failed', JSON.stringify(j));
    assert.match(j.error_message || '', /cancel/i);

    // the one running now (the first, unless it finished already: then the second)
    const running = await until(page, 'a job processing', () => {
      const li = document.querySelector('#jobs li.job[data-state="processing"]');
      return li && li.getAttribute('data-name');
    }, null, { now: (p) => p.locator('#jobs li.job').evaluateAll((l) => l.map((x) => x.dataset.state).join()) })
      .then((h) => h.jsonValue());
    await job(page, running).locator('button.job-cancel').click();
    assert.equal(await waitState(page, running, ['cancelled', 'completed', 'failed']), 'cancelled', running);
    j = await serverSays(page, server, running);
    assert.equal(j.status, 'failed', JSON.stringify(j));
    assert.match(j.error_message || '', /cancel/i);
    for (const n of names) await waitState(page, n, ['cancelled', 'completed', 'failed']);
    // a cancelled job offers no download
    for (const n of [running, 'last.png']) {
      const a = job(page, n).locator('a.job-download');
      assert.ok(!(await a.count()) || !(await a.isVisible()), `${n}: no download link`);
    }
  });

browserTest('#cancel-all cancels what is left of a batch', srv, { timeout: 120000 }, async ({ page, server }) => {
  await chooseOptions(page, { scale: 4, format: 'png' });
  const names = ['a1.png', 'a2.png', 'a3.png'];
  await pick(page, names.map((name, i) => ({ name, buffer: png(512, 512, i * 70 + 5) })));
  await page.locator('#batch').waitFor({ state: 'visible' });
  await waitState(page, 'a3.png', ['queued', 'processing', 'completed']);
  await page.click('#cancel-all');
  const ends = [];
  for (const n of names) ends.push(await waitState(page, n, ['cancelled', 'completed', 'failed']));
  assert.equal(ends[2], 'cancelled', `a queued job: ${ends}`);
  assert.ok(!ends.includes('failed'), `nothing failed: ${ends}`);
  for (const [i, n] of names.entries()) {
    const j = await serverSays(page, server, n);
    assert.equal(j.status, ends[i] === 'cancelled' ? 'failed' : 'completed', `${n}: ${JSON.stringify(j)}`);
  }
});

stopsCleanly(srv);
