// The origin's live dashboard: polls /api/streams and /api/edges once a second, keeps the last
// five minutes in the page, and draws every stream's ingest, ladder, viewers, part delay and
// player (CMCD) figures with uPlot. Everything from the server is set as text, never as HTML
// (edge ids and URLs come from edge reports).
'use strict';
(() => {
  const POLL_MS = 1000;
  const HISTORY_S = 300;
  const TOKEN_KEY = 'ferrocast-admin-token';
  const state = { polls: 0, lastError: null, streams: new Map() };
  window.ferrocastDashboard = state;

  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === 'class') e.className = v;
      else if (k.startsWith('data-')) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const k of kids) e.append(k);
    return e;
  };
  const num = (v, digits = 0) => (typeof v === 'number' && isFinite(v) ? v.toFixed(digits) : '–');

  async function get(path) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const r = await fetch(path, { headers, cache: 'no-store' });
    if (r.status === 401) {
      document.getElementById('login').hidden = false;
      throw new Error('admin token required');
    }
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  document.getElementById('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById('token').value);
    document.getElementById('login').hidden = true;
    poll();
  });

  // One time series per chart: columns appear as renditions do and are trimmed to HISTORY_S.
  class Series {
    constructor() { this.t = []; this.cols = new Map(); }
    push(t, values) {
      for (const k of Object.keys(values)) {
        if (!this.cols.has(k)) this.cols.set(k, this.t.map(() => null));
      }
      this.t.push(t);
      for (const [k, col] of this.cols) col.push(values[k] ?? null);
      while (this.t.length && this.t[0] < t - HISTORY_S) {
        this.t.shift();
        for (const col of this.cols.values()) col.shift();
      }
    }
    keys() { return [...this.cols.keys()]; }
    data() { return [this.t, ...this.keys().map((k) => this.cols.get(k))]; }
  }

  const COLORS = ['#4ea1ff', '#3ecf8e', '#f5a623', '#ff6b6b', '#c17cff', '#5ee7df', '#ffd166'];

  class Chart {
    constructor(parent, title, unit) {
      this.box = el('div', { class: 'chart', 'data-chart': title }, el('h3', {}, `${title} (${unit})`));
      parent.append(this.box);
      this.series = new Series();
      this.plot = null;
      this.keys = '';
    }
    push(t, values) {
      this.series.push(t, values);
      const keys = this.series.keys();
      if (!keys.length) return;
      const width = Math.max(360, this.box.clientWidth || 420);
      if (keys.join('\u0000') !== this.keys) {
        if (this.plot) this.plot.destroy();
        this.keys = keys.join('\u0000');
        this.plot = new uPlot({
          width,
          height: 170,
          scales: { x: { time: true } },
          axes: [{ stroke: '#9aa0a6', grid: { stroke: '#2e3238' } }, { stroke: '#9aa0a6', grid: { stroke: '#2e3238' } }],
          series: [{}, ...keys.map((k, i) => ({ label: k, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false }))],
        }, this.series.data(), this.box);
      } else {
        this.plot.setData(this.series.data());
      }
    }
  }

  function table(caption, cls, head) {
    const body = el('tbody');
    const t = el('table', { class: cls }, el('caption', {}, caption), el('thead', {}, el('tr', {}, ...head.map((h) => el('th', {}, h)))), body);
    return { t, body };
  }

  function row(attrs, cells) {
    return el('tr', attrs, ...cells.map(([field, v]) => el('td', { 'data-field': field }, String(v))));
  }

  // The card of one stream, made on first sight and refilled every poll.
  class StreamCard {
    constructor(name) {
      this.name = name;
      this.session = null;
      this.section = el('section', { class: 'stream', 'data-stream': name });
      this.title = el('h2', {});
      this.facts = el('div', { class: 'facts' });
      this.tables = el('div', { class: 'tables' });
      const charts = el('div', { class: 'charts' });
      this.section.append(this.title, this.facts, this.tables, charts);
      this.charts = {
        ingest: new Chart(charts, 'Ingest bitrate', 'Mb/s'),
        fps: new Chart(charts, 'Ingest frame rate and lag', 'fps, s'),
        viewers: new Chart(charts, 'Viewers per rendition', 'viewers'),
        delay: new Chart(charts, 'Part publish delay', 'ms'),
        buffer: new Chart(charts, 'Player buffer (CMCD)', 'ms'),
        bitrate: new Chart(charts, 'Player bitrate (CMCD)', 'kb/s'),
      };
    }

    update(s, t) {
      const up = s.uplink || {};
      const v = s.viewers || {};
      const players = s.players || {};
      const uplinkBad = up.degraded === true;
      this.title.replaceChildren(
        el('span', { 'data-field': 'name' }, s.name),
        el('span', { class: `badge ${s.publishing ? 'ok' : 'off'}`, 'data-field': 'publishing' }, s.publishing ? 'live' : 'publisher gone'),
        el('span', { class: `badge ${uplinkBad ? 'bad' : 'ok'}`, 'data-field': 'uplink' },
          uplinkBad ? `uplink degraded (${up.reason}): lag ${num(up.lag_seconds, 1)} s, ${num(up.bitrate / 1e6, 2)} of ${num((up.reference_bitrate || 0) / 1e6, 2)} Mb/s` : 'uplink healthy'),
      );
      this.facts.replaceChildren(
        el('span', {}, 'session ', el('b', { 'data-field': 'session' }, s.session)),
        el('span', {}, 'ingest ', el('b', { 'data-field': 'bitrate' }, `${num((up.bitrate || 0) / 1e6, 2)} Mb/s`)),
        el('span', {}, el('b', { 'data-field': 'fps' }, num(up.fps, 1)), ' fps'),
        el('span', {}, 'lag ', el('b', { 'data-field': 'lag' }, `${num(up.lag_seconds, 2)} s`)),
        el('span', {}, 'viewers ', el('b', { 'data-field': 'viewers' }, num(v.total))),
        el('span', {}, 'uplink episodes ', el('b', {}, num(up.episodes))),
      );

      const rend = table('Renditions', 'renditions', ['rendition', 'size', 'codecs', 'kb/s', 'part delay ms', 'viewers', 'players', 'buffer ms', 'player kb/s']);
      for (const r of s.renditions || []) {
        const p = players[r.id] || {};
        rend.body.append(row({ 'data-rendition': r.id }, [
          ['id', r.id + (r.advertised ? '' : ' (not advertised)')],
          ['size', r.width ? `${r.width}×${r.height}@${num(r.frame_rate, 2)}` : 'audio'],
          ['codecs', r.codecs || ''],
          ['bandwidth', num((r.bandwidth || 0) / 1000)],
          ['part_delay', num(r.part_delay_ms, 1)],
          ['viewers', num((v.renditions || {})[r.id] || 0)],
          ['players', num(p.sessions || 0)],
          ['buffer', num(p.buffer_ms)],
          ['player_bitrate', num(p.bitrate_kbps)],
        ]));
      }

      const l = s.ladder;
      const ladder = table(l ? `Ladder: tier ${l.tier}, ${l.priority}, CPU saved ${num(l.cpu_saved_seconds, 1)} s` : 'Ladder: source only (no transcoding)', 'ladder',
        ['rung', 'state', 'encoder', 'speed ×', 'lag s', 'CPU s']);
      if (l) {
        for (const r of l.rungs || []) {
          ladder.body.append(row({ 'data-rung': r.name }, [
            ['name', `${r.name} ${num((r.bitrate || 0) / 1000)} kb/s`],
            ['state', r.shed ? `shed (${r.shed})` : r.advertised ? 'advertised' : 'running'],
            ['encoder', r.encoder || '–'],
            ['speed', num(r.speed, 2)],
            ['lag', num(r.lag_seconds, 2)],
            ['cpu', num(r.cpu_seconds, 1)],
          ]));
        }
        for (const sh of l.shed || []) {
          if ((l.rungs || []).some((r) => r.name === sh.rung)) continue;
          ladder.body.append(row({ 'data-rung': sh.rung }, [['name', sh.rung], ['state', `shed (${sh.reason})`], ['encoder', '–'], ['speed', '–'], ['lag', '–'], ['cpu', '–']]));
        }
      }

      const edges = table('Viewers per edge', 'viewers-per-edge', ['edge', 'rendition', 'viewers']);
      for (const [edge, per] of Object.entries(v.edges || {})) {
        for (const [r, n] of Object.entries(per)) {
          edges.body.append(row({ 'data-edge': edge }, [['edge', edge], ['rendition', r], ['viewers', n]]));
        }
      }
      this.tables.replaceChildren(rend.t, ladder.t, edges.t);

      const per = (f) => Object.fromEntries((s.renditions || []).map((r) => [r.id, f(r)]));
      this.charts.ingest.push(t, { bitrate: (up.bitrate ?? null) === null ? null : up.bitrate / 1e6 });
      this.charts.fps.push(t, { fps: up.fps ?? null, 'lag s': up.lag_seconds ?? null });
      this.charts.viewers.push(t, Object.fromEntries(Object.entries(v.renditions || {})));
      this.charts.delay.push(t, per((r) => r.part_delay_ms ?? null));
      this.charts.buffer.push(t, Object.fromEntries(Object.entries(players).map(([r, p]) => [r, p.buffer_ms ?? null])));
      this.charts.bitrate.push(t, Object.fromEntries(Object.entries(players).map(([r, p]) => [r, p.bitrate_kbps ?? null])));
    }
  }

  function showEdges(list) {
    const box = document.getElementById('edges');
    const e = table(`Edges (${list.length})`, 'edges', ['edge', 'url', 'viewers']);
    for (const x of list) e.body.append(row({ 'data-edge': x.id }, [['id', x.id], ['url', x.url], ['viewers', x.viewers]]));
    box.replaceChildren(e.t);
  }

  async function poll() {
    const status = document.getElementById('status');
    try {
      const [streams, edges] = await Promise.all([get('/api/streams'), get('/api/edges')]);
      const t = Date.now() / 1000;
      const root = document.getElementById('streams');
      const seen = new Set();
      for (const s of streams.streams) {
        seen.add(s.name);
        let card = state.streams.get(s.name);
        if (!card || card.session !== s.session) {
          // A new session starts a new history.
          if (card) card.section.remove();
          card = new StreamCard(s.name);
          card.session = s.session;
          state.streams.set(s.name, card);
        }
        card.update(s, t);
      }
      for (const [name, card] of state.streams) {
        if (!seen.has(name)) { card.section.remove(); state.streams.delete(name); }
      }
      const cards = [...state.streams.values()].sort((a, b) => a.name.localeCompare(b.name)).map((c) => c.section);
      root.replaceChildren(...(cards.length ? cards : [el('p', { class: 'empty' }, 'No live streams.')]));
      showEdges(edges.edges);
      state.polls += 1;
      state.lastError = null;
      status.className = '';
      status.textContent = `${streams.streams.length} stream(s), ${edges.edges.length} edge(s), updated ${new Date().toLocaleTimeString()}`;
    } catch (e) {
      state.lastError = String(e);
      status.className = 'error';
      status.textContent = String(e.message || e);
    }
  }

  poll();
  setInterval(poll, POLL_MS);
})();
