// Dashboard of the attached twin: polls /api/state and /api/history once a second.
// Everything shown is estimated from telemetry (with intervals) or observed; no truth.
"use strict";
const $ = (s) => document.querySelector(s);
const SVGNS = "http://www.w3.org/2000/svg";
const fmt = (x, d = 2) => (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(d));
const pct = (x, d = 2) => (x === null || x === undefined ? "–" : (100 * x).toFixed(d) + " %");
let selected = null;

function el(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function drawTopology(st) {
  const svg = $("#topology");
  svg.replaceChildren();
  const W = 1000, H = 420, pad = 50;
  const pos = {};
  for (const n of st.nodes) pos[n.id] = [pad + n.x * (W - 2 * pad), pad + n.y * (H - 2 * pad)];
  for (const l of st.links) {
    const [x1, y1] = pos[l.a], [x2, y2] = pos[l.b];
    svg.append(el("line", { x1, y1, x2, y2, class: "link " + l.status }));
    // label beside the link (offset perpendicular to it), never on it
    const mx = (x1 + x2) / 2, my = (y1 + y2) / 2, dx = x2 - x1, dy = y2 - y1;
    const len = Math.hypot(dx, dy) || 1, off = 16;
    const nx = -dy / len * off, ny = dx / len * off;
    const e = l.estimate;
    const txt = e.loss_db === null ? "no estimate" :
      `${fmt(e.loss_db, 1)} dB [${fmt(e.loss_db_ci && e.loss_db_ci[0], 1)}, ${fmt(e.loss_db_ci && e.loss_db_ci[1], 1)}]`;
    svg.append(el("text", { x: mx + nx, y: my + ny, class: "est " + l.status, "text-anchor": "middle" }, txt));
  }
  for (const n of st.nodes) {
    const g = el("g", { class: "node " + n.role });
    g.append(el("circle", { cx: pos[n.id][0], cy: pos[n.id][1], r: 17 }));
    g.append(el("text", { x: pos[n.id][0], y: pos[n.id][1] + 4 }, n.id));
    svg.append(g);
  }
}

function rows(tbody, data, cells) {
  tbody.replaceChildren();
  for (const d of data) {
    const tr = document.createElement("tr");
    for (const [text, cls] of cells(d)) {
      const td = document.createElement("td");
      td.textContent = text;
      if (cls) td.className = cls;
      tr.append(td);
    }
    tbody.append(tr);
  }
}

function ci(v, d, scale = 1) {
  return v ? `[${fmt(v[0] * scale, d)}, ${fmt(v[1] * scale, d)}]` : "";
}

function drawChart(svg, series, opts) {
  // series: [[t, y, lo, hi], ...]; labelled axes with ticks, a legend, the alarm times
  svg.replaceChildren();
  const W = 420, H = 200, L = 48, R = 10, T = 22, B = 30;
  const pts = series.filter((p) => p[1] !== null);
  svg.append(el("text", { x: L, y: 13, class: "title" }, opts.title));
  if (pts.length < 2) { svg.append(el("text", { x: L, y: 100 }, "waiting for data")); return; }
  const t0 = pts[0][0], t1 = pts[pts.length - 1][0];
  let lo = Math.min(...pts.map((p) => (p[2] ?? p[1]))), hi = Math.max(...pts.map((p) => (p[3] ?? p[1])));
  if (hi - lo < 1e-9) { hi += 0.5 * (Math.abs(hi) || 1); lo -= 0.5 * (Math.abs(lo) || 1); }
  const sx = (t) => L + (t - t0) / Math.max(t1 - t0, 1e-9) * (W - L - R);
  const sy = (y) => T + (1 - (y - lo) / (hi - lo)) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const y = lo + (hi - lo) * i / 4;
    svg.append(el("line", { x1: L, x2: W - R, y1: sy(y), y2: sy(y), class: "grid" }));
    svg.append(el("text", { x: L - 4, y: sy(y) + 3, "text-anchor": "end" }, (opts.scale ? y * opts.scale : y).toFixed(opts.digits)));
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + (t1 - t0) * i / 4;
    svg.append(el("text", { x: sx(t), y: H - B + 12, "text-anchor": "middle" }, ((t - t1)).toFixed(0)));
  }
  svg.append(el("text", { x: (L + W) / 2, y: H - 4, "text-anchor": "middle" }, "seconds before the newest interval"));
  svg.append(el("text", { x: 10, y: (T + H - B) / 2, transform: `rotate(-90 10 ${(T + H - B) / 2})`, "text-anchor": "middle" }, opts.ylabel));
  if (opts.band) {
    const bp = pts.filter((p) => p[2] !== null && p[3] !== null);
    if (bp.length > 1) {
      const up = bp.map((p) => `${sx(p[0])},${sy(p[3])}`).join(" ");
      const dn = bp.slice().reverse().map((p) => `${sx(p[0])},${sy(p[2])}`).join(" ");
      svg.append(el("polygon", { points: up + " " + dn, class: "band" }));
    }
  }
  svg.append(el("polyline", { points: pts.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" "), class: opts.line }));
  for (const a of opts.alarms || []) {
    if (a >= t0 && a <= t1) svg.append(el("line", { x1: sx(a), x2: sx(a), y1: T, y2: H - B, class: "alarm-mark" }));
  }
  // legend
  const lg = el("g", {});
  lg.append(el("line", { x1: W - 175, x2: W - 160, y1: 10, y2: 10, class: opts.line }));
  lg.append(el("text", { x: W - 156, y: 13 }, opts.legend));
  if (opts.band) {
    lg.append(el("rect", { x: W - 95, y: 5, width: 12, height: 10, class: "band" }));
    lg.append(el("text", { x: W - 80, y: 13 }, "95 % interval"));
  }
  if ((opts.alarms || []).length) {
    lg.append(el("line", { x1: W - 175, x2: W - 175, y1: 18, y2: 26, class: "alarm-mark" }));
    lg.append(el("text", { x: W - 170, y: 26 }, "alarm"));
  }
  svg.append(lg);
}

