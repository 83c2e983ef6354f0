// prefsweep web page: studies list, study view (tabs: trials with curves, parallel coordinates and
// chat; more from other files), launch form. Plain JS over the REST API; every server string goes
// in via textContent.
"use strict";

const $ = (sel, root) => (root || document).querySelector(sel);
const view = $("#view");
const tokenInput = $("#token");
let timer = null;

let needsToken = false;  // the current view was refused (401): draw it again once a token is entered
tokenInput.value = localStorage.getItem("prefsweep.token") || "";
tokenInput.addEventListener("change", () => {
  localStorage.setItem("prefsweep.token", tokenInput.value.trim());
  if (needsToken) route();
});

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const token = tokenInput.value.trim();
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

async function api(path, opts) {
  const res = await fetch(path, Object.assign({}, opts, { headers: headers((opts || {}).headers) }));
  const body = res.headers.get("content-type")?.includes("json") ? await res.json() : await res.text();
  if (!res.ok) {
    const err = new Error(typeof body === "object" && typeof body.detail === "string" ? body.detail : `HTTP ${res.status}`);
    err.status = res.status; err.body = body;
    throw err;
  }
  return body;
}

function node(tag, attrs, children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") n.textContent = v; else if (k === "class") n.className = v; else n.setAttribute(k, v);
  }
  (children || []).forEach((c) => n.appendChild(typeof c === "string" ? document.createTextNode(c) : c));
  return n;
}

function mount(id) {
  view.textContent = "";
  view.appendChild($(id).content.cloneNode(true));
}

function stateBadge(state) { return node("span", { class: `state state-${state}`, text: state }); }
function when(iso) { return iso ? new Date(iso).toLocaleString() : ""; }
const fmt = Charts.fmt;

// ---------------------------------------------------------------- study tabs
// The study view's tabs. "trials" is this file's (its panel is in index.html); another static
// file adds one with Prefsweep.addStudyTab({id, label, render(studyId, panel)}) when it loads,
// before the page routes. `render` runs the first time its tab is shown, into an empty panel,
// and may return a promise; the tab is in the URL (#/study/NAME/ID), so a link opens it.
const studyTabs = [{ id: "trials", label: "Trials" }];
window.Prefsweep = {
  api, node, headers, stateBadge, fmt,
  addStudyTab(tab) { studyTabs.push(tab); },
};

function setupTabs(id, wanted) {
  const bar = $("#study-tabs"), shown = new Set();
  const host = $("#tab-trials").parentElement;
  studyTabs.forEach((tab) => {
    if (!$(`#tab-${tab.id}`)) host.appendChild(node("div", { class: "tab-panel", id: `tab-${tab.id}`, "data-tab": tab.id, role: "tabpanel" }));
    const button = node("button", { type: "button", class: "tab", role: "tab", id: `tabbtn-${tab.id}`, text: tab.label });
    button.addEventListener("click", () => select(tab.id));
    bar.appendChild(button);
  });
  function select(tabId) {
    studyTabs.forEach((t) => {
      $(`#tab-${t.id}`).hidden = t.id !== tabId;
      $(`#tabbtn-${t.id}`).setAttribute("aria-selected", String(t.id === tabId));
    });
    history.replaceState(null, "", `#/study/${encodeURIComponent(id)}${tabId === "trials" ? "" : `/${tabId}`}`);
    const tab = studyTabs.find((t) => t.id === tabId);
    if (tab.render && !shown.has(tabId)) {
      shown.add(tabId);
      const panel = $(`#tab-${tabId}`);
      Promise.resolve().then(() => tab.render(id, panel)).catch((e) => {
        shown.delete(tabId);  // drawn again when shown again (e.g. once the token is entered)
        panel.textContent = "";
        panel.appendChild(node("p", { class: "error", text: e.status === 401 ? "Enter the API token at the top right." : e.message }));
      });
    }
  }
  select(studyTabs.some((t) => t.id === wanted) ? wanted : "trials");
}

