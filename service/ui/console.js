// The foldserve console: models, uploads with live stages, fold reports drawn, compare.
// Plain DOM and SVG; every request goes to this server's own API (see docs/ui.md).
"use strict";

const STAGES = ["queued", "loading", "folding", "exporting", "verifying", "committing"];
const TERMINAL = ["done", "failed", "cancelled"];
const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "foldserve-token";
const main = document.getElementById("main");
let pageTimer = null;

// -- DOM helpers -------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "class") element.className = value;
    else element.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function s(tag, attrs, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) element.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) {
      element.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }
  return element;
}

function badge(text, kind) {
  return h("span", { class: `badge ${kind || text}` }, text);
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (value === 0) return "0";
  const size = Math.abs(value);
  return size >= 1e4 || size < 1e-3 ? value.toExponential(digits - 1) : value.toPrecision(digits);
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "–";
}

// -- the API, with tokens ----------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function request(path, options = {}) {
  for (let attempt = 0; ; attempt++) {
    const response = await fetch(path, {
      method: options.method || "GET",
      body: options.body,
      headers: { ...(options.headers || {}), ...authHeaders() },
    });
    if ((response.status === 401 || response.status === 403) && !options.quiet && attempt < 2) {
      const message = await errorText(response);
      if (await askToken(message)) continue;
    }
    if (!response.ok) throw new ApiError(response.status, await errorText(response));
    return response;
  }
}

