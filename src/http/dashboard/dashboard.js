// The tether dashboard: plain JavaScript, no library, no build step.
//
// It uses only the public API of the gateway it is served by:
// - GET /stats every second: the figures of /metrics as JSON. The page
//   keeps the last five minutes of them for the chart, and takes rates,
//   the loop's busy share and the turn-time percentiles from the
//   difference between now and ten seconds ago.
// - GET /devices?after=&limit=: the table of collars online, paged on the
//   MAC cursor; a MAC search starts the cursor just before the first MAC
//   with that prefix.
// - GET /events (Server-Sent Events): the live feed, the table's and the
//   map's updates. It starts a few events back (the latest event's id is
//   /stats's events_published), so the feed is not empty on arrival. The
//   browser reconnects by itself with Last-Event-ID; when it gives up (a
//   503 while the gateway drains) the page opens a new stream with
//   ?last_event_id=. `event: reset` reloads the table and map, and so
//   does a new start_time_seconds in /stats (the gateway restarted, and
//   its event ids started again), checked whenever the stream opens.
// - GET /devices/{mac}, /devices/{mac}/location, /events/poll?mac=,
//   POST /devices/{mac}/commands: a collar's detail.
// With --api-token set, the page asks for the token once and keeps it in
// sessionStorage (this tab only); it goes in the Authorization header, and
// as ?access_token= for the event stream, where headers cannot be set.
'use strict';

const PAGE_SIZE = 20;
const STATS_EVERY_MS = 1000;
const HISTORY_MS = 5 * 60 * 1000;
const WINDOW_MS = 10 * 1000;
const FEED_MAX = 200;
const FEED_REPLAY = 50;
const DETAIL_EVENTS_MAX = 100;
const MAP_MAX_POINTS = 5000;
const MAP_SEED_PAGES = 5;
const TOKEN_KEY = 'tether-api-token';

const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  started: false,
  samples: [], // {t, online, connections, stats}
  statsTimer: null,
  stream: null,
  lastEventId: null,
  // The gateway's start time: a new one means a restart.
  run: null,
  // Events that arrive while a reopened stream is being checked.
  held: null,
  streamRetry: 0,
  streamTimer: null,
  // The table: cursors[i] is the `after=` of page i.
  page: { cursors: [null], index: 0, prefix: '', rows: [], hasNext: false, total: 0 },
  reloadTimer: null,
  reloading: false,
  reloadAgain: false,
  points: new Map(), // mac -> {lat, lon, at}
  mapFit: true,
  mapDrawn: false,
  detail: null, // {mac, opener}
  locateTimer: null,
};

// ---------------------------------------------------------------------------
// Formatting: numbers always with their unit.

const integer = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const oneDecimal = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });

function fmtCount(n) { return integer.format(n); }
function fmtRate(perSecond) { return `${oneDecimal.format(perSecond)} /s`; }
function fmtPercent(p) { return `${oneDecimal.format(p)} %`; }

/// Three significant digits, without trailing zeros after the point.
function significant(n) {
  const text = n >= 1000 ? integer.format(Math.round(n)) : n.toPrecision(3);
  return text.includes('.') ? text.replace(/0+$/, '').replace(/\.$/, '') : text;
}

function fmtSeconds(s) {
  if (s === 0) return '0 s';
  if (s < 1e-3) return `${significant(s * 1e6)} µs`;
  if (s < 1) return `${significant(s * 1e3)} ms`;
  return `${significant(s)} s`;
}

function fmtBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? integer.format(n) : oneDecimal.format(n)} ${units[i]}`;
}

function fmtDuration(seconds) {
  seconds = Math.max(0, Math.floor(seconds));
  const d = Math.floor(seconds / 86400);
  const h = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (d > 0) return `${d} d ${h} h`;
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s} s`;
  return `${s} s`;
}

function fmtAgo(iso) {
  const ms = Date.now() - Date.parse(iso);
  return `${fmtDuration(ms / 1000)} ago`;
}

function fmtClock(iso) {
  const date = new Date(iso);
  const today = new Date().toDateString() === date.toDateString();
  const time = date.toLocaleTimeString('en-GB', { hour12: false });
  return today ? time : `${date.toISOString().slice(0, 10)} ${time}`;
}

function fmtDegrees(lat, lon) {
  return `${lat.toFixed(5)}°, ${lon.toFixed(5)}°`;
}

/// Sets a node's text only if it changed (no needless DOM mutations).
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === 'text') node.textContent = value;
    else if (key === 'class') node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// ---------------------------------------------------------------------------
