// extras.test.mjs - what the main flow leaves out: an image pasted from the clipboard, the
// credits counting down, a copied link that works with no credential, and "Download all".
import assert from 'node:assert/strict';
import fs from 'node:fs';
import {
  browserTest, chooseOptions, fileServer, imageInfo, job, pick, png, stopsCleanly, until, waitState,
} from './harness.mjs';

const srv = fileServer('extras');

const DONE = ['completed', 'failed', 'cancelled'];

/** The number in #credits ("19 credits left today"), once it shows one. */
async function credits(page) {
  await until(page, '#credits shows a number', () => /\d/.test(document.getElementById('credits').textContent));
  return Number((await page.locator('#credits').textContent()).match(/\d+/)[0]);
}

browserTest('an image pasted into the page becomes a job, and the guest credits go down by one', srv,
  async ({ page }) => {
    const before = await credits(page);
    assert.equal(before, 20, 'a new guest starts with --guest-daily-credits (20)');
    await chooseOptions(page, { scale: 2, format: 'png' });
    const bytes = [...png(24, 20, 7)];
    await page.evaluate((data) => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(data)], 'pasted.png', { type: 'image/png' }));
      document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true }));
    }, bytes);
    assert.equal(await waitState(page, 'pasted.png', DONE), 'completed');
    const size = (await job(page, 'pasted.png').locator('.job-size').textContent()).replace(/\s+/g, ' ');
    assert.match(size, /24\s*\u00d7\s*20\s*\u2192\s*48\s*\u00d7\s*40/, `.job-size: ${size}`);
    await until(page, '#credits one lower',
      (n) => (document.getElementById('credits').textContent.match(/\d+/) || [])[0] === String(n), before - 1);
  });

browserTest('"Copy link" gives a signed link that downloads the result with no credential', srv,
  async ({ page, context, server }) => {
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: server.origin });
    await chooseOptions(page, { scale: 2, format: 'png' });
    await pick(page, [{ name: 'link.png', buffer: png(30, 20, 3) }]);
    assert.equal(await waitState(page, 'link.png', DONE), 'completed');
    const li = job(page, 'link.png');
    await li.locator('button.job-copy').click();
    // the clipboard, or (where the browser refuses it) the link shown selected in the job
    let url = '';
    for (let i = 0; i < 50 && !/sig=/.test(url); i++) {
      url = await page.evaluate(() => navigator.clipboard.readText().catch(() => ''));
      if (!/sig=/.test(url)) url = await li.locator('input.job-link').inputValue().catch(() => '');
      if (!/sig=/.test(url)) await page.waitForTimeout(100);
    }
    const id = await li.getAttribute('data-job-id');
    assert.match(url, new RegExp(`^${server.origin}/download/${id}\\?expires=\\d+&sig=[0-9a-f]+$`), url);
    const r = await fetch(url); // no cookie, no token, no key: the link is the credential
    assert.equal(r.status, 200);
    assert.deepEqual(imageInfo(Buffer.from(await r.arrayBuffer())), { format: 'png', width: 60, height: 40 });
  });

browserTest('"Download all" downloads every finished result of the batch', srv, async ({ page }) => {
  await chooseOptions(page, { scale: 2, format: 'png' });
  const names = ['all-a.png', 'all-b.png'];
  await pick(page, names.map((name, i) => ({ name, buffer: png(16 + 4 * i, 16, i) })));
  for (const n of names) assert.equal(await waitState(page, n, DONE), 'completed', n);
  const got = [];
  page.on('download', (d) => got.push(d));
  await page.locator('#download-all').click();
  for (let i = 0; i < 100 && got.length < 2; i++) await page.waitForTimeout(50);
  assert.equal(got.length, 2, `downloads: ${got.map((d) => d.suggestedFilename())}`);
  const sizes = [];
  for (const d of got) sizes.push(imageInfo(fs.readFileSync(await d.path())));
  sizes.sort((x, y) => x.width - y.width);
  assert.deepEqual(sizes, [{ format: 'png', width: 32, height: 32 }, { format: 'png', width: 40, height: 32 }]);
});

stopsCleanly(srv);
