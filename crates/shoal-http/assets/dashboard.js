// Shoal's dashboard: polls the JSON API every REFRESH_MS and redraws the
// panels in place. A failed request leaves the panel's last values (greyed
// out), shows the error in the banner and is simply asked again at the next
// refresh, so the page rides out a leader change or a restart of the server
// behind it. Everything is built with DOM calls (never innerHTML), since file
// names come from users.
'use strict';

const REFRESH_MS = 2000;
const REQUEST_TIMEOUT_MS = 8000;
const WATCHED_MAX = 20;

const ui = {
  dir: '/',          // the directory the file browser shows
  file: null,        // the file whose chunk map is shown
  watched: [],       // extra paths whose locks are shown
  nodes: [],         // the last chunk-server list, to colour replica addresses
};

// ---------- small helpers ----------

function $(id) { return document.getElementById(id); }

function h(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'class') e.className = v;
    else if (k === 'data') for (const [dk, dv] of Object.entries(v)) e.dataset[dk] = dv;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fill(tbody, rows) { tbody.replaceChildren(...rows); }

function fmtBytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = Math.abs(n), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  const digits = i === 0 ? (Number.isInteger(v) ? 0 : 1) : v < 10 ? 2 : 1;
  const s = v.toFixed(digits) + ' ' + units[i];
  return n < 0 ? '−' + s : s;
}

function plural(n, word) { return `${n.toLocaleString()} ${word}${n === 1 ? '' : 's'}`; }

function fmtRate(n) { return n === null || n === undefined ? '–' : fmtBytes(n) + '/s'; }

function fmtAgo(ms) {
  if (ms === null || ms === undefined) return 'never';
  return ms < 1000 ? ms + ' ms ago' : (ms / 1000).toFixed(1) + ' s ago';
}

function fmtTime(ms) { return new Date(ms).toISOString().replace('T', ' ').slice(0, 19); }

function join(dir, name) { return dir.endsWith('/') ? dir + name : dir + '/' + name; }

function parent(path) {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

async function api(path) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), REQUEST_TIMEOUT_MS);
  try {
    const r = await fetch(path, { cache: 'no-store', signal: ctl.signal });
    const body = await r.json().catch(() => null);
    if (!r.ok) {
      const err = new Error((body && body.error) || r.status + ' ' + r.statusText);
      err.status = r.status;
      throw err;
    }
    return body;
  } catch (e) {
    if (e.name === 'AbortError') throw new Error('no answer within ' + REQUEST_TIMEOUT_MS / 1000 + ' s');
    throw e;
  } finally {
    clearTimeout(timer);
  }
}

const q = (p) => encodeURIComponent(p);

// ---------- panels ----------

function renderOverview(status, nodes, health) {
  if (health) {
    const st = $('health-state');
    let state, word, words;
    if (health.missing > 0 || health.corrupt > 0) {
      state = 'critical'; word = 'At risk';
      words = `${health.missing} missing, ${health.corrupt} corrupt, ${health.under_replicated} under-replicated chunks`;
    } else if (health.under_replicated > 0) {
      state = 'degraded'; word = 'Degraded';
      words = plural(health.under_replicated, 'under-replicated chunk') +
        (health.repair_paused ? ' (repair paused)' : `, ${health.repairs_in_flight} repairs in flight`);
    } else {
      state = 'healthy'; word = 'Healthy';
      words = 'every chunk has its replicas';
    }
    st.className = 'big state-' + state;
    st.dataset.state = state;
    st.textContent = word;
    $('health-words').textContent = words;
    $('files-count').textContent = plural(health.files, 'file');
    $('chunks-count').textContent = plural(health.chunks, 'chunk');
  }
  if (nodes) {
    const live = nodes.filter((s) => s.state !== 'dead');
    const used = live.reduce((a, s) => a + s.used_bytes, 0);
    const cap = live.reduce((a, s) => a + s.capacity_bytes, 0);
    const pct = cap > 0 ? (100 * used) / cap : 0;
    $('capacity-text').textContent = `${fmtBytes(used)} of ${fmtBytes(cap)}`;
    setBar($('capacity-bar'), pct);
    $('capacity-free').textContent =
      `${fmtBytes(Math.max(cap - used, 0))} free on ${live.length} of ${nodes.length} servers`;
  }
  if (status) {
    const leader = status.nodes.find((n) => n.id !== null && n.id === status.leader_id);
    $('leader').textContent = leader ? `meta-${leader.id}` : 'none';
    $('leader').dataset.addr = leader ? leader.addr : '';
    $('leader-term').textContent = leader ? `${leader.addr}, term ${leader.term}` : 'no node says it leads';
  }
}