// The API, with the token.

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers);
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, Object.assign({}, options, { headers, cache: 'no-store' }));
  if (response.status === 401) {
    askForToken(state.token ? 'The gateway refused that token.' : '');
    throw new Unauthorized('401');
  }
  return response;
}

/// The JSON body of a response, or its error message.
async function body(response) {
  const text = await response.text();
  try { return JSON.parse(text); } catch (_) { return { error: text || response.statusText }; }
}

function setStatus(kind, text) {
  const status = $('status');
  status.dataset.state = kind;
  status.textContent = text;
}

// ---------------------------------------------------------------------------
// The token prompt.

function askForToken(message) {
  stop();
  $('main').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  setStatus('token', 'token needed');
  $('token').focus();
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  state.token = $('token').value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $('token').value = '';
  start();
});

// ---------------------------------------------------------------------------
// Start and stop.

async function start() {
  let response;
  try {
    response = await api('/stats');
  } catch (e) {
    if (e instanceof Unauthorized) return;
    setStatus('unreachable', 'gateway unreachable');
    setTimeout(start, 2000);
    return;
  }
  if (!response.ok) {
    setStatus('unreachable', `gateway answered ${response.status}`);
    setTimeout(start, 2000);
    return;
  }
  $('login').hidden = true;
  $('main').hidden = false;
  state.started = true;
  const stats = await response.json();
  if (state.run !== stats.start_time_seconds) state.lastEventId = replayFrom(stats);
  state.run = stats.start_time_seconds;
  addSample(stats);
  state.statsTimer = setTimeout(pollStats, STATS_EVERY_MS);
  openStream();
  loadPage();
  seedMap();
}

function stop() {
  state.started = false;
  clearTimeout(state.statsTimer);
  clearTimeout(state.streamTimer);
  if (state.stream) state.stream.close();
  state.stream = null;
}

// ---------------------------------------------------------------------------
// Figures and the chart, from /stats.

async function pollStats() {
  if (!state.started) return;
  try {
    const response = await api('/stats');
    if (response.ok) addSample(await response.json());
  } catch (e) {
    if (e instanceof Unauthorized) return;
    // The gateway is away; the stream's status says so, and the chart gets a gap.
    state.samples.push({ t: Date.now(), gap: true });
  }
  state.statsTimer = setTimeout(pollStats, STATS_EVERY_MS);
}

/// The stream's first cursor: a few events back from the latest.
function replayFrom(stats) {
  // A position in the gateway's own log (`L<n>`): the same whether the
  // events' ids are the gateway's own or, with Redis, the fleet stream's.
  return 'L' + Math.max(0, stats.event_position - Math.min(stats.events_held, FEED_REPLAY));
}

/// The gateway restarted: its event ids start again, and what the page
/// shows is of the old run. Reload it all, and stream the new run's events.
function restarted(stats) {
  state.run = stats.start_time_seconds;
  addToFeed($('feed'), { kind: 'reset', at: new Date().toISOString(), mac: '', text: 'the gateway restarted: reloading' }, FEED_MAX);
  state.lastEventId = replayFrom(stats);
  openStream();
  scheduleReload();
  seedMap();
}

function addSample(stats) {
  if (state.run !== null && stats.start_time_seconds !== state.run) restarted(stats);
  const now = Date.now();
  const connections = Object.values(stats.connections).reduce((a, b) => a + b, 0);
  state.samples.push({ t: now, online: stats.devices_online, connections, stats });
  while (state.samples.length && state.samples[0].t < now - HISTORY_MS) state.samples.shift();
  showFigures(stats);
  drawChart();
}

/// The sample about WINDOW_MS before the newest, from the same gateway run.
function windowStart(latest) {
  let start = null;
  for (const sample of state.samples) {
    if (sample.gap || sample === latest) continue;
    if (sample.stats.start_time_seconds !== latest.stats.start_time_seconds) { start = null; continue; }
    if (sample.t <= latest.t - WINDOW_MS || start === null) start = sample;
  }
  return start === latest ? null : start;
}

/// The bound of the bucket that holds the p-quantile of the turns between
/// two cumulative histograms: seconds, null for "over the last bound", or
/// undefined when there was no turn.
function percentile(buckets, before, p) {
  const counts = buckets.map((b, i) => b.count - before[i].count);
  const total = counts[counts.length - 1];
  if (total <= 0) return undefined;
  const rank = Math.max(1, Math.ceil(p * total));
  return buckets[counts.findIndex((c) => c >= rank)].le;
}

