// The compare playground: rows as JSON (typed, pasted or read from a dropped .npy),
// run through POST :compare; folded / unfolded / Keras outputs, differences, latencies.

import { api, errorBox, h, quote } from "/ui/api.js";
import { parseNpy, nest } from "/ui/npy.js";
import { bars, channelChart, format } from "/ui/plots.js";

const EXAMPLE_ROWS = 4;

export async function renderCompare(main, [name, version], signal) {
  const versionPath = `/v1/models/${quote(name)}/versions/${quote(version)}`;
  const page = `#/models/${quote(name)}/versions/${quote(version)}`;
  main.append(
    h("p.crumbs", {}, [h("a", { href: "#/", text: "Models" }), " / ",
      h("a", { href: page, text: `${name} version ${version}` }), " / compare"]),
    h("h1", { text: `Compare ${name} · version ${version}` }),
    h("p.muted", { text: "Runs the folded and the unfolded ONNX model (and the Keras original, when the "
      + "version has one) on the same rows and shows how far they differ and how long each took." }),
  );
  let metadata;
  let catalogue;
  try {
    [metadata, catalogue] = await Promise.all([
      api(`/v2/models/${quote(name)}/versions/${quote(version)}`, { signal }),
      api("/v1/models", { signal }),
    ]);
  } catch (error) {
    if (error.name !== "AbortError") main.append(errorBox(error));
    return;
  }
  const entry = catalogue.models.find((m) => m.name === name)?.versions
    .find((v) => String(v.version) === String(version));
  const hasSource = Boolean(entry?.source);

  const rows = h("textarea", { id: "compare-rows", rows: 8, spellcheck: false,
    value: JSON.stringify(exampleRows(metadata)) });
  const npy = h("input", { type: "file", id: "compare-npy", accept: ".npy" });
  const keras = h("input", { type: "checkbox", id: "compare-keras", checked: hasSource, disabled: !hasSource });
  const repeats = h("input", { type: "number", id: "compare-repeats", min: 1, max: 200, value: 10 });
  const note = h("p.muted.small", { id: "compare-note" });
  const result = h("div", { id: "compare-result", "aria-live": "polite" });
  const zone = h("div.dropzone", { id: "compare-drop" }, [
    h("p", {}, [h("strong", { text: "Drop an .npy of rows here" }), " (float32/float64/int, C order) or choose one:"]),
    h("label", { for: "compare-npy", text: ".npy file" }),
    npy,
  ]);
  const inputs = metadata.inputs.map((i) => `${i.name} ${i.datatype} [${i.shape.join(", ")}]`).join("; ");
  const form = h("form.compare", { id: "compare-form" }, [
    h("label", { for: "compare-rows" }, [`Rows as JSON: a list of rows, or {"instances": …} / {"inputs": …} (model inputs: ${inputs})`]),
    rows,
    zone,
    note,
    h("div.fields", {}, [
      h("div.check", {}, [keras, h("label", { for: "compare-keras",
        text: hasSource ? `Also run the source model (${entry.source}: Keras, SavedModel or ONNX, as uploaded)`
          : "No source model stored for this version" })]),
      h("div", {}, [h("label", { for: "compare-repeats", text: "Timed rounds" }), repeats]),
    ]),
    h("button.primary", { type: "submit", id: "compare-run", text: "Run compare" }),
  ]);
  main.append(form, result);

  const load = async (file) => {
    try {
      const array = parseNpy(await file.arrayBuffer());
      rows.value = JSON.stringify(nest(array.values, array.shape));
      note.textContent = `Read ${file.name}: ${array.dtype}, shape [${array.shape.join(", ")}].`;
    } catch (error) {
      note.textContent = `${file.name}: ${error.message}`;
    }
  };
  npy.addEventListener("change", () => npy.files.length && load(npy.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => { event.preventDefault(); zone.classList.add("over"); });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer?.files?.length) load(event.dataTransfer.files[0]);
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let body;
    try {
      const parsed = JSON.parse(rows.value);
      body = Array.isArray(parsed) ? { instances: parsed } : parsed;
    } catch (error) {
      result.replaceChildren(errorBox(new Error(`The rows are not valid JSON: ${error.message}`)));
      return;
    }
    if (keras.checked) body.reference = "source";
    body.repeats = Number(repeats.value) || 10;
    result.replaceChildren(h("p.muted", { text: "Running…" }));
    try {
      const answer = await api(`${versionPath}:compare`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      result.replaceChildren(...showResult(answer));
    } catch (error) {
      result.replaceChildren(errorBox(error));
    }
  });
}

