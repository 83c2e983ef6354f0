// prefsweep web page: what the top trials said, side by side with the reference model's answers
// to the same prompts (GET /studies/{id}/generations). Every server string goes in via textContent.
"use strict";

const Generations = (() => {
  function cell(text, score) {
    const td = node("td", {}, [node("div", { class: "gen-text", text: (text || "").trim() || "(empty)" })]);
    if (score !== null && score !== undefined) td.appendChild(node("div", { class: "muted", text: `score ${fmt(score)}` }));
    return td;
  }

  function render(found, box) {
    box.textContent = "";
    const trials = found.trials.filter((t) => t.generations.length);
    if (!trials.length) {
      box.appendChild(node("p", { class: "muted", text: found.evaluation
        ? "No trial has evaluated generations yet." : "This study has no evaluation section: no generations to compare." }));
      return;
    }
    const summary = node("ul", { class: "gen-trials" });
    trials.forEach((t) => {
      const gen = Object.entries(t.metrics).filter(([, v]) => v !== null)
        .map(([k, v]) => `${k.replace("eval/gen/", "")} ${fmt(v)}`).join(", ");
      summary.appendChild(node("li", { text: `trial ${t.trial_id} (${t.state}, step ${t.step}): ${gen}` }));
    });
    box.appendChild(summary);
    const table = node("table", { class: "grid generations", id: "generations-table" });
    const head = node("tr", {}, [node("th", { text: "prompt" }), node("th", { text: "reference" }),
      ...trials.map((t) => node("th", { text: `trial ${t.trial_id}` }))]);
    table.appendChild(node("thead", {}, [head]));
    const body = node("tbody");
    const byIndex = trials.map((t) => new Map(t.generations.map((g) => [g.index, g])));
    for (const g of trials[0].generations) {
      if (!byIndex.every((m) => m.has(g.index))) continue;
      body.appendChild(node("tr", {}, [node("td", { class: "gen-prompt", text: g.prompt.trim() }),
        cell(g.reference, g.reference_score), ...byIndex.map((m) => cell(m.get(g.index).completion, m.get(g.index).score))]));
    }
    table.appendChild(body);
    box.appendChild(node("div", { class: "scroll" }, [table]));
    if (found.judge) box.appendChild(node("p", { class: "muted", text: `judge: ${found.judge}` }));
  }

  // Loads when the box is opened (and again on each opening: trials may have evaluated since).
  function setup(id) {
    const details = $("#generations-box");
    details.addEventListener("toggle", async () => {
      if (!details.open) return;
      const box = $("#generations");
      try { render(await api(`/studies/${encodeURIComponent(id)}/generations?top=3`), box); }
      catch (e) { box.textContent = e.status === 401 ? "Enter the API token above to read generations." : e.message; }
    });
  }

  return { setup };
})();
