// The console's entry point: the router (location hash) and the models page
// (catalogue, upload with live job progress).

import { announce, api, askToken, errorBox, every, h, quote, readEvents } from "/ui/api.js";
import { renderCompare } from "/ui/compare.js";
import { renderMonitor } from "/ui/monitor.js";
import { renderVersion } from "/ui/report.js";

const STAGES = ["queued", "loading", "folding", "exporting", "verifying", "quantizing", "committing", "done"];
const OPTIONAL_STAGES = new Set(["quantizing"]);
const TERMINAL = new Set(["done", "failed", "cancelled"]);
// what the upload takes (the server's UPLOAD_SUFFIXES): a SavedModel directory goes as an archive
const ACCEPTED = ".keras,.h5,.hdf5,.onnx,.zip,.tar.gz,.tgz";
const REFRESH_MS = 4000;

const routes = [
  [/^#\/models\/([^/]+)\/versions\/([^/]+)\/compare$/, renderCompare, "models"],
  [/^#\/models\/([^/]+)\/versions\/([^/]+)$/, renderVersion, "models"],
  [/^#\/monitor$/, renderMonitor, "monitor"],
  [/^(#\/?)?$/, renderModels, "models"],
];

let cleanup = null;

function route() {
  const hash = location.hash;
  if (hash && !hash.startsWith("#/")) return; // an in-page anchor
  const [pattern, render, section] = routes.find(([p]) => p.test(hash)) || routes.at(-1);
  const parts = (pattern.exec(hash) || []).slice(1).map(decodeURIComponent);
  if (cleanup) cleanup();
  const main = document.getElementById("main");
  main.replaceChildren();
  for (const link of document.querySelectorAll("nav a[data-section]")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const stop = new AbortController();
  cleanup = () => stop.abort();
  render(main, parts, stop.signal);
}

// -- the models page ---------------------------------------------------------------

function renderModels(main, _parts, signal) {
  const catalogue = h("div", { id: "catalogue" }, h("p.muted", { text: "Loading models…" }));
  const jobs = h("ul.jobs", { id: "jobs", "aria-label": "Upload jobs" });
  main.append(
    h("h1", { text: "Models" }),
    uploadForm(jobs, signal),
    h("section", { "aria-labelledby": "jobs-title" }, [
      h("h2", { id: "jobs-title", text: "Uploads" }),
      jobs,
    ]),
    h("section", { "aria-labelledby": "catalogue-title" }, [
      h("h2", { id: "catalogue-title", text: "Model repository" }),
      catalogue,
    ]),
  );
  let shown = "";
  every(REFRESH_MS, signal, async () => {
    try {
      const [listing, recent] = await Promise.all([
        api("/v1/models", { signal }),
        api("/v1/jobs?limit=10", { signal }),
      ]);
      const text = JSON.stringify(listing);
      if (text !== shown) {
        shown = text;
        catalogue.replaceChildren(catalogueTable(listing.models));
      }
      for (const job of recent.jobs.slice().reverse()) showJob(jobs, job, signal);
    } catch (error) {
      if (error.name !== "AbortError") catalogue.replaceChildren(errorBox(error), tokenButton());
      throw error;
    }
  });
}

function tokenButton() {
  return h("button", {
    type: "button",
    text: "Enter a token",
    onclick: async () => {
      if (await askToken("Enter the server's token.")) route();
    },
  });
}

function catalogueTable(models) {
  if (!models.length) return h("p.muted", { text: "No models yet: upload one above." });
  const rows = [];
  for (const model of models) {
    for (const version of model.versions) {
      const page = `#/models/${quote(model.name)}/versions/${version.version}`;
      rows.push(h("tr", { dataset: { model: model.name, version: version.version } }, [
        h("th", { scope: "row", text: model.name }),
        h("td", {}, h("a", { href: page, text: `version ${version.version}` })),
        h("td", {}, h(`span.state.state-${version.state.toLowerCase()}`, { text: version.state })),
        h("td.reason", { text: version.reason || "" }),
        h("td.actions", {}, [
          h("a", { href: page, text: "Report" }),
          version.state === "AVAILABLE" ? h("a", { href: `${page}/compare`, text: "Compare" }) : null,
        ]),
      ]));
    }
  }
  return h("div.scroll", {}, h("table.catalogue", {}, [
    h("caption.sr-only", { text: "Models and versions with their states" }),
    h("thead", {}, h("tr", {}, ["Model", "Version", "State", "Reason", "Open"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, rows),
  ]));
}

// -- upload ----------------------------------------------------------------------

function uploadForm(jobs, signal) {
  const file = h("input", { type: "file", id: "upload-file", name: "file", accept: ACCEPTED, required: true });
  const name = h("input", { type: "text", id: "upload-name", name: "name", pattern: "[a-z0-9][a-z0-9._\\-]{0,63}",
    placeholder: "from the file name", autocomplete: "off" });
  const probe = h("input", { type: "file", id: "upload-probe", name: "probe", accept: ".npy,.npz" });
  const recalibrate = h("input", { type: "file", id: "upload-recalibrate", name: "recalibrate", accept: ".npy,.npz" });
  const precision = h("select", { id: "upload-precision", name: "precision" },
    [["", "float32 only"], ["fp16", "+ fp16"], ["int8", "+ int8"], ["fp16,int8", "+ fp16 and int8"]]
      .map(([value, text]) => h("option", { value, text })));
  const calibration = h("input", { type: "file", id: "upload-calibration", name: "calibration", accept: ".npy,.npz" });
  const message = h("div", { id: "upload-message" });
  const zone = h("div.dropzone", { id: "dropzone" }, [
    h("p", {}, [h("strong", { text: "Drop a model here" }),
      ": a .keras, .h5 or .onnx file, or a SavedModel as .zip or .tar.gz; or choose one:"]),
    h("label", { for: "upload-file", text: "Model file" }),
    file,
  ]);
  const form = h("form.upload", { id: "upload-form", "aria-labelledby": "upload-title" }, [
    h("h2", { id: "upload-title", text: "Upload a model" }),
    zone,
    h("div.fields", {}, [
      h("div", {}, [h("label", { for: "upload-name", text: "Name (optional)" }), name]),
      h("div", {}, [h("label", { for: "upload-probe", text: "Probe inputs .npy/.npz (optional)" }), probe]),
      h("div", {}, [h("label", { for: "upload-recalibrate", text: "Re-estimate BN statistics on .npy/.npz (optional)" }), recalibrate]),
      h("div", {}, [h("label", { for: "upload-precision", text: "Precision variants" }), precision]),
      h("div", {}, [h("label", { for: "upload-calibration", text: "Variant calibration rows .npy/.npz (optional)" }), calibration]),
    ]),
    h("button", { type: "submit", id: "upload-button", text: "Upload and fold" }),
    message,
  ]);
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const dropped = event.dataTransfer?.files;
    if (!dropped || !dropped.length) return;
    file.files = dropped;
    form.requestSubmit();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file.files.length) {
      message.replaceChildren(errorBox(new Error("Choose a model file first.")));
      return;
    }
    const body = new FormData();
    body.append("file", file.files[0]);
    if (name.value.trim()) body.append("name", name.value.trim());
    if (probe.files.length) body.append("probe", probe.files[0]);
    if (recalibrate.files.length) body.append("recalibrate", recalibrate.files[0]);
    if (precision.value) body.append("precision", precision.value);
    if (calibration.files.length) body.append("calibration", calibration.files[0]);
    message.replaceChildren(h("p.muted", { text: `Uploading ${file.files[0].name}…` }));
    try {
      const job = await api("/v1/models", { method: "POST", body });
      message.replaceChildren(h("p", { text: `Accepted: ${job.name} version ${job.version}.` }));
      announce(`Upload accepted: ${job.name} version ${job.version}`);
      form.reset();
      showJob(jobs, job, signal);
    } catch (error) {
      message.replaceChildren(errorBox(error));
    }
  });
  return form;
}

// -- jobs ------------------------------------------------------------------------

const followed = new Map();

function showJob(list, job, signal) {
  let card = list.querySelector(`[data-job="${job.id}"]`);
  if (!card) {
    card = jobCard(job);
    list.prepend(card);
    while (list.children.length > 10) list.lastElementChild.remove();
  }
  updateJob(card, job);
  if (!TERMINAL.has(job.state) && !followed.has(job.id)) follow(list, job, signal);
}

async function follow(list, job, signal) {
  followed.set(job.id, true);
  try {
    await readEvents(`/v1/jobs/${job.id}/events`, (name, data) => {
      if (name !== "job") return;
      const current = JSON.parse(data);
      const card = list.querySelector(`[data-job="${current.id}"]`);
      if (card) updateJob(card, current);
      if (TERMINAL.has(current.state)) announce(`${current.name} version ${current.version}: ${current.state}`);
    }, signal);
  } catch (error) {
    if (error.name !== "AbortError") {
      const card = list.querySelector(`[data-job="${job.id}"]`);
      if (card) card.querySelector(".job-error").textContent = `following the job failed: ${error.message}`;
    }
  } finally {
    followed.delete(job.id);
  }
}

function jobCard(job) {
  const steps = h("ol.stages", { "aria-label": "Stages" },
    STAGES.map((stage) => h("li", { dataset: { stage }, text: stage })));
  const cancel = h("button.quiet", { type: "button", text: "Cancel", "aria-label": `Cancel the upload of ${job.filename}` });
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      updateJob(cancel.closest("li.job"), await api(`/v1/jobs/${job.id}`, { method: "DELETE" }));
    } catch (error) {
      cancel.closest("li.job").querySelector(".job-error").textContent = error.message;
    }
  });
  return h("li.job", { dataset: { job: job.id } }, [
    h("div.job-head", {}, [
      h("strong.job-title", { text: `${job.name} version ${job.version}` }),
      h("span.muted", { text: job.filename }),
      h("span.state.job-state", {}),
    ]),
    steps,
    h("progress.job-progress", { max: 1, "aria-label": "Progress of the current stage" }),
    h("p.job-timings.muted.small", {}),
    h("p.job-error.error", {}),
    h("div.job-actions", {}, [cancel, h("a.job-link", { hidden: true, text: "Open the report" })]),
  ]);
}

function updateJob(card, job) {
  card.dataset.state = job.state;
  const state = card.querySelector(".job-state");
  state.textContent = job.state;
  state.className = `state job-state state-${job.state}`;
  const reached = STAGES.indexOf(job.state);
  // a failed job failed in the last stage it entered (the last one with a timing)
  const failedAt = job.state === "failed"
    ? STAGES.filter((stage) => stage in (job.timings || {})).pop() ?? STAGES[0] : null;
  for (const step of card.querySelectorAll(".stages li")) {
    const index = STAGES.indexOf(step.dataset.stage);
    const failed = step.dataset.stage === failedAt;
    step.classList.toggle("failed", failed);
    step.textContent = failed ? `${step.dataset.stage} ✗` : step.dataset.stage;
    if (failed) step.setAttribute("aria-label", `${step.dataset.stage}: failed`);
    else step.removeAttribute("aria-label");
    // an optional stage the job went past without entering (quantizing, when no precision
    // variants were asked for) was skipped, not done
    const passed = job.state === "done" || (reached >= 0 && index < reached);
    const skipped = OPTIONAL_STAGES.has(step.dataset.stage) && passed && !(step.dataset.stage in (job.timings || {}));
    step.classList.toggle("skipped", skipped);
    step.classList.toggle("done", !failed && !skipped && (passed || step.dataset.stage in (job.timings || {})));
    step.classList.toggle("current", step.dataset.stage === job.state && job.state !== "done");
    if (step.dataset.stage === job.state) step.setAttribute("aria-current", "step");
    else step.removeAttribute("aria-current");
  }
  const progress = card.querySelector(".job-progress");
  if (TERMINAL.has(job.state)) {
    progress.hidden = true;
  } else if (job.progress === null || job.progress === undefined) {
    progress.removeAttribute("value"); // indeterminate
  } else {
    progress.value = job.progress;
  }
  const timings = Object.entries(job.timings || {}).map(([stage, s]) => `${stage} ${s.toFixed(2)} s`);
  card.querySelector(".job-timings").textContent = timings.join(" · ");
  card.querySelector(".job-error").textContent = job.error || "";
  card.querySelector(".job-actions button").hidden = TERMINAL.has(job.state);
  const link = card.querySelector(".job-link");
  if (job.state === "done" || job.report) {
    link.href = `#/models/${quote(job.name)}/versions/${job.version}`;
    link.hidden = false;
  }
}

// -- start -----------------------------------------------------------------------

document.getElementById("skip").addEventListener("click", (event) => {
  event.preventDefault();
  document.getElementById("main").focus();
});
document.getElementById("token-button").addEventListener("click", async () => {
  if (await askToken("Enter the server's API or admin token.")) route();
});
window.addEventListener("hashchange", () => {
  route();
  if (location.hash.startsWith("#/")) document.getElementById("main").focus({ preventScroll: true });
});
route();
