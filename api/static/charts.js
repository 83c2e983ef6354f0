// Hand-written SVG charts (no libraries, works offline): line curves and parallel coordinates.
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

  // series: [{label, color, points: [[x, y], ...]}]
  function lines(container, series, opts) {
    const W = 520, H = 260, m = { l: 56, r: 12, t: 12, b: 36 };
    const s = svg(container, W, H);
    const pts = series.flatMap((d) => d.points);
    if (!pts.length) { text(s, W / 2, H / 2, opts.empty || "no data yet", { "text-anchor": "middle", class: "muted" }); return; }
    const [x0, x1] = extent(pts.map((p) => p[0])), [y0, y1] = extent(pts.map((p) => p[1]));
    const X = (v) => m.l + ((v - x0) / (x1 - x0)) * (W - m.l - m.r);
    const Y = (v) => H - m.b - ((v - y0) / (y1 - y0)) * (H - m.t - m.b);
    for (let i = 0; i <= 4; i++) {
      const yv = y0 + ((y1 - y0) * i) / 4, xv = x0 + ((x1 - x0) * i) / 4;
      el("line", { x1: m.l, x2: W - m.r, y1: Y(yv), y2: Y(yv), class: "gridline" }, s);
      text(s, m.l - 6, Y(yv) + 4, fmt(yv), { "text-anchor": "end", class: "tick" });
      text(s, X(xv), H - m.b + 16, fmt(Math.round(xv)), { "text-anchor": "middle", class: "tick" });
    }
    text(s, (W + m.l) / 2, H - 4, opts.xlabel || "step", { "text-anchor": "middle", class: "axis-label" });
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

  return { lines, parallel, PALETTE, fmt };
})();