async function api(path, options = {}) {
  if (options.json !== undefined) {
    options.body = JSON.stringify(options.json);
    options.headers = { "Content-Type": "application/json" };
  }
  return (await request(path, options)).json();
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error || `${response.status} ${response.statusText}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

function askToken(message) {
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  document.getElementById("token-why").textContent =
    `${message}. Enter the API token (the admin token to upload and delete).`;
  input.value = "";
  return new Promise((resolve) => {
    const cancel = document.getElementById("token-cancel");
    const onCancel = () => dialog.close("cancel");
    cancel.addEventListener("click", onCancel, { once: true });
    dialog.addEventListener(
      "close",
      () => {
        cancel.removeEventListener("click", onCancel);
        if (dialog.returnValue === "ok" && input.value) {
          sessionStorage.setItem(TOKEN_KEY, input.value);
          resolve(true);
        } else resolve(false);
      },
      { once: true },
    );
    dialog.showModal();
    input.focus();
  });
}

// -- server-sent events over fetch (EventSource cannot send a token) ---------------

async function* jobEvents(path) {
  const response = await request(path);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
      }
      if (event === "job" && data.length) yield JSON.parse(data.join("\n"));
    }
  }
}

// -- plots -------------------------------------------------------------------------

const W = 480;
const H = 170;
const PAD = { left: 46, right: 8, top: 8, bottom: 22 };

function scaleLinear(min, max, from, to) {
  if (min === max) {
    min -= 1;
    max += 1;
  }
  return (value) => from + ((value - min) / (max - min)) * (to - from);
}

function ticks(min, max, count = 4) {
  if (min === max) return [min];
  return Array.from({ length: count + 1 }, (_, i) => min + ((max - min) * i) / count);
}

function frame(label, yMin, yMax, y, extra) {
  const group = s("g", {});
  for (const value of ticks(yMin, yMax)) {
    const at = y(value);
    group.append(
      s("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: at, y2: at }),
      s("text", { x: PAD.left - 4, y: at + 3, "text-anchor": "end" }, fmt(value, 2)),
    );
  }
  group.append(
    s("line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom }),
    s("line", {
      class: "axis", x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom,
    }),
    s("text", { x: W - PAD.right, y: H - 6, "text-anchor": "end" }, extra || ""),
  );
  return s("svg", { class: "plot", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label },
    s("title", {}, label), group);
}

// Bars (one series) or lines (several series) over channel index.
function channelPlot(label, series, options = {}) {
  const values = series.flatMap((item) => item.values);
  const yMin = Math.min(0, ...values);
  const yMax = Math.max(0, ...values);
  const y = scaleLinear(yMin, yMax, H - PAD.bottom, PAD.top);
  const count = Math.max(...series.map((item) => item.values.length));
  const x = scaleLinear(0, Math.max(count - 1, 1), PAD.left + 2, W - PAD.right - 2);
  const stride = options.stride || 1;
  const svg = frame(label, yMin, yMax, y, `${options.xLabel || "channel"} (0…${(count - 1) * stride})`);
  if (options.bars) {
    const width = Math.max((W - PAD.left - PAD.right) / count - 0.5, 0.6);
    series[0].values.forEach((value, i) => {
      const top = Math.min(y(value), y(0));
      const dead = options.dead && options.dead.has(i * stride);
      svg.append(s("rect", {
        class: dead ? "dead" : "s0", x: x(i) - width / 2, y: top,
        width, height: Math.max(Math.abs(y(value) - y(0)), 0.5),
        "data-channel": i * stride, "data-value": value,
      }));
    });
  } else {
    series.forEach((item, k) => {
      const points = item.values.map((value, i) => `${x(i).toFixed(1)},${y(value).toFixed(1)}`);
      svg.append(s("polyline", { class: `s${k}`, points: points.join(" "), "data-series": item.name }));
    });
  }
  return svg;
}

// Grouped bars, log scale: the three errors of each output against their limits.
function errorPlot(outputs) {
  const label = "fold, export and total error per output (log scale), dashed: limits";
  const values = outputs.flatMap((o) => [o.fold_error, o.export_error, o.total_error, o.fold_limit,
    o.export_limit]).filter((v) => v > 0);
  const low = Math.floor(Math.log10(Math.min(...values, 1e-9)));
  const high = Math.ceil(Math.log10(Math.max(...values, 1e-2)));
  const y = scaleLinear(low, high, H - PAD.bottom, PAD.top);
  const svg = s("svg", { class: "plot", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label },
    s("title", {}, label));
  for (let e = low; e <= high; e++) {
    svg.append(
      s("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y(e), y2: y(e) }),
      s("text", { x: PAD.left - 4, y: y(e) + 3, "text-anchor": "end" }, `1e${e}`),
    );
  }
  const slot = (W - PAD.left - PAD.right) / outputs.length;
  outputs.forEach((output, i) => {
    const left = PAD.left + i * slot + slot * 0.15;
    const bar = (slot * 0.7) / 3;
    [output.fold_error, output.export_error, output.total_error].forEach((value, k) => {
      const top = y(Math.log10(Math.max(value, 10 ** low)));
      svg.append(s("rect", { class: `s${k}`, x: left + k * bar, y: top, width: bar - 2,
        height: H - PAD.bottom - top, "data-value": value }));
    });
    for (const [limit, k] of [[output.fold_limit, 0], [output.export_limit, 1]]) {
      if (limit > 0) {
        const at = y(Math.log10(limit));
        svg.append(s("line", { class: "limit", x1: left + k * bar, x2: left + (k + 1) * bar - 2, y1: at, y2: at }));
      }
    }
    svg.append(s("text", { x: left + slot * 0.35, y: H - 6, "text-anchor": "middle" }, output.name));
  });
  svg.append(s("line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom }));
  return svg;
}

function barsPlot(label, names, values) {
  const yMax = Math.max(...values, 1e-9);
  const y = scaleLinear(0, yMax, H - PAD.bottom, PAD.top);
  const svg = frame(label, 0, yMax, y, "");
  const slot = (W - PAD.left - PAD.right) / names.length;
  names.forEach((name, i) => {
    svg.append(
      s("rect", { class: `s${i % 3}`, x: PAD.left + i * slot + slot * 0.2, y: y(values[i]),
        width: slot * 0.6, height: H - PAD.bottom - y(values[i]), "data-value": values[i] }),
      s("text", { x: PAD.left + i * slot + slot / 2, y: H - 6, "text-anchor": "middle" },
        `${name} ${fmt(values[i])}`),
    );
  });
  return svg;
}

function legend(...names) {
  return h("div", { class: "legend" }, names.map(([name, key]) => h("span", { class: key }, name)));
}

// -- the live strip ------------------------------------------------------------------

const live = { last: null, rates: [] };

async function pollStats() {
  try {
    const stats = await api("/v2/models/stats", { quiet: true });
    let count = 0;
    let ns = 0;
    for (const model of stats.model_stats) {
      count += model.inference_stats.success.count;
      ns += model.inference_stats.success.ns;
    }
    const now = performance.now();
    if (live.last) {
      const seconds = (now - live.last.at) / 1000;
      const served = Math.max(count - live.last.count, 0);
      const rate = served / seconds;
      live.rates = [...live.rates.slice(-59), rate];
      document.getElementById("live-rate").textContent = `${fmt(rate)} req/s`;
      document.getElementById("live-latency").textContent = served
        ? `${fmt((ns - live.last.ns) / served / 1e6)} ms mean` : "– ms";
      const top = Math.max(...live.rates, 1);
      const points = live.rates.map((r, i) => `${(i * 2).toFixed(0)},${(23 - (r / top) * 22).toFixed(1)}`);
      const spark = document.getElementById("live-spark");
      spark.replaceChildren(s("polyline", { points: points.join(" ") }));
    }
    live.last = { at: now, count, ns };
  } catch {
    document.getElementById("live-rate").textContent = "stats need a token";
  }
}

// -- pages ---------------------------------------------------------------------------

function stageList(job) {
  const failedAt = job && job.state === "failed" ? job.failed_stage || null : null;
  const index = job ? STAGES.indexOf(job.state) : -1;
  return h("ol", { class: "stages", "aria-label": "fold stages" }, STAGES.map((stage, i) => {
    let kind = "";
    if (job && (job.state === "done" || i < index || (index < 0 && job.timings && stage in job.timings))) kind = "done";
    if (i === index) kind = "current";
    if (failedAt === stage) kind = "failed";
    return h("li", { class: kind, "data-stage": stage }, stage);
  }));
}

function uploadCard() {
  const fileInput = h("input", { type: "file", id: "upload-file", accept: ".keras,.h5,.hdf5,.onnx,.zip,.tar.gz,.tgz" });
  const nameInput = h("input", { type: "text", id: "upload-name", placeholder: "from the file name", autocomplete: "off" });
  const probeInput = h("input", { type: "file", id: "upload-probe", accept: ".npy,.npz" });
  const chosen = h("p", { class: "muted", id: "upload-chosen" }, "No file chosen.");
  const status = h("div", { id: "upload-status", "aria-live": "polite" });
  const button = h("button", { class: "primary", id: "upload-button", type: "submit" }, "Upload and fold");
  let file = null;
  const choose = (picked) => {
    file = picked;
    chosen.textContent = file ? `${file.name} (${(file.size / 1024).toFixed(0)} KiB)` : "No file chosen.";
  };
  fileInput.addEventListener("change", () => choose(fileInput.files[0] || null));
  const drop = h("div", { class: "drop", id: "drop-zone" },
    h("p", {}, "Drop a .keras, .h5, .onnx or a zipped SavedModel here, or"),
    h("label", { for: "upload-file" }, "choose a model file"), fileInput, chosen);
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) choose(event.dataTransfer.files[0]);
  });
  const form = h("form", { id: "upload-form" }, drop,
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "upload-name" }, "Model name"), nameInput),
      h("div", {}, h("label", { for: "upload-probe" }, "Probe rows (.npy/.npz, optional)"), probeInput),
      button),
    status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file) {
      status.replaceChildren(h("p", { class: "error" }, "Choose a model file first."));
      return;
    }
    const body = new FormData();
    body.append("file", file, file.name);
    if (nameInput.value.trim()) body.append("name", nameInput.value.trim());
    if (probeInput.files[0]) body.append("probe", probeInput.files[0], probeInput.files[0].name);
    button.disabled = true;
    try {
      await runUpload(body, status);
    } finally {
      button.disabled = false;
    }
  });
  return h("section", { class: "card", "aria-labelledby": "upload-title" },
    h("h2", { id: "upload-title" }, "Upload a model"), form);
}

async function runUpload(body, status) {
  const bar = h("progress", { max: STAGES.length, value: 0, id: "upload-progress" });
  const text = h("p", { id: "upload-state" }, "uploading…");
  status.replaceChildren(stageList(null), bar, text);
  let job;
  try {
    job = await api("/v1/models", { method: "POST", body });
  } catch (error) {
    status.replaceChildren(h("p", { class: "error", id: "upload-error" }, error.message));
    return;
  }
  const show = (current) => {
    const index = STAGES.indexOf(current.state);
    bar.value = current.state === "done" ? STAGES.length : Math.max(index, 0) + (current.progress || 0);
    text.replaceChildren(`${current.name} v${current.version}: `, badge(current.state));
    status.firstChild.replaceWith(stageList(current));
  };
  show(job);
  try {
    for await (const event of jobEvents(job.links.events)) {
      job = event;
      show(job);
      if (TERMINAL.includes(job.state)) break;
    }
  } catch (error) {
    text.append(` (events: ${error.message})`);
  }
  if (job.state === "done") {
    text.append(" ", h("a", { href: `#/models/${job.name}/${job.version}`, id: "upload-report" }, "open the fold report"));
  } else if (job.state === "failed") {
    status.append(h("p", { class: "error", id: "upload-error" }, job.error));
  }
  refreshModels();
}

