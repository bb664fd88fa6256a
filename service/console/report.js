// A version's page: the fold report drawn (per-BN channels, diagnostics, the three
// verification errors) and its downloads.

import { api, download, errorBox, h, quote } from "/ui/api.js";
import { bars, channelChart, format, logBars } from "/ui/plots.js";

export async function renderVersion(main, [name, version], signal) {
  const base = `/v1/models/${quote(name)}/versions/${quote(version)}`;
  const page = `#/models/${quote(name)}/versions/${quote(version)}`;
  main.append(
    h("p.crumbs", {}, [h("a", { href: "#/", text: "Models" }), " / ", name]),
    h("h1", { text: `${name} · version ${version}` }),
  );
  const downloads = h("ul.downloads", { "aria-label": "Downloads" }, [
    ["report.json", "report", "report.json"],
    ["model.onnx (folded)", "model.onnx", "model.onnx"],
    ["unfolded.onnx", "unfolded.onnx", "unfolded.onnx"],
  ].map(([label, path, file]) => h("li", {}, downloadLink(`${base}/${path}`, label,
    `${name}-${version}-${file}`, path))));
  main.append(h("nav.actions", { "aria-label": "This version" }, [
    downloads,
    h("a.button.primary", { href: `${page}/compare`, text: "Compare playground" }),
  ]));
  let report;
  try {
    report = await api(`${base}/report`, { signal });
  } catch (error) {
    if (error.name !== "AbortError") main.append(errorBox(error));
    return;
  }
  if (report.failed) {
    main.append(failure(report));
    const folded = report.report;
    if (folded) main.append(summary(folded), verification(folded), diagnosticsSummary(folded), batchNorms(folded));
    return;
  }
  for (const entry of report.variants || []) {
    if (!entry.file) continue;
    downloads.append(h("li", {}, downloadLink(`${base}/${entry.file}`,
      `${entry.file} (${entry.precision})`, `${name}-${version}-${entry.file}`, entry.file)));
  }
  main.append(summary(report), verification(report), diagnosticsSummary(report), batchNorms(report));
  if (report.recalibration) main.append(recalibration(report.recalibration));
  if (report.variants?.length) main.append(variants(report.variants, name, base));
}

function downloadLink(href, label, fileName, key) {
  // Fetched with the token (a plain link would not send it), saved under ``fileName``.
  const link = h("a.button", { href, text: label, download: fileName, dataset: { download: key } });
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    try {
      await download(link.getAttribute("href"), link.download);
    } catch (error) {
      link.after(errorBox(error));
    }
  });
  return link;
}

function definitions(pairs) {
  return h("dl.facts", {}, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .flatMap(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)]));
}

function summary(report) {
  const v = report.verification;
  const verdict = v ? v.verdict : "not verified";
  const tone = !v ? "unknown" : v.passed ? (v.inconclusive ? "warn" : "ok") : "bad";
  const onnx = report.onnx || {};
  const ops = (variant) => onnx[variant]
    ? `${onnx[variant].nodes} nodes, ${(onnx[variant].bytes / 1024).toFixed(1)} KiB` : null;
  const removed = (report.removed || []).map((r) => `${r.layer} (${r.class_name})`).join(", ");
  return h("section", { "aria-labelledby": "summary-title" }, [
    h("h2", { id: "summary-title", text: "Summary" }),
    h("p", {}, [h(`span.verdict.verdict-${tone}`, { id: "verdict", text: `verification ${verdict}` })]),
    definitions([
      ["Inputs", (report.inputs || []).map((t) => `${t.name} ${t.dtype} [${t.shape.map((d) => d ?? "?").join(", ")}]`).join("; ")],
      ["Outputs", (report.outputs || []).map((t) => `${t.name} ${t.dtype} [${t.shape.map((d) => d ?? "?").join(", ")}]`).join("; ")],
      ["BatchNorms", `${(report.folded || []).length} folded, ${(report.not_folded || []).length} kept`],
      ["Removed", removed || "none"],
      ["Folded ONNX", ops("folded")],
      ["Unfolded ONNX", ops("unfolded")],
      ["Probes", v ? `${v.samples} × ${v.probes} (${v.compared_dtype})` : null],
      ["Exporter", report.exporter],
      ["Loader", report.loader],
      ["Timings", Object.entries(report.timings || {}).map(([k, s]) => `${k.replace(/_s$/, "")} ${s.toFixed(3)} s`).join(" · ")],
    ]),
    (report.warnings || []).length
      ? h("ul.warnings", {}, report.warnings.map((w) => h("li", { text: w }))) : null,
  ]);
}