function showFigures(stats) {
  $('f-online').textContent = fmtCount(stats.devices_online);
  $('f-connections').textContent = fmtCount(Object.values(stats.connections).reduce((a, b) => a + b, 0));
  $('f-longest').textContent = fmtSeconds(stats.loop.longest_turn_seconds);
  $('f-rss').textContent = stats.resident_memory_bytes === null ? 'n/a' : fmtBytes(stats.resident_memory_bytes);
  $('f-uptime').textContent = fmtDuration(stats.uptime_seconds);
  const latest = state.samples[state.samples.length - 1];
  const start = windowStart(latest);
  showCloses(stats, start);
  if (!start) {
    for (const id of ['f-events', 'f-busy', 'f-p50', 'f-p99', 'f-p999']) $(id).textContent = '…';
    return;
  }
  const then = start.stats;
  const seconds = Math.max(1e-3, stats.uptime_seconds - then.uptime_seconds);
  $('window').textContent = `${Math.round(seconds)} s`;
  $('f-events').textContent = fmtRate((stats.events_published - then.events_published) / seconds);
  const busy = stats.loop.busy_seconds - then.loop.busy_seconds;
  const wait = stats.loop.wait_seconds - then.loop.wait_seconds;
  $('f-busy').textContent = fmtPercent(busy + wait > 0 ? (100 * busy) / (busy + wait) : 0);
  const buckets = stats.loop.iteration_seconds.buckets;
  const before = then.loop.iteration_seconds.buckets;
  for (const [id, p] of [['f-p50', 0.5], ['f-p99', 0.99], ['f-p999', 0.999]]) {
    const le = percentile(buckets, before, p);
    const last = buckets[buckets.length - 2].le;
    $(id).textContent = le === undefined ? '–' : le === null ? `> ${fmtSeconds(last)}` : `≤ ${fmtSeconds(le)}`;
  }
}

function showCloses(stats, start) {
  const minuteAgo = state.samples.find((s) => !s.gap && s.t >= Date.now() - 60000
    && s.stats.start_time_seconds === stats.start_time_seconds);
  const tbody = $('closes').tBodies[0];
  tbody.replaceChildren();
  for (const reason of Object.keys(stats.closed.device)) {
    const device = stats.closed.device[reason];
    const http = stats.closed.http[reason];
    if (device + http === 0) continue;
    const then = minuteAgo ? minuteAgo.stats.closed.device[reason] + minuteAgo.stats.closed.http[reason] : 0;
    tbody.append(el('tr', { 'data-reason': reason },
      el('th', { scope: 'row', text: reason }),
      el('td', { class: 'num', text: fmtCount(device) }),
      el('td', { class: 'num', text: fmtCount(http) }),
      el('td', { class: 'num', text: fmtCount(device + http - then) })));
  }
  $('closes-none').hidden = tbody.rows.length > 0;
}

function niceCeiling(n) {
  if (n <= 5) return 5;
  const magnitude = 10 ** Math.floor(Math.log10(n));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= n) return step * magnitude;
  return 10 * magnitude;
}

function drawChart() {
  const svg = $('chart');
  const width = Math.max(200, svg.clientWidth || 600);
  const height = 180;
  const left = 48, right = 8, top = 10, bottom = 22;
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  const now = Date.now();
  const points = state.samples.filter((s) => !s.gap);
  const max = niceCeiling(Math.max(0, ...points.map((s) => Math.max(s.online, s.connections))));
  const x = (t) => left + ((t - (now - HISTORY_MS)) / HISTORY_MS) * (width - left - right);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  const ns = 'http://www.w3.org/2000/svg';
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };
  const children = [svg.querySelector('desc')];
  for (const v of [0, max / 2, max]) {
    children.push(node('line', { class: 'axis', x1: left, x2: width - right, y1: y(v), y2: y(v) }));
    children.push(node('text', { x: left - 6, y: y(v) + 4, 'text-anchor': 'end' }, fmtCount(v)));
  }
  // A label a minute where they fit, else one every two.
  const perMinute = (width - left - right) / 5;
  for (const minutes of perMinute >= 60 ? [5, 4, 3, 2, 1, 0] : [4, 2, 0]) {
    const tx = x(now - minutes * 60000);
    const label = minutes === 0 ? 'now' : `−${minutes} min`;
    const anchor = minutes === 5 ? 'start' : minutes === 0 ? 'end' : 'middle';
    children.push(node('text', { x: tx, y: height - 6, 'text-anchor': anchor }, label));
  }
  // A gap in the samples (the gateway away) breaks the lines.
  for (const [key, cls] of [['connections', 'connections'], ['online', 'online']]) {
    let run = [];
    const flush = () => {
      if (run.length) children.push(node('polyline', { class: cls, points: run.join(' ') }));
      run = [];
    };
    for (const s of state.samples) {
      if (s.gap) { flush(); continue; }
      run.push(`${x(s.t).toFixed(1)},${y(s[key]).toFixed(1)}`);
    }
    flush();
  }
  svg.replaceChildren(...children);
}