// A few rows of the model's input shape, deterministic, in [0, 1).
function exampleRows(metadata) {
  let seed = 7;
  const next = () => {
    seed = (seed * 16807) % 2147483647;
    return Number((seed / 2147483647).toFixed(3));
  };
  const make = (shape) => (shape.length === 0 ? next()
    : Array.from({ length: shape[0] }, () => make(shape.slice(1))));
  const rowsOf = (input) => make([EXAMPLE_ROWS, ...input.shape.slice(1).map((d) => (d > 0 ? d : 1))]);
  if (metadata.inputs.length === 1) return rowsOf(metadata.inputs[0]);
  return { inputs: Object.fromEntries(metadata.inputs.map((i) => [i.name, rowsOf(i)])) };
}

// A log axis when the largest latency is over 20 times the smallest (a Keras run beside
// ONNX Runtime ones), so that the small bars stay visible.
function spansDecades(values) {
  const positive = values.filter((v) => v > 0);
  return positive.length > 1 && Math.max(...positive) / Math.min(...positive) > 20;
}

function flat(value) {
  return Array.isArray(value) ? value.flat(Infinity) : [value];
}

function showResult(answer) {
  const verdict = answer.verdict;
  const out = [
    h("h2", { text: "Result" }),
    h("p", {}, h(`span.verdict.verdict-${verdict.passed ? "ok" : "bad"}`, { id: "compare-verdict",
      text: `${verdict.passed ? "passed" : "failed"}: ${verdict.compared} ≤ ${format(verdict.rtol)}` })),
  ];
  const latency = Object.entries(answer.latency_ms).map(([name, value]) => ({ name, value }));
  out.push(h("figure.plot", { dataset: { plot: "latency" } }, [
    bars({ title: "Latency per variant", items: latency, unit: "ms",
      log: spansDecades(latency.map((i) => i.value)) }),
    h("figcaption", { text: `Latency (ms${spansDecades(latency.map((i) => i.value)) ? ", log scale" : ""}): ${answer.latency.statistic}, ${answer.latency.repeats} rounds`
      + `${answer.latency.unfolded_over_folded ? `; folded is ${answer.latency.unfolded_over_folded.toFixed(2)}x as fast as unfolded` : ""}`
      + `${answer.latency.unfolded_over_folded_iqr ? ` (interquartile ${answer.latency.unfolded_over_folded_iqr.map((v) => v.toFixed(2)).join("-")})` : ""}` }),
  ]));
  for (const [output, entry] of Object.entries(answer.outputs)) {
    const table = h("table.numbers", { dataset: { output } }, [
      h("caption", { text: `Output ${output}` }),
      h("thead", {}, h("tr", {}, ["", "max |difference|", "max relative", "argmax agreement"]
        .map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, [
        h("tr", {}, [h("th", { scope: "row", text: "folded vs unfolded" }),
          h("td.max-abs", { text: format(entry.max_abs_diff) }), h("td", { text: format(entry.max_rel_diff) }),
          h("td", { text: entry.argmax_agreement === undefined ? "–" : `${(entry.argmax_agreement * 100).toFixed(1)} %` })]),
        entry.source_max_abs_diff === undefined ? null : h("tr", {}, [h("th", { scope: "row", text: "folded vs source" }),
          h("td.keras-max-abs", { text: format(entry.source_max_abs_diff) }), h("td", { text: format(entry.source_max_rel_diff) }),
          h("td", { text: entry.source_argmax_agreement === undefined ? "–" : `${(entry.source_argmax_agreement * 100).toFixed(1)} %` })]),
      ]),
    ]);
    out.push(h("div.scroll", {}, table));
    if (!entry.folded) continue;
    const rows = Array.isArray(entry.folded) ? entry.folded.length : 1;
    const first = (v) => flat(Array.isArray(v) ? v[0] : v);
    const variants = ["folded", "unfolded", "source"].filter((k) => entry[k] !== undefined);
    out.push(h("div.plots", {}, [
      h("figure.plot", { dataset: { plot: "outputs" } }, [
        channelChart({ title: `${output}, first row: each variant's values`,
          series: variants.map((k, i) => ({ name: k, values: first(entry[k]), tone: i })) }),
        h("figcaption", { text: `${output}: the first of ${rows} rows, value per output element` }),
      ]),
      h("figure.plot", { dataset: { plot: "differences" } }, [
        channelChart({ title: `${output}: |difference| per element over all rows (log scale)`, log: true,
          series: [
            { name: "|folded − unfolded|", values: absDiff(entry.folded, entry.unfolded), tone: 0 },
            entry.source ? { name: "|folded − source|", values: absDiff(entry.folded, entry.source), tone: 2 } : null,
          ].filter(Boolean) }),
        h("figcaption", { text: `${output}: absolute differences, element by element (zeros are not drawn on the log scale)` }),
      ]),
    ]));
  }
  return out;
}

function absDiff(a, b) {
  const x = flat(a);
  const y = flat(b);
  return x.map((v, i) => Math.abs(v - y[i]));
}