async function refreshModels() {
  const holder = document.getElementById("models");
  if (!holder) return;
  let listing;
  try {
    listing = await api("/v1/models");
  } catch (error) {
    holder.replaceChildren(h("p", { class: "error" }, error.message));
    return;
  }
  const rows = listing.models.flatMap((model) => model.versions.map((entry) => h("tr", {},
    h("td", {}, model.name),
    h("td", {}, entry.state === "AVAILABLE"
      ? h("a", { href: `#/models/${model.name}/${entry.version}` }, `version ${entry.version}`)
      : `version ${entry.version}`),
    h("td", {}, badge(entry.state), entry.reason ? h("div", { class: "reason" }, entry.reason) : null))));
  holder.replaceChildren(rows.length
    ? h("div", { class: "scroll" }, h("table", { id: "models-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "model"), h("th", {}, "version"), h("th", {}, "state"))),
      h("tbody", {}, rows)))
    : h("p", { class: "muted" }, "No models yet: upload one."));
}

function modelsPage() {
  document.title = "Models · foldserve";
  main.replaceChildren(
    h("h1", {}, "Models"),
    uploadCard(),
    h("section", { class: "card", "aria-labelledby": "models-title" },
      h("h2", { id: "models-title" }, "Served models"), h("div", { id: "models" }, "loading…")),
  );
  refreshModels();
  pageTimer = setInterval(refreshModels, 3000);
}

async function jobsPage() {
  document.title = "Jobs · foldserve";
  const holder = h("div", { id: "jobs" }, "loading…");
  main.replaceChildren(h("h1", {}, "Fold jobs"), h("section", { class: "card" }, holder));
  const refresh = async () => {
    let jobs;
    try {
      jobs = (await api("/v1/jobs?limit=50")).jobs;
    } catch (error) {
      holder.replaceChildren(h("p", { class: "error" }, error.message));
      return;
    }
    const rows = jobs.map((job) => h("tr", {},
      h("td", {}, h("code", {}, job.id.slice(0, 12))),
      h("td", {}, job.state === "done"
        ? h("a", { href: `#/models/${job.name}/${job.version}` }, `${job.name} v${job.version}`)
        : `${job.name} v${job.version}`),
      h("td", {}, badge(job.state), job.error ? h("div", { class: "reason" }, job.error) : null),
      h("td", {}, when(job.created_at)),
      h("td", {}, job.started_at ? `${fmt((job.finished_at || Date.now() / 1000) - job.started_at)} s` : "–"),
      h("td", {}, TERMINAL.includes(job.state) ? "" : h("button", {
        type: "button", onclick: async () => {
          try { await api(`/v1/jobs/${job.id}`, { method: "DELETE" }); } catch (error) { alert(error.message); }
          refresh();
        },
      }, "Cancel"))));
    holder.replaceChildren(jobs.length ? h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ["job", "model", "state", "created", "took", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows))) : h("p", { class: "muted" }, "No jobs yet."));
  };
  await refresh();
  pageTimer = setInterval(refresh, 2000);
}

