// qkdtwin live dashboard: vanilla JavaScript + SVG, served by the twin itself (no CDN).
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const CAP = 300;                       // points kept per chart series in the browser
const COLORS = ["#4cc9f0", "#f72585", "#b5e48c", "#ffd166", "#9d4edd", "#06d6a0", "#ef476f",
  "#118ab2", "#f4a261", "#e9c46a", "#90be6d", "#f94144", "#577590", "#43aa8b", "#f8961e"];
let state = null;
const series = { qber: {}, rate: {}, pools: {} };

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

function renderTopology() {
  const svg = $("topology");
  const W = 1000, H = 420;
  svg.replaceChildren();
  const pos = {};
  for (const n of state.nodes) pos[n.id] = [30 + n.x * (W - 60), 70 + n.y * (H - 90)];
  const ctrl = (a, b) => {
    // links inside one row (a metro ring) are drawn as arcs so that they never overlap
    const [x1, y1] = pos[a], [x2, y2] = pos[b];
    const bend = Math.abs(y1 - y2) < 1 ? Math.min(95, 0.12 * Math.abs(x2 - x1)) : 0;
    return [(x1 + x2) / 2, (y1 + y2) / 2 - bend];
  };
  for (const l of state.links) {
    const [x1, y1] = pos[l.a], [x2, y2] = pos[l.b];
    const [cx, cy] = ctrl(l.a, l.b);
    const path = el("path", { d: `M ${x1} ${y1} Q ${cx} ${cy} ${x2} ${y2}`, fill: "none",
      class: "link " + linkClass(l), "data-link": l.id, "data-status": l.status });
    path.appendChild(el("title", {}, `${l.id}: ${l.status}, QBER ${pct(l.qber)}, ${num(l.key_rate_bps, 0)} bit/s`));
    svg.appendChild(path);
    if (state.nodes.length <= 40) {
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
  renderRoutes(svg, pos, ctrl);
  const r = state.nodes.length > 60 ? 5 : 16;
  for (const n of state.nodes) {
    const [x, y] = pos[n.id];
    const g = el("g", { class: "node " + n.role, "data-node": n.id });
    g.appendChild(el("circle", { cx: x, cy: y, r }));
    g.appendChild(el("title", {}, `${n.id} (${n.role})`));
    if (state.nodes.length <= 60) g.appendChild(el("text", { x, y: y + r + 14 }, n.id));
    svg.appendChild(g);
  }
}

function hopKey(a, b) { return a < b ? `${a}-${b}` : `${b}-${a}`; }

function renderRoutes(svg, pos, ctrl) {
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
  for (const l of state.links) {
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
      if (was.has(hopKey(ps[k], ps[k + 1]))) continue;
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
  lb.innerHTML = state.links.map(l => `<tr data-link="${esc(l.id)}"><td>${esc(l.id)}</td>` +
    `<td class="st-${l.status}">${l.status}${l.attack ? " ⚠" : ""}</td><td>${pct(l.qber)}</td>` +
    `<td>${pct(l.qber_threshold)}</td><td>${num(l.key_rate_bps, 0)}</td><td>${l.keys.available}</td>` +
    `<td>${ppCell(l.postprocess)}</td></tr>`).join("");
  const pb = $("pools-table").tBodies[0];
  pb.innerHTML = state.pools.slice(0, 200).map(p => `<tr><td>${esc(p.id)}</td><td>${num(p.level, 0)}/${num(p.capacity, 0)}</td>` +
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

function renderCharts() {
  const thr = state.links.length ? Math.min(...state.links.map(l => l.qber_threshold)) : null;
  drawChart("chart-qber", series.qber, { fmt: v => (100 * v).toFixed(0) + " %", threshold: thr, min_max: 0.05, ylabel: "QBER" });
  drawChart("chart-rate", series.rate, { fmt: v => v.toFixed(0), ylabel: "key rate (bit/s)" });
  drawChart("chart-pools", series.pools, { fmt: v => v.toFixed(0), ylabel: "pool level (keys)" });
}

function render() {
  renderKpis(); renderTopology(); renderTables(); renderAlarms(); renderCharts();
}

async function refresh() {
  const r = await fetch("/api/state");
  if (r.ok) { state = await r.json(); render(); }
}

async function loadDevices() {
  if (!state || !(state.telemetry || {}).enabled) {
    $("iot-summary").textContent = "telemetry off";
    return;
  }
  const r = await fetch("/api/devices");
  if (!r.ok) return;
  const d = await r.json();
  const tel = d.telemetry;
  $("iot-summary").textContent = tel.error ? `error: ${tel.error}` :
    `${d.devices.length} devices · delivered ${tel.delivered ?? 0} of ${tel.sent ?? 0} in the last interval · ` +
    `p50 latency ${num(tel.latency_ms_p50, 1)} ms · QKD key bits ${tel.qkd_key_bits_consumed ?? 0}`;
  $("devices-table").tBodies[0].innerHTML = d.devices.slice(0, 60).map(v =>
    `<tr><td>${esc(v.device_id)}</td><td>${esc(v.kind)}</td><td>${esc(v.health)}</td><td>${num(v.t, 0)}</td>` +
    `<td>${esc(Object.entries(v.values || {}).map(([k, x]) => `${k}=${typeof x === "number" ? x.toFixed(2) : x}`).join(" "))}</td></tr>`).join("");
}

async function loadHistory() {
  const r = await fetch("/api/history?prefix=link:");
  if (!r.ok) return;
  const h = await r.json();
  for (const [name, pts] of Object.entries(h)) {
    const [, id, what] = name.split(":");
    if (what === "qber") series.qber[id] = pts.slice(-CAP);
    if (what === "key_rate_bps") series.rate[id] = pts.slice(-CAP);
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