function verification(report) {
  const v = report.verification;
  const section = h("section", { "aria-labelledby": "verification-title", id: "verification" }, [
    h("h2", { id: "verification-title", text: "Verification errors" }),
    h("p.muted.small", { text: "Each error is max |a − b| over the output's scale: fold = folded vs unfolded ONNX, "
      + "export = unfolded ONNX vs Keras, total = folded ONNX vs Keras (not judged on its own). "
      + "Ticks mark the tolerances; "
      + "the dashed line is the float32 noise floor (how far the output moves when every weight moves one ulp)." }),
  ]);
  if (!v) return section;
  if (v.inconclusive) section.append(h("p.warn", { text: `Inconclusive: ${v.inconclusive_reason}` }));
  for (const check of v.outputs) {
    section.append(h("figure.plot", { dataset: { output: check.name } }, [
      logBars({
        title: `Errors of output ${check.name}`,
        rows: [
          { name: "fold", value: check.fold_error, limit: check.fold_limit },
          { name: "export", value: check.export_error, limit: check.export_limit },
          { name: "total", value: check.total_error, limit: null },
        ],
        lines: [{ name: "noise floor", value: check.noise }],
      }),
      h("figcaption", {}, `${check.name}: fold ${format(check.fold_error)} (limit ${format(check.fold_limit)}), `
        + `export ${format(check.export_error)} (limit ${format(check.export_limit)}), total ${format(check.total_error)}`
        + `${check.noise === null ? "" : `, noise ${format(check.noise)}`}`
        + `${check.argmax_agreement === null || check.argmax_agreement === undefined ? "" : `, argmax agreement ${(check.argmax_agreement * 100).toFixed(1)} %`}`),
    ]));
  }
  return section;
}

function diagnosticsSummary(report) {
  const s = report.diagnostics_summary || { checked: 0, flagged: 0, flags: {} };
  return h("section", { "aria-labelledby": "diagnostics-title", id: "diagnostics" }, [
    h("h2", { id: "diagnostics-title", text: "Diagnostics" }),
    h("p", { text: `${s.flagged} of ${s.checked} BatchNormalizations flagged.` }),
    Object.keys(s.flags).length
      ? h("ul.flags", {}, Object.entries(s.flags).flatMap(([bn, flags]) =>
        flags.map((flag) => h("li", {}, [h("strong", { text: bn }), `: ${flag}`]))))
      : null,
  ]);
}

function batchNorms(report) {
  const entries = [
    ...(report.folded || []).map((e) => ({ ...e, kept: false })),
    ...(report.not_folded || []).map((e) => ({ ...e, kept: true })),
  ];
  const section = h("section", { "aria-labelledby": "bn-title", id: "batchnorms" }, [
    h("h2", { id: "bn-title", text: `BatchNormalizations (${entries.length})` }),
  ]);
  entries.forEach((entry, index) => section.append(batchNorm(entry, index < 4)));
  return section;
}

function batchNorm(entry, open) {
  const what = entry.kept
    ? `kept: ${entry.reason}`
    : `folded ${entry.direction} into ${entry.into} (${entry.into_class})`;
  const details = h("details.bn", { open, dataset: { bn: entry.bn, kept: entry.kept } }, [
    h("summary", {}, [h("strong", { text: entry.bn }), " ", h(entry.kept ? "span.tag.warn" : "span.tag.ok", { text: what })]),
  ]);
  const d = entry.diagnostics;
  if (d) {
    details.append(h("ul.badges", { "aria-label": "Diagnostics" }, [
      h(d.dead_channels.length ? "li.bad" : "li", { text: `dead channels: ${d.dead_channels.length}` }),
      h(d.tiny_variance_channels.length ? "li.bad" : "li", { text: `tiny variances: ${d.tiny_variance_channels.length}` }),
      h(d.scale_spread > 100 ? "li.bad" : "li", { text: `scale spread: ${format(d.scale_spread)}` }),
      h(d.fp16_overflow ? "li.bad" : "li", { text: `fp16 overflow: ${d.fp16_overflow ? "yes" : "no"}` }),
      h(d.variance_shift !== null && d.variance_shift > 2 ? "li.bad" : "li",
        { text: `variance shift: ${d.variance_shift === null ? "not measured" : format(d.variance_shift)}` }),
    ]));
    if (d.flags.length) details.append(h("ul.flags", {}, d.flags.map((f) => h("li", { text: f }))));
  }
  const stats = entry.stats;
  if (!stats) return details;
  details.append(h("p.muted.small", { text: `${stats.channels} channels, epsilon ${format(stats.epsilon)}; `
    + `scale = gamma / √(moving_variance + epsilon) in [${format(stats.scale.min)}, ${format(stats.scale.max)}]` }));
  const pc = stats.per_channel;
  if (!pc) {
    details.append(definitions(["scale", "gamma", "beta", "moving_mean", "moving_variance"]
      .filter((k) => stats[k]).map((k) => [k, `${format(stats[k].min)} … ${format(stats[k].max)}`])),
      h("p.muted.small", { text: "Per-channel values are reported for layers of up to 4096 channels." }));
    return details;
  }
  const marks = d ? [
    { name: "dead", indices: d.dead_channels, tone: "bad" },
    { name: "tiny variance", indices: d.tiny_variance_channels, tone: "warn" },
  ] : [];
  const plots = h("div.plots", {}, [
    figure("scale per channel", channelChart({ title: `${entry.bn}: scale per channel`,
      series: [{ name: "scale", values: pc.scale }], highlight: marks, yLabel: "scale" }), "scale"),
    figure("gamma and beta", channelChart({ title: `${entry.bn}: gamma and beta per channel`,
      series: [{ name: "gamma", values: pc.gamma, tone: 1 }, { name: "beta", values: pc.beta, tone: 2 }] }), "gamma-beta"),
    figure("moving mean", channelChart({ title: `${entry.bn}: moving mean per channel`,
      series: [{ name: "moving mean", values: pc.moving_mean, tone: 3 }] }), "moving-mean"),
    figure("moving variance (log scale)", channelChart({ title: `${entry.bn}: moving variance per channel`,
      series: [{ name: "moving variance", values: pc.moving_variance, tone: 4 }], log: true,
      highlight: d ? [{ name: "tiny variance", indices: d.tiny_variance_channels, tone: "warn" }] : [] }), "moving-variance"),
  ]);
  details.append(plots);
  return details;
}