async function download(path, filename) {
  try {
    const blob = await (await request(path)).blob();
    const url = URL.createObjectURL(blob);
    const link = h("a", { href: url, download: filename });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 5000);
  } catch (error) {
    alert(error.message);
  }
}

function verificationCard(verification) {
  if (!verification) return h("section", { class: "card" }, h("h2", {}, "Verification"), h("p", {}, "Not verified."));
  const verdict = verification.verdict.split(" ")[0];
  const rows = verification.outputs.map((o) => h("tr", {},
    h("td", {}, o.name),
    h("td", {}, fmt(o.fold_error), h("div", { class: "muted" }, `limit ${fmt(o.fold_limit)}`)),
    h("td", {}, fmt(o.export_error), h("div", { class: "muted" }, `limit ${fmt(o.export_limit)}`)),
    h("td", {}, fmt(o.total_error)),
    h("td", {}, fmt(o.noise)),
    h("td", {}, o.argmax_agreement === null || o.argmax_agreement === undefined ? "–" : `${(o.argmax_agreement * 100).toFixed(1)}%`)));
  return h("section", { class: "card", id: "verification", "aria-labelledby": "verification-title" },
    h("h2", { id: "verification-title" }, "Verification ", badge(verdict, verdict)),
    h("p", { class: "muted" }, `${verification.samples} ${verification.probes} probes, ${verification.compared_dtype}; `
      + "errors are max |difference| over each output's scale: fold = folded vs unfolded ONNX, "
      + "export = unfolded ONNX vs the source model, total = folded vs the source model."),
    verification.inconclusive ? h("p", { class: "reason" }, verification.inconclusive_reason) : null,
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ["output", "fold error", "export error", "total error", "noise floor", "argmax agreement"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows))),
    legend(["fold", "k0"], ["export", "k1"], ["total", "k2"], ["limit", "klimit"]),
    errorPlot(verification.outputs));
}