// ---------------------------------------------------------------- studies list
const listState = { offset: 0, limit: 20 };

async function showStudies() {
  mount("#tpl-studies");
  const filter = $("#state-filter");
  filter.value = listState.state || "";
  filter.addEventListener("change", () => { listState.state = filter.value; listState.offset = 0; refresh(); });
  $("#prev").addEventListener("click", () => { listState.offset = Math.max(0, listState.offset - listState.limit); refresh(); });
  $("#next").addEventListener("click", () => { listState.offset += listState.limit; refresh(); });
  async function refresh() {
    const q = new URLSearchParams({ offset: listState.offset, limit: listState.limit });
    if (listState.state) q.set("state", listState.state);
    const page = await api(`/studies?${q}`);
    const tbody = $("#studies tbody");
    tbody.textContent = "";
    page.items.forEach((s) => {
      const link = node("a", { href: `#/study/${encodeURIComponent(s.id)}`, text: s.name });
      const progress = s.progress ? `${s.progress.done}/${s.progress.total}` : "";
      tbody.appendChild(node("tr", { "data-study": s.id }, [
        node("td", {}, [link]), node("td", {}, [stateBadge(s.state)]), node("td", { text: progress }),
        node("td", { text: `${s.metric.name} (${s.metric.goal === "maximize" ? "max" : "min"})` }),
        node("td", { class: "num", text: fmt(s.best_value) }), node("td", { text: s.owner }),
        node("td", { text: when(s.created_at) }),
      ]));
    });
    $("#studies-empty").hidden = page.total > 0;
    $("#page").textContent = page.total ? `${page.offset + 1}-${page.offset + page.items.length} of ${page.total}` : "";
    $("#prev").disabled = page.offset === 0;
    $("#next").disabled = page.offset + page.items.length >= page.total;
  }
  await refresh();
  timer = setInterval(() => refresh().catch(() => {}), 5000);
}

// ---------------------------------------------------------------- study view
async function showStudy(id, tab) {
  mount("#tpl-study");
  $("#study-name").textContent = id;
  setupTabs(id, tab);
  $("#cancel").addEventListener("click", async () => {
    if (!confirm(`Cancel study ${id}? Finished trials are kept.`)) return;
    try { await api(`/studies/${encodeURIComponent(id)}/cancel`, { method: "POST" }); refresh(); }
    catch (e) { alert(`Cancel failed: ${e.message}`); }
  });
  $("#logs-box").addEventListener("toggle", loadLogs);
  setupChat(id);
  Generations.setup(id);
  let lastKey = "";
  async function refresh() {
    const [study, trials] = await Promise.all([
      api(`/studies/${encodeURIComponent(id)}`), api(`/studies/${encodeURIComponent(id)}/trials`)]);
    renderStudy(study);
    const key = JSON.stringify(trials.trials.map((t) => [t.state, t.value, t.intermediate_values.length, Object.values(t.curves).map((c) => c.length)]));
    if (key !== lastKey) { lastKey = key; renderTrials(trials); }
    if (!["pending", "running"].includes(study.state) && timer) { clearInterval(timer); timer = null; }
  }
  async function loadLogs() {
    if (!$("#logs-box").open) return;
    try { $("#logs").textContent = (await api(`/studies/${encodeURIComponent(id)}/logs?lines=300`)).lines.join("\n"); }
    catch (e) { $("#logs").textContent = e.status === 401 ? "Enter the API token above to read logs." : e.message; }
  }
  const mine = routeSeq;
  try { await refresh(); } catch (e) { if (mine === routeSeq) failed(e); return; }
  timer = setInterval(() => refresh().catch(() => {}), 4000);
}

