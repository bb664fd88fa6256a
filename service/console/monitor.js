// Live request rate and latency, from the server's own statistics (GET /v2/models/stats,
// Triton's statistics extension), polled; rates are differences between two polls.

import { api, errorBox, every, h } from "/ui/api.js";
import { format, timeSeries } from "/ui/plots.js";

const POLL_MS = 2000;
const SPAN_S = 120;

export function renderMonitor(main, _parts, signal) {
  const charts = h("div.plots", { id: "monitor-charts" });
  const table = h("div", { id: "monitor-table" });
  const problem = h("div");
  main.append(
    h("h1", { text: "Monitor" }),
    h("p.muted", { text: `Requests per second and mean latency per request, from GET /v2/models/stats every ${POLL_MS / 1000} s.` }),
    problem, charts, table,
  );
  const started = performance.now();
  let previous = null;
  const rate = [];
  const latency = [];
  every(POLL_MS, signal, async () => {
    let stats;
    try {
      stats = (await api("/v2/models/stats", { signal })).model_stats;
      problem.replaceChildren();
    } catch (error) {
      if (error.name !== "AbortError") problem.replaceChildren(errorBox(error));
      throw error;
    }
    const now = (performance.now() - started) / 1000;
    const totals = stats.reduce((sum, m) => ({
      count: sum.count + m.inference_stats.success.count + m.inference_stats.fail.count,
      ns: sum.ns + m.inference_stats.success.ns,
      ok: sum.ok + m.inference_stats.success.count,
    }), { count: 0, ns: 0, ok: 0 });
    if (previous) {
      const seconds = now - previous.now;
      const requests = Math.max(0, totals.count - previous.count);
      const done = Math.max(0, totals.ok - previous.ok);
      rate.push([now, requests / seconds]);
      latency.push([now, done ? (totals.ns - previous.ns) / done / 1e6 : 0]);
      while (rate.length && rate[0][0] < now - SPAN_S) rate.shift();
      while (latency.length && latency[0][0] < now - SPAN_S) latency.shift();
    }
    previous = { now, ...totals };
    charts.replaceChildren(
      h("figure.plot", { dataset: { plot: "rate" } }, [
        timeSeries({ title: "Requests per second", series: [{ name: "requests/s", points: rate }], span: SPAN_S, yLabel: "req/s" }),
        h("figcaption", { id: "monitor-rate", text: `Request rate: ${format(rate.at(-1)?.[1] ?? 0)} requests/s` }),
      ]),
      h("figure.plot", { dataset: { plot: "latency" } }, [
        timeSeries({ title: "Mean latency", series: [{ name: "ms", points: latency }], span: SPAN_S, yLabel: "ms" }),
        h("figcaption", { text: `Mean latency: ${format(latency.at(-1)?.[1] ?? 0)} ms per request` }),
      ]),
    );
    table.replaceChildren(statsTable(stats));
  });
}

function mean(duration) {
  return duration.count ? format(duration.ns / duration.count / 1e6) : "–";
}

function statsTable(stats) {
  if (!stats.length) return h("p.muted", { text: "No model is loaded." });
  return h("div.scroll", {}, h("table.numbers", {}, [
    h("caption", { text: "Since the server started (means in ms)" }),
    h("thead", {}, h("tr", {}, ["Model", "Requests", "Failed", "Rows", "Runs", "Mean", "Queue", "Infer", "Last request"]
      .map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, stats.map((m) => h("tr", { dataset: { model: m.name, version: m.version } }, [
      h("th", { scope: "row", text: `${m.name} v${m.version}` }),
      h("td.requests", { text: String(m.inference_stats.success.count) }),
      h("td", { text: String(m.inference_stats.fail.count) }),
      h("td", { text: String(m.inference_count) }),
      h("td", { text: String(m.execution_count) }),
      h("td", { text: mean(m.inference_stats.success) }),
      h("td", { text: mean(m.inference_stats.queue) }),
      h("td", { text: mean(m.inference_stats.compute_infer) }),
      h("td", { text: m.last_inference ? new Date(m.last_inference).toLocaleTimeString() : "never" }),
    ]))),
  ]));
}