function bnCard(entry, kept) {
  const stats = entry.stats;
  const diagnostics = entry.diagnostics;
  const flags = diagnostics ? diagnostics.flags : [];
  const head = h("div", { class: "bn-head" },
    h("h3", {}, entry.bn),
    kept ? badge("kept", "flag") : h("span", { class: "muted" }, `folded ${entry.direction} into `, h("strong", {}, entry.into), ` (${entry.into_class})`));
  const parts = [head];
  if (kept) parts.push(h("p", { class: "reason" }, entry.reason));
  for (const flag of flags) parts.push(h("p", {}, badge("flag", "flag"), " ", flag));
  if (stats) {
    parts.push(h("p", { class: "muted" }, `${stats.channels} channels, ε ${stats.epsilon}; scale ${fmt(stats.scale.min)} … ${fmt(stats.scale.max)}`
      + (diagnostics ? `, spread ${fmt(diagnostics.scale_spread)}` : "")));
    const channels = stats.per_channel;
    if (channels) {
      const dead = new Set(diagnostics ? diagnostics.dead_channels : []);
      const stride = channels.stride;
      parts.push(
        h("div", { class: "muted" }, "resulting scale = γ / √(moving variance + ε) per channel" + (dead.size ? " (red: dead channels)" : "")),
        channelPlot(`${entry.bn}: scale per channel`, [{ name: "scale", values: channels.scale }], { bars: true, stride, dead }),
      );
      const affine = [];
      if (channels.gamma) affine.push({ name: "gamma", values: channels.gamma });
      if (channels.beta) affine.push({ name: "beta", values: channels.beta });
      if (affine.length) {
        parts.push(legend(...affine.map((item, k) => [item.name === "gamma" ? "γ (gamma)" : "β (beta)", `k${k}`])),
          channelPlot(`${entry.bn}: gamma and beta per channel`, affine, { stride }));
      }
      parts.push(legend(["moving mean", "k0"]),
        channelPlot(`${entry.bn}: moving mean per channel`, [{ name: "moving_mean", values: channels.moving_mean }], { stride }),
        legend(["moving variance", "k0"]),
        channelPlot(`${entry.bn}: moving variance per channel`, [{ name: "moving_variance", values: channels.moving_variance }], { stride }));
    }
  }
  return h("article", { class: "card bn", "data-bn": entry.bn }, parts);
}

function sampleRows(report) {
  const row = {};
  for (const input of report.inputs) {
    const dims = input.shape.slice(1).map((d) => (d === null || d < 0 ? 8 : d));
    const size = dims.reduce((a, b) => a * b, 1);
    if (size > 4096) return null;
    const integer = input.dtype.startsWith("int") || input.dtype.startsWith("uint");
    const fill = (shape) => shape.length === 0
      ? (integer ? 0 : Number(Math.random().toFixed(3)))
      : Array.from({ length: shape[0] }, () => fill(shape.slice(1)));
    row[input.name] = fill(dims);
  }
  return report.inputs.length === 1 ? [row[report.inputs[0].name]] : [row];
}

