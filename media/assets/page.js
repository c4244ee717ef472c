// Ferrocast's built-in player page, served at /live/NAME/ by the origin and every edge. It plays
// the stream's multivariant playlist (index.m3u8, next to the page) with hls.js in low-latency
// mode, catches up to the target latency after start-up or a stall (playing up to 1.5x, where
// hls.js's default of 1x never catches up), sends CMCD player telemetry, and shows the current
// latency and rendition. Safari and iOS play the playlist natively.
//
// The catch-up is the page's own: hls.js's (maxLiveSyncPlaybackRate) speeds up only while more
// than 1 s is buffered ahead, which a player near PART-HOLD-BACK (1.0 s, or 0.63 s with the
// lowest-latency profile) never has, so it stalls ~0.3 s behind its target. The page instead
// plays faster in proportion to how far behind the target it is (1.1x at 0.1 s, at most 1.5x)
// while at least half the target is buffered, and at 1x otherwise. How far behind is the least
// of hls.js's latency estimates over the last 2 s: near the live edge hls.js now and then
// over-reads it by about a part (measured against the picture's clock), never under.
(function () {
  'use strict';
  const video = document.getElementById('video');
  const el = id => document.getElementById(id);
  const parts = location.pathname.split('/').filter(Boolean);
  const name = decodeURIComponent(parts[parts.length - 1] || '');
  document.title = name + ' · Ferrocast';
  const src = 'index.m3u8';
  // Only the browser test sets window.__stats (its measure.js); the page works without it.
  const stats = window.__stats || null;
  const state = text => { el('state').textContent = text; };
  const secs = v => (Number.isFinite(v) ? v.toFixed(2) + ' s' : '–');

  const config = {
    lowLatencyMode: true,
    backBufferLength: 30,
    cmcd: { contentId: name },
  };
  const MAX_RATE = 1.5;
  let hls = null;

  // Live catch-up: see the top of this file.
  const recent = [];
  function steer() {
    if (!hls || video.paused) return;
    if (Number.isFinite(hls.latency)) recent.push(hls.latency);
    if (recent.length > 8) recent.shift();
    if (!recent.length) return;
    const over = Math.min(...recent) - hls.targetLatency;
    const b = video.buffered;
    const ahead = b.length ? b.end(b.length - 1) - video.currentTime : 0;
    let rate = 1;
    if (over > 0.05 && ahead > hls.targetLatency / 2) rate = Math.min(MAX_RATE, 1 + over);
    rate = Math.round(rate * 20) / 20;
    if (video.playbackRate !== rate) video.playbackRate = rate;
  }

  function rendition() {
    if (!hls) return null;
    const l = hls.levels[hls.currentLevel];
    if (!l) return null;
    if (!l.height) return 'audio';
    return l.height + 'p' + (l.bitrate ? ' · ' + Math.round(l.bitrate / 1000) + ' kb/s' : '');
  }

  function start() {
    hls = new Hls(config);
    hls.on(Hls.Events.MANIFEST_PARSED, () => {
      state('live');
      video.play().catch(() => state('live: press play'));
    });
    hls.on(Hls.Events.FRAG_LOADED, (_, d) => {
      if (stats) { if (d.part) stats.partsLoaded++; else stats.segmentsLoaded++; }
    });
    hls.on(Hls.Events.ERROR, (_, d) => {
      if (stats) stats.errors.push({ type: d.type, details: d.details, fatal: !!d.fatal });
      if (!d.fatal) return;
      if (d.type === Hls.ErrorTypes.MEDIA_ERROR) {
        hls.recoverMediaError();
        return;
      }
      // Not live (yet), or the server went away: try again in a moment.
      state('waiting for the stream…');
      hls.destroy();
      hls = null;
      setTimeout(start, 2000);
    });
    hls.loadSource(src);
    hls.attachMedia(video);
  }

  if (typeof Hls !== 'undefined' && Hls.isSupported()) {
    window.__player = {
      name: 'ferrocast page (hls.js)',
      version: Hls.version,
      latency: () => (hls ? hls.latency : null),
      rendition,
      // Program date-time (Unix ms) of the picture being shown.
      pdt: () => (hls && hls.playingDate ? hls.playingDate.getTime() : null),
    };
    start();
    setInterval(steer, 250);
    setInterval(() => {
      if (!hls) return;
      const behind = hls.playingDate ? (Date.now() - hls.playingDate.getTime()) / 1000 : NaN;
      el('latency').textContent = secs(hls.latency) + (Number.isFinite(hls.targetLatency) ? ' (target ' + secs(hls.targetLatency) + ')' : '');
      el('pdt').textContent = secs(behind) + (video.playbackRate > 1 ? ' · catching up ×' + video.playbackRate.toFixed(2) : '');
      el('rendition').textContent = rendition() || '–';
    }, 500);
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    video.src = src;
    state('live (native HLS)');
  } else {
    state('this browser cannot play HLS (no Media Source Extensions)');
  }
})();
