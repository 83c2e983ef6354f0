// The study view's "report" tab: GET /studies/{id}/report drawn as sentences about the best
// trials, Optuna's parameter importances, the reward-vs-KL scatter with its Pareto front (when the
// trials evaluated generations), the top trials, and the trials as a CSV download.
"use strict";

(() => {
  const { api, node, fmt, headers } = Prefsweep;

  async function render(id, panel) {
    panel.textContent = "";
    panel.appendChild(node("p", { class: "muted", text: "Computing the report (importances need a moment)…" }));
    const report = await api(`/studies/${encodeURIComponent(id)}/report`);
    panel.textContent = "";
    draw(panel, report);
  }

  function draw(panel, r) {
    const csv = node("button", { type: "button", id: "report-csv", text: "Download CSV" });
    csv.addEventListener("click", () => downloadCsv(r.study, csv));
    const again = node("button", { type: "button", class: "secondary", id: "report-refresh", text: "Recompute" });
    again.addEventListener("click", () => render(r.study, panel).catch((e) => { again.textContent = `failed: ${e.message}`; }));
    panel.appendChild(node("div", { class: "bar" }, [
      node("h2", { text: `${r.trials.length} trials, ranked by ${r.metric.name} (${r.metric.goal})` }), csv, again]));
    panel.appendChild(node("p", { class: "muted", text: "prefsweep report NAME writes the same with plots, report.md and "
      + "report.json, and logs them on the study's MLflow parent run." }));

    panel.appendChild(node("h3", { text: "What the trials say" }));
    panel.appendChild(node("ul", { class: "observations", id: "report-observations" },
                           r.observations.map((s) => node("li", { text: s }))));

    const imp = r.importances;
    panel.appendChild(node("h3", { text: `Parameter importances for ${imp.metric} (Optuna's ${imp.evaluator}, ${imp.trials} trials)` }));
    if (imp.note) panel.appendChild(node("p", { class: "muted", id: "importances-note", text: imp.note }));
    const rows = Object.entries(imp.values).map(([name, value]) => node("tr", {}, [
      node("td", { text: name }), node("td", { class: "num", text: value.toFixed(3) }),
      node("td", {}, [node("span", { class: "importance-bar", style: `width:${Math.round(value * 240)}px` })]),
    ]));
    if (rows.length) {
      panel.appendChild(node("table", { class: "grid", id: "importances" }, [
        node("thead", {}, [node("tr", {}, ["parameter", "importance", ""].map((h) => node("th", { text: h })))]),
        node("tbody", {}, rows)]));
    }

    if (r.frontier) drawFrontier(panel, r.frontier);
    drawTop(panel, r);
  }

  function drawFrontier(panel, f) {
    panel.appendChild(node("h3", { text: "Reward vs KL to the reference" }));
    panel.appendChild(node("p", { class: "muted", text: "Each trial; the Pareto front (no other trial better on both: "
      + "higher, with less KL) in red, the champion ringed in gold, the reference model as a black square." }));
    const charts = node("div", { class: "charts", id: "frontier" });
    f.ys.forEach((y) => {
      const front = new Set(f.fronts[y]);
      const points = f.points.filter((p) => p.values[y] !== null && p.values[y] !== undefined).map((p) => ({
        label: p.trial_id, x: p.values[f.x], y: p.values[y], front: front.has(p.trial_id), champion: p.trial_id === f.champion,
      }));
      const chart = node("div", { class: "chart", "data-y": y });
      charts.appendChild(node("figure", {}, [node("figcaption", { text: `${y} vs ${f.x}` }), chart]));
      Charts.scatter(chart, points, { xlabel: f.x, ylabel: y, reference: f.reference[y] });
    });
    panel.appendChild(charts);
  }

  function drawTop(panel, r) {
    const ranked = r.trials.filter((t) => t.rank !== null).sort((a, b) => a.rank - b.rank).slice(0, 10);
    const params = [...new Set(ranked.flatMap((t) => Object.keys(t.params)))].sort();
    panel.appendChild(node("h3", { text: `Top trials by ${r.metric.name}` }));
    const head = ["rank", "#", "trial", "state", "stopped by", r.metric.name, "best", "steps", ...params];
    panel.appendChild(node("div", { class: "scroll" }, [node("table", { class: "grid", id: "report-top" }, [
      node("thead", {}, [node("tr", {}, head.map((h) => node("th", { text: h })))]),
      node("tbody", {}, ranked.map((t) => node("tr", { "data-trial": t.trial_id || "" }, [
        String(t.rank), String(t.number), t.trial_id || "", t.state, t.stopped_by || "", fmt(t.value),
        fmt(t.best[r.metric.name]), t.steps ?? "", ...params.map((p) => fmt(t.params[p])),
      ].map((v) => node("td", { text: String(v) }))))),
    ])]));
  }

  async function downloadCsv(id, button) {
    // The token travels in a header, so a plain link would not do: fetch, then save the blob.
    const res = await fetch(`/studies/${encodeURIComponent(id)}/report?format=csv`, { headers: headers() });
    if (!res.ok) { button.textContent = `CSV failed: HTTP ${res.status}`; return; }
    const url = URL.createObjectURL(await res.blob());
    const link = node("a", { href: url, download: `${id}-trials.csv` });
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  Prefsweep.addStudyTab({ id: "report", label: "Report", render });
  Prefsweep.drawReport = draw;  // a report at hand (tests/test_report_api.py draws one of a hand-built study)
})();
