// page.test.mjs - the page as served, before any upload: headers, size, the JSON root for API
// clients, no console errors, dark and light, keyboard reach, 390 px wide.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { browserTest, fileServer, get, shot, sleep, stopsCleanly } from './harness.mjs';

const srv = fileServer('page');

const CSP_WANT = {
  'default-src': "'self'",
  'object-src': "'none'",
  'base-uri': "'none'",
  'frame-ancestors': "'none'",
};

function parseCsp(h) {
  const out = {};
  for (const part of (h || '').split(';')) {
    const [k, ...v] = part.trim().split(/\s+/);
    if (k) out[k.toLowerCase()] = v.join(' ');
  }
  return out;
}

test('GET / as a browser: the page, with a strict Content-Security-Policy', async () => {
  const r = await get(srv.server.origin + '/', { headers: { Accept: 'text/html,application/xhtml+xml,*/*;q=0.8' } });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') || '', /^text\/html/);
  const csp = r.headers.get('content-security-policy');
  assert.ok(csp, 'a Content-Security-Policy header');
  const p = parseCsp(csp);
  for (const [k, v] of Object.entries(CSP_WANT)) assert.equal(p[k], v, `CSP ${k} in ${csp}`);
  // nothing may widen script or style past 'self' (no inline, no eval, no other host)
  for (const k of ['script-src', 'style-src', 'connect-src']) {
    if (p[k] !== undefined) assert.equal(p[k], "'self'", `CSP ${k} in ${csp}`);
  }
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/, csp);
  const html = await r.text();
  assert.match(html, /<html/i);
  assert.doesNotMatch(html, /<style[\s>]/i, 'no <style> block (CSP forbids it)');
  assert.doesNotMatch(html, /\sstyle\s*=/i, 'no style="" attribute (CSP forbids it)');
  assert.doesNotMatch(html, /<script(?![^>]*\ssrc=)[^>]*>/i, 'no inline <script> (CSP forbids it)');
});

test("the page's own files (html + js + css) total under 60 KB", async () => {
  const base = srv.server.origin;
  const r = await get(base + '/', { headers: { Accept: 'text/html' } });
  const html = await r.text();
  const refs = new Set();
  for (const m of html.matchAll(/<script[^>]*\ssrc="([^"]+)"/gi)) refs.add(m[1]);
  for (const m of html.matchAll(/<link[^>]*\shref="([^"]+)"[^>]*>/gi)) {
    if (/stylesheet|modulepreload/i.test(m[0])) refs.add(m[1]);
  }
  assert.ok(refs.size >= 2, `the page links its script and its style sheet: ${[...refs]}`);
  let total = Buffer.byteLength(html);
  const sizes = { '/': total };
  for (const ref of refs) {
    const u = new URL(ref, base + '/');
    assert.equal(u.origin, base, `${ref} is the page's own`);
    const f = await get(u.href);
    assert.equal(f.status, 200, `GET ${u.pathname}`);
    const n = (await f.arrayBuffer()).byteLength;
    sizes[u.pathname] = n;
    total += n;
  }
  // a module script may import others: count what the browser loads too (see the browser test below)
  assert.ok(total < 60 * 1024, `html + js + css = ${total} bytes: ${JSON.stringify(sizes)}`);
});

test('GET / as an API client (Accept: application/json): the Tinify root JSON', async () => {
  const r = await srv.server.json('/', { Accept: 'application/json' });
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') || '', /^application\/json/);
  assert.equal(r.body && r.body.api, 'tinify', r.text);
  assert.equal(r.body.name, 'upres');
  assert.equal(r.headers.get('content-security-policy'), null, 'no page CSP on the JSON');
  const plain = await srv.server.json('/');
  assert.equal(plain.body && plain.body.api, 'tinify', 'no Accept at all: JSON too');
});

