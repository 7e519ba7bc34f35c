// qkdtwin live dashboard: vanilla JavaScript + SVG, served by the twin itself (no CDN).
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const CAP = 300;                       // points kept per chart series in the browser
const COLORS = ["#4cc9f0", "#f72585", "#b5e48c", "#ffd166", "#9d4edd", "#06d6a0", "#ef476f",
  "#118ab2", "#f4a261", "#e9c46a", "#90be6d", "#f94144", "#577590", "#43aa8b", "#f8961e"];
// At scale (a twin of thousands): above FULL_MAP_NODES nodes the map shows one disc per region
// (the nodes under each metro node) and a click drills down into it; above ALL_SERIES links
// the charts draw the WORST_N worst links (by status, then QBER over threshold) and the ones
// pinned from the links table, fetching their history on demand; tables list the worst first.
const FULL_MAP_NODES = 60, ALL_SERIES = 16, WORST_N = 8, TABLE_ROWS = 25;
let state = null;
const series = { qber: {}, rate: {}, pools: {} };
let region = null, regionOf = null, query = "";
const pinned = new Set(), fetched = new Set();

function $(id) { return document.getElementById(id); }
function el(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(2) + " %"; }
function num(x, d = 1) { return x === null || x === undefined ? "–" : Number(x).toFixed(d); }
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c])); }

function linkClass(l) {
  if (l.status === "alarm") return "alarm";
  if (l.status === "recovering") return "recovering";
  if (l.attack) return "attacked";
  return "up";
}