// ---------------------------------------------------------------------------
// The table of collars online.

/// The hex digits of a MAC search, or null if it is not one.
function searchPrefix(text) {
  const hex = text.replace(/[\s:.-]/g, '').toUpperCase();
  return /^[0-9A-F]{0,12}$/.test(hex) ? hex : null;
}

function macOf(n) {
  const hex = n.toString(16).toUpperCase().padStart(12, '0');
  return hex.match(/../g).join(':');
}

/// The `after=` cursor that starts a listing at the first MAC with `prefix`.
function prefixCursor(prefix) {
  if (!prefix) return null;
  const first = parseInt(prefix.padEnd(12, '0'), 16);
  return first === 0 ? null : macOf(first - 1);
}

/// A search prefix spelled like a MAC: `02:00:1`.
function prefixText(prefix) { return prefix.match(/.{1,2}/g).join(':'); }

function matches(mac, prefix) { return mac.replace(/:/g, '').startsWith(prefix); }

async function loadPage() {
  if (!state.started) return;
  if (state.reloading) { state.reloadAgain = true; return; }
  state.reloading = true;
  const page = state.page;
  try {
    const after = page.cursors[page.index];
    // One more than a page: whether there is a next one.
    const query = new URLSearchParams({ limit: String(PAGE_SIZE + 1) });
    if (after) query.set('after', after);
    const response = await api(`/devices?${query}`);
    if (!response.ok) return;
    const answer = await response.json();
    // Sorted by MAC: those with the prefix come first, then none.
    const rows = answer.devices.filter((d) => matches(d.mac, page.prefix));
    page.rows = rows.slice(0, PAGE_SIZE);
    page.total = answer.total;
    page.hasNext = rows.length > PAGE_SIZE;
    for (const device of page.rows) {
      if (device.location) setPoint(device.mac, device.location.lat, device.location.lon, device.location.at);
    }
    showPage();
  } catch (_) {
    // A 401 shows the prompt; a gateway away shows in the status, and the
    // next reload (every 5 s, or on news from the stream) tries again.
  } finally {
    state.reloading = false;
    if (state.reloadAgain) { state.reloadAgain = false; scheduleReload(); }
  }
}

function scheduleReload() {
  if (state.reloadTimer) return;
  state.reloadTimer = setTimeout(() => { state.reloadTimer = null; loadPage(); }, 200);
}

function showPage() {
  const page = state.page;
  const tbody = $('devices').tBodies[0];
  // Rows are kept and updated in place, keyed by MAC, so that a reload
  // neither flickers nor takes the focus (or a click) away from a row.
  const kept = new Map([...tbody.querySelectorAll('tr[data-mac]')].map((tr) => [tr.dataset.mac, tr]));
  const rows = page.rows.map((device) => {
    let row = kept.get(device.mac);
    kept.delete(device.mac);
    if (!row) {
      const open = el('button', { type: 'button', class: 'open', text: device.mac, 'aria-label': `Open collar ${device.mac}` });
      row = el('tr', { 'data-mac': device.mac },
        el('td', {}, open), el('td', { class: 'peer', 'data-label': 'peer' }),
        el('td', { class: 'connected', 'data-label': 'connected since' }),
        el('td', { class: 'seen num', 'data-label': 'last seen' }),
        el('td', { class: 'location', 'data-label': 'last location' }));
      row.addEventListener('click', () => openDetail(device.mac, open));
    }
    setText(row.querySelector('.peer'), device.peer);
    setText(row.querySelector('.connected'), fmtClock(device.connected_at));
    row.querySelector('.connected').title = device.connected_at;
    setText(row.querySelector('.seen'), fmtAgo(device.last_seen));
    row.querySelector('.seen').title = device.last_seen;
    setText(row.querySelector('.location'), device.location ? fmtDegrees(device.location.lat, device.location.lon) : '–');
    return row;
  });
  for (const row of kept.values()) row.remove();
  const empty = tbody.querySelector('tr.empty');
  if (empty) empty.remove();
  // Already in order: nothing moves (moving a row would take its focus).
  const inOrder = rows.every((row, i) => tbody.rows[i] === row) && tbody.rows.length === rows.length;
  if (!inOrder) tbody.append(...rows);
  if (page.rows.length === 0) {
    const text = page.prefix ? `No collar online with a MAC starting ${prefixText(page.prefix)}.` : 'No collar online.';
    tbody.append(el('tr', { class: 'empty' }, el('td', { colspan: '5', text })));
  }
  const first = page.index * PAGE_SIZE + 1;
  setText($('devices-caption'), page.prefix
    ? `${fmtCount(page.total)} online; showing MACs starting ${prefixText(page.prefix)}`
    : page.rows.length
      ? `${fmtCount(page.total)} online; showing ${fmtCount(first)}–${fmtCount(first + page.rows.length - 1)}`
      : `${fmtCount(page.total)} online`);
  $('page-info').textContent = `page ${page.index + 1}`;
  $('page-prev').disabled = page.index === 0;
  $('page-first').disabled = page.index === 0;
  $('page-next').disabled = !page.hasNext;
}

