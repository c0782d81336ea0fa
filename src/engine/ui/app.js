// sgpu engine dashboard: plain DOM + SVG, no library (docs/design.md "Dashboard").
// Data: GET /api/v0/endptjobs/, /api/v0/timeseries/?endpoint=, /api/v0/workers/?endpoint=,
// /api/v0/events/?endpoint= with the admin key from sessionStorage as a Bearer header.
'use strict';

const KEY = 'sgpu_admin_key';
const REFRESH_MS = 2000;
const SVGNS = 'http://www.w3.org/2000/svg';
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2',
  '#7f7f7f', '#bcbd22', '#17becf'];
const ACTIONS = ['decision', 'create', 'start', 'stop', 'destroy', 'drain', 'undrain', 'activate',
  'deactivate', 'backoff', 'workergroup_failing', 'op_failed'];
const ERRORS = ['backoff', 'op_failed', 'workergroup_failing'];
let timer = null;

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}

function sv(tag, attrs, ...kids) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
}

function fmt(v) {
  if (typeof v !== 'number') return v === undefined || v === null ? '' : String(v);
  if (!isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return String(Math.round(v * 1000) / 1000);
}

function age(epoch, now) {
  if (!epoch) return '';
  const s = Math.max(0, now - epoch);
  if (s < 120) return Math.round(s) + ' s';
  if (s < 7200) return Math.round(s / 60) + ' min';
  return (s / 3600).toFixed(1) + ' h';
}

async function api(path) {
  const r = await fetch(path, {headers: {Authorization: 'Bearer ' + sessionStorage.getItem(KEY)},
    cache: 'no-store'});
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (r.status === 401 || r.status === 403) {
    sessionStorage.removeItem(KEY);
    throw new Error('the key was refused (' + r.status + '): enter the admin key');
  }
  if (!r.ok || !body || body.success === false)
    throw new Error(path + ': ' + r.status + ' ' + (body && body.msg ? body.msg : ''));
  return body;
}

function setStatus(text, err) {
  const s = $('status');
  s.textContent = text;
  s.className = err ? 'err' : '';
}

// The smallest 1, 2 or 5 x 10^k at or above v (a readable axis top).
function niceMax(v) {
  if (!(v > 0) || !isFinite(v)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// A line chart: t[] (epoch s), series [{name, v[], color, dash}], drawn over the time range.
function chart(title, t, series, opts) {
  const W = 420, H = 150, L = 44, R = 8, T = 18, B = 18;
  const svg = sv('svg', {class: 'chart', width: W, height: H, viewBox: `0 0 ${W} ${H}`,
    'data-title': title, 'data-points': String(t.length)});
  svg.append(sv('text', {x: L, y: 12}, title));
  const t1 = t.length ? t[t.length - 1] : Date.now() / 1000;
  const t0 = t.length ? Math.min(t[0], t1 - 60) : t1 - 60;
  let ymax = (opts && opts.ymin) || 0;
  for (const s of series) for (const v of s.v) if (isFinite(v) && v > ymax) ymax = v;
  ymax = niceMax(ymax * 1.05);
  const x = (tv) => L + (W - L - R) * (tv - t0) / Math.max(1e-9, t1 - t0);
  const y = (v) => T + (H - T - B) * (1 - v / ymax);
  for (let k = 0; k <= 4; k++) {
    const yv = ymax * k / 4;
    svg.append(sv('line', {class: 'grid', x1: L, x2: W - R, y1: y(yv), y2: y(yv)}));
    svg.append(sv('text', {x: 2, y: y(yv) + 3}, fmt(yv)));
  }
  svg.append(sv('text', {x: L, y: H - 4}, '-' + age(t0, t1)));
  svg.append(sv('text', {x: W - R - 20, y: H - 4}, 'now'));
  series.forEach((s, k) => {
    if (!t.length) return;
    const pts = t.map((tv, j) => `${x(tv).toFixed(1)},${y(s.v[j] || 0).toFixed(1)}`).join(' ');
    const line = sv('polyline', {points: pts, fill: 'none', stroke: s.color || COLORS[k],
      'stroke-width': 1.5, 'data-series': s.name, 'data-n': String(t.length)});
    if (s.dash) line.setAttribute('stroke-dasharray', '4 3');
    line.append(sv('title', {}, s.name));
    svg.append(line);
  });
  const legend = el('div', {class: 'legend'});
  series.forEach((s, k) => {
    const i = el('i');
    i.style.background = s.color || COLORS[k];
    legend.append(el('span', {}, i, s.name));
  });
  return el('div', {class: 'chartbox'}, svg, legend);
}

// The scaling decisions and actions as marks on a time line; reason and inputs on hover.
function timeline(events, t0, t1) {
  const W = 860, H = 70, L = 44, R = 8;
  const svg = sv('svg', {class: 'timeline', width: W, height: H, viewBox: `0 0 ${W} ${H}`});
  svg.append(sv('text', {x: 2, y: 12}, 'scaling decisions and actions (hover for reason and inputs)'));
  const x = (tv) => L + (W - L - R) * (tv - t0) / Math.max(1e-9, t1 - t0);
  const rows = {decision: 28, create: 42, start: 42, activate: 42, undrain: 42};
  let n = 0;
  for (const ev of events) {
    if (!ACTIONS.includes(ev.kind) || ev.ts < t0) continue;
    const yv = rows[ev.kind] || (ERRORS.includes(ev.kind) ? 62 : 52);
    const color = ev.kind === 'decision' ? '#23395d' : ERRORS.includes(ev.kind) ? '#d62728'
      : rows[ev.kind] ? '#2ca02c' : '#ff7f0e';
    const g = sv('g', {class: 'event', 'data-kind': ev.kind});
    g.append(sv('circle', {cx: x(ev.ts).toFixed(1), cy: yv, r: 4, fill: color}));
    const inputs = inputsText(ev);
    const when = new Date(ev.ts * 1000).toLocaleTimeString();
    g.append(sv('title', {}, `${when} ${ev.kind}${ev.worker_id ? ' worker ' + ev.worker_id : ''}: ` +
      `${ev.reason || ''}${inputs ? '\n' + inputs : ''}`));
    svg.append(g);
    n++;
  }
  svg.setAttribute('data-events', String(n));
  for (const [label, yv] of [['decision', 28], ['up', 42], ['down', 52], ['errors', 62]])
    svg.append(sv('text', {x: 2, y: yv + 3}, label));
  return svg;
}

// An event's inputs (a JSON object, or text from older rows) as indented text for a tooltip.
function inputsText(ev) {
  if (!ev.inputs) return '';
  if (typeof ev.inputs === 'string') return ev.inputs;
  return JSON.stringify(ev.inputs, null, 1);
}

function table(cols, rows) {
  const t = el('table');
  t.append(el('tr', {}, ...cols.map((c) => el('th', {}, c[0]))));
  for (const r of rows) {
    const tr = el('tr');
    for (const c of cols) {
      const v = c[1](r);
      tr.append(el('td', typeof v === 'number' ? {class: 'num'} : {}, fmt(v)));
    }
    t.append(tr);
  }
  return t;
}

function renderEndpoints(eps) {
  const t = $('endpoints');
  t.replaceChildren();
  const cols = ['endpoint', 'state', 'scaler', 'workergroup', 'workers', 'active target', 'inactive target',
    'predicted load', 'perf estimate', 'queue', 'min_load', 'target_util', 'cold_mult',
    'cold_workers', 'max_workers', 'max_queue_time', 'target_queue_time', 'inactivity_timeout',
    'last error'];
  t.append(el('tr', {}, ...cols.map((c) => el('th', {}, c))));
  for (const e of eps) {
    const vals = [e.endpoint_name, e.endpoint_state, e.scaler, e.workergroup_state, e.workers,
      e.active_target, e.inactive_target, e.predicted_load, e.perf_estimate, e.queue_length,
      e.min_load, e.target_util, e.cold_mult, e.cold_workers, e.max_workers, e.max_queue_time,
      e.target_queue_time, e.inactivity_timeout, e.last_error];
    const tr = el('tr', {'data-endpoint': e.endpoint_name});
    vals.forEach((v) => tr.append(el('td', typeof v === 'number' ? {class: 'num'} : {}, fmt(v))));
    t.append(tr);
  }
}

function renderDetail(ep, ts, workers, events, now) {
  const sec = el('section', {class: 'ep', 'data-endpoint': ep.endpoint_name});
  sec.append(el('h2', {}, 'Endpoint ' + ep.endpoint_name));
  const t = ts.t;
  const charts = el('div', {class: 'charts'});
  charts.append(chart('demand (per second)', t, [{name: 'routes/s', v: ts.routes_s},
    {name: 'cost/s', v: ts.cost_s}, {name: 'predicted load', v: ts.load, dash: true}]));
  charts.append(chart('capacity (cost/s)', t, [{name: 'ready capacity', v: ts.ready_cap},
    {name: 'cost/s', v: ts.cost_s}]));
  charts.append(chart('queue time (s)', t, [{name: 'queue time', v: ts.queue_time},
    {name: 'target_queue_time', v: ts.target_queue_time, dash: true}]));
  charts.append(chart('queue length', t, [{name: 'waiting requests', v: ts.qlen}]));
  const ws = [];
  Object.keys(ts.workers).forEach((s, k) => {
    if (ts.workers[s].some((v) => v > 0)) ws.push({name: s, v: ts.workers[s], color: COLORS[k]});
  });
  ws.push({name: 'active target', v: ts.active_target, dash: true, color: '#000'});
  charts.append(chart('workers by state', t, ws, {ymin: 1}));
  sec.append(charts);
  const t1 = t.length ? t[t.length - 1] : now;
  const t0 = t.length ? Math.min(t[0], t1 - 60) : now - 3600;
  sec.append(el('h3', {}, 'Scaling timeline'), timeline(events, t0, Math.max(t1, now)));
  const recent = events.filter((e) => e.kind === 'decision').slice(-8).reverse();
  const ul = el('ul', {class: 'decisions'});
  for (const e of recent)
    ul.append(el('li', {title: inputsText(e)}, new Date(e.ts * 1000).toLocaleTimeString() + ' ' + e.reason));
  sec.append(ul);
  sec.append(el('h3', {}, 'Workers'));
  const tbl = table([['id', (w) => w.id], ['state', (w) => w.status + (w.draining ? ' (draining)' : '')],
    ['intent', (w) => w.intent], ['load', (w) => w.cur_load], ['perf', (w) => w.perf],
    ['queue time', (w) => w.queue_time], ['url', (w) => w.url], ['errors', (w) => w.error_msg],
    ['age', (w) => age(w.created_at, now)], ['last report', (w) => age(w.last_report_at, now)]],
  workers);
  tbl.setAttribute('class', 'workers');
  sec.append(tbl);
  return sec;
}

function renderErrors(all, workers, now) {
  const ul = $('errors');
  ul.replaceChildren();
  const items = [];
  for (const [name, evs] of all)
    for (const e of evs)
      if (ERRORS.includes(e.kind) || (e.kind === 'state' && e.inputs && e.inputs.to === 'error'))
        items.push([e.ts, `${new Date(e.ts * 1000).toLocaleTimeString()} ${name} ${e.kind}` +
          `${e.worker_id ? ' worker ' + e.worker_id : ''}: ${e.reason}`]);
  for (const w of workers)
    if (w.error_msg) items.push([now, `worker ${w.id} (${w.status}): ${w.error_msg}`]);
  items.sort((a, b) => b[0] - a[0]);
  for (const [, text] of items.slice(0, 20)) ul.append(el('li', {}, text));
  if (!items.length) ul.append(el('li', {class: 'none'}, 'none'));
}

async function refresh() {
  clearTimeout(timer);
  try {
    const eps = (await api('/api/v0/endptjobs/')).results;
    const now = Date.now() / 1000;
    renderEndpoints(eps);
    const detail = [];
    const allEvents = [];
    let allWorkers = [];
    for (const ep of eps) {
      const q = '?endpoint=' + encodeURIComponent(ep.endpoint_name);
      const [ts, ws, evs] = await Promise.all([api('/api/v0/timeseries/' + q),
        api('/api/v0/workers/' + q), api('/api/v0/events/' + q + '&limit=500')]);
      detail.push(renderDetail(ep, ts, ws.results, evs.results, ts.now || now));
      allEvents.push([ep.endpoint_name, evs.results]);
      allWorkers = allWorkers.concat(ws.results);
    }
    renderErrors(allEvents, allWorkers, now);
    $('detail').replaceChildren(...detail);
    setStatus('updated ' + new Date().toLocaleTimeString() + ', ' + eps.length + ' endpoint(s)');
    document.body.setAttribute('data-loaded', String(Number(document.body.getAttribute('data-loaded') || 0) + 1));
  } catch (err) {
    setStatus(String(err.message || err), true);
    if (!sessionStorage.getItem(KEY)) { showLogin(); return; }
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function showLogin() {
  clearTimeout(timer);
  $('main').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
}

function start() {
  $('login').hidden = true;
  $('main').hidden = false;
  $('logout').hidden = false;
  refresh();
}

document.addEventListener('DOMContentLoaded', () => {
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $('key').value.trim());
    $('key').value = '';
    start();
  });
  $('logout').addEventListener('click', () => { sessionStorage.removeItem(KEY); showLogin(); });
  if (sessionStorage.getItem(KEY)) start(); else showLogin();
});
