// Ferrocast's built-in player page, served at /live/NAME/ by the origin and every edge. It plays
// the stream's multivariant playlist (index.m3u8, next to the page) with hls.js in low-latency
// mode, catches up to the target latency after start-up or a stall (playing up to 1.5x, where
// hls.js's default of 1x never catches up), sends CMCD player telemetry, and shows the current
// latency and rendition. Safari and iOS play the playlist natively.
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
    maxLiveSyncPlaybackRate: 1.5,
    backBufferLength: 30,
    cmcd: { contentId: name },
  };
  let hls = null;

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