function parseNpy(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = String.fromCharCode(...bytes.slice(1, 6));
  if (bytes[0] !== 0x93 || magic !== "NUMPY") throw new Error("not a .npy file");
  const view = new DataView(buffer);
  const major = bytes[6];
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.slice(start, start + headerLength));
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  if (/'fortran_order':\s*True/.test(header)) throw new Error("Fortran-ordered .npy is not supported");
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(",").map((t) => t.trim()).filter(Boolean).map(Number);
  const kinds = { "<f4": Float32Array, "<f8": Float64Array, "<i4": Int32Array, "<i2": Int16Array, "|i1": Int8Array, "|u1": Uint8Array, "<u2": Uint16Array, "<u4": Uint32Array };
  let values;
  if (descr === "<i8") values = Array.from(new BigInt64Array(buffer.slice(start + headerLength)), Number);
  else if (kinds[descr]) values = Array.from(new kinds[descr](buffer.slice(start + headerLength)));
  else throw new Error(`unsupported dtype ${descr}`);
  const nest = (flat, dims) => {
    if (dims.length <= 1) return flat;
    const size = dims.slice(1).reduce((a, b) => a * b, 1);
    return Array.from({ length: dims[0] }, (_, i) => nest(flat.slice(i * size, (i + 1) * size), dims.slice(1)));
  };
  return shape.length === 0 ? values : nest(values, shape);
}

function compareCard(name, version, report) {
  const rows = sampleRows(report);
  const text = h("textarea", { id: "compare-rows", spellcheck: "false" }, rows ? JSON.stringify(rows) : "");
  const npy = h("input", { type: "file", id: "compare-npy", accept: ".npy" });
  npy.addEventListener("change", async () => {
    try {
      text.value = JSON.stringify(parseNpy(await npy.files[0].arrayBuffer()));
    } catch (error) {
      result.replaceChildren(h("p", { class: "error" }, `${npy.files[0].name}: ${error.message}`));
    }
  });
  text.addEventListener("dragover", (event) => event.preventDefault());
  text.addEventListener("drop", async (event) => {
    const file = event.dataTransfer.files[0];
    if (!file) return;
    event.preventDefault();
    try { text.value = JSON.stringify(parseNpy(await file.arrayBuffer())); } catch (error) {
      result.replaceChildren(h("p", { class: "error" }, `${file.name}: ${error.message}`));
    }
  });
  const repeats = h("input", { type: "number", id: "compare-repeats", min: 1, max: 200, value: 10 });
  const source = h("input", { type: "checkbox", id: "compare-source", checked: true });
  const button = h("button", { class: "primary", type: "submit", id: "compare-button" }, "Compare");
  const result = h("div", { id: "compare-result", "aria-live": "polite" });
  const form = h("form", { id: "compare-form" },
    h("label", { for: "compare-rows" }, "Rows (JSON, as \"instances\"), or drop a .npy on the box"), text,
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "compare-npy" }, "…or load a .npy"), npy),
      h("div", {}, h("label", { for: "compare-repeats" }, "Timed rounds"), repeats),
      h("div", {}, h("label", { for: "compare-source" }, h("span", {}, "Also run the source model ")), source),
      button),
    result);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let instances;
    try {
      instances = JSON.parse(text.value);
    } catch (error) {
      result.replaceChildren(h("p", { class: "error" }, `rows are not JSON: ${error.message}`));
      return;
    }
    const body = { instances, repeats: Number(repeats.value) || 10 };
    if (source.checked) body.reference = "source";
    button.disabled = true;
    result.replaceChildren(h("p", { class: "muted" }, "running…"));
    try {
      showComparison(result, await api(`/v1/models/${name}/versions/${version}:compare`, { method: "POST", json: body }));
    } catch (error) {
      result.replaceChildren(h("p", { class: "error", id: "compare-error" }, error.message));
    } finally {
      button.disabled = false;
    }
  });
  return h("section", { class: "card", id: "compare", "aria-labelledby": "compare-title" },
    h("h2", { id: "compare-title" }, "Compare folded and unfolded"), form);
}