browserTest('the empty page: loads with no console error; what it loads is its own files, all counted above',
  srv, async ({ page, guard }) => {
    await page.waitForLoadState('networkidle', { timeout: 10000 });
    for (const sel of ['#drop', '#file-input', '#options', '#model', '#scale', '#format', '#jobs', '#history']) {
      assert.equal(await page.locator(sel).count(), 1, `${sel} is there`);
    }
    const input = page.locator('#file-input');
    assert.equal(await input.getAttribute('type'), 'file');
    assert.notEqual(await input.getAttribute('multiple'), null, '#file-input multiple');
    assert.match(await input.getAttribute('accept') || '', /image\/\*/);
    // every script and sheet the browser loaded is linked from the html (so the size test above
    // counts them all): no module imported behind its back
    const html = await page.evaluate(() => document.documentElement.outerHTML);
    const loaded = await page.evaluate(() => performance.getEntriesByType('resource')
      .map((e) => new URL(e.name).pathname).filter((p) => /\.(m?js|css)$/.test(p)));
    assert.ok(loaded.length >= 2, `a script and a sheet: ${loaded}`);
    for (const p of loaded) assert.ok(html.includes(p), `${p} is linked from the html`);
    // the model list came from the server
    const models = await page.locator('#model option').evaluateAll((os) => os.map((o) => o.value));
    const api = await (await get(guard.origin + '/api/v1/models')).json();
    for (const m of api.models.filter((x) => x.available !== false)) {
      assert.ok(models.includes(m.name), `#model offers ${m.name}: ${models}`);
    }
    assert.equal(await page.locator('#notice').isVisible(), false, '#notice hidden when there is nothing to say');
    await shot(page, '01-empty');
    await page.locator('#advanced').evaluate((d) => { d.open = true; });
    await shot(page, '02-options');
  });

/** The page's background colour as [r, g, b, a] (of body, else html when body is transparent). */
async function background(page) {
  return page.evaluate(() => {
    const parse = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    for (const el of [document.body, document.documentElement]) {
      const c = parse(getComputedStyle(el).backgroundColor);
      if (c.length >= 3 && (c.length < 4 || c[3] > 0)) return c;
    }
    return [255, 255, 255, 1]; // transparent everywhere: the browser's white canvas
  });
}
const luminance = ([r, g, b]) => (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;

browserTest('prefers-color-scheme: dark gives a dark background, light a light one', srv, async ({ page }) => {
  const light = await background(page);
  assert.ok(luminance(light) > 0.6, `light background ${light}`);
  await page.emulateMedia({ colorScheme: 'dark' });
  await page.waitForTimeout(300); // transitions, if any
  const dark = await background(page);
  assert.ok(luminance(dark) < 0.3, `dark background ${dark}`);
  const text = await page.evaluate(() => getComputedStyle(document.body).color);
  assert.ok(luminance(text.match(/[\d.]+/g).map(Number)) > 0.5, `light text on dark: ${text}`);
  await shot(page, '09-dark');
});

browserTest('keyboard only: Tab reaches #drop and every option, with a visible focus; Enter on #drop opens the picker',
  srv, async ({ page }) => {
    const reached = [];
    for (let i = 0; i < 40; i++) {
      await page.keyboard.press('Tab');
      const id = await page.evaluate(() => document.activeElement && document.activeElement.id);
      if (id) reached.push(id);
      if (reached.includes('drop') && reached.includes('model')) break;
    }
    assert.ok(reached.includes('drop'), `Tab reaches #drop: ${reached}`);
    assert.ok(reached.includes('model'), `Tab reaches #model: ${reached}`);
    // a visible focus on #drop: an outline or a box shadow when focused from the keyboard
    await page.focus('#drop');
    const ring = await page.evaluate(() => {
      const s = getComputedStyle(document.activeElement);
      return { outline: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0, shadow: s.boxShadow !== 'none' };
    });
    assert.ok(ring.outline || ring.shadow, `a visible focus on #drop: ${JSON.stringify(ring)}`);
    // listen first, and let the listener reach the browser (a key press is quicker than the
    // interception of the file chooser: a chooser opened before it is cancelled unseen)
    let chooser = null;
    page.on('filechooser', (c) => { chooser = c; });
    await page.evaluate(() => 0);
    await page.keyboard.press('Enter');
    for (let i = 0; i < 100 && !chooser; i++) await sleep(50);
    assert.ok(chooser, 'Enter on #drop opens the file picker');
    assert.ok(chooser.isMultiple(), 'the picker takes several files');
  });

browserTest('390 px wide: no horizontal scroll on the empty page', srv, { viewport: { width: 390, height: 844 } },
  async ({ page }) => {
    const w = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(w <= 390, `scrollWidth ${w} <= 390`);
    assert.ok(await page.locator('#drop').isVisible());
  });

stopsCleanly(srv);