async function refresh() {
  let st;
  try { st = await (await fetch("/api/state")).json(); } catch { return; }
  $("#name").textContent = st.name + (st.replay ? " (replay)" : "");
  $("#k-t").textContent = st.t === null ? "–" : new Date(st.t * 1000).toISOString().slice(11, 19);
  const c = (s) => st.links.filter((l) => l.status === s).length;
  $("#k-links").textContent = `${c("up")} / ${c("alarm") + c("recovering")} / ${c("stale")}`;
  $("#k-alarms").textContent = st.active_alarms;
  const ig = st.ingest.counts;
  const rej = ["malformed", "unknown_link", "version_mismatch", "duplicate", "late", "topic_mismatch"]
    .reduce((s, k) => s + (ig[k] || 0), 0);
  $("#k-ingest").textContent = `${ig.accepted || 0} / ${rej}`;
  $("#k-kmes").textContent = `${st.kmes.filter((k) => k.status === "ok").length} / ${st.kmes.length}`;
  $("#k-arl").textContent = `${fmt(st.arl_days, 0)} days`;
  drawTopology(st);
  rows($("#links tbody"), st.links, (l) => [
    [l.id], [l.status, "st-" + l.status], [l.source],
    [`${fmt(l.estimate.loss_db, 2)} ${ci(l.estimate.loss_db_ci, 2)}`],
    [`${pct(l.estimate.qber)} ${ci(l.estimate.qber_ci, 2, 100)}`],
    [fmt(l.estimate.key_rate_bps, 0)], [l.last_seq ?? "–"],
  ]);
  const ol = $("#alarms");
  ol.replaceChildren();
  if (!st.alarms.length) { const li = document.createElement("li"); li.className = "muted"; li.textContent = "none"; ol.append(li); }
  for (const a of st.alarms.slice(0, 30)) {
    const li = document.createElement("li");
    li.className = a.active ? "active" : "";
    li.textContent = `#${a.id} ${a.link}: ${a.kind} — ${a.active ? "active" : "closed"}` +
      (a.delay_s !== null ? `, detected ${fmt(a.delay_s, 0)} s after the estimated onset` : "") +
      (a.suspected.length ? ` (sensitive to: ${a.suspected.join(", ")})` : "");
    const ev = document.createElement("div");
    ev.className = "ev";
    ev.textContent = a.events.map((e) => e.what).join(" → ");
    li.append(ev);
    ol.append(li);
  }
  rows($("#kmes tbody"), st.kmes, (k) => [
    [k.node], [k.error ? "stale: " + k.error.slice(0, 40) : k.status, "st-" + (k.status === "ok" ? "up" : "stale")],
    [k.links.reduce((s, l) => s + l.available, 0)], [k.links.reduce((s, l) => s + l.delivered_total, 0)],
    [fmt(k.links.reduce((s, l) => s + (l.consumption_keys_per_s || 0), 0), 2)],
  ]);
  rows($("#routes tbody"), st.routes, (r) => [[r.id], [r.hops ?? "cut", r.hops === null ? "st-alarm" : ""], [r.path ? r.path.join("–") : "no path"]]);
  rows($("#ingest tbody"), Object.entries(ig).filter(([, v]) => v), ([k, v]) => [[k], [v]]);
  rows($("#devices tbody"), st.devices.slice(0, 40), (d) => [[d.id], [d.status], [d.messages], [d.gaps]]);
  const sel = $("#sel-link");
  if (!sel.options.length) {
    for (const l of st.links) sel.append(new Option(l.id, l.id));
    selected = st.links[0] ? st.links[0].id : null;
    sel.onchange = () => { selected = sel.value; };
  }
  if (selected) {
    const h = (await (await fetch("/api/history?link=" + encodeURIComponent(selected))).json())[selected] || [];
    const alarms = st.alarms.filter((a) => a.link === selected).map((a) => a.raised_at);
    drawChart($("#chart-loss"), h.map((r) => [r[0], r[1], r[2], r[3]]), {
      title: `${selected}: estimated channel loss`, ylabel: "loss, dB", digits: 2,
      legend: "ML estimate", line: "est-line", band: true, alarms,
    });
    drawChart($("#chart-qber"), h.map((r) => [r[0], r[4], null, null]), {
      title: `${selected}: QBER per interval (signal)`, ylabel: "QBER, %", digits: 1, scale: 100,
      legend: "observed QBER", line: "q-line", band: false, alarms,
    });
  }
}

refresh();
setInterval(refresh, 1000);