function severity(l) {
  return l.status === "alarm" ? 3 : l.status === "recovering" ? 2 : l.attack ? 1 : 0;
}
function qberRatio(l) {
  const q = l.alarm_qber ?? l.qber;
  return q === null || q === undefined ? -1 : q / l.qber_threshold;
}
function worstFirst(links) {
  return [...links].sort((a, b) => severity(b) - severity(a) || qberRatio(b) - qberRatio(a) ||
    (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

function regions() {
  // every node's region: the metro node it hangs under (breadth first from the metro nodes,
  // or from the top row of the layout when there is no metro node)
  if (regionOf && regionOf.size === state.nodes.length) return regionOf;
  const adj = {};
  for (const l of state.links) { (adj[l.a] = adj[l.a] || []).push(l.b); (adj[l.b] = adj[l.b] || []).push(l.a); }
  let roots = state.nodes.filter(n => n.role === "metro").map(n => n.id);
  if (!roots.length) {
    const top = Math.min(...state.nodes.map(n => n.y));
    roots = state.nodes.filter(n => n.y === top).map(n => n.id);
  }
  const m = new Map(), q = [...roots];
  for (const r of roots) m.set(r, r);
  for (let i = 0; i < q.length; i++) {
    for (const v of adj[q[i]] || []) if (!m.has(v)) { m.set(v, m.get(q[i])); q.push(v); }
  }
  for (const n of state.nodes) if (!m.has(n.id)) m.set(n.id, n.id);
  regionOf = m;
  return m;
}

function renderTopology() {
  const svg = $("topology");
  svg.replaceChildren();
  const big = state.nodes.length > FULL_MAP_NODES;
  $("topo-back").hidden = !(big && region);
  if (!big) { region = null; $("topo-crumb").textContent = ""; drawMap(svg, state.nodes, state.links); return; }
  if (!region) { renderRegions(svg); return; }
  const reg = regions();
  const nodes = state.nodes.filter(n => reg.get(n.id) === region);
  const links = state.links.filter(l => reg.get(l.a) === region && reg.get(l.b) === region);
  const bad = links.filter(l => severity(l) > 0).length;
  $("topo-crumb").textContent = `region ${region}: ${nodes.length} nodes, ${links.length} links` +
    (bad ? `, ${bad} not up` : "");
  drawMap(svg, nodes, links);
}

function renderRegions(svg) {
  // one disc per region (its size: the links inside it, its ring: the worst link's status);
  // the links between regions drawn as such; click a disc to see its nodes and links
  const W = 1000, H = 420, reg = regions(), info = new Map();
  for (const n of state.nodes) {
    const r = reg.get(n.id);
    if (!info.has(r)) info.set(r, { nodes: 0, links: 0, sev: 0, bad: 0 });
    info.get(r).nodes++;
  }
  const between = [];
  for (const l of state.links) {
    const ra = reg.get(l.a), rb = reg.get(l.b);
    if (ra !== rb) { between.push(l); continue; }
    const i = info.get(ra);
    i.links++; i.sev = Math.max(i.sev, severity(l)); if (severity(l) > 0) i.bad++;
  }
  const ids = [...info.keys()].sort();
  const pos = {};
  const k = ids.length, cx = W / 2, cy = H / 2 + 10, rx = k > 2 ? 360 : 250, ry = k > 2 ? 140 : 0;
  ids.forEach((id, i) => {
    const a = k > 2 ? -Math.PI / 2 + 2 * Math.PI * i / k : Math.PI * (i + 0.5) / k - Math.PI / 2;
    pos[id] = k > 2 ? [cx + rx * Math.cos(a), cy + ry * Math.sin(a)] : [cx - rx + 2 * rx * (i + 0.5) / k, cy];
  });
  for (const l of between) {
    const [x1, y1] = pos[reg.get(l.a)], [x2, y2] = pos[reg.get(l.b)];
    const path = el("path", { d: `M ${x1} ${y1} L ${x2} ${y2}`, fill: "none",
      class: "link " + linkClass(l), "data-link": l.id, "data-status": l.status });
    path.appendChild(el("title", {}, `${l.id}: ${l.status}, QBER ${pct(l.qber)}, ${num(l.key_rate_bps, 0)} bit/s`));
    svg.appendChild(path);
  }
  const most = Math.max(...ids.map(id => info.get(id).links), 1);
  let bad = 0;
  for (const id of ids) {
    const i = info.get(id), [x, y] = pos[id];
    bad += i.bad;
    const r = 22 + 30 * Math.sqrt(i.links / most);
    const g = el("g", { class: `region sev-${i.sev}`, "data-region": id, "data-severity": i.sev,
      role: "button", tabindex: 0 });
    g.appendChild(el("circle", { cx: x, cy: y, r }));
    g.appendChild(el("title", {}, `region ${id}: ${i.nodes} nodes, ${i.links} links, ${i.bad} not up (click: its map)`));
    g.appendChild(el("text", { x, y: y - 2 }, id));
    g.appendChild(el("text", { x, y: y + 13, class: "sub" }, `${i.links} links` + (i.bad ? ` · ${i.bad} ⚠` : "")));
    g.addEventListener("click", () => { region = id; renderTopology(); });
    svg.appendChild(g);
  }
  $("topo-crumb").textContent = `${ids.length} regions, ${state.nodes.length} nodes, ${state.links.length} links` +
    (bad ? `, ${bad} not up` : "") + " · click a region for its map";
}

function drawMap(svg, nodes, links) {
  const W = 1000, H = 420;
  const pos = {};
  let x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  if (nodes.length !== state.nodes.length && nodes.length) {
    // a region alone: its own part of the layout, stretched over the whole drawing
    x0 = Math.min(...nodes.map(n => n.x)); x1 = Math.max(...nodes.map(n => n.x));
    y0 = Math.min(...nodes.map(n => n.y)); y1 = Math.max(...nodes.map(n => n.y));
    if (!(x1 > x0)) { x0 -= 0.5; x1 += 0.5; }
    if (!(y1 > y0)) { y0 -= 0.5; y1 += 0.5; }
  }
  for (const n of nodes) pos[n.id] = [30 + (n.x - x0) / (x1 - x0) * (W - 60), 70 + (n.y - y0) / (y1 - y0) * (H - 90)];
  const ctrl = (a, b) => {
    // links inside one row (a metro ring) are drawn as arcs so that they never overlap
    const [x1, y1] = pos[a], [x2, y2] = pos[b];
    const bend = Math.abs(y1 - y2) < 1 ? Math.min(95, 0.12 * Math.abs(x2 - x1)) : 0;
    return [(x1 + x2) / 2, (y1 + y2) / 2 - bend];
  };
  for (const l of links) {
    const [x1, y1] = pos[l.a], [x2, y2] = pos[l.b];
    const [cx, cy] = ctrl(l.a, l.b);
    const path = el("path", { d: `M ${x1} ${y1} Q ${cx} ${cy} ${x2} ${y2}`, fill: "none",
      class: "link " + linkClass(l), "data-link": l.id, "data-status": l.status });
    path.appendChild(el("title", {}, `${l.id}: ${l.status}, QBER ${pct(l.qber)}, ${num(l.key_rate_bps, 0)} bit/s`));
    svg.appendChild(path);
    if (nodes.length <= 40) {
      // beside the link, not on it: at the curve's midpoint, 10 px along its normal (the side
      // facing up, or left for a vertical link), anchored away from the line
      const mx = (x1 + x2) / 2, my = 0.25 * y1 + 0.5 * cy + 0.25 * y2;
      const len = Math.hypot(x2 - x1, y2 - y1) || 1;
      let nx = -(y2 - y1) / len, ny = (x2 - x1) / len;
      if (ny > 0 || (Math.abs(ny) < 1e-9 && nx > 0)) { nx = -nx; ny = -ny; }
      const anchor = nx > 0.3 ? "start" : nx < -0.3 ? "end" : "middle";
      svg.appendChild(el("text", { x: mx + 10 * nx, y: my + 10 * ny + (ny > -0.3 ? 4 : 0),
        "text-anchor": anchor, class: "lbl", "data-link": l.id }, l.qber === null ? "" : pct(l.qber)));
    }
  }
  renderRoutes(svg, pos, ctrl, links);
  const r = nodes.length > 60 ? 5 : 16;
  for (const n of nodes) {
    const [x, y] = pos[n.id];
    const g = el("g", { class: "node " + n.role, "data-node": n.id });
    g.appendChild(el("circle", { cx: x, cy: y, r }));
    g.appendChild(el("title", {}, `${n.id} (${n.role})`));
    if (nodes.length <= 60) g.appendChild(el("text", { x, y: y + r + 14 }, n.id));
    svg.appendChild(g);
  }
}

function hopKey(a, b) { return a < b ? `${a}-${b}` : `${b}-${a}`; }

function renderRoutes(svg, pos, ctrl, links) {
  // the active relay routes: a thin line along every link that carries one (its title counts
  // them), and each rerouted pair's whole path on top, highlighted (a detour around a link
  // in alarm). Hops follow the links' own curves.
  const use = {}, detours = [];
  for (const p of state.pools) {
    if (!p.path) continue;
    for (let k = 0; k + 1 < p.path.length; k++) {
      const key = hopKey(p.path[k], p.path[k + 1]);
      (use[key] = use[key] || []).push(p.id);
    }
    if (p.rerouted) detours.push(p);
  }
  const hopD = (a, b) => { const [cx, cy] = ctrl(a, b); return `Q ${cx} ${cy} ${pos[b][0]} ${pos[b][1]}`; };
  for (const l of links) {
    const pools = use[hopKey(l.a, l.b)];
    if (!pools) continue;
    const route = el("path", { d: `M ${pos[l.a][0]} ${pos[l.a][1]} ${hopD(l.a, l.b)}`, fill: "none",
      class: "route", "data-link": l.id, "data-routes": pools.length });
    route.appendChild(el("title", {}, `${pools.length} relay route(s) over ${l.id}: ${pools.slice(0, 12).join(", ")}${pools.length > 12 ? ", …" : ""}`));
    svg.appendChild(route);
  }
  for (const p of detours.slice(0, 50)) {
    // only the hops the reroute added are highlighted (the bypass), each from its own start
    const ps = p.path, was = new Set();
    const dp = p.default_path || [];
    for (let k = 0; k + 1 < dp.length; k++) was.add(hopKey(dp[k], dp[k + 1]));
    let d = "";
    for (let k = 0; k + 1 < ps.length; k++) {
      if (was.has(hopKey(ps[k], ps[k + 1])) || !pos[ps[k]] || !pos[ps[k + 1]]) continue;
      d += ` M ${pos[ps[k]][0]} ${pos[ps[k]][1]} ` + hopD(ps[k], ps[k + 1]);
    }
    const path = el("path", { d, fill: "none", class: "route detour", "data-pool": p.id, "data-path": ps.join(",") });
    path.appendChild(el("title", {}, `${p.id} rerouted: ${ps.join(" → ")} (was ${(p.default_path || []).join(" → ")})`));
    svg.appendChild(path);
  }
}

function renderKpis() {
  $("kpi-t").textContent = num(state.t, 0) + " s";
  $("kpi-success").textContent = pct(state.network.success_rate);
  for (const w of state.network.windows || []) {
    const key = w.seconds === 60 ? "min" : "hour";
    $("kpi-success-" + key).textContent = pct(w.success_rate);
    // early in a run the window covers less than its name says: say how much
    $("kpi-success-" + key + "-k").textContent = `success, ${w.seconds === 60 ? "1 min" : "1 h"}` +
      (w.lived_s + 1e-9 < w.seconds ? ` (${num(w.lived_s, 0)} s)` : "");
  }
  $("kpi-down").textContent = state.network.links_down.length;
  $("kpi-alarms").textContent = state.active_alarms;
  const tel = state.telemetry || {};
  $("kpi-iot").textContent = tel.enabled ? (tel.error ? "error" : `${tel.delivered ?? 0}/${tel.sent ?? 0}`) : "off";
}

function renderTables() {
  const lb = $("links-table").tBodies[0];
  const q = query.toLowerCase();
  const match = q ? state.links.filter(l => l.id.toLowerCase().includes(q)) : state.links;
  const rows = worstFirst(match).slice(0, state.links.length > TABLE_ROWS ? TABLE_ROWS : undefined);
  $("links-note").textContent = q ? `${rows.length} of ${match.length} matching "${query}" (worst first)` :
    state.links.length > rows.length ? `the ${rows.length} worst of ${state.links.length} links; click a row to chart it` :
    "worst first; click a row to chart it";
  lb.innerHTML = rows.map(l => `<tr data-link="${esc(l.id)}" class="${pinned.has(l.id) ? "pinned" : ""}"><td>${esc(l.id)}</td>` +
    `<td class="st-${l.status}">${l.status}${l.attack ? " ⚠" : ""}</td><td>${pct(l.qber)}</td>` +
    `<td>${pct(l.qber_threshold)}</td><td>${num(l.key_rate_bps, 0)}</td><td>${l.keys.available}</td>` +
    `<td>${ppCell(l.postprocess)}</td></tr>`).join("");
  const pb = $("pools-table").tBodies[0];
  // the pools that fail most first (a small network: in their own order)
  const pools = state.pools.length > TABLE_ROWS ? [...state.pools].sort((a, b) =>
    (a.success_rate ?? 2) - (b.success_rate ?? 2) || a.level - b.level).slice(0, TABLE_ROWS) : state.pools;
  $("pools-note").textContent = state.pools.length > pools.length ?
    `the ${pools.length} least successful of ${state.pools.length} pools` : "";
  pb.innerHTML = pools.map(p => `<tr><td>${esc(p.id)}</td><td>${num(p.level, 0)}/${num(p.capacity, 0)}</td>` +
    `<td>${num(p.rate, 3)}</td><td>${p.path ? p.path.length - 1 : "cut"}</td><td>${pct(p.success_rate)}</td></tr>`).join("");
  const sel = $("attack-link");
  if (sel.options.length !== state.links.length) {
    sel.innerHTML = state.links.map(l => `<option value="${esc(l.id)}">${esc(l.id)}</option>`).join("");
  }
}

function ppCell(pp) {
  if (!pp) return "–";
  if (pp.error) return "error";
  if (pp.aborted) return "abort";
  return `${pp.verified && pp.keys_identical ? "✓" : "✗"} ${pp.key_bits_in} b, leak ${pp.leaked_bits}`;
}

function renderAlarms() {
  const ol = $("alarms");
  if (!state.alarms.length) { ol.innerHTML = '<li class="muted">no alarm</li>'; return; }
  ol.innerHTML = state.alarms.map(a => {
    const evs = a.events.map(e => `${e.what} @${num(e.t_sim, 0)} s`).join(" → ");
    const rr = a.reroute_ms === null ? "" : ` (rerouted in ${num(a.reroute_ms, 2)} ms)`;
    return `<li class="${a.active ? "active" : ""}" data-alarm="${a.id}" data-link="${esc(a.link)}">` +
      `#${a.id} ${esc(a.message)}${rr}<div class="ev">${esc(evs)}</div></li>`;
  }).join("");
}

function push(map, key, t, v) {
  const s = map[key] || (map[key] = []);
  s.push([t, v]);
  if (s.length > CAP) s.splice(0, s.length - CAP);
}

function recordTick() {
  for (const l of state.links) {
    push(series.qber, l.id, state.t, l.qber);
    push(series.rate, l.id, state.t, l.key_rate_bps);
  }
  for (const p of state.pools.slice(0, 30)) push(series.pools, p.id, state.t, p.level);
}

function ticks(lo, hi, n) {
  // n + 1 evenly spaced values from lo to hi (axes are linear and start at 0 or t0)
  const out = [];
  for (let k = 0; k <= n; k++) out.push(lo + (hi - lo) * k / n);
  return out;
}

function drawChart(svgId, map, opts) {
  // one polyline per series; ticks with units on both axes; the threshold labelled; an HTML
  // legend under the chart (one entry per series; click an entry to isolate its line)
  const svg = $(svgId);
  svg.replaceChildren();
  const W = 480, H = 200, L = 46, B = 30, T = 8, R = 8;
  let t0 = Infinity, t1 = -Infinity, v1 = opts.min_max || 0;
  for (const s of Object.values(map)) for (const [t, v] of s) {
    if (t < t0) t0 = t; if (t > t1) t1 = t; if (v !== null && v > v1) v1 = v;
  }
  if (opts.threshold && opts.threshold > v1) v1 = opts.threshold * 1.2;
  if (!(t1 > t0)) { t0 = 0; t1 = 1; }
  if (!(v1 > 0)) v1 = 1;
  const X = t => L + (t - t0) / (t1 - t0) * (W - L - R);
  const Y = v => H - B - v / v1 * (H - B - T);
  svg.appendChild(el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
  svg.appendChild(el("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
  for (const v of ticks(0, v1, 4)) {
    svg.appendChild(el("line", { x1: L - 3, x2: L, y1: Y(v), y2: Y(v), class: "axis" }));
    svg.appendChild(el("text", { x: L - 5, y: Y(v) + 3, "text-anchor": "end", class: "ytick" }, opts.fmt(v)));
  }
  for (const t of ticks(t0, t1, 4)) {
    svg.appendChild(el("line", { x1: X(t), x2: X(t), y1: H - B, y2: H - B + 3, class: "axis" }));
    svg.appendChild(el("text", { x: X(t), y: H - B + 13, "text-anchor": "middle", class: "xtick" }, num(t, 0)));
  }
  svg.appendChild(el("text", { x: (L + W - R) / 2, y: H - 3, "text-anchor": "middle", class: "axis-label" }, "twin time (s)"));
  svg.appendChild(el("text", { x: 10, y: (T + H - B) / 2, "text-anchor": "middle", class: "axis-label",
    transform: `rotate(-90 10 ${(T + H - B) / 2})` }, opts.ylabel));
  if (opts.threshold) {
    svg.appendChild(el("line", { x1: L, x2: W - R, y1: Y(opts.threshold), y2: Y(opts.threshold), class: "thr" }));
    svg.appendChild(el("text", { x: W - R - 2, y: Y(opts.threshold) - 3, "text-anchor": "end", class: "thr-label" },
      `alarm threshold ${opts.fmt(opts.threshold)}`));
  }
  const legend = $(svgId + "-legend");
  const shown = legend.dataset.only || "";
  legend.replaceChildren();
  let i = 0;
  for (const [key, s] of Object.entries(map)) {
    const color = COLORS[i++ % COLORS.length];
    const pts = s.filter(p => p[1] !== null).map(([t, v]) => `${X(t).toFixed(1)},${Y(v).toFixed(1)}`).join(" ");
    const dim = shown && shown !== key;
    const pl = el("polyline", { points: pts, fill: "none", stroke: color, "stroke-width": shown === key ? 2.5 : 1.5,
      opacity: dim ? 0.12 : 1, "data-series": key });
    pl.appendChild(el("title", {}, key));
    svg.appendChild(pl);
    const item = document.createElement("button");
    item.type = "button";
    item.className = "legend-item" + (shown === key ? " on" : "") + (dim ? " dim" : "");
    item.dataset.series = key;
    item.title = `show ${key} alone (click again: all)`;
    const sw = document.createElement("span");
    sw.className = "swatch"; sw.style.background = color;
    item.append(sw, document.createTextNode(key));
    item.onclick = () => { legend.dataset.only = legend.dataset.only === key ? "" : key; renderCharts(); };
    legend.appendChild(item);
  }
}

function shownLinks() {
  // every link of a small network; at scale the worst few and the pinned ones
  if (state.links.length <= ALL_SERIES) return state.links.map(l => l.id);
  const ids = worstFirst(state.links).slice(0, WORST_N).map(l => l.id);
  for (const id of pinned) if (!ids.includes(id)) ids.push(id);
  return ids;
}

function pick(map, ids) {
  const out = {};
  for (const id of ids) out[id] = map[id] || [];
  return out;
}

async function fetchSeries(ids) {
  // the history of series not yet loaded (on demand: never every series of a big network)
  const want = ids.filter(id => !fetched.has(id));
  if (!want.length) return;
  for (const id of want) fetched.add(id);
  const qs = want.flatMap(id => [`series=${encodeURIComponent(`link:${id}:qber`)}`,
    `series=${encodeURIComponent(`link:${id}:key_rate_bps`)}`]).join("&");
  const r = await fetch(`/api/history?${qs}`);
  if (!r.ok) return;
  const h = await r.json();
  for (const [name, pts] of Object.entries(h)) {
    const [, id, what] = name.split(":");
    const into = what === "qber" ? series.qber : series.rate;
    const live = into[id] || [];
    const last = pts.length ? pts[pts.length - 1][0] : -Infinity;
    into[id] = pts.concat(live.filter(p => p[0] > last)).slice(-CAP);
  }
  if (state) renderCharts();
}

function renderCharts() {
  const thr = state.links.length ? Math.min(...state.links.map(l => l.qber_threshold)) : null;
  const ids = shownLinks();
  const note = state.links.length > ALL_SERIES ?
    `${ids.length} of ${state.links.length} links: the ${WORST_N} worst` + (pinned.size ? ` and ${pinned.size} pinned` : "") +
    " (pin more from the links table)" : "";
  for (const n of document.querySelectorAll(".series-note")) n.textContent = note;
  if (state.links.length > ALL_SERIES) fetchSeries(ids);
  drawChart("chart-qber", pick(series.qber, ids), { fmt: v => (100 * v).toFixed(0) + " %", threshold: thr, min_max: 0.05, ylabel: "QBER" });
  drawChart("chart-rate", pick(series.rate, ids), { fmt: v => v.toFixed(0), ylabel: "key rate (bit/s)" });
  drawChart("chart-pools", series.pools, { fmt: v => v.toFixed(0), ylabel: "pool level (keys)" });
}

function render() {
  renderKpis(); renderTopology(); renderTables(); renderAlarms(); renderCharts();
}

async function refresh() {
  const r = await fetch("/api/state");
  if (r.ok) { state = await r.json(); render(); }
}

const DEVICE_ROWS = 60;

async function loadDevices() {
  if (!state || !(state.telemetry || {}).enabled) {
    $("iot-summary").textContent = "telemetry off";
    return;
  }
  // one page of each health, worst first: 10,000 devices are not one response
  const pages = await Promise.all(["fault", "drift", ""].map(h =>
    fetch(`/api/devices?limit=${DEVICE_ROWS}` + (h ? `&health=${h}` : ""))));
  if (!pages.every(r => r.ok)) return;
  const [fault, drift, all] = await Promise.all(pages.map(r => r.json()));
  const tel = all.telemetry;
  const seen = new Set();
  const rows = [...fault.devices, ...drift.devices, ...all.devices].filter(v =>
    !seen.has(v.device_id) && seen.add(v.device_id)).slice(0, DEVICE_ROWS);
  $("iot-summary").textContent = tel.error ? `error: ${tel.error}` :
    `${all.total} devices (${fault.total} faulty, ${drift.total} drifting) · delivered ${tel.delivered ?? 0} of ${tel.sent ?? 0} in the last interval · ` +
    `p50 latency ${num(tel.latency_ms_p50, 1)} ms · QKD key bits ${tel.qkd_key_bits_consumed ?? 0}`;
  $("devices-table").tBodies[0].innerHTML = rows.map(v =>
    `<tr><td>${esc(v.device_id)}</td><td>${esc(v.kind)}</td><td>${esc(v.health)}</td><td>${num(v.t, 0)}</td>` +
    `<td>${esc(Object.entries(v.values || {}).map(([k, x]) => `${k}=${typeof x === "number" ? x.toFixed(2) : x}`).join(" "))}</td></tr>`).join("");
}

async function loadHistory() {
  if (state && state.links.length > ALL_SERIES) {
    await fetchSeries(shownLinks());
  } else {
    await loadLinkHistory();
  }
  const p = await fetch("/api/history?prefix=pool:");
  if (p.ok) {
    const hp = await p.json();
    for (const [name, pts] of Object.entries(hp)) {
      const [, id, what] = name.split(":");
      if (what === "level" && Object.keys(series.pools).length < 30) series.pools[id] = pts.slice(-CAP);
    }
  }
}

async function loadLinkHistory() {
  const r = await fetch("/api/history?prefix=link:");
  if (!r.ok) return;
  const h = await r.json();
  for (const [name, pts] of Object.entries(h)) {
    const [, id, what] = name.split(":");
    if (what === "qber") series.qber[id] = pts.slice(-CAP);
    if (what === "key_rate_bps") series.rate[id] = pts.slice(-CAP);
  }
}

function connect() {
  const es = new EventSource("/api/events");
  es.onopen = () => { $("kpi-conn").textContent = "live"; };
  es.onerror = () => { $("kpi-conn").textContent = "reconnecting"; };
  es.addEventListener("tick", ev => {
    const d = JSON.parse(ev.data);
    state = d.state; recordTick(); render();
  });
  const urgent = ev => {
    const d = JSON.parse(ev.data);
    if (state && d.alarm) {
      const l = state.links.find(x => x.id === d.alarm.link);
      if (l) l.status = d.type === "alarm" ? "alarm" : "up";
      state.alarms = [d.alarm, ...state.alarms.filter(a => a.id !== d.alarm.id)];
      render();
    }
    refresh();
  };
  for (const t of ["alarm", "restored", "attack", "clear"]) es.addEventListener(t, urgent);
}

async function post(url, body) {
  const r = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body) });
  const d = await r.json();
  if (!r.ok) {
    const msg = d.message || (d.detail && d.detail.map ? d.detail.map(e => `${e.loc.join(".")}: ${e.msg}`).join("; ") : JSON.stringify(d));
    throw new Error(msg);
  }
  return d;
}

$("topo-back").addEventListener("click", () => { region = null; renderTopology(); });

$("link-search").addEventListener("input", ev => { query = ev.target.value.trim(); renderTables(); });
$("link-search").addEventListener("keydown", ev => {
  // Enter: the map shows the region of the first node or link that matches
  if (ev.key !== "Enter" || !state || !query) return;
  ev.preventDefault();
  const q = query.toLowerCase();
  const n = state.nodes.find(x => x.id.toLowerCase() === q) || state.nodes.find(x => x.id.toLowerCase().includes(q));
  const l = state.links.find(x => x.id.toLowerCase().includes(q));
  const node = n ? n.id : l ? l.a : null;
  if (node && state.nodes.length > FULL_MAP_NODES) { region = regions().get(node); renderTopology(); }
});

$("links-table").tBodies[0].addEventListener("click", ev => {
  // pin / unpin a link's series in the charts
  const tr = ev.target.closest("tr[data-link]");
  if (!tr) return;
  const id = tr.dataset.link;
  if (pinned.has(id)) pinned.delete(id); else pinned.add(id);
  renderTables(); renderCharts();
});

$("attack-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const link = $("attack-link").value, msg = $("attack-msg");
  try {
    const d = await post(`/api/links/${encodeURIComponent(link)}/attack`,
      { type: $("attack-type").value, fraction: Number($("attack-fraction").value) });
    msg.className = "msg"; msg.textContent = `attack on ${d.id}: QBER ${pct(d.alarm_qber)}, status ${d.status}`;
    await refresh();
  } catch (e) { msg.className = "msg err"; msg.textContent = e.message; }
});

$("clear-btn").addEventListener("click", async () => {
  const link = $("attack-link").value, msg = $("attack-msg");
  try {
    const d = await post(`/api/links/${encodeURIComponent(link)}/clear`, {});
    msg.className = "msg"; msg.textContent = `cleared ${d.id}: status ${d.status}`;
    await refresh();
  } catch (e) { msg.className = "msg err"; msg.textContent = e.message; }
});

$("whatif-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const set = {};
  for (const k of ["V", "C", "X", "load"]) {
    const v = $("wi-" + k).value;
    if (v !== "") set[k] = Number(v);
  }
  const body = { set, window_s: Number($("wi-window").value) };
  if ($("wi-policy").value) body.policy = $("wi-policy").value;
  const msg = $("whatif-msg");
  msg.className = "msg"; msg.textContent = "running…";
  try {
    const d = await post("/api/what-if", body);
    msg.textContent = `done in ${num(d.elapsed_s * 1000, 1)} ms (${d.services} services simulated)`;
    const p = d.params;
    const w = d.live.window || {};
    const H = num(w.seconds ?? 0, 0);
    let html = `<p id="whatif-summary">same horizon, <b>${H} s</b>: predicted <b>${pct(d.success_rate)}</b> over the next ${H} s` +
      ` from ${p.start === "present" ? "the pools' present levels" : "the scenario's initial fill"}` +
      ` vs live <b>${pct(w.success_rate)}</b> over the last ${H} s` +
      `${(w.seconds ?? 0) + 1e-9 < Number($("wi-window").value) ? " (all the twin has lived so far)" : ""}` +
      ` (since start ${pct(d.live.success_rate)})` +
      ` · policy ${esc(p.policy)} · C=${p.C} · X=${p.X}${p.V ? " · V=" + p.V : ""} · load ${num(p.load, 3)}/s` +
      `${p.links_down.length ? " · links down: " + esc(p.links_down.join(", ")) : ""}</p>`;
    html += `<table id="whatif-table"><thead><tr><th>pair</th><th>predicted, next ${H} s</th>` +
      `<th>live, last ${H} s</th><th>live, since start</th></tr></thead><tbody>` +
      d.pools.map(x => `<tr><td>${esc(x.id)}</td><td>${pct(x.success_rate)}</td>` +
        `<td>${pct(x.live_window_success_rate)}</td><td>${pct(x.live_success_rate)}</td></tr>`).join("") +
      `</tbody></table>`;
    if (d.unreachable.length) html += `<p class="muted">unreachable: ${esc(d.unreachable.join(", "))}</p>`;
    $("whatif-result").innerHTML = html;
  } catch (e) { msg.className = "msg err"; msg.textContent = e.message; }
});

(async () => {
  await refresh();
  await loadHistory();
  if (state) renderCharts();
  connect();
  loadDevices();
  setInterval(loadDevices, 3000);
})();