function setBar(fillEl, pct) {
  fillEl.style.width = Math.min(Math.max(pct, 0), 100).toFixed(1) + '%';
  fillEl.className = 'fill' + (pct >= 95 ? ' full' : pct >= 80 ? ' high' : '');
}

function renderMeta(status) {
  const leader = status.nodes.find((n) => n.id !== null && n.id === status.leader_id);
  const rows = status.nodes.map((n) => {
    const lag = leader && n.last_applied !== undefined ? Math.max(leader.last_applied - n.last_applied, 0) : null;
    return h('tr', { data: { addr: n.addr, role: n.role } },
      h('td', {}, n.id === null ? '–' : n.id),
      h('td', {}, n.addr),
      h('td', {}, h('span', { class: 'badge ' + n.role }, n.role)),
      h('td', { class: 'num' }, n.term ?? '–'),
      h('td', { class: 'num' }, n.last_applied ?? '–'),
      h('td', { class: 'num' }, lag ?? '–'),
      h('td', { class: 'muted' }, n.error || ''));
  });
  fill($('meta-table').tBodies[0], rows);
}

function renderChunks(nodes, throughput) {
  const rates = new Map(((throughput && throughput.servers) || []).map((s) => [s.addr, s]));
  const rate = (addr, key) => {
    const r = rates.get(addr);
    return r && r[key] !== null && r[key] !== undefined ? fmtRate(r[key]) : '–';
  };
  const rows = nodes.map((s) => {
    const pct = s.capacity_bytes > 0 ? (100 * s.used_bytes) / s.capacity_bytes : 0;
    const bar = h('div', { class: 'bar' }, h('div', { class: 'fill' }));
    setBar(bar.firstChild, pct);
    // The id is a u64, beyond what a JavaScript number holds exactly: the address names the server.
    return h('tr', { data: { addr: s.addr, state: s.state } },
      h('td', {}, s.addr),
      h('td', {}, h('span', { class: 'badge ' + s.state }, s.state)),
      h('td', {}, h('div', { class: 'cap' }, bar,
        h('span', { class: 'muted' }, `${fmtBytes(s.used_bytes)} / ${fmtBytes(s.capacity_bytes)}`))),
      h('td', { class: 'num' }, s.chunk_count),
      h('td', { class: 'num' }, s.listed_chunks),
      h('td', { class: 'num' }, fmtAgo(s.last_heartbeat_ms_ago)),
      h('td', { class: 'num' }, rate(s.addr, 'stored_bytes_per_s')),
      h('td', { class: 'num' }, rate(s.addr, 'read_bytes_per_s')),
      h('td', { class: 'num' }, rate(s.addr, 'written_bytes_per_s')));
  });
  fill($('chunk-table').tBodies[0], rows);
}

function renderHealth(r) {
  const item = (label, value, bad) =>
    h('span', { class: bad && value ? 'state-critical' : '' }, `${label}: `, h('b', {}, String(value)));
  $('health-summary').replaceChildren(
    item('under-replicated', r.under_replicated, true),
    item('missing', r.missing, true),
    item('corrupt', r.corrupt, true),
    item('over-replicated', r.over_replicated),
    item('repairs in flight', r.repairs_in_flight),
    item('moves pending', r.moves_pending),
    item('dead servers', r.dead_servers, true),
    item('draining', r.draining_servers),
    ...(r.repair_paused ? [h('span', { class: 'state-degraded' }, h('b', {}, 'REPAIR PAUSED'))] : []));
  const rows = r.problems.map((p) =>
    h('tr', { data: { path: p.path, state: p.state } },
      h('td', {}, h('a', { href: '#files', onclick: () => openFile(p.path) }, p.path)),
      h('td', { class: 'num' }, p.chunk_index),
      h('td', { class: 'num' }, p.chunk_id),
      h('td', {}, h('span', { class: 'badge ' + p.state }, p.state)),
      h('td', { class: 'num' }, `${p.good_replicas} / ${p.replication}`)));
  fill($('health-problems').tBodies[0], rows);
  $('health-more').textContent = r.problems_left_out > 0
    ? `and ${r.problems_left_out} more` : (r.problems.length === 0 ? 'No problems.' : '');
}

