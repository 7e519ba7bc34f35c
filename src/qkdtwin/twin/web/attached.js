// Dashboard of the attached twin: polls /api/state (and the selected link's /api/history) once a
// second. Everything shown is estimated from telemetry (with its 95 % interval) or observed.
"use strict";
const $ = (s) => document.querySelector(s);
const SVGNS = "http://www.w3.org/2000/svg";
const isNum = (x) => x !== null && x !== undefined && !Number.isNaN(Number(x));
const fmt = (x, d = 2) => (isNum(x) ? Number(x).toFixed(d) : "–");
const pct = (x, d = 2) => (isNum(x) ? (100 * x).toFixed(d) + " %" : "–");
const clock = (t) => (isNum(t) ? new Date(t * 1000).toISOString().slice(11, 19) : "–");
const ui = { selected: null, chosen: false, st: null, busy: false, chartSeq: 0 };

function el(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function h(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

// ---------------------------------------------------------------- geometry helpers
function segHitsRect(p, q, r) {
  // Liang–Barsky: does segment p-q meet the rectangle r = {x0, y0, x1, y1}?
  let t0 = 0, t1 = 1;
  const dx = q[0] - p[0], dy = q[1] - p[1];
  const tests = [[-dx, p[0] - r.x0], [dx, r.x1 - p[0]], [-dy, p[1] - r.y0], [dy, r.y1 - p[1]]];
  for (const [pp, qq] of tests) {
    if (pp === 0) { if (qq < 0) return false; continue; }
    const t = qq / pp;
    if (pp < 0) { if (t > t1) return false; if (t > t0) t0 = t; } else { if (t < t0) return false; if (t < t1) t1 = t; }
  }
  return true;
}

function circleHitsRect(c, rad, r) {
  const x = Math.max(r.x0, Math.min(c[0], r.x1)), y = Math.max(r.y0, Math.min(c[1], r.y1));
  return Math.hypot(c[0] - x, c[1] - y) < rad;
}

function rectsOverlap(a, b) {
  return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
}

function distToSeg(c, p, q) {
  const dx = q[0] - p[0], dy = q[1] - p[1], L2 = dx * dx + dy * dy || 1;
  const t = Math.max(0, Math.min(1, ((c[0] - p[0]) * dx + (c[1] - p[1]) * dy) / L2));
  return Math.hypot(c[0] - p[0] - t * dx, c[1] - p[1] - t * dy);
}

// ---------------------------------------------------------------- topology
const NODE_R = 18;

function linkShapes(st, pos) {
  // a straight line, or a quadratic curve when the straight line would pass through another node
  const shapes = [];
  for (const l of st.links) {
    const p = pos[l.a], q = pos[l.b];
    if (!p || !q) continue;
    const dx = q[0] - p[0], dy = q[1] - p[1], len = Math.hypot(dx, dy) || 1;
    const others = st.nodes.filter((n) => n.id !== l.a && n.id !== l.b).map((n) => pos[n.id]);
    const blocked = others.some((c) => distToSeg(c, p, q) < NODE_R + 6);
    if (!blocked) {
      shapes.push({ link: l, pts: [p, q], d: `M${p[0]},${p[1]} L${q[0]},${q[1]}`, side: 0 });
      continue;
    }
    let nx = -dy / len, ny = dx / len;
    const cross = (c) => (c[0] - p[0]) * nx + (c[1] - p[1]) * ny;
    const plus = others.filter((c) => cross(c) > 0).length, minus = others.filter((c) => cross(c) < 0).length;
    if (plus > minus || (plus === minus && ny > 0)) { nx = -nx; ny = -ny; }
    const bulge = Math.min(0.35 * len, 90);
    const c = [(p[0] + q[0]) / 2 + nx * bulge, (p[1] + q[1]) / 2 + ny * bulge];
    const pts = [];
    for (let i = 0; i <= 32; i++) {
      const t = i / 32, u = 1 - t;
      pts.push([u * u * p[0] + 2 * u * t * c[0] + t * t * q[0], u * u * p[1] + 2 * u * t * c[1] + t * t * q[1]]);
    }
    shapes.push({ link: l, pts, d: `M${p[0]},${p[1]} Q${c[0]},${c[1]} ${q[0]},${q[1]}`, side: 1, normal: [nx, ny] });
  }
  return shapes;
}

function pointAt(pts, t) {
  // point and unit tangent at fraction t of a polyline (by segment count, fine for placement)
  const n = pts.length - 1, f = Math.min(n - 1e-9, Math.max(0, t * n)), i = Math.floor(f), r = f - i;
  const a = pts[i], b = pts[i + 1];
  const dx = b[0] - a[0], dy = b[1] - a[1], len = Math.hypot(dx, dy) || 1;
  return [[a[0] + r * dx, a[1] + r * dy], [dx / len, dy / len]];
}

function estimateText(e) {
  if (!e || !isNum(e.loss_db)) return "no estimate yet";
  const ci = e.loss_db_ci || [null, null];
  return `${fmt(e.loss_db)} dB [${fmt(ci[0])}, ${fmt(ci[1])}]`;
}

function drawTopology(st) {
  const svg = $("#topology");
  // drawn in CSS pixels (the viewBox follows the element's width), so text keeps its size
  const W = Math.max(320, Math.round(svg.clientWidth || 1000)), H = 350;
  const padX = 64, top = 76, bottom = H - 30; // room above the top row for curved links
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const ys = st.nodes.map((n) => n.y), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const pos = {};
  for (const n of st.nodes) {
    pos[n.id] = [padX + n.x * (W - 2 * padX), y1 > y0 ? top + (n.y - y0) / (y1 - y0) * (bottom - top) : H / 2];
  }
  const shapes = linkShapes(st, pos);
  const gLinks = el("g", { class: "links" }), gLabels = el("g", { class: "labels" }), gNodes = el("g", { class: "nodes" });
  svg.append(gLinks, gLabels, gNodes);
  for (const s of shapes) {
    const l = s.link;
    if (l.id === ui.selected) gLinks.append(el("path", { d: s.d, class: "halo" }));
    const path = el("path", {
      d: s.d, class: `link ${l.status}${l.id === ui.selected ? " selected" : ""}`,
      "data-link": l.id, "data-status": l.status,
    });
    path.append(el("title", {}, `${l.id} (${l.status}): estimated channel loss ${estimateText(l.estimate)}, 95 % interval`));
    path.addEventListener("click", () => selectLink(l.id));
    gLinks.append(path);
  }
  // labels beside their link: candidates along the link on either side, first one that hits
  // no other link, node or label wins
  const placed = [];
  const gap = 7;
  for (const s of shapes) {
    const l = s.link;
    const g = el("g", { class: `est-label ${l.status}`, "data-link": l.id });
    const bg = el("rect", { class: "est-bg", rx: 3 });
    const text = el("text", { class: `est ${l.status}`, "data-link": l.id, x: 0, y: 0, "text-anchor": "middle" }, estimateText(l.estimate));
    g.append(bg, text);
    gLabels.append(g);
    const bb = text.getBBox();
    const w = bb.width + 6, hh = bb.height + 2;
    const mid = pointAt(s.pts, 0.5)[0];
    const nb = st.links.filter((o) => o.id !== l.id && [l.a, l.b].some((x) => x === o.a || x === o.b))
      .flatMap((o) => [pos[o.a], pos[o.b]]).filter((c) => c);
    const cands = [];
    for (const t of [0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78]) {
      const [p, tan] = pointAt(s.pts, t);
      for (const sgn of [1, -1]) {
        const n = [-tan[1] * sgn, tan[0] * sgn];
        const ext = Math.abs(n[0]) * w / 2 + Math.abs(n[1]) * hh / 2;
        const c = [p[0] + n[0] * (gap + ext), p[1] + n[1] * (gap + ext)];
        const box = { x0: c[0] - w / 2, y0: c[1] - hh / 2, x1: c[0] + w / 2, y1: c[1] + hh / 2 };
        let cost = Math.abs(t - 0.5) * 4;
        // prefer the side away from the neighbouring links (and the outside of a curve)
        const away = nb.length ? nb.reduce((acc, q) => acc + Math.sign((q[0] - mid[0]) * n[0] + (q[1] - mid[1]) * n[1]), 0) : 0;
        cost += away > 0 ? 0.5 : 0;
        if (s.normal && n[0] * s.normal[0] + n[1] * s.normal[1] < 0) cost += 0.5;
        if (box.x0 < 2 || box.y0 < 2 || box.x1 > W - 2 || box.y1 > H - 2) cost += 100;
        for (const o of shapes) {
          for (let i = 0; i + 1 < o.pts.length; i++) if (segHitsRect(o.pts[i], o.pts[i + 1], box)) { cost += 100; break; }
        }
        for (const nid in pos) if (circleHitsRect(pos[nid], NODE_R + 3, box)) cost += 100;
        for (const b of placed) if (rectsOverlap(b, box)) cost += 100;
        cands.push([cost, box]);
      }
    }
    cands.sort((a, b) => a[0] - b[0]);
    const box = cands[0][1];
    placed.push(box);
    text.setAttribute("x", (box.x0 + box.x1) / 2 - (bb.x + bb.width / 2));
    text.setAttribute("y", (box.y0 + box.y1) / 2 - (bb.y + bb.height / 2));
    for (const [k, v] of Object.entries({ x: box.x0, y: box.y0, width: w, height: hh })) bg.setAttribute(k, v);
    g.addEventListener("click", () => selectLink(l.id));
  }
  for (const n of st.nodes) {
    const g = el("g", { class: "node " + n.role, "data-node": n.id });
    g.append(el("circle", { cx: pos[n.id][0], cy: pos[n.id][1], r: NODE_R }));
    g.append(el("text", { x: pos[n.id][0], y: pos[n.id][1] + 4 }, n.id));
    gNodes.append(g);
  }
}

// ---------------------------------------------------------------- tables
function rows(tbody, data, cells) {
  tbody.replaceChildren();
  for (const d of data) {
    const tr = document.createElement("tr");
    for (const [content, cls] of cells(d)) {
      const td = document.createElement("td");
      if (content instanceof Node) td.append(content); else td.textContent = content;
      if (cls) td.className = cls;
      tr.append(td);
    }
    tbody.append(tr);
  }
  return tbody;
}

function withCi(v, lohi, d, scale = 1, unit = "") {
  // "8.56 [8.54, 8.59]": the estimate, then its 95 % interval in muted type
  const span = h("span", "ci-cell");
  span.append(h("span", "val", isNum(v) ? fmt(v * scale, d) + unit : "–"));
  if (lohi && isNum(lohi[0])) span.append(h("span", "ci", ` [${fmt(lohi[0] * scale, d)}, ${fmt(lohi[1] * scale, d)}]`));
  return span;
}

// ---------------------------------------------------------------- alarms
function alarmDetail(a) {
  const ev = a.evidence || {}, post = ev.post_change || {}, ref = ev.reference || {};
  const out = [];
  if (isNum(ev.cusum) && isNum(ev.threshold)) out.push(`CUSUM ${fmt(ev.cusum, 1)} > threshold ${fmt(ev.threshold, 1)}`);
  if (isNum(post.loss_change_db)) {
    out.push(`loss step ${post.loss_change_db >= 0 ? "+" : ""}${fmt(post.loss_change_db)} dB` +
      (isNum(ref.loss_db) ? ` from ${fmt(ref.loss_db)} dB` : ""));
  }
  if (isNum(post.relative_drop)) out.push(`decoy gain ratio ${fmt(-100 * post.relative_drop, 0)} % vs its reference`);
  return out.join(" · ");
}

function eventsText(events) {
  const parts = [];
  for (const e of events) {
    const last = parts[parts.length - 1];
    if (last && last[0] === e.what) last[1] += 1; else parts.push([e.what, 1]);
  }
  return parts.map(([w, n]) => (n > 1 ? `${w} ×${n}` : w)).join(" → ");
}

function drawAlarms(st) {
  const ol = $("#alarms");
  ol.replaceChildren();
  if (!st.alarms.length) { ol.append(h("li", "muted none", "none")); return; }
  for (const a of st.alarms.slice(0, 30)) {
    const li = h("li", "alarm " + (a.active ? "active" : "closed"));
    li.dataset.link = a.link;
    li.dataset.kind = a.kind;
    const head = h("div", "a-head");
    head.append(h("span", "a-id", `#${a.id}`), h("span", "a-link", a.link), h("span", "a-kind", a.kind),
      h("span", "badge " + (a.active ? "active" : "closed"), a.active ? "active" : "closed"));
    li.append(head);
    const when = `raised ${clock(a.raised_at)}` + (isNum(a.delay_s) ? `, ${fmt(a.delay_s, 0)} s after the estimated onset` : "");
    li.append(h("div", "a-when", when));
    const det = alarmDetail(a);
    if (det) li.append(h("div", "a-stat", det));
    if (a.suspected.length) li.append(h("div", "a-sens", `statistic sensitive to: ${a.suspected.join(", ")}`));
    const acts = a.events.filter((e) => e.what === "actuated" || e.what === "would-actuate");
    const stops = acts.filter((e) => e.detail.action === "disable");
    if (acts.length) {
      const done = stops.filter((e) => isNum(e.detail.effect_at));
      const slow = done.length ? Math.max(...done.map((e) => e.detail.effect_at - e.detail.planned_at)) : null;
      const bad = acts.filter((e) => e.detail.error).length;
      li.append(h("div", "a-act", acts[0].what === "actuated"
        ? `closed loop: link disabled at ${done.length} of ${stops.length} KMEs` + (isNum(slow) ? ` in ${fmt(slow, 2)} s` : "") +
          `, ${acts.length} actions${bad ? `, ${bad} failed` : ""}`
        : `closed loop off: ${acts.length} actions logged, none sent`));
    }
    if (isNum(a.exposed_keys)) li.append(h("div", "a-sens", `keys delivered from the link since the onset: ${a.exposed_keys}`));
    if (a.events.length) li.append(h("div", "ev", eventsText(a.events)));
    li.title = a.message || "";
    li.addEventListener("click", () => selectLink(a.link));
    ol.append(li);
  }
}

// ---------------------------------------------------------------- charts
function niceTicks(lo, hi, n = 5) {
  // round tick values (1, 2, 2.5, 5 x 10^k) inside [lo, hi]: at most n + 1, at least 3
  const span = hi - lo || 1;
  const nice = (k) => { const mag = Math.pow(10, Math.floor(k / 4)); return [1, 2, 2.5, 5][((k % 4) + 4) % 4] * mag; };
  let k = 4 * Math.floor(Math.log10(span / n));
  while (nice(k) < span / n) k++;
  const make = (step) => {
    const out = [];
    for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * span; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return out;
  };
  while (make(nice(k)).length < 3) k--;
  const step = nice(k), ticks = make(step);
  const digits = Math.max(0, ...[step, ...ticks].map((v) => { const s = String(+v.toPrecision(12)); return s.includes(".") ? s.split(".")[1].length : 0; }));
  return { ticks, digits: Math.min(digits, 6) };
}

function drawChart(svg, series, opts) {
  // series: [[t, y, lo, hi], ...]: axes with ticks and units, a legend, the alarms of the link
  svg.replaceChildren();
  svg.dataset.link = opts.link;
  const W = Math.max(260, Math.round(svg.clientWidth || 420)), H = 230, L = 52, R = 14, B = 36;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.append(el("text", { x: 8, y: 15, class: "title" }, opts.title));
  const pts = series.filter((p) => isNum(p[1]));
  // legend under the title: items laid out by their measured widths, wrapping to a new row
  const lg = el("g", { class: "legend" });
  svg.append(lg);
  let lx = 8, ly = 32;
  const item = (draw, label) => {
    const t = el("text", { x: 0, y: 0 }, label);
    lg.append(t);
    const w = 18 + t.getComputedTextLength();
    if (lx > 8 && lx + w > W - 6) { lx = 8; ly += 16; }
    t.setAttribute("x", lx + 18);
    t.setAttribute("y", ly);
    lg.append(...draw(lx, ly));
    lx += w + 14;
  };
  item((x, y) => [el("line", { x1: x, x2: x + 14, y1: y - 4, y2: y - 4, class: opts.line })], opts.legend);
  if (opts.band) item((x, y) => [el("rect", { x, y: y - 9, width: 14, height: 10, class: "band" })], "95 % interval");
  const alarms = (opts.alarms || []).filter((a) => isNum(a.raised_at));
  if (alarms.length) {
    item((x, y) => [el("line", { x1: x + 7, x2: x + 7, y1: y - 10, y2: y + 2, class: "alarm-mark" })], "alarm raised");
    if (alarms.some((a) => isNum(a.onset))) {
      item((x, y) => [el("line", { x1: x + 7, x2: x + 7, y1: y - 10, y2: y + 2, class: "onset-mark" })], "estimated onset");
    }
  }
  const T = ly + 14;
  if (pts.length < 2) { svg.append(el("text", { x: L, y: (T + H - B) / 2, class: "waiting" }, "waiting for data")); return; }
  const t0 = pts[0][0], t1 = pts[pts.length - 1][0];
  const sc = opts.scale || 1;
  let lo = Math.min(...pts.map((p) => (isNum(p[2]) ? p[2] : p[1]))) * sc;
  let hi = Math.max(...pts.map((p) => (isNum(p[3]) ? p[3] : p[1]))) * sc;
  if (hi - lo < 1e-9) { hi += 0.5 * (Math.abs(hi) || 1); lo -= 0.5 * (Math.abs(lo) || 1); }
  const padY = 0.06 * (hi - lo);
  lo -= padY; hi += padY;
  const sx = (t) => L + (t - t0) / Math.max(t1 - t0, 1e-9) * (W - L - R);
  const sy = (y) => T + (1 - (y * sc - lo) / (hi - lo)) * (H - T - B);
  const syv = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const plot = el("g", { class: "plot" });
  const axes = el("g", { class: "axes" });
  const yt = niceTicks(lo, hi, 4);
  for (const v of yt.ticks) {
    axes.append(el("line", { x1: L, x2: W - R, y1: syv(v), y2: syv(v), class: "grid" }));
    axes.append(el("text", { x: L - 5, y: syv(v) + 3.5, "text-anchor": "end", class: "tick-label y" }, v.toFixed(yt.digits)));
  }
  const xt = niceTicks(t0 - t1, 0, 5);
  for (const v of xt.ticks) {
    const x = sx(t1 + v);
    axes.append(el("line", { x1: x, x2: x, y1: H - B, y2: H - B + 4, class: "axis" }));
    axes.append(el("text", { x, y: H - B + 15, "text-anchor": "middle", class: "tick-label x" }, v.toFixed(xt.digits)));
  }
  axes.append(el("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  axes.append(el("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  axes.append(el("text", { x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle", class: "axis-label x" }, "time, s (0 = newest interval)"));
  const my = (T + H - B) / 2;
  axes.append(el("text", { x: 13, y: my, transform: `rotate(-90 13 ${my})`, "text-anchor": "middle", class: "axis-label y" }, opts.ylabel));
  svg.append(axes, plot);
  if (opts.band) {
    const bp = pts.filter((p) => isNum(p[2]) && isNum(p[3]));
    if (bp.length > 1) {
      const up = bp.map((p) => `${sx(p[0])},${sy(p[3])}`).join(" ");
      const dn = bp.slice().reverse().map((p) => `${sx(p[0])},${sy(p[2])}`).join(" ");
      plot.append(el("polygon", { points: up + " " + dn, class: "band" }));
    }
  }
  plot.append(el("polyline", { points: pts.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" "), class: opts.line }));
  for (const a of alarms) {
    if (isNum(a.onset) && a.onset >= t0 && a.onset <= t1) {
      plot.append(el("line", { x1: sx(a.onset), x2: sx(a.onset), y1: T, y2: H - B, class: "onset-mark" }));
    }
    if (a.raised_at >= t0 && a.raised_at <= t1) {
      const x = sx(a.raised_at);
      plot.append(el("line", { x1: x, x2: x, y1: T, y2: H - B, class: "alarm-mark", "data-alarm": a.id }));
      const tag = el("text", { x: x + 3, y: T + 10, class: "alarm-tag" }, `#${a.id} ${a.kind}`);
      plot.append(tag);
      if (x + 3 + tag.getComputedTextLength() > W - R) { tag.setAttribute("x", x - 3); tag.setAttribute("text-anchor", "end"); }
    }
  }
}

async function drawCharts() {
  const link = ui.selected, st = ui.st;
  if (!link || !st) return;
  const seq = ++ui.chartSeq;
  let hist;
  try {
    hist = (await (await fetch("/api/history?link=" + encodeURIComponent(link))).json())[link] || [];
  } catch { return; }
  if (seq !== ui.chartSeq || link !== ui.selected) return; // a newer draw is under way
  const alarms = st.alarms.filter((a) => a.link === link);
  drawChart($("#chart-loss"), hist.map((r) => [r[0], r[1], r[2], r[3]]), {
    link, title: `${link}: estimated channel loss`, ylabel: "channel loss, dB",
    legend: "estimate (maximum likelihood)", line: "est-line", band: true, alarms,
  });
  drawChart($("#chart-qber"), hist.map((r) => [r[0], r[4], null, null]), {
    link, title: `${link}: QBER per interval (signal)`, ylabel: "QBER, %", scale: 100,
    legend: "observed QBER", line: "q-line", band: false, alarms,
  });
}

function selectLink(id) {
  const sel = $("#sel-link");
  if (![...sel.options].some((o) => o.value === id)) return;
  ui.selected = id;
  ui.chosen = true;
  sel.value = id;
  if (ui.st) drawTopology(ui.st);
  for (const tr of document.querySelectorAll("#links tbody tr")) tr.classList.toggle("selected", tr.dataset.link === id);
  drawCharts();
}

// ---------------------------------------------------------------- refresh
async function refresh() {
  if (ui.busy) return;
  ui.busy = true;
  try {
    let st;
    try { st = await (await fetch("/api/state")).json(); } catch { return; }
    ui.st = st;
    $("#name").textContent = st.name + (st.replay ? " (replay)" : "");
    $("#k-t").textContent = clock(st.t);
    const c = (s) => st.links.filter((l) => l.status === s).length;
    $("#k-links").textContent = `${c("up")} / ${c("alarm") + c("recovering")} / ${c("stale")}`;
    $("#k-alarms").textContent = st.active_alarms;
    $("#k-alarms").parentElement.classList.toggle("alarmed", st.active_alarms > 0);
    const ig = st.ingest.counts;
    const rej = ["malformed", "unknown_link", "version_mismatch", "duplicate", "late", "topic_mismatch"]
      .reduce((s, k) => s + (ig[k] || 0), 0);
    $("#k-ingest").textContent = `${ig.accepted || 0} / ${rej}`;
    $("#k-kmes").textContent = `${st.kmes.filter((k) => k.status === "ok").length} / ${st.kmes.length}`;
    $("#k-arl").textContent = `${fmt(st.arl_days, 0)} days`;
    $("#k-act").textContent = st.actuation === "on" ? "acting on KMEs" : (st.replay ? "off (replay)" : "off: logged only");
    const sel = $("#sel-link");
    if (!sel.options.length && st.links.length) {
      for (const l of st.links) sel.append(new Option(l.id, l.id));
      sel.addEventListener("change", () => selectLink(sel.value));
    }
    if (!ui.chosen) {
      // until the user picks one: the link of the newest active alarm, else the first link
      const a = st.alarms.find((x) => x.active);
      ui.selected = a ? a.link : (st.links[0] ? st.links[0].id : null);
      if (ui.selected) sel.value = ui.selected;
    }
    drawTopology(st);
    drawAlarms(st);
    rows($("#links tbody"), st.links, (l) => [
      [l.id, "id"], [l.status, "st-" + l.status], [l.source, "st-" + (l.source === "ok" ? "ok" : "stale")],
      [withCi(l.estimate.loss_db, l.estimate.loss_db_ci, 2), "num"],
      [withCi(l.estimate.qber, l.estimate.qber_ci, 2, 100, " %"), "num"],
      [fmt(l.estimate.key_rate_bps, 0), "num"], [l.last_seq ?? "–", "num"],
    ]);
    for (const tr of $("#links tbody").children) {
      const id = tr.firstChild.textContent;
      tr.dataset.link = id;
      tr.classList.toggle("selected", id === ui.selected);
      tr.onclick = () => selectLink(id);
    }
    rows($("#kmes tbody"), st.kmes, (k) => [
      [k.node], [k.error ? "stale: " + k.error.slice(0, 40) : k.status, "st-" + (k.status === "ok" ? "up" : "stale")],
      [k.links.reduce((s, l) => s + l.available, 0), "num"], [k.links.reduce((s, l) => s + l.delivered_total, 0), "num"],
      [fmt(k.links.reduce((s, l) => s + (l.consumption_keys_per_s || 0), 0), 2), "num"],
    ]);
    rows($("#saes tbody"), st.sae_pairs || [], (p) => [
      [`${p.master_sae_id || "?"} → ${p.slave_sae_id} @ ${p.kme}`],
      [p.error ? "stale: " + p.error.slice(0, 40) : p.status, "st-" + (p.status === "ok" ? "up" : "stale")],
      [p.stored_key_count ?? "–", "num"],
    ]);
    // forecasts: stores that warn first, then by median time to empty (never last)
    const fc = [];
    for (const k of st.kmes) for (const l of k.links) if (l.forecast) fc.push({ id: `${k.node}→${l.peer}`, f: l.forecast });
    const ttd = (f) => (f.ttd_s === null ? Infinity : f.ttd_s);
    fc.sort((a, b) => (b.f.warning - a.f.warning) || (ttd(a.f) - ttd(b.f)));
    const dur = (s) => (s === null ? "never" : s < 120 ? `${s.toFixed(0)} s` : s < 7200 ? `${(s / 60).toFixed(0)} min` : `${(s / 3600).toFixed(1)} h`);
    rows($("#forecasts tbody"), fc.slice(0, 12), ({ id, f }) => [
      [id], [f.level, "num"], [fmt(f.drift_keys_per_s, 2), "num"],
      [`${dur(f.ttd_s)} [${dur(f.ttd_interval_s[0])}, ${dur(f.ttd_interval_s[1])}]${f.warning ? " ⚠" : ""}`, f.warning ? "num st-alarm" : "num"],
    ]);
    rows($("#routes tbody"), st.routes, (r) => [
      [r.id], [r.hops ?? "cut", r.hops === null ? "st-alarm" : "num"], [r.path ? r.path.join("–") : "no path", "path"],
    ]);
    rows($("#ingest tbody"), Object.entries(ig).filter(([, v]) => v), ([k, v]) => [[k], [v, "num"]]);
    rows($("#devices tbody"), st.devices.slice(0, 40), (d) => [[d.id], [d.status], [d.messages, "num"], [d.gaps, "num"]]);
    const rd = st.readings || { devices: [], note: "" };
    $("#readings-note").textContent = rd.source === "decrypted" ? `decrypted (${rd.counters.delivered || 0} readings)` : rd.note;
    rows($("#readings tbody"), rd.devices.slice(0, 40), (d) => [
      [d.id], [d.kind],
      [Object.entries(d.values).map(([k, v]) => `${k} ${fmt(v, 2)}`).join(", ")], [fmt(d.t, 1), "num"],
    ]);
    await drawCharts();
  } finally {
    ui.busy = false;
  }
}

refresh();
setInterval(refresh, 1000);