function showComparison(holder, answer) {
  const parts = [h("p", {}, "Verdict: ", badge(answer.verdict.passed ? "passed" : "failed"),
    ` (${answer.verdict.compared}, rtol ${answer.verdict.rtol})`)];
  const reference = ["source", "keras"].find((key) => Object.values(answer.outputs).some((o) => key in o));
  const rows = Object.entries(answer.outputs).map(([output, entry]) => h("tr", {},
    h("td", {}, output), h("td", {}, fmt(entry.max_abs_diff)), h("td", {}, fmt(entry.max_rel_diff)),
    h("td", {}, entry.argmax_agreement === undefined ? "–" : `${(entry.argmax_agreement * 100).toFixed(1)}%`),
    h("td", {}, reference ? fmt(entry[`${reference}_max_rel_diff`]) : "–"),
    h("td", {}, entry.passed ? "yes" : "NO")));
  parts.push(h("div", { class: "scroll" }, h("table", { id: "compare-table" },
    h("thead", {}, h("tr", {}, ["output", "max |diff|", "max rel diff", "argmax agreement", `vs ${reference || "source"}`, "passed"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows))));
  for (const [output, entry] of Object.entries(answer.outputs)) {
    if (!entry.folded) continue;
    const first = (values) => [values].flat(Infinity).slice(0, 64);
    const series = [{ name: "folded", values: first(entry.folded[0]) }, { name: "unfolded", values: first(entry.unfolded[0]) }];
    if (reference && entry[reference]) series.push({ name: reference, values: first(entry[reference][0]) });
    parts.push(h("h3", {}, `${output}, first row`),
      legend(...series.map((item, k) => [item.name, `k${k}`])),
      channelPlot(`${output}: folded, unfolded and ${reference || "source"} outputs of the first row`, series, { xLabel: "output index" }));
  }
  const latency = answer.latency_ms;
  parts.push(h("h3", {}, `Median latency (ms, ${answer.latency.repeats} interleaved rounds)`),
    barsPlot("folded and unfolded latency in milliseconds", ["folded", "unfolded"], [latency.folded, latency.unfolded]));
  const sourceMs = latency.source ?? latency.keras;
  if (sourceMs !== undefined) {
    parts.push(h("p", { class: "muted", id: "compare-source-latency" },
      `source model: ${fmt(sourceMs)} ms (one run in the fold worker, TensorFlow; not on the same scale)`));
  }
  holder.replaceChildren(...parts);
}

async function versionPage(name, version) {
  document.title = `${name} v${version} · foldserve`;
  main.replaceChildren(h("h1", {}, `${name} version ${version}`), h("p", { class: "muted" }, "loading the fold report…"));
  let report;
  try {
    report = await api(`/v1/models/${name}/versions/${version}/report`);
  } catch (error) {
    main.replaceChildren(h("h1", {}, `${name} version ${version}`), h("p", { class: "error" }, error.message));
    return;
  }
  const base = `/v1/models/${name}/versions/${version}`;
  const summary = report.diagnostics_summary || { checked: 0, flagged: 0 };
  const timings = Object.entries(report.timings || {}).map(([k, v]) => `${k} ${fmt(v)} s`).join(", ");
  const kept = report.not_folded || [];
  main.replaceChildren(
    h("h1", {}, `${name} version ${version}`),
    h("section", { class: "card", id: "summary" },
      h("div", { class: "downloads" },
        h("button", { type: "button", onclick: () => download(`${base}/report`, `${name}-${version}-report.json`) }, "report.json"),
        h("button", { type: "button", onclick: () => download(`${base}/model.onnx`, `${name}-${version}-model.onnx`) }, "model.onnx (folded)"),
        h("button", { type: "button", onclick: () => download(`${base}/unfolded.onnx`, `${name}-${version}-unfolded.onnx`) }, "unfolded.onnx")),
      h("p", {}, `${report.folded.length} BatchNormalization layers folded, ${kept.length} kept, `
        + `${(report.removed || []).length} layer(s) removed; exported by ${report.exporter}.`),
      h("p", { class: "muted" }, `diagnostics: ${summary.flagged} of ${summary.checked} BNs flagged. ${timings}`),
      (report.warnings || []).map((warning) => h("p", { class: "reason" }, warning))),
    verificationCard(report.verification),
    compareCard(name, version, report),
    h("h2", {}, "BatchNormalization layers"),
    h("div", { class: "grid", id: "bns" },
      report.folded.map((entry) => bnCard(entry, false)),
      kept.map((entry) => bnCard(entry, true))),
  );
}

// -- routing -------------------------------------------------------------------------

function route() {
  clearInterval(pageTimer);
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "models" && parts.length === 3) versionPage(parts[1], parts[2]);
  else if (parts[0] === "jobs") jobsPage();
  else modelsPage();
  main.focus({ preventScroll: true });
}

window.addEventListener("hashchange", route);
route();
pollStats();
setInterval(pollStats, 2000);