function renderLocks(reports, truncated) {
  const rows = [];
  for (const r of reports) {
    for (const [state, list] of [['holds', r.holders], ['waits', r.queue]]) {
      for (const e of list) {
        rows.push(h('tr', { data: { path: r.path, state } },
          h('td', {}, r.path), h('td', {}, state), h('td', { class: 'num' }, e.session),
          h('td', {}, e.mode), h('td', { class: 'num' }, e.ticket), h('td', { class: 'num' }, e.token || '–')));
      }
    }
  }
  fill($('locks-table').tBodies[0], rows);
  $('locks-empty').hidden = rows.length > 0;
  $('locks-more').textContent = truncated ? 'More paths are locked than are listed here.' : '';
}

function renderBreadcrumb() {
  const parts = ui.dir.split('/').filter(Boolean);
  const crumbs = [h('a', { onclick: () => openDir('/') }, '/')];
  let at = '';
  parts.forEach((p, i) => {
    at += '/' + p;
    const target = at;
    crumbs.push(i ? ' / ' : ' ', h('a', { onclick: () => openDir(target) }, p));
  });
  $('breadcrumb').replaceChildren(...crumbs);
}

function renderFiles(entries) {
  renderBreadcrumb();
  const rows = [];
  if (ui.dir !== '/') {
    rows.push(h('tr', { data: { path: parent(ui.dir), type: 'parent' } },
      h('td', {}, h('a', { onclick: () => openDir(parent(ui.dir)) }, '..')), h('td', {}, 'dir'),
      h('td'), h('td'), h('td')));
  }
  for (const e of entries) {
    const isDir = e.type === 'dir';
    const link = h('a', { href: '#files', onclick: (ev) => { ev.preventDefault(); isDir ? openDir(e.path) : openFile(e.path); } },
      e.name + (isDir ? '/' : ''));
    rows.push(h('tr', { data: { path: e.path, type: e.type }, class: e.path === ui.file ? 'selected' : '' },
      h('td', {}, link), h('td', {}, e.type),
      h('td', { class: 'num' }, isDir ? '' : fmtBytes(e.size)),
      h('td', { class: 'num' }, isDir ? '' : e.replication),
      h('td', {}, fmtTime(e.mtime_ms))));
  }
  fill($('files-table').tBodies[0], rows);
}

function renderFile(stat) {
  const detail = $('file-detail');
  if (!stat) { detail.hidden = true; return; }
  detail.hidden = false;
  detail.dataset.path = stat.path;
  $('file-name').textContent = stat.path;
  $('file-attrs').textContent =
    `${fmtBytes(stat.size)} (${stat.size.toLocaleString()} bytes), replication ${stat.replication}, ` +
    `chunk size ${fmtBytes(stat.chunk_size)}, ${plural(stat.chunks.length, 'chunk')}, modified ${fmtTime(stat.mtime_ms)} UTC`;
  const link = $('download-link');
  link.href = '/api/v1/download?path=' + q(stat.path);
  link.setAttribute('download', stat.path.split('/').pop());
  const state = new Map(ui.nodes.map((s) => [s.addr, s.state]));
  const rows = stat.chunks.map((c) =>
    h('tr', { data: { chunkIndex: c.index } },
      h('td', { class: 'num' }, c.index), h('td', { class: 'num' }, c.id), h('td', { class: 'num' }, c.version),
      h('td', { class: 'replicas' }, c.replicas.map((a) =>
        h('span', { class: 'server ' + (state.get(a) || ''), data: { addr: a }, title: state.get(a) || '' }, a)))));
  fill($('chunk-map').tBodies[0], rows);
}

// ---------- charts (canvas, no library) ----------

function drawChart(canvas, points, key, fmt, windowMs) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width, hgt = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(hgt * dpr); }
  const g = canvas.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, hgt);
  const padL = 70, padR = 10, padT = 10, padB = 20;
  const end = points.length ? points[points.length - 1].t_ms : Date.now();
  const start = end - windowMs;
  const vals = points.map((p) => p[key]).filter((v) => v !== null && v !== undefined);
  let max = Math.max(1, ...vals), min = Math.min(0, ...vals);
  const x = (t) => padL + ((t - start) / windowMs) * (w - padL - padR);
  const y = (v) => padT + (1 - (v - min) / (max - min)) * (hgt - padT - padB);
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = '#6b7785';
  g.strokeStyle = '#dde3e9';
  g.lineWidth = 1;
  // Gridlines at the bottom, at zero (or half way when nothing goes below it) and at the top.
  for (const v of [min, min < 0 ? 0 : max / 2, max]) {
    g.beginPath(); g.moveTo(padL, y(v)); g.lineTo(w - padR, y(v)); g.stroke();
    g.fillText(fmt(v), 4, y(v) + 4);
  }
  g.fillText('−10 min', padL, hgt - 5);
  g.fillText('now', w - padR - 22, hgt - 5);
  g.strokeStyle = '#1565c0';
  g.lineWidth = 2;
  g.beginPath();
  let pen = false;
  for (const p of points) {
    const v = p[key];
    if (v === null || v === undefined || p.t_ms < start) { pen = false; continue; }
    if (pen) g.lineTo(x(p.t_ms), y(v)); else g.moveTo(x(p.t_ms), y(v));
    pen = true;
  }
  g.stroke();
  if (!vals.length) g.fillText('collecting samples…', padL + 10, padT + 20);
}