$('page-next').addEventListener('click', () => {
  const page = state.page;
  if (!page.hasNext) return;
  page.cursors[page.index + 1] = page.rows[page.rows.length - 1].mac;
  page.index += 1;
  loadPage();
});
$('page-prev').addEventListener('click', () => {
  if (state.page.index > 0) { state.page.index -= 1; loadPage(); }
});
$('page-first').addEventListener('click', () => { state.page.index = 0; loadPage(); });

$('search').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = $('mac-search');
  const prefix = searchPrefix(input.value);
  if (prefix === null) {
    input.setCustomValidity('A MAC is hex digits, with or without : or -');
    input.reportValidity();
    return;
  }
  input.setCustomValidity('');
  state.page = { cursors: [prefixCursor(prefix)], index: 0, prefix, rows: [], hasNext: false, total: 0 };
  loadPage();
});
$('mac-search').addEventListener('input', () => $('mac-search').setCustomValidity(''));

function updateRow(mac, update) {
  const row = $('devices').querySelector(`tr[data-mac="${mac}"]`);
  const device = state.page.rows.find((d) => d.mac === mac);
  if (!row || !device) return;
  update(device);
  row.querySelector('.seen').textContent = fmtAgo(device.last_seen);
  row.querySelector('.seen').title = device.last_seen;
  row.querySelector('.location').textContent = device.location
    ? fmtDegrees(device.location.lat, device.location.lon) : '–';
}

// The "last seen" ages move on by themselves; the page is fetched again
// now and then for the collars' own news (a PING counts as seen).
setInterval(() => {
  if (!state.started) return;
  for (const device of state.page.rows) {
    const cell = $('devices').querySelector(`tr[data-mac="${device.mac}"] .seen`);
    if (cell) setText(cell, fmtAgo(device.last_seen));
  }
  if (state.detail && state.detail.lastSeen) setText($('d-seen'), fmtAgo(state.detail.lastSeen));
}, 1000);
setInterval(() => { if (state.started) scheduleReload(); }, 5000);

// ---------------------------------------------------------------------------
// The map: last locations on a plain longitude/latitude canvas.

function setPoint(mac, lat, lon, at) {
  state.points.delete(mac); // re-inserted last: the newest are kept when over the cap
  state.points.set(mac, { lat, lon, at });
  while (state.points.size > MAP_MAX_POINTS) state.points.delete(state.points.keys().next().value);
  scheduleMap();
}

async function seedMap() {
  state.points.clear();
  let after = null;
  for (let i = 0; i < MAP_SEED_PAGES; i += 1) {
    const query = new URLSearchParams({ limit: '1000' });
    if (after) query.set('after', after);
    let answer;
    try {
      const response = await api(`/devices?${query}`);
      if (!response.ok) return;
      answer = await response.json();
    } catch (_) { return; }
    for (const d of answer.devices) {
      if (d.location && !state.points.has(d.mac)) setPoint(d.mac, d.location.lat, d.location.lon, d.location.at);
    }
    if (answer.devices.length < 1000) break;
    after = answer.devices[answer.devices.length - 1].mac;
  }
  scheduleMap();
}

function scheduleMap() {
  if (state.mapDrawn) return;
  state.mapDrawn = true;
  requestAnimationFrame(() => { state.mapDrawn = false; drawMap(); });
}

function niceStep(span) {
  const raw = span / 5;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  for (const step of [1, 2, 5, 10]) if (step * magnitude >= raw) return step * magnitude;
  return 10 * magnitude;
}