function renderStudy(s) {
  const badge = $("#study-state");
  badge.className = `state state-${s.state}`;
  badge.textContent = s.state;
  // Only a Ray job can be stopped from here; a `prefsweep run` in a terminal is stopped there.
  $("#cancel").hidden = !["pending", "running"].includes(s.state) || !s.ray.submission_id;
  $("#logs-box").hidden = !s.ray.submission_id;
  const facts = $("#facts");
  facts.textContent = "";
  const add = (k, v) => { facts.appendChild(node("dt", { text: k })); facts.appendChild(node("dd", {}, [v])); };
  add("progress", s.progress ? `${s.progress.done}/${s.progress.total} trials` : "not started");
  add(`best ${s.metric.name}`, s.best ? `${fmt(s.best.value)} (trial ${s.best.trial_id})` : "none yet");
  add("Ray job", s.ray.submission_id || "none (run from a terminal with prefsweep run)");
  const mlflow = s.mlflow.url ? node("a", { href: s.mlflow.url, target: "_blank", rel: "noopener", text: s.mlflow.run_id })
    : document.createTextNode(s.mlflow.run_id ? `${s.mlflow.run_id} (${s.mlflow.tracking_uri})` : "");
  add("MLflow run", mlflow);
  add("owner", s.owner);
  add("started", when(s.started_at));
  add("ended", when(s.ended_at));
  $("#study-error").hidden = !s.error;
  $("#study-error").textContent = s.error || "";
}

function renderTrials(data) {
  const metric = data.metric.name;
  const trials = data.trials;
  const params = [...new Set(trials.flatMap((t) => Object.keys(t.params)))].sort();
  const thead = $("#trials thead"), tbody = $("#trials tbody");
  thead.textContent = ""; tbody.textContent = "";
  thead.appendChild(node("tr", {}, ["#", "trial", "state", metric, "evals", "step", ...params].map((h) => node("th", { text: h }))));
  trials.forEach((t, i) => {
    const color = Charts.PALETTE[i % Charts.PALETTE.length];
    tbody.appendChild(node("tr", { "data-trial": t.trial_id || "" }, [
      node("td", {}, [node("span", { class: "swatch", style: `background:${color}` }), String(t.number)]),
      node("td", { text: t.trial_id || "" }), node("td", {}, [stateBadge(t.state)]),
      node("td", { class: "num", text: fmt(t.value) }),
      node("td", { class: "num", text: `${t.evaluations}/${t.expected_evaluations ?? "?"}` }),
      node("td", { class: "num", text: t.step ?? "" }),
      ...params.map((p) => node("td", { class: "num", text: fmt(t.params[p]) })),
    ]));
  });
  const series = (name) => trials.map((t, i) => ({
    label: `#${t.number}`, color: Charts.PALETTE[i % Charts.PALETTE.length], points: (t.curves[name] || []),
  }));
  $("#curve-title").textContent = `${metric} per step`;
  Charts.lines($("#curves"), series(metric), { empty: "no evaluations yet" });
  Charts.lines($("#loss"), series("loss"), { empty: "no training steps logged yet" });
  const done = trials.filter((t) => t.value !== null);
  Charts.parallel($("#parcoords"), done.map((t) => ({ label: `#${t.number}`, values: Object.assign({}, t.params, { [metric]: t.value }) })),
                  [...params, metric], metric);
}

function setupChat(id) {
  const log = $("#chat-log"), input = $("#chat-input");
  function bubble(who, text) {
    const b = node("div", { class: `msg msg-${who}` }, [node("strong", { text: who === "user" ? "you" : "model" }), node("span", { text })]);
    log.appendChild(b); log.scrollTop = log.scrollHeight;
    return b.querySelector("span");
  }
  $("#chat-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    bubble("user", text);
    const out = bubble("model", "…");
    const prompt = $("#chat-wrap").checked ? `User: ${text}\nAssistant:` : text;
    const body = JSON.stringify({ prompt, max_new_tokens: Number($("#chat-max").value) || 48,
                                  temperature: Number($("#chat-temp").value) });
    $("#chat-send").disabled = true;
    try {
      const res = await fetch(`/studies/${encodeURIComponent(id)}/generate/stream`, {
        method: "POST", body, headers: headers({ "Content-Type": "application/json" }) });
      if (!res.ok) {
        const detail = await res.json().catch(() => ({}));
        throw new Error(res.status === 401 ? "enter the API token at the top right" : (typeof detail.detail === "string" ? detail.detail : `HTTP ${res.status}`));
      }
      let answer = "", buffer = "";
      const reader = res.body.getReader(), decoder = new TextDecoder();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
          const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
          if (!event.startsWith("event:") && data) answer += JSON.parse(data).text;
        }
        out.textContent = answer.split("\nUser:")[0].trim() || "…";
      }
      out.textContent = answer.split("\nUser:")[0].trim() || "(empty reply)";
      out.parentElement.classList.add("done");
    } catch (e) {
      out.textContent = `error: ${e.message}`;
      out.parentElement.classList.add("failed");
    } finally {
      $("#chat-send").disabled = false;
    }
  });
}

