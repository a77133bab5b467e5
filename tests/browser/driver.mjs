// Headless Chromium for the browser tests, driven by Playwright (playwright-core, no bundled
// browser: Debian's chromium at CHROMIUM or /usr/bin/chromium). One JSON request per stdin line,
// one JSON answer per stdout line: {"ok": true, "value": ...} or {"ok": false, "error": "..."}.
//
//   {"cmd": "open", "url": "...", "width": 1280, "height": 720, "offline": false, "init": ""}
//                      offline: every request to another origin fails, as without a network
//                      init: a script that runs in the page before the page's own scripts
//   {"cmd": "eval", "expr": "document.title"}          the value of a page expression
//   {"cmd": "wait", "expr": "...", "timeout": 10000}    until the expression is truthy
//   {"cmd": "type", "selector": "#search", "text": "GRAF"} / {"cmd": "press", "key": "Enter"}
//   {"cmd": "click", "selector": "..."} / {"cmd": "drag", "x", "y", "dx", "dy"}
//   {"cmd": "click_at", "x", "y", "modifiers": ["Alt"]}  a mouse click there, keys held
//   {"cmd": "screenshot", "path": "..."}
//   {"cmd": "errors"}  console errors and uncaught page errors seen so far
//   {"cmd": "requests"}  the URLs the page requested so far
//   {"cmd": "close"}
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
               '--disable-component-update', '--no-first-run'];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: FLAGS,
});
let page = null;
const errors = [];
const requests = [];

async function handle(req) {
  switch (req.cmd) {
    case 'open': {
      const context = await browser.newContext({ viewport: { width: req.width || 1280, height: req.height || 720 } });
      if (req.offline) {
        const origin = new URL(req.url).origin;
        await context.route('**/*', (route) => (route.request().url().startsWith(origin) ? route.continue() : route.abort()));
      }
      if (req.init) await context.addInitScript(req.init);
      page = await context.newPage();
      page.on('request', (r) => requests.push(r.url()));
      page.on('console', (msg) => { if (msg.type() === 'error') errors.push(`console: ${msg.text()}`); });
      page.on('pageerror', (err) => errors.push(`page: ${err.message}`));
      await page.goto(req.url, { waitUntil: 'load' });
      return page.url();
    }
    case 'eval': return page.evaluate(req.expr);
    case 'wait':
      await page.waitForFunction(req.expr, null, { timeout: req.timeout || 10000, polling: 100 });
      return true;
    case 'type': await page.fill(req.selector, req.text); return true;
    case 'press': await page.keyboard.press(req.key); return true;
    case 'click': await page.click(req.selector); return true;
    case 'click_at': {  // a click at page coordinates with modifier keys held (Alt+click)
      for (const key of req.modifiers || []) await page.keyboard.down(key);
      await page.mouse.click(req.x, req.y);
      for (const key of (req.modifiers || []).reverse()) await page.keyboard.up(key);
      return true;
    }
    case 'drag': {  // a mouse drag from (x, y) by (dx, dy) pixels, as a user pans a chart
      await page.mouse.move(req.x, req.y);
      await page.mouse.down();
      await page.mouse.move(req.x + req.dx, req.y + (req.dy || 0), { steps: 20 });
      await page.mouse.up();
      return true;
    }
    case 'screenshot':  // the pointer leaves the page first, so no crosshair is drawn
      await page.mouse.move(0, 0);
      await page.screenshot({ path: req.path });
      return req.path;
    case 'errors': return errors;
    case 'requests': return requests;
    case 'close': await browser.close(); return true;
    default: throw new Error(`unknown command ${req.cmd}`);
  }
}

const lines = createInterface({ input: process.stdin });
process.stdout.write(JSON.stringify({ ok: true, value: browser.version() }) + '\n');
for await (const line of lines) {
  let answer;
  try {
    const req = JSON.parse(line);
    answer = { ok: true, value: (await handle(req)) ?? null };
    if (req.cmd === 'close') { process.stdout.write(JSON.stringify(answer) + '\n'); break; }
  } catch (err) {
    answer = { ok: false, error: String(err && err.message || err) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}
process.exit(0);