function drawMap() {
  const canvas = $('map');
  const cssWidth = canvas.clientWidth || 600;
  const cssHeight = canvas.clientHeight || 300;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(cssWidth * ratio);
  canvas.height = Math.round(cssHeight * ratio);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, cssWidth, cssHeight);

  // The view: the whole world, or the collars' bounding box with a margin,
  // at one scale for both axes (degrees stay square).
  const points = [...state.points.entries()];
  let [west, east, south, north] = [-180, 180, -90, 90];
  if (state.mapFit && points.length) {
    west = Math.min(...points.map(([, p]) => p.lon));
    east = Math.max(...points.map(([, p]) => p.lon));
    south = Math.min(...points.map(([, p]) => p.lat));
    north = Math.max(...points.map(([, p]) => p.lat));
    const margin = Math.max(0.01, (east - west) * 0.1, (north - south) * 0.1);
    west -= margin; east += margin; south -= margin; north += margin;
  }
  const scale = Math.min(cssWidth / (east - west), cssHeight / (north - south));
  const centerLon = (west + east) / 2;
  const centerLat = (north + south) / 2;
  const x = (lon) => cssWidth / 2 + (lon - centerLon) * scale;
  const y = (lat) => cssHeight / 2 - (lat - centerLat) * scale;
  const lonSpan = cssWidth / scale;
  const latSpan = cssHeight / scale;

  ctx.font = '11px system-ui, sans-serif';
  ctx.lineWidth = 1;
  const step = niceStep(Math.max(lonSpan, latSpan));
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  ctx.strokeStyle = '#d5dad7';
  ctx.fillStyle = '#5a625e';
  for (let lon = Math.ceil((centerLon - lonSpan / 2) / step) * step; lon <= centerLon + lonSpan / 2; lon += step) {
    if (lon < -180 || lon > 180) continue;
    ctx.beginPath(); ctx.moveTo(x(lon), 0); ctx.lineTo(x(lon), cssHeight); ctx.stroke();
    ctx.fillText(`${lon.toFixed(decimals)}°`, x(lon) + 3, cssHeight - 4);
  }
  for (let lat = Math.ceil((centerLat - latSpan / 2) / step) * step; lat <= centerLat + latSpan / 2; lat += step) {
    if (lat < -90 || lat > 90) continue;
    ctx.beginPath(); ctx.moveTo(0, y(lat)); ctx.lineTo(cssWidth, y(lat)); ctx.stroke();
    ctx.fillText(`${lat.toFixed(decimals)}°`, 3, y(lat) - 3);
  }
  // The equator and the prime meridian, when in view.
  ctx.strokeStyle = '#aab3ae';
  ctx.beginPath(); ctx.moveTo(0, y(0)); ctx.lineTo(cssWidth, y(0)); ctx.moveTo(x(0), 0); ctx.lineTo(x(0), cssHeight); ctx.stroke();

  const list = $('map-points');
  const items = [];
  const selected = state.detail ? state.detail.mac : null;
  for (const [mac, p] of points) {
    const px = x(p.lon);
    const py = y(p.lat);
    ctx.beginPath();
    ctx.arc(px, py, mac === selected ? 6 : 4, 0, 2 * Math.PI);
    ctx.fillStyle = mac === selected ? '#b25e00' : '#1f6f5c';
    ctx.fill();
    items.push(el('li', {
      'data-mac': mac, 'data-lat': String(p.lat), 'data-lon': String(p.lon),
      'data-x': px.toFixed(1), 'data-y': py.toFixed(1),
      text: `${mac}: ${fmtDegrees(p.lat, p.lon)}`,
    }));
  }
  if (selected && state.points.has(selected)) {
    const p = state.points.get(selected);
    ctx.fillStyle = '#1b1f1d';
    ctx.fillText(selected, x(p.lon) + 8, y(p.lat) - 8);
  }
  list.replaceChildren(...items);
  $('map-count').textContent = `${fmtCount(points.length)} collar${points.length === 1 ? '' : 's'} with a location`;
}

$('map-fit').addEventListener('click', () => {
  state.mapFit = !state.mapFit;
  $('map-fit').setAttribute('aria-pressed', String(state.mapFit));
  drawMap();
});
window.addEventListener('resize', () => { drawChart(); scheduleMap(); });

// ---------------------------------------------------------------------------
// The live event stream.

