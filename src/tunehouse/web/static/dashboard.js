// tunehouse dashboard: the live loss chart (inline SVG, polling the job's JSON) and the playground (two SSE
// streams side by side). No libraries, nothing from the network but this server. Text from the server is only
// ever put into the page with textContent, never innerHTML, so names and model answers stay inert.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 1000;

function svgEl(name, attrs) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function fmtTime(ts) {
  return ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "—";
}

// ---- live loss chart -------------------------------------------------------------------------------------

function series(metrics, key) {
  return metrics.filter((m) => typeof m[key] === "number").map((m) => [m.step, m[key]]);
}

// Draw train/validation loss (left axis) and train token accuracy (right axis, 0..1) per step.
function drawChart(svg, metrics) {
  const W = 640, H = 280, L = 48, R = 40, T = 12, B = 28;
  svg.replaceChildren();
  const train = series(metrics, "train_loss");
  const valid = series(metrics, "valid_loss");
  const acc = series(metrics, "train_mean_token_accuracy");
  svg.dataset.points = String(train.length);
  if (!train.length) return;
  const maxStep = Math.max(...metrics.map((m) => m.total_steps || m.step), 2);
  // Loss axis spans the data (not from 0): a loss falling from 6.4 to 6.3 must still be visible.
  const losses = train.concat(valid).map((p) => p[1]);
  let lo = Math.min(...losses), hi = Math.max(...losses);
  const pad = (hi - lo) * 0.08 || Math.max(Math.abs(hi) * 0.05, 0.05);
  lo -= pad; hi += pad;
  const x = (s) => L + ((s - 1) / Math.max(maxStep - 1, 1)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const yAcc = (v) => T + (1 - v) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const v = lo + ((hi - lo) * i) / 4;
    svg.append(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid-line" }));
    const label = svgEl("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = v.toPrecision(4);
    svg.append(label);
  }
  for (const a of [0, 0.5, 1]) {
    const label = svgEl("text", { x: W - R + 6, y: yAcc(a) + 4, class: "acc-label" });
    label.textContent = a.toFixed(1);
    svg.append(label);
  }
  const stepLabel = svgEl("text", { x: W - R, y: H - 8, "text-anchor": "end" });
  stepLabel.textContent = `step ${train[train.length - 1][0]} / ${maxStep}`;
  svg.append(stepLabel);
  const line = (pts, fy, cls) =>
    svg.append(svgEl("polyline", { points: pts.map((p) => `${x(p[0])},${fy(p[1])}`).join(" "), class: cls }));
  line(acc, yAcc, "acc");
  line(train, y, "train");
  if (valid.length > 1) line(valid, y, "valid");
  for (const p of train) svg.append(svgEl("circle", { cx: x(p[0]), cy: y(p[1]), r: 2, class: "pt-train" }));
  for (const p of valid) svg.append(svgEl("circle", { cx: x(p[0]), cy: y(p[1]), r: 3.5, class: "pt-valid" }));
}

function showEvents(list, events) {
  const items = events.map((e) => {
    const li = document.createElement("li");
    li.className = "lv-" + e.level;
    const time = document.createElement("time");
    time.textContent = fmtTime(e.created_at);
    const msg = document.createElement("span");
    msg.textContent = e.message;
    li.append(time, " ", msg);
    return li;
  });
  list.replaceChildren(...items);
}

function showProgress(p) {
  const fill = document.getElementById("progress-fill");
  if (fill) fill.style.width = p.percent + "%";
  const text = document.getElementById("job-progress");
  if (text) text.textContent = (p.step ? `step ${p.step} / ${p.total}` : "no steps yet") +
    (p.eta ? ` · ETA ${p.eta} (in ${p.eta_in})` : "");
}

// Steps already drawn, by step number: each poll asks only for newer ones (a re-recorded step replaces its row).
const knownSteps = new Map();

// Poll while the job is not final; once it ends, reload once so checkpoints, evaluation and files appear.
async function pollJob(svg) {
  const wasFinal = svg.dataset.final === "true";
  const afterStep = knownSteps.size ? Math.max(...knownSteps.keys()) : -1;
  let data;
  try {
    const url = `${svg.dataset.live}?after_step=${afterStep}`;
    const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) throw new Error(String(r.status));
    data = await r.json();
  } catch (err) {
    document.getElementById("chart-note").textContent = "Live update failed (" + err.message + "); retrying…";
    setTimeout(() => pollJob(svg), POLL_MS * 3);
    return;
  }
  for (const m of data.metrics) knownSteps.set(m.step, m);
  const metrics = [...knownSteps.values()].sort((a, b) => a.step - b.step);
  drawChart(svg, metrics);
  document.getElementById("chart-note").textContent = metrics.length ? "" : "Waiting for the first training step…";
  const status = document.getElementById("job-status");
  status.textContent = data.job.status;
  status.className = "status s-" + data.job.status;
  showProgress(data.progress);
  showEvents(document.getElementById("events"), data.events);
  if (data.final && !wasFinal) location.reload();
  else if (!data.final) setTimeout(() => pollJob(svg), POLL_MS);
}

// ---- playground ------------------------------------------------------------------------------------------

// Stream one answer: POST to /playground/chat and append each SSE chunk's delta to the <pre>.
async function streamAnswer(form, side, body) {
  const out = document.getElementById("answer-" + side);
  const status = document.getElementById("status-" + side);
  document.getElementById("title-" + side).textContent = body.model;
  out.textContent = "";
  status.textContent = "waiting for the model…";
  const t0 = performance.now();
  const r = await fetch("/playground/chat", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": form.dataset.csrf },
    body: JSON.stringify(body),
  });
  if (!r.ok) {
    const err = await r.json().catch(() => ({}));
    status.textContent = "Error: " + ((err.error && err.error.message) || (err.detail && JSON.stringify(err.detail)) || r.status);
    return;
  }
  const reader = r.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", chunks = 0, finish = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    const events = buffer.split("\n\n");
    buffer = events.pop();
    for (const ev of events) {
      const payload = ev.replace(/^data: /, "");
      if (payload === "[DONE]" || !payload.trim()) continue;
      const choice = JSON.parse(payload).choices[0];
      if (!choice) continue;
      if (choice.delta && choice.delta.content) { out.textContent += choice.delta.content; chunks++; }
      if (choice.finish_reason) finish = choice.finish_reason;
      status.textContent = `streaming… ${chunks} chunks`;
    }
  }
  out.dataset.done = "true";
  status.textContent = `done (${finish || "stop"}) in ${((performance.now() - t0) / 1000).toFixed(1)} s, ${chunks} chunks`;
}

function setupPlayground(form) {
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    const common = { prompt: f.get("prompt"), system: f.get("system"),
                     temperature: Number(f.get("temperature")), max_tokens: Number(f.get("max_tokens")) };
    for (const side of ["left", "right"]) {
      document.getElementById("answer-" + side).dataset.done = "false";
      streamAnswer(form, side, { ...common, model: f.get(side) }).catch((err) => {
        document.getElementById("status-" + side).textContent = "Error: " + err.message;
      });
    }
  });
}

// ---- small page behaviours (no inline scripts: the CSP forbids them) --------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  for (const sel of document.querySelectorAll("select[data-autosubmit]")) {
    sel.addEventListener("change", () => sel.form.submit());
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (ev) => { if (!confirm(form.dataset.confirm)) ev.preventDefault(); });
  }
  const fill = document.getElementById("progress-fill");
  if (fill) fill.style.width = fill.dataset.percent + "%";
  const chart = document.getElementById("loss-chart");
  if (chart) pollJob(chart);
  const playground = document.getElementById("playground");
  if (playground) setupPlayground(playground);
});
