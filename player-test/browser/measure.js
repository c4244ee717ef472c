// Injected into every page the browser test opens (ours and the server's built-in page)
// before its own scripts run. It watches the page's <video> and keeps what it sees in
// window.__stats: the visual clock code of every presented frame (capture → presentation
// latency), decoded/dropped frames, stalls, seeks after the start, and whatever the page's
// player reports through window.__player ({name, version, latency(), rendition(), and
// optionally pdt(): the program date-time of the picture shown, Unix ms}) and
// window.__stats.errors. With pdt(), each frame's latency splits into capture → PDT (the
// encoder, the uplink and ingest) and PDT → shown (packaging, delivery, the player's buffer).
// An audio-only stream has no frames: time to first audio and the media time played stand in.
(function () {
  const t0 = performance.now();
  const stats = window.__stats = {
    ttffMs: null, visualLatencyMs: [], unreadable: 0, playerLatency: [], errors: [],
    stalls: [], seeks: 0, seekTimes: [], renditions: {}, partsLoaded: 0, segmentsLoaded: 0,
    decodedFrames: 0, droppedFrames: 0, pdtLatencyMs: [], captureToPdtMs: [],
    mediaTimeS: 0, audioOnly: null, rates: [],
  };

  // The clock code (player-test/src/clock.rs): a 16x4 grid of cells in the top
  // quarter, 48 bits of Unix ms then CRC-16/CCITT-FALSE of those 6 bytes, white = 1.
  const COLS = 16, ROWS = 4, W = 320, H = 180;
  let ctx = null;
  function crc16(bytes) {
    let crc = 0xffff;
    for (const b of bytes) {
      crc ^= b << 8;
      for (let i = 0; i < 8; i++) crc = (crc & 0x8000) ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
    return crc;
  }
  function readCode(video) {
    ctx.drawImage(video, 0, 0, W, H);
    const px = ctx.getImageData(0, 0, W, H).data;
    const bits = [];
    for (let i = 0; i < COLS * ROWS; i++) {
      const col = i % COLS, row = (i / COLS) | 0, band = (H / 4) | 0;
      const x0 = (col * W / COLS) | 0, x1 = ((col + 1) * W / COLS) | 0;
      const y0 = (row * band / ROWS) | 0, y1 = ((row + 1) * band / ROWS) | 0;
      const qx = ((x1 - x0) / 4) | 0, qy = ((y1 - y0) / 4) | 0;
      let sum = 0, n = 0;
      for (let y = y0 + qy; y < y1 - qy; y++) for (let x = x0 + qx; x < x1 - qx; x++) {
        const k = (y * W + x) * 4;
        sum += 0.299 * px[k] + 0.587 * px[k + 1] + 0.114 * px[k + 2]; n++;
      }
      bits.push(sum / Math.max(n, 1) > 128 ? 1 : 0);
    }
    let ms = 0;
    for (let i = 0; i < 48; i++) ms = ms * 2 + bits[i];
    let crc = 0;
    for (let i = 48; i < 64; i++) crc = crc * 2 + bits[i];
    const bytes = [];
    for (let i = 0; i < 6; i++) bytes.push(Math.floor(ms / 2 ** (8 * (5 - i))) % 256);
    return crc16(bytes) === crc ? ms : null;
  }

  function watch(video) {
    const canvas = document.createElement('canvas');
    canvas.width = W; canvas.height = H;
    ctx = canvas.getContext('2d', {willReadFrequently: true});
    function onFrame(now, meta) {
      const shown = performance.timeOrigin + (meta.expectedDisplayTime || now);
      if (stats.ttffMs === null) stats.ttffMs = performance.now() - t0;
      const code = readCode(video);
      if (code === null) stats.unreadable++; else stats.visualLatencyMs.push(Math.round(shown - code));
      const p = window.__player;
      const at = p && p.pdt ? p.pdt() : null;
      if (Number.isFinite(at) && at > 0) {
        // pdt() is for the element's current time; this frame is at meta.mediaTime.
        const pdt = at + (meta.mediaTime - video.currentTime) * 1000;
        stats.pdtLatencyMs.push(Math.round(shown - pdt));
        if (code !== null) stats.captureToPdtMs.push(Math.round(pdt - code));
      }
      video.requestVideoFrameCallback(onFrame);
    }
    video.requestVideoFrameCallback(onFrame);

    // A stall: the element waits for data after playback began. A seek after the first
    // frame is a player jumping (a gap jump, a live-edge resync), which viewers see as a skip.
    let waitingSince = null;
    video.addEventListener('waiting', () => { if (stats.ttffMs !== null && waitingSince === null) waitingSince = performance.now(); });
    video.addEventListener('playing', () => {
      if (waitingSince !== null) { stats.stalls.push((performance.now() - waitingSince) / 1000); waitingSince = null; }
    });
    video.addEventListener('seeking', () => {
      if (stats.ttffMs !== null) { stats.seeks++; stats.seekTimes.push(+video.currentTime.toFixed(3)); }
    });
    // Audio only: no frame callbacks, so the first advance of the media clock is the start.
    video.addEventListener('timeupdate', () => {
      stats.mediaTimeS = video.currentTime;
      if (video.currentTime > 0 && stats.audioOnly === null) stats.audioOnly = video.videoWidth === 0;
      if (stats.ttffMs === null && stats.audioOnly) stats.ttffMs = performance.now() - t0;
    });
    stats.stalledNow = () => waitingSince === null ? 0 : (performance.now() - waitingSince) / 1000;
    setInterval(() => {
      const q = video.getVideoPlaybackQuality();
      stats.decodedFrames = q.totalVideoFrames;
      stats.droppedFrames = q.droppedVideoFrames;
      const p = window.__player;
      if (!p) return;
      stats.player = p.name + ' ' + p.version;
      const l = p.latency();
      if (Number.isFinite(l) && l > 0) stats.playerLatency.push(l);
      stats.rates.push(video.playbackRate);
      const r = p.rendition();
      if (r) stats.renditions[r] = (stats.renditions[r] || 0) + 1;
    }, 500);
  }

  function start() {
    const video = document.querySelector('video');
    if (video) watch(video); else stats.errors.push({details: 'no <video> on the page', fatal: true});
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