function openStream() {
  clearTimeout(state.streamTimer);
  if (state.stream) state.stream.close();
  const query = new URLSearchParams();
  if (state.token) query.set('access_token', state.token);
  if (state.lastEventId !== null) query.set('last_event_id', state.lastEventId);
  const url = `/events${query.toString() ? `?${query}` : ''}`;
  const stream = new EventSource(url);
  state.stream = stream;
  stream.addEventListener('open', async () => {
    state.streamRetry = 0;
    // Is it the same gateway run? Hold the events until that is known.
    state.held = [];
    let stats = null;
    try {
      const response = await api('/stats');
      if (response.ok) stats = await response.json();
    } catch (_) { /* the check waits for the next /stats */ }
    if (stream !== state.stream) return;
    const held = state.held;
    state.held = null;
    if (stats && stats.start_time_seconds !== state.run) {
      restarted(stats);
      return;
    }
    setStatus('live', 'live');
    for (const [kind, event] of held) dispatch(kind, event);
  });
  stream.addEventListener('error', () => {
    if (stream !== state.stream) return;
    if (stream.readyState === EventSource.CONNECTING) {
      setStatus('reconnecting', 'reconnecting');
      return;
    }
    // The browser gave up (the gateway answered other than with a
    // stream: it is draining, or wants a token): try again ourselves.
    stream.close();
    const delay = Math.min(10, 2 ** state.streamRetry);
    state.streamRetry += 1;
    setStatus('reconnecting', `reconnecting in ${delay} s`);
    state.streamTimer = setTimeout(async () => {
      try {
        await api('/stats');
      } catch (e) {
        if (e instanceof Unauthorized) return;
      }
      if (state.started) openStream();
    }, delay * 1000);
  });
  for (const kind of ['connected', 'disconnected', 'location', 'reset']) {
    stream.addEventListener(kind, (event) => {
      if (stream !== state.stream) return;
      if (state.held) state.held.push([kind, event]);
      else dispatch(kind, event);
    });
  }
}

function dispatch(kind, event) {
  if (kind === 'reset') onReset(event);
  else onEvent(kind, event);
}

function onReset(event) {
  if (event.lastEventId) state.lastEventId = event.lastEventId;
  addToFeed($('feed'), { kind: 'reset', at: new Date().toISOString(), mac: '', text: 'missed events: reloading' }, FEED_MAX);
  scheduleReload();
  seedMap();
}

function describe(kind, data) {
  switch (kind) {
    case 'connected': return `from ${data.peer}`;
    case 'disconnected': return data.reason;
    case 'location': return fmtDegrees(data.lat, data.lon);
    default: return '';
  }
}

function addToFeed(list, item, max) {
  const li = el('li', { class: `kind-${item.kind}`, 'data-kind': item.kind, 'data-mac': item.mac, 'data-id': item.id || '' },
    el('time', { datetime: item.at, text: fmtClock(item.at).slice(-8) }));
  if (list.id === 'feed') li.append(el('span', { class: 'mac', text: item.mac }));
  li.append(el('span', { text: item.kind }), el('span', { text: item.text }));
  list.prepend(li);
  while (list.children.length > max) list.lastElementChild.remove();
}

function onEvent(kind, event) {
  state.lastEventId = event.lastEventId;
  let data;
  try { data = JSON.parse(event.data); } catch (_) { return; }
  const item = { id: event.lastEventId, kind, at: data.at, mac: data.mac, text: describe(kind, data) };
  addToFeed($('feed'), item, FEED_MAX);
  if (state.detail && state.detail.mac === data.mac) {
    addToFeed($('d-events'), item, DETAIL_EVENTS_MAX);
  }
  if (kind === 'location') {
    setPoint(data.mac, data.lat, data.lon, data.at);
    updateRow(data.mac, (d) => {
      d.location = { lat: data.lat, lon: data.lon, at: data.at };
      d.last_seen = data.at;
    });
    if (state.detail && state.detail.mac === data.mac) {
      state.detail.lastSeen = data.at;
      $('d-location').textContent = `${fmtDegrees(data.lat, data.lon)} at ${fmtClock(data.at)}`;
    }
  } else {
    if (kind === 'disconnected' && state.points.delete(data.mac)) scheduleMap();
    if (matches(data.mac, state.page.prefix)) scheduleReload();
  }
}

// ---------------------------------------------------------------------------
// A collar's detail.

const dialog = $('detail');

