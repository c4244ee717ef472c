// Plays a stream with hls.js (from npm, served from this folder) in Debian's headless
// Chromium, driven by playwright-core, and prints one JSON report on stdout.
//
//   node run.mjs --url http://127.0.0.1:8081/live/demo/index.m3u8 --duration 30 \
//       [--screenshot out.png] [--chromium /usr/bin/chromium]
//
// The report: frames decoded and dropped, time to first frame, glass-to-glass latency from
// the visual clock code of each presented frame (p50/p95/max), hls.js's own latency estimate,
// stalls, hls.js errors (fatal ones marked). Exit status 0 if it ran, whatever it saw: the
// caller judges.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));

function args() {
  const out = { duration: 30, chromium: process.env.CHROMIUM || '/usr/bin/chromium' };
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i += 2) {
    const k = a[i].replace(/^--/, '');
    if (!['url', 'duration', 'screenshot', 'chromium'].includes(k) || a[i + 1] === undefined) {
      console.error(`usage: node run.mjs --url URL [--duration S] [--screenshot FILE] [--chromium PATH]`);
      process.exit(2);
    }
    out[k] = a[i + 1];
  }
  out.duration = Number(out.duration);
  if (!out.url || !(out.duration > 0 && out.duration <= 3600)) {
    console.error('--url is required and --duration must be in (0, 3600]');
    process.exit(2);
  }
  return out;
}

function pct(v, p) {
  if (!v.length) return null;
  const s = [...v].sort((a, b) => a - b);
  return s[Math.round((s.length - 1) * p)];
}

// The page and hls.js, served on loopback: the page's origin is not the stream's, so this
// also checks the server's CORS headers as any web player would.
function serve() {
  const files = {
    '/': ['page.html', 'text/html'],
    '/favicon.ico': null,
    '/hls.min.js': [path.join('node_modules', 'hls.js', 'dist', 'hls.min.js'), 'text/javascript'],
  };
  const server = http.createServer((req, res) => {
    const f = files[new URL(req.url, 'http://x').pathname];
    if (f === null) { res.writeHead(204); res.end(); return; }
    if (!f) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'content-type': f[1] });
    fs.createReadStream(path.join(here, f[0])).pipe(res);
  });
  return new Promise(ok => server.listen(0, '127.0.0.1', () => ok(server)));
}

const opt = args();
const server = await serve();
const browser = await chromium.launch({
  executablePath: opt.chromium,
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--autoplay-policy=no-user-gesture-required', '--disable-background-timer-throttling',
    '--disable-renderer-backgrounding', '--disable-backgrounding-occluded-windows',
  ],
});
const report = { url: opt.url, durationS: opt.duration };
try {
  const page = await browser.newPage({ viewport: { width: 640, height: 400 } });
  const consoleErrors = [];
  page.on('pageerror', e => consoleErrors.push(String(e)));
  page.on('console', m => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  const { port } = server.address();
  await page.goto(`http://127.0.0.1:${port}/?src=${encodeURIComponent(opt.url)}`);
  report.browser = browser.version();
  await page.waitForTimeout(opt.duration * 1000);
  const s = await page.evaluate(() => {
    const st = window.__stats;
    return { ...st, stalledNow: st.stalledNow ? st.stalledNow() : 0, stalledNowFn: undefined };
  });
  if (opt.screenshot) await page.screenshot({ path: opt.screenshot });
  const stalls = [...(s.stalls || [])];
  if (s.stalledNow > 0) stalls.push(s.stalledNow);
  Object.assign(report, {
    hlsVersion: s.hlsVersion,
    supported: s.supported,
    ttffMs: s.ttffMs === null ? null : Math.round(s.ttffMs),
    decodedFrames: s.decodedFrames || 0,
    droppedFrames: s.droppedFrames || 0,
    presentedWithCode: s.visualLatencyMs.length,
    unreadable: s.unreadable,
    latencyMs: {
      p50: pct(s.visualLatencyMs, 0.5), p95: pct(s.visualLatencyMs, 0.95),
      max: pct(s.visualLatencyMs, 1),
    },
    hlsLatencyS: {
      p50: pct(s.hlsLatency, 0.5), p95: pct(s.hlsLatency, 0.95), samples: s.hlsLatency.length,
    },
    stalls: { count: stalls.length, totalS: stalls.reduce((a, b) => a + b, 0) },
    parts: s.partsLoaded, fragments: s.fragsLoaded, levels: s.levels,
    errors: s.errors, fatalErrors: s.errors.filter(e => e.fatal).length,
    consoleErrors: consoleErrors.slice(0, 20),
  });
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify(report));
