// Opens the origin's dashboard (GET /) in Debian's headless Chromium, driven by playwright-core,
// as an operator would: types the admin token into the page's form when one is given, waits
// until the page has polled a few times and shows `--stream` with its ladder, its viewers and
// drawn charts, saves a screenshot, and prints what the page shows as one JSON report.
//
//   node dashboard.mjs --url http://127.0.0.1:8080/ --stream cam [--token SECRET] \
//       [--polls 8] [--timeout 40] [--screenshot out.png] [--chromium /usr/bin/chromium]
//
// Exit status 0 if it ran, whatever it saw (the caller judges); 1 if the page never showed the
// stream with a ladder row, a viewer and a chart within --timeout seconds (the report says why).

import { chromium } from 'playwright-core';

function args() {
  const out = { polls: 8, timeout: 40, chromium: process.env.CHROMIUM || '/usr/bin/chromium' };
  const known = ['url', 'stream', 'token', 'polls', 'timeout', 'screenshot', 'chromium'];
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i += 2) {
    const k = a[i].replace(/^--/, '');
    if (!known.includes(k) || a[i + 1] === undefined) {
      console.error('usage: node dashboard.mjs --url URL --stream NAME [--token T] [--polls N] [--timeout S] [--screenshot FILE] [--chromium PATH]');
      process.exit(2);
    }
    out[k] = a[i + 1];
  }
  out.polls = Number(out.polls);
  out.timeout = Number(out.timeout);
  if (!out.url || !out.stream || !(out.polls > 0) || !(out.timeout > 0 && out.timeout <= 600)) {
    console.error('--url and --stream are required; --polls > 0; --timeout in (0, 600]');
    process.exit(2);
  }
  return out;
}

const opt = args();
const browser = await chromium.launch({
  executablePath: opt.chromium,
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-background-timer-throttling'],
});
const report = { url: opt.url, stream: opt.stream };
let ok = false;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1100 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(opt.url, { waitUntil: 'load' });
  if (opt.token) {
    await page.waitForSelector('#login:not([hidden])', { timeout: opt.timeout * 1000 });
    report.askedForToken = true;
    await page.fill('#token', opt.token);
    await page.click('#login button');
  }
  const sel = `section.stream[data-stream="${opt.stream}"]`;
  try {
    await page.waitForFunction(({ sel, polls }) => {
      const s = document.querySelector(sel);
      const d = window.ferrocastDashboard;
      if (!s || !d || d.polls < polls) return false;
      const viewers = [...s.querySelectorAll('table.renditions td[data-field="viewers"]')].some((td) => Number(td.textContent) > 0);
      return viewers && s.querySelector('table.ladder tr[data-rung]') && s.querySelectorAll('.chart canvas').length > 0;
    }, { sel, polls: opt.polls }, { timeout: opt.timeout * 1000, polling: 250 });
    ok = true;
  } catch (e) {
    report.waitError = String(e.message || e);
  }
  Object.assign(report, await page.evaluate((sel) => {
    const s = document.querySelector(sel);
    const text = (root, q) => root?.querySelector(q)?.textContent ?? null;
    const rows = (q, fields) => [...(s?.querySelectorAll(q) ?? [])].map((tr) =>
      Object.fromEntries(fields.map((f) => [f, tr.querySelector(`td[data-field="${f}"]`)?.textContent ?? null])));
    return {
      polls: window.ferrocastDashboard?.polls ?? 0,
      lastError: window.ferrocastDashboard?.lastError ?? null,
      status: document.getElementById('status')?.textContent ?? null,
      shown: !!s,
      session: text(s, '[data-field="session"]'),
      publishing: text(s, '[data-field="publishing"]'),
      uplink: text(s, '[data-field="uplink"]'),
      fps: text(s, '[data-field="fps"]'),
      bitrate: text(s, '[data-field="bitrate"]'),
      ladderCaption: text(s, 'table.ladder caption'),
      ladder: rows('table.ladder tr[data-rung]', ['name', 'state', 'encoder', 'speed']),
      renditions: rows('table.renditions tr[data-rendition]', ['id', 'viewers', 'part_delay', 'players', 'buffer', 'player_bitrate']),
      viewersPerEdge: rows('table.viewers-per-edge tr[data-edge]', ['edge', 'rendition', 'viewers']),
      charts: [...(s?.querySelectorAll('.chart') ?? [])].map((c) => ({
        title: c.getAttribute('data-chart'),
        drawn: !!c.querySelector('canvas'),
        series: [...c.querySelectorAll('.u-legend .u-series')].length - 1,
      })),
      edges: [...document.querySelectorAll('table.edges tr[data-edge]')].map((tr) => tr.getAttribute('data-edge')),
    };
  }, sel));
  report.pageErrors = errors;
  if (opt.screenshot) await page.screenshot({ path: opt.screenshot, fullPage: true });
} finally {
  await browser.close();
}
report.ok = ok;
console.log(JSON.stringify(report));
process.exit(ok ? 0 : 1);