function figure(caption, svg, kind) {
  return h("figure.plot", { dataset: { plot: kind } }, [svg, h("figcaption", { text: caption })]);
}

function failure(report) {
  const { stage, error, status_code: status, job, file, timings } = report.failure;
  const steps = Object.entries(timings || {}).map(([name, seconds]) =>
    h("li", { dataset: { stage: name }, class: name === stage ? "failed" : "done",
      text: `${name}: ${format(seconds)} s${name === stage ? " ✗" : ""}` }));
  return h("section", { "aria-labelledby": "failure-title", id: "failure" }, [
    h("h2", { id: "failure-title", text: `Fold failed in ${stage}` }),
    h("p", {}, h("span.verdict.verdict-bad", { id: "failure-error", text: error })),
    definitions([["status", String(status)], ["uploaded file", file], ["upload job", job]]),
    steps.length ? h("ol.stages", { "aria-label": "What was tried" }, steps) : "",
  ]);
}

function variants(entries, name, base) {
  // Each precision variant: its verdict, agreement and error against float32, and the
  // latency ratio measured in the same run (drawn per batch size, float32 beside it).
  const rows = entries.map((entry) => {
    const batch8 = entry.latency_ms?.["batch 8"];
    const served = entry.file
      ? h("a", { href: `#/models/${quote(`${name}-${entry.precision}`)}`, text: `${name}-${entry.precision}` })
      : h("span", { text: "not served" });
    return h("tr", { dataset: { precision: entry.precision } }, [
      h("th", { scope: "row", text: entry.precision }),
      h("td", {}, h(`span.verdict.verdict-${entry.passed ? "ok" : "bad"}`, { text: entry.passed ? "passed" : "failed" })),
      h("td", { text: entry.agreement === null ? "–" : `${(100 * entry.agreement).toFixed(1)} %` }),
      h("td", { text: Object.keys(entry.errors).length ? format(Math.max(...Object.values(entry.errors))) : "–" }),
      h("td", { text: batch8?.speedup ? `${batch8.speedup.toFixed(2)}×` : "–" }),
      h("td", { text: `${(entry.size_bytes / 1e6).toFixed(2)} MB` }),
      h("td", {}, served),
      h("td", { text: [entry.reason, ...(entry.notes || [])].filter(Boolean).join("; ") }),
    ]);
  });
  const section = h("section", { "aria-labelledby": "variants-title", id: "variants" }, [
    h("h2", { id: "variants-title", text: "Precision variants" }),
    h("div.scroll", {}, h("table", {}, [
      h("thead", {}, h("tr", {}, ["precision", "verdict", "top-1 agreement", "max error", "batch 8 speed-up", "size", "served as", "notes"]
        .map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows),
    ])),
  ]);
  for (const batch of ["batch 1", "batch 8"]) {
    const items = [];
    for (const entry of entries) {
      const timing = entry.latency_ms?.[batch];
      if (!timing) continue;
      if (!items.length) items.push({ name: "fp32", value: timing.fp32 });
      items.push({ name: entry.precision, value: timing.variant });
    }
    if (items.length > 1) {
      section.append(figure(`Latency at ${batch} (ms), one intra-op thread, medians of interleaved runs`,
        bars({ title: `Latency at ${batch}`, items, unit: "ms" }), `variants-${batch.replace(" ", "")}`));
    }
  }
  return section;
}

function recalibration(recal) {
  const rows = recal.layers.map((layer) => h("tr", {}, [
    h("th", { scope: "row", text: layer.bn }),
    h("td", { text: `${format(layer.before.moving_variance.min)} … ${format(layer.before.moving_variance.max)}` }),
    h("td", { text: `${format(layer.after.moving_variance.min)} … ${format(layer.after.moving_variance.max)}` }),
    h("td", { text: format(layer.variance_shift_before) }),
  ]));
  return h("section", { "aria-labelledby": "recal-title" }, [
    h("h2", { id: "recal-title", text: `Recalibration on ${recal.samples} samples` }),
    h("div.scroll", {}, h("table", {}, [
      h("thead", {}, h("tr", {}, ["BN", "moving variance before", "after", "variance shift before"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows),
    ])),
  ]);
}