async function openDetail(mac, opener) {
  state.detail = { mac, opener };
  $('d-mac').textContent = mac;
  for (const id of ['d-peer', 'd-connected', 'd-seen', 'd-location']) $(id).textContent = '…';
  $('d-command-result').textContent = '';
  $('d-locate-result').textContent = '';
  $('d-events').replaceChildren();
  if (!dialog.open) dialog.showModal();
  $('d-line').focus();
  scheduleMap();
  const path = `/devices/${encodeURIComponent(mac)}`;
  try {
    const response = await api(path);
    const device = await body(response);
    if (state.detail?.mac !== mac) return;
    if (response.ok) {
      $('d-peer').textContent = device.peer;
      $('d-connected').textContent = fmtClock(device.connected_at);
      state.detail.lastSeen = device.last_seen;
      $('d-seen').textContent = fmtAgo(device.last_seen);
      $('d-location').textContent = device.location
        ? `${fmtDegrees(device.location.lat, device.location.lon)} at ${fmtClock(device.location.at)}` : '–';
    } else {
      $('d-peer').textContent = device.error;
    }
    const events = await api(`/events/poll?mac=${encodeURIComponent(mac)}&since=0&timeout=0`);
    const history = await body(events);
    if (state.detail?.mac !== mac || !events.ok) return;
    // The stream may have added newer ones meanwhile: keep those on top.
    const list = $('d-events');
    const live = [...list.children];
    const shown = new Set(live.map((li) => li.dataset.id));
    list.replaceChildren();
    for (const e of history.events) {
      if (shown.has(String(e.id))) continue;
      const item = { id: String(e.id), kind: e.event, at: e.data.at, mac, text: describe(e.event, e.data) };
      addToFeed(list, item, DETAIL_EVENTS_MAX);
    }
    list.prepend(...live);
    while (list.children.length > DETAIL_EVENTS_MAX) list.lastElementChild.remove();
  } catch (_) { /* a 401 shows the prompt; a network error, the status */ }
}

function closeDetail() {
  if (dialog.open) dialog.close();
}

dialog.addEventListener('close', () => {
  clearInterval(state.locateTimer);
  const opener = state.detail && state.detail.opener;
  state.detail = null;
  scheduleMap();
  const mac = opener && opener.closest('tr') ? opener.closest('tr').dataset.mac : null;
  const again = mac && $('devices').querySelector(`tr[data-mac="${mac}"] button`);
  if (opener && opener.isConnected) opener.focus();
  else if (again) again.focus();
  else $('collars').focus();
});
$('d-close').addEventListener('click', closeDetail);

$('d-command').addEventListener('submit', async (event) => {
  event.preventDefault();
  const mac = state.detail.mac;
  const line = $('d-line').value;
  const result = $('d-command-result');
  result.className = '';
  result.textContent = 'sending…';
  try {
    const response = await api(`/devices/${encodeURIComponent(mac)}/commands`, { method: 'POST', body: line });
    const answer = await body(response);
    if (response.ok) {
      result.textContent = `sent ${line} (${fmtCount(answer.bytes)} B)`;
      $('d-line').value = '';
    } else {
      result.className = 'error';
      result.textContent = `${response.status}: ${answer.error}`;
    }
  } catch (e) {
    result.className = 'error';
    result.textContent = e instanceof Unauthorized ? 'the token was refused' : 'the gateway is unreachable';
  }
});

$('d-locate').addEventListener('submit', async (event) => {
  event.preventDefault();
  const mac = state.detail.mac;
  const seconds = Number($('d-timeout').value);
  const result = $('d-locate-result');
  const button = event.submitter || $('d-locate').querySelector('button');
  const began = performance.now();
  result.className = '';
  const tick = () => {
    const waited = (performance.now() - began) / 1000;
    result.textContent = `waiting for the collar: ${oneDecimal.format(waited)} s of ${oneDecimal.format(seconds)} s`;
  };
  tick();
  clearInterval(state.locateTimer);
  state.locateTimer = setInterval(tick, 100);
  button.disabled = true;
  try {
    const timeout = `${Math.max(1, Math.round(seconds * 1000))}ms`;
    const response = await api(`/devices/${encodeURIComponent(mac)}/location?timeout=${timeout}`);
    const answer = await body(response);
    if (state.detail?.mac !== mac) return;
    const took = oneDecimal.format((performance.now() - began) / 1000);
    if (response.ok) {
      const { lat, lon, at } = answer.location;
      result.textContent = `${fmtDegrees(lat, lon)} at ${fmtClock(at)} (answered in ${took} s)`;
    } else {
      result.className = 'error';
      result.textContent = `${response.status}: ${answer.error} (after ${took} s)`;
    }
  } catch (e) {
    result.className = 'error';
    result.textContent = e instanceof Unauthorized ? 'the token was refused' : 'the gateway is unreachable';
  } finally {
    clearInterval(state.locateTimer);
    button.disabled = false;
  }
});

start();
