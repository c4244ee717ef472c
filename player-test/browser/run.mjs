// Plays a stream in Debian's headless Chromium, driven by playwright-core, and prints one JSON
// report on stdout. The player is hls.js or Shaka Player (from npm, served from this folder
// on loopback) or `page`: the server's own built-in player page, opened as a viewer would.
//
//   node run.mjs --url http://127.0.0.1:8081/live/demo/index.m3u8 --duration 30 \
//       [--player hlsjs|shaka|page] [--screenshot out.png] [--chromium /usr/bin/chromium] \
//       [--debug 1] (Shaka's debug build; its log goes to stderr)
//
// With --player page, --url is the page (http://…/live/demo/). measure.js is injected into
// whichever page plays. The report: frames decoded and dropped, time to first frame,
// glass-to-glass latency from the visual clock code of each presented frame (p50/p95/max),
// split into capture → PDT and PDT → shown where the player gives the program date-time,
// the player's own latency estimate, the media time played (audio-only streams), stalls, seeks after the first frame, renditions played,
// player errors (fatal ones marked). Exit status 0 if it ran, whatever it saw: the caller
// judges.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));

function args() {
  const out = { duration: 30, player: 'hlsjs', chromium: process.env.CHROMIUM || '/usr/bin/chromium' };
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i += 2) {
    const k = a[i].replace(/^--/, '');
    if (!['url', 'duration', 'screenshot', 'chromium', 'player', 'debug'].includes(k) || a[i + 1] === undefined) {
      console.error(`usage: node run.mjs --url URL [--duration S] [--player hlsjs|shaka|page] [--screenshot FILE] [--chromium PATH] [--debug 1]`);
      process.exit(2);
    }
    out[k] = a[i + 1];
  }
  out.duration = Number(out.duration);
  if (!out.url || !(out.duration > 0 && out.duration <= 3600) || !['hlsjs', 'shaka', 'page'].includes(out.player)) {
    console.error('--url is required, --duration must be in (0, 3600], --player hlsjs|shaka|page');
    process.exit(2);
  }
  return out;
}

function pct(v, p) {
  if (!v.length) return null;
  const s = [...v].sort((a, b) => a - b);
  return s[Math.round((s.length - 1) * p)];
}

// The test pages and the players, served on loopback: the page's origin is not the
// stream's, so this also checks the server's CORS headers as any web player would.
function serve(debug) {
  const shaka = debug ? 'shaka-player.compiled.debug.js' : 'shaka-player.compiled.js';
  const files = {
    '/hlsjs': ['hlsjs.html', 'text/html'],
    '/shaka': ['shaka.html', 'text/html'],
    '/harness.css': ['harness.css', 'text/css'],
    '/favicon.ico': null,
    '/hls.min.js': [path.join('node_modules', 'hls.js', 'dist', 'hls.min.js'), 'text/javascript'],
    '/shaka-player.js': [path.join('node_modules', 'shaka-player', 'dist', shaka), 'text/javascript'],
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
const server = await serve(!!opt.debug);
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
  page.on('console', m => {
    if (m.type() === 'error') consoleErrors.push(m.text());
    if (opt.debug) console.error(m.text());
  });
  await page.addInitScript({ path: path.join(here, 'measure.js') });
  const { port } = server.address();
  const target = opt.player === 'page' ? opt.url
    : `http://127.0.0.1:${port}/${opt.player}?src=${encodeURIComponent(opt.url)}${opt.debug ? '&debug=1' : ''}`;
  await page.goto(target);
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
    player: s.player || null,
    ttffMs: s.ttffMs === null ? null : Math.round(s.ttffMs),
    decodedFrames: s.decodedFrames || 0,
    droppedFrames: s.droppedFrames || 0,
    audioOnly: !!s.audioOnly, mediaTimeS: +(s.mediaTimeS || 0).toFixed(3),
    presentedWithCode: s.visualLatencyMs.length,
    unreadable: s.unreadable,
    latencyMs: {
      p50: pct(s.visualLatencyMs, 0.5), p95: pct(s.visualLatencyMs, 0.95),
      max: pct(s.visualLatencyMs, 1),
    },
    // Where the latency goes, for players that give the program date-time of the picture.
    pdtToShownMs: { p50: pct(s.pdtLatencyMs, 0.5), p95: pct(s.pdtLatencyMs, 0.95), samples: s.pdtLatencyMs.length },
    captureToPdtMs: { p50: pct(s.captureToPdtMs, 0.5), p95: pct(s.captureToPdtMs, 0.95) },
    playerLatencyS: {
      p50: pct(s.playerLatency, 0.5), p95: pct(s.playerLatency, 0.95), samples: s.playerLatency.length,
    },
    // Over time: glass-to-glass and PDT → shown once a second (every 30th frame), the player's
    // latency and playback rate twice a second.
    series: {
      latencyMs: s.visualLatencyMs.filter((_, i) => i % 30 === 0),
      pdtToShownMs: s.pdtLatencyMs.filter((_, i) => i % 30 === 0),
      playerLatencyS: s.playerLatency.map(v => +v.toFixed(3)),
      playbackRate: s.rates,
    },
    stalls: { count: stalls.length, totalS: stalls.reduce((a, b) => a + b, 0), each: stalls.slice(0, 50) },
    seeks: s.seeks, seekTimes: s.seekTimes.slice(0, 50),
    parts: s.partsLoaded, segments: s.segmentsLoaded, renditions: s.renditions,
    errors: s.errors, fatalErrors: s.errors.filter(e => e.fatal).length,
    consoleErrors: consoleErrors.slice(0, 20),
  });
} finally {
  await browser.close();
  server.close();
}
console.log(JSON.stringify(report));