// ---------------------------------------------------------------- launch form
const EXAMPLE = `name: my-study
model: {name_or_path: "builtin:tiny-gpt2"}
data:
  train: {path: builtin:demo/train}
  eval: {path: builtin:demo/eval}
  format: paired
  max_length: 128
  max_prompt_length: 64
objective: {name: dpo, beta: 0.1}
train: {learning_rate: 1.0e-3, per_device_batch_size: 8, max_steps: 60, eval_every: 20}
sweep:
  method: bayes
  metric: {name: eval/rewards/accuracies, goal: maximize}
  num_trials: 3
  early_terminate: null
  parameters:
    train.learning_rate: {distribution: log_uniform_values, min: 1.0e-5, max: 3.0e-3}
    objective.beta: {values: [0.05, 0.1, 0.3]}
`;

function showLaunch() {
  mount("#tpl-launch");
  $("#yaml").value = localStorage.getItem("prefsweep.yaml") || EXAMPLE;
  $("#launch-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const problems = $("#problems");
    problems.textContent = "";
    localStorage.setItem("prefsweep.yaml", $("#yaml").value);
    const q = new URLSearchParams();
    $("#overrides").value.split("\n").map((l) => l.trim()).filter(Boolean).forEach((l) => q.append("set", l));
    try {
      const made = await api(`/studies?${q}`, { method: "POST", body: $("#yaml").value,
                                                headers: { "Content-Type": "application/yaml" } });
      location.hash = `#/study/${encodeURIComponent(made.id)}`;
    } catch (e) {
      const list = Array.isArray(e.body?.detail) ? e.body.detail : [{ field: `HTTP ${e.status || "?"}`, msg: e.message }];
      if (e.status === 401) list[0].msg = "enter the API token at the top right";
      list.forEach((p) => problems.appendChild(node("li", {}, [node("code", { text: p.field || (p.loc || []).join(".") }), ` ${p.msg}`])));
    }
  });
}

// ---------------------------------------------------------------- router
function failed(e) {
  // Every API route needs the token (only the page itself is open): say so instead of "HTTP 401".
  needsToken = e.status === 401;
  view.textContent = "";
  view.appendChild(node("p", { class: "error", text: needsToken ? "Enter the API token at the top right to see the studies." : e.message }));
}

// Which call of route() drew the view: a view left while it was still loading (its elements
// gone) must not report its failure over the view that replaced it.
let routeSeq = 0;

function route() {
  const mine = ++routeSeq;
  needsToken = false;
  if (timer) { clearInterval(timer); timer = null; }
  const hash = location.hash || "#/";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.getAttribute("href") === hash));
  const study = hash.match(/^#\/study\/([^/]+)(?:\/([\w-]+))?$/);
  const run = study ? showStudy(decodeURIComponent(study[1]), study[2]) : hash === "#/launch" ? showLaunch() : showStudies();
  Promise.resolve(run).catch((e) => { if (mine === routeSeq) failed(e); });
}
window.addEventListener("hashchange", route);
// After every script of the page has run: the tab files register first.
document.addEventListener("DOMContentLoaded", route);
