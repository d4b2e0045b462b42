// stopped.test.mjs - the server stops (SIGTERM) while the page is open with a job on its way:
// the server exits 0 and the page says so in #notice[data-kind=stopped].
import assert from 'node:assert/strict';
import { browserTest, chooseOptions, fileServer, pick, png, waitState } from './harness.mjs';

const srv = fileServer('stopped');

browserTest('SIGTERM while the page is open: #notice[data-kind=stopped], and the server exits 0', srv,
  { allowConsole: [/Failed to load resource/, /net::ERR_/, /EventSource/] }, async ({ page, server }) => {
    await chooseOptions(page, { scale: 4, format: 'png' });
    await pick(page, [{ name: 'long.png', buffer: png(512, 512, 1) }, { name: 'next.png', buffer: png(512, 512, 2) }]);
    await waitState(page, 'next.png', ['queued', 'processing', 'completed']);
    const rc = await server.stop();
    assert.equal(rc, 0, `exit status on SIGTERM; log:\n${server.tail()}`);
    const notice = page.locator('#notice[data-kind="stopped"]');
    await notice.waitFor({ state: 'visible', timeout: 20000 });
    const text = await notice.textContent();
    assert.match(text, /stop|restart|unreachable|offline/i, `#notice says the server stopped: "${text}"`);
    assert.equal(await page.locator('#notice').getAttribute('role'), 'alert');
  });
