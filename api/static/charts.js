// Hand-written SVG charts (no libraries, works offline): line curves, a scatter with a highlighted
// front, and parallel coordinates.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d",
                   "#9333ea", "#ea580c"];

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  function text(parent, x, y, str, attrs) {
    const t = el("text", Object.assign({ x, y }, attrs || {}), parent);
    t.textContent = str;
    return t;
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "";
    if (typeof v !== "number") return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return String(Math.round(v * 1000) / 1000);
  }

  function extent(values) {
    let lo = Math.min(...values), hi = Math.max(...values);
    if (!Number.isFinite(lo)) return [0, 1];
    if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 0.5; hi += Math.abs(hi) * 0.1 || 0.5; }
    return [lo, hi];
  }

  function svg(container, width, height) {
    container.textContent = "";
    return el("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img",
                       preserveAspectRatio: "xMidYMid meet" }, container);
  }

  // Grid, ticks and the x label over the data's extent -> the scales {X, Y}.
  function axes(s, W, H, m, xs, ys, xlabel, xround) {
    const [x0, x1] = extent(xs), [y0, y1] = extent(ys);
    const X = (v) => m.l + ((v - x0) / (x1 - x0)) * (W - m.l - m.r);
    const Y = (v) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);
    for (let i = 0; i <= 4; i++) {
      const yv = y0 + ((y1 - y0) * i) / 4, xv = x0 + ((x1 - x0) * i) / 4;
      el("line", { x1: m.l, x2: W - m.r, y1: Y(yv), y2: Y(yv), class: "gridline" }, s);
      text(s, m.l - 6, Y(yv) + 4, fmt(yv), { "text-anchor": "end", class: "tick" });
      text(s, X(xv), H - m.b + 16, fmt(xround ? xround(xv) : xv), { "text-anchor": "middle", class: "tick" });
    }
    text(s, (W + m.l) / 2, H - 4, xlabel, { "text-anchor": "middle", class: "axis-label" });
    return { X, Y };
  }

  // points: [{label, x, y, front, champion}]: every point grey, the front's ringed in red and
  // joined by x, the champion with a gold ring; opts: {xlabel, ylabel, reference (y at x = 0)}.
  function scatter(container, points, opts) {
    const W = 520, H = 300, m = { l: 56, r: 30, t: 16, b: 40 };
    const s = svg(container, W, H);
    if (!points.length) { text(s, W / 2, H / 2, opts.empty || "no data yet", { "text-anchor": "middle", class: "muted" }); return; }
    const ref = opts.reference;
    const xs = points.map((p) => p.x).concat(ref === undefined ? [] : [0]);
    const ys = points.map((p) => p.y).concat(ref === undefined ? [] : [ref]);
    const { X, Y } = axes(s, W, H, m, xs, ys, opts.xlabel);
    text(s, 12, (H - m.b + m.t) / 2, opts.ylabel, { "text-anchor": "middle", class: "axis-label",
                                                  transform: `rotate(-90 12 ${(H - m.b + m.t) / 2})` });
    const front = points.filter((p) => p.front).sort((a, b) => a.x - b.x);
    if (front.length > 1) el("polyline", { points: front.map((p) => `${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(" "), class: "front-line" }, s);
    if (ref !== undefined) el("title", {}, el("rect", { x: X(0) - 5, y: Y(ref) - 5, width: 10, height: 10, class: "reference" }, s)).textContent = `reference: ${fmt(ref)}`;
    points.forEach((p) => {
      if (p.champion) el("circle", { cx: X(p.x), cy: Y(p.y), r: 10, class: "champion" }, s);
      const c = el("circle", { cx: X(p.x), cy: Y(p.y), r: 5, class: p.front ? "point front" : "point" }, s);
      el("title", {}, c).textContent = `${p.label}: ${fmt(p.x)}, ${fmt(p.y)}${p.front ? " (Pareto front)" : ""}${p.champion ? " (champion)" : ""}`;
      const right = X(p.x) > W - 90;  // a label near the right edge goes to the point's left
      text(s, X(p.x) + (right ? -9 : 7), Y(p.y) - 7, p.label, { class: "tick", "text-anchor": right ? "end" : "start" });
    });
  }

  // series: [{label, color, points: [[x, y], ...]}]
  function lines(container, series, opts) {
    const W = 520, H = 260, m = { l: 56, r: 12, t: 12, b: 36 };
    const s = svg(container, W, H);
    const pts = series.flatMap((d) => d.points);
    if (!pts.length) { text(s, W / 2, H / 2, opts.empty || "no data yet", { "text-anchor": "middle", class: "muted" }); return; }
    const { X, Y } = axes(s, W, H, m, pts.map((p) => p[0]), pts.map((p) => p[1]), opts.xlabel || "step", Math.round);
    series.forEach((d) => {
      if (!d.points.length) return;
      const path = d.points.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
      const line = el("path", { d: path, fill: "none", stroke: d.color, "stroke-width": 2 }, s);
      el("title", {}, line).textContent = d.label;
      d.points.forEach((p) => {
        const c = el("circle", { cx: X(p[0]), cy: Y(p[1]), r: 3, fill: d.color }, s);
        el("title", {}, c).textContent = `${d.label}: step ${p[0]}, ${fmt(p[1])}`;
      });
    });
    const legend = el("g", { class: "legend" }, s);
    series.forEach((d, i) => {
      el("rect", { x: W - m.r - 40, y: m.t + i * 14, width: 10, height: 10, fill: d.color }, legend);
      text(legend, W - m.r - 26, m.t + i * 14 + 9, d.label, { class: "tick" });
    });
  }

  // rows: [{label, values: {axis: value}}]; axes: names; the last axis is the metric (colour).
  function parallel(container, rows, axes, metricName) {
    const W = Math.max(520, 150 * axes.length), H = 280, m = { l: 40, r: 40, t: 28, b: 24 };
    const s = svg(container, W, H);
    if (!rows.length || axes.length < 2) { text(s, W / 2, H / 2, "no finished trials yet", { "text-anchor": "middle", class: "muted" }); return; }
    const scales = axes.map((a) => {
      const vals = rows.map((r) => r.values[a]).filter((v) => v !== null && v !== undefined);
      if (vals.every((v) => typeof v === "number")) {
        const logScale = vals.length > 1 && vals.every((v) => v > 0) && Math.max(...vals) / Math.min(...vals) > 50;
        const tf = logScale ? Math.log10 : (v) => v;
        const [lo, hi] = extent(vals.map(tf));
        return { pos: (v) => (tf(v) - lo) / (hi - lo), ticks: [lo, hi].map((t) => (logScale ? 10 ** t : t)), log: logScale };
      }
      const cats = [...new Set(vals.map(String))].sort();
      return { pos: (v) => (cats.length === 1 ? 0.5 : cats.indexOf(String(v)) / (cats.length - 1)), cats };
    });
    const X = (i) => m.l + (i * (W - m.l - m.r)) / (axes.length - 1);
    const Y = (p) => H - m.b - p * (H - m.t - m.b);
    const metricVals = rows.map((r) => r.values[metricName]).filter((v) => typeof v === "number");
    const [c0, c1] = extent(metricVals.length ? metricVals : [0, 1]);
    rows.forEach((r) => {
      const v = r.values[metricName];
      const t = typeof v === "number" ? (v - c0) / (c1 - c0) : null;
      const color = t === null ? "#9ca3af" : `hsl(${Math.round(10 + t * 200)}, 70%, 45%)`;
      const d = axes.map((a, i) => {
        const val = r.values[a];
        return val === null || val === undefined ? null : `${X(i).toFixed(1)},${Y(scales[i].pos(val)).toFixed(1)}`;
      }).filter(Boolean);
      const line = el("polyline", { points: d.join(" "), fill: "none", stroke: color, "stroke-width": 2, opacity: 0.85 }, s);
      el("title", {}, line).textContent = `${r.label}: ${fmt(v)}`;
    });
    axes.forEach((a, i) => {
      el("line", { x1: X(i), x2: X(i), y1: Y(0), y2: Y(1), class: "axis" }, s);
      text(s, X(i), 14, a.replace(/^(train|objective|model|data)\./, ""), { "text-anchor": "middle", class: "axis-label" });
      const sc = scales[i];
      const ticks = sc.cats ? sc.cats.map((c) => [c, sc.pos(c)]) : sc.ticks.map((t) => [fmt(t), sc.pos(t)]);
      ticks.forEach(([label, p]) => text(s, X(i) + 4, Y(p) + 4, label, { class: "tick" }));
    });
  }

  return { lines, scatter, parallel, PALETTE, fmt };
})();
