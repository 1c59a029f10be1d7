// The live dashboard: polls /api/dashboard every second and redraws nodes, workers, rooms,
// participants and their tracks. The graphs are SVG drawn by the server (plotters), over its
// last two minutes of samples. With API keys, open it as /dashboard?token=T (an admin token).

const token = new URLSearchParams(location.search).get('token');
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

// Our own server's SVG (no user text inside it).
function graph(svg, name) {
  const d = el('div', { class: 'graph', 'data-graph': name });
  d.innerHTML = svg || '';
  return d;
}

function rate(bps) {
  if (bps == null) return '–';
  if (bps >= 1e6) return `${(bps / 1e6).toFixed(2)} Mb/s`;
  if (bps >= 1e3) return `${(bps / 1e3).toFixed(0)} kb/s`;
  return `${Math.round(bps)} b/s`;
}

const pct = (x) => (x == null ? '–' : `${(x * 100).toFixed(1)}%`);
const ms = (x) => (x == null ? '–' : `${Math.round(x)} ms`);

function card(title, figures, graphs) {
  const c = el('div', { class: 'card' }, el('div', { class: 'title' }, title));
  for (const f of figures) c.append(el('div', { class: 'figure' }, f));
  for (const [name, svg] of graphs) c.append(graph(svg, name));
  return c;
}

function renderNode(d) {
  const n = d.node;
  $('node').replaceChildren(
    card('Traffic', [`${n.rooms} rooms, ${n.participants} participants`, `in ${rate(n.bitrate_in_bps)}`], [['bitrate_in', n.graphs.bitrate_in]]),
    card('Out', [`out ${rate(n.bitrate_out_bps)}`, ''], [['bitrate_out', n.graphs.bitrate_out]]),
    card('Packets in', [`${Math.round(n.packets_in_per_s)} /s`, ''], [['packets', n.graphs.packets]]),
  );
  $('nodes').tBodies[0].replaceChildren(...d.nodes.map((x) => el('tr', {},
    el('td', {}, `${x.id ?? 'this node'}${x.self && x.id ? ' (this)' : ''}`),
    el('td', {}, String(x.state)), el('td', {}, String(x.rooms ?? '–')),
    el('td', {}, String(x.participants ?? '–')), el('td', {}, x.load == null ? '–' : pct(x.load)))));
}

function renderWorkers(d) {
  $('workers').replaceChildren(...d.workers.map((w) => (w.alive
    ? card(`worker ${w.worker}`, [
      `load ${pct(w.load)} · ${w.peers} peers · ${w.pipes} pipes`,
      `${Math.round(w.packets_in_per_s)} pkt/s in · out ${rate(w.bitrate_out_bps)}`,
    ], [['load', w.graphs.load], ['packets', w.graphs.packets]])
    : card(`worker ${w.worker}`, [`dead: ${w.cause ?? ''}`], []))));
}

function trackRow(t) {
  const what = t.direction === 'publish'
    ? `publishes ${t.kind}${t.layers > 1 ? ` (${t.layers} layers)` : ''}`
    : `receives ${t.kind}${t.from ? ` of ${t.from}` : ''}`;
  const layer = t.direction === 'publish' || t.kind !== 'video' ? '' : (t.layer == null ? 'layer –' : `layer ${t.layer}`);
  const row = el('tr', { class: 'track', 'data-track': t.id, 'data-direction': t.direction },
    el('td', {}, what), el('td', {}, layer), el('td', { class: 'bitrate' }, rate(t.bitrate_bps)),
    el('td', {}, `loss ${pct(t.loss)}`), el('td', {}, `rtt ${ms(t.rtt_ms)}`), el('td', {}));
  row.lastChild.append(graph(t.graph, 'bitrate'));
  return row;
}

function renderRooms(d) {
  $('no-rooms').hidden = d.rooms.length > 0;
  $('rooms').replaceChildren(...d.rooms.map((r) => {
    const box = el('div', { class: 'room', 'data-room': r.room },
      el('div', { class: 'room-name' }, `${r.room} · ${r.participants.length} participants`));
    for (const p of r.participants) {
      const part = el('div', { class: 'participant', 'data-participant': p.id },
        el('div', { class: 'who' }, `${p.name}`),
        el('div', { class: 'figure muted' }, `${p.kind} · worker ${p.worker}`));
      const table = el('table', {}, el('tbody', {}, ...p.tracks.map(trackRow)));
      part.append(table);
      box.append(part);
    }
    return box;
  }));
}

async function refresh() {
  try {
    const headers = token ? { authorization: `Bearer ${token}` } : {};
    const res = await fetch('/api/dashboard', { headers, cache: 'no-store' });
    if (!res.ok) {
      $('status').textContent = `${res.status}: ${await res.text()}`;
      $('status').className = 'error';
      return;
    }
    const d = await res.json();
    if (!d || !d.node) return; // the first sample is not taken yet
    renderNode(d);
    renderWorkers(d);
    renderRooms(d);
    $('status').textContent = `updated ${new Date().toLocaleTimeString()} · up ${d.uptime_s} s`;
    $('status').className = '';
  } catch (e) {
    $('status').textContent = `unreachable: ${e.message}`;
    $('status').className = 'warn';
  }
}

refresh();
setInterval(refresh, 1000);