function renderCharts(t) {
  const io = t.points.map((p) => ({
    t_ms: p.t_ms,
    io_bytes_per_s: p.read_bytes_per_s === null || p.written_bytes_per_s === null
      ? null : p.read_bytes_per_s + p.written_bytes_per_s,
  }));
  drawChart($('chart-bytes'), io, 'io_bytes_per_s', fmtRate, t.window_ms);
  drawChart($('chart-ops'), t.points, 'meta_ops_per_s', (v) => v.toFixed(1) + '/s', t.window_ms);
}

// ---------- navigation ----------

function openDir(path) {
  ui.dir = path;
  refreshSoon();
}

function openFile(path) {
  ui.file = path;
  ui.dir = parent(path);
  refreshSoon();
}

// ---------- the refresh loop ----------

let timer = null;
let running = false;

function refreshSoon() {
  clearTimeout(timer);
  timer = setTimeout(refresh, 0);
}

async function refresh() {
  if (running) { refreshSoon(); return; }
  running = true;
  const dir = ui.dir, file = ui.file;
  const jobs = {
    status: api('/api/v1/status'),
    nodes: api('/api/v1/nodes'),
    health: api('/api/v1/health'),
    throughput: api('/api/v1/throughput'),
    ls: api('/api/v1/ls?path=' + q(dir)),
    locks: api('/api/v1/locks'),
    stat: file ? api('/api/v1/stat?path=' + q(file)) : Promise.resolve(null),
    watched: Promise.all(ui.watched.map((p) => api('/api/v1/locks?path=' + q(p)))),
  };
  const names = Object.keys(jobs);
  const settled = await Promise.allSettled(Object.values(jobs));
  const r = {}, errors = [];
  names.forEach((n, i) => {
    if (settled[i].status === 'fulfilled') r[n] = settled[i].value;
    else errors.push({ name: n, error: settled[i].reason });
  });
  // A directory or file that went away: go back up instead of failing forever.
  for (const e of errors) {
    if (e.error.status === 404 && e.name === 'ls' && ui.dir === dir) ui.dir = parent(dir);
    if (e.error.status === 404 && e.name === 'stat' && ui.file === file) ui.file = null;
  }
  const panel = (id, ok) => $(id).classList.toggle('stale', !ok);
  try {
    if (r.nodes) ui.nodes = r.nodes;
    renderOverview(r.status, r.nodes, r.health);
    if (r.status) renderMeta(r.status);
    if (r.nodes) renderChunks(r.nodes, r.throughput);
    if (r.health) renderHealth(r.health);
    if (r.locks) renderLocks(r.locks.paths.concat((r.watched || []).filter(
      (w) => !r.locks.paths.some((l) => l.path === w.path))), r.locks.truncated);
    if (r.ls) renderFiles(r.ls);
    if (r.stat !== undefined) renderFile(r.stat);
    if (r.throughput) renderCharts(r.throughput);
    panel('overview', r.status && r.nodes && r.health);
    panel('meta', r.status);
    panel('chunks', r.nodes);
    panel('health', r.health);
    panel('locks', r.locks);
    panel('files', r.ls);
  } catch (e) {
    errors.push({ name: 'render', error: e });
  }
  const banner = $('error-banner');
  if (errors.length) {
    banner.hidden = false;
    banner.textContent = 'Some data could not be loaded (retrying every ' + REFRESH_MS / 1000 + ' s): ' +
      errors.map((e) => `${e.name}: ${e.error.message}`).join('; ');
  } else {
    banner.hidden = true;
  }
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  $('refreshed').textContent = (errors.length ? 'partly refreshed ' : 'refreshed ') + new Date().toLocaleTimeString();
  running = false;
  clearTimeout(timer);
  timer = setTimeout(refresh, REFRESH_MS);
}

$('lock-watch').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const p = $('lock-path').value.trim();
  if (p && !ui.watched.includes(p)) {
    ui.watched.push(p);
    if (ui.watched.length > WATCHED_MAX) ui.watched.shift();
  }
  $('lock-path').value = '';
  refreshSoon();
});

refresh();
