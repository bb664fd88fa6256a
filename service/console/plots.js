// Plots drawn as SVG, with no library: per-channel series, error bars on a log scale,
// grouped bars and time series. Every chart carries data-points (how many values it drew)
// and a <title>/<desc> for screen readers.

const NS = "http://www.w3.org/2000/svg";
const WIDTH = 640;
const HEIGHT = 220;
const MARGIN = { left: 62, right: 14, top: 12, bottom: 34 };

export function el(tag, attributes = {}, children = []) {
  const node = document.createElementNS(NS, tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value !== undefined && value !== null) node.setAttribute(key, String(value));
  }
  for (const child of [].concat(children)) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

export function format(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (value === 0) return "0";
  const magnitude = Math.abs(value);
  if (magnitude >= 1e4 || magnitude < 1e-3) return value.toExponential(2);
  return Number(value.toPrecision(4)).toString();
}

function niceTicks(low, high, count = 5) {
  if (!(high > low)) return [low];
  const raw = (high - low) / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * power).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let t = Math.ceil(low / step) * step; t <= high + step * 1e-9; t += step) {
    ticks.push(Math.abs(t) < step * 1e-9 ? 0 : t);
  }
  return ticks;
}

function extent(values) {
  let low = Infinity;
  let high = -Infinity;
  for (const v of values) {
    if (Number.isFinite(v)) {
      if (v < low) low = v;
      if (v > high) high = v;
    }
  }
  if (low === Infinity) return [0, 1];
  if (low === high) {
    const pad = Math.abs(low) * 0.1 || 1;
    return [low - pad, high + pad];
  }
  const pad = (high - low) * 0.06;
  return [low - pad, high + pad];
}

function frame(title, description, points) {
  const svg = el("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    class: "chart",
    role: "img",
    "data-points": points,
    preserveAspectRatio: "xMidYMid meet",
  });
  svg.append(el("title", {}, title), el("desc", {}, description));
  return svg;
}

// A tick on a log10 axis: 1eN on whole decades, else the value itself.
function logLabel(tick) {
  return Math.abs(tick - Math.round(tick)) < 1e-9 ? `1e${Math.round(tick)}` : format(10 ** tick);
}

// Ticks (in log10 units) for [low, high] (log10 units): whole decades, or, within less than
// two decades, nice values of the linear range so that the axis always carries labels.
function logTicks(low, high) {
  const decades = niceTicks(Math.floor(low), Math.ceil(high), 4)
    .filter((t) => Number.isInteger(t) && t >= low && t <= high);
  if (decades.length >= 2) return decades;
  return niceTicks(10 ** low, 10 ** high).filter((v) => v > 0).map(Math.log10)
    .filter((t) => t >= low && t <= high);
}

function yAxis(svg, scaleY, ticks, label, log) {
  const x0 = MARGIN.left;
  for (const tick of ticks) {
    const y = scaleY(tick);
    svg.append(
      el("line", { x1: x0, x2: WIDTH - MARGIN.right, y1: y, y2: y, class: "grid" }),
      el("text", { x: x0 - 6, y: y + 4, class: "tick", "text-anchor": "end" },
        log ? logLabel(tick) : format(tick)),
    );
  }
  if (label) {
    svg.append(el("text", {
      x: 12, y: MARGIN.top + (HEIGHT - MARGIN.top - MARGIN.bottom) / 2, class: "axis-label",
      transform: `rotate(-90 12 ${MARGIN.top + (HEIGHT - MARGIN.top - MARGIN.bottom) / 2})`,
      "text-anchor": "middle",
    }, label));
  }
}

function legend(svg, series) {
  let x = MARGIN.left;
  const y = HEIGHT - 6;
  series.forEach((s, index) => {
    svg.append(
      el("rect", { x, y: y - 9, width: 10, height: 10, class: `fill-${s.tone ?? index}` }),
      el("text", { x: x + 14, y, class: "legend" }, s.name),
    );
    x += 24 + s.name.length * 7;
  });
}

// One or more series over channel index (or any integer x). series: [{name, values, tone}].
// highlight: [{name, indices, tone}] marks channels (dead, tiny variance) on the first series.
export function channelChart({ title, series, highlight = [], yLabel = "", log = false }) {
  const drawn = series.filter((s) => Array.isArray(s.values) && s.values.length);
  const n = Math.max(0, ...drawn.map((s) => s.values.length));
  const transform = (v) => (log ? (v > 0 ? Math.log10(v) : NaN) : v);
  const all = drawn.flatMap((s) => s.values.map(transform));
  const [low, high] = extent(all);
  const svg = frame(title, `${drawn.map((s) => s.name).join(", ")} over ${n} channels`,
    drawn.reduce((sum, s) => sum + s.values.length, 0));
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const scaleX = (i) => MARGIN.left + (n <= 1 ? plotW / 2 : (i / (n - 1)) * plotW);
  const scaleY = (v) => MARGIN.top + plotH - ((v - low) / (high - low)) * plotH;
  const ticks = log ? logTicks(low, high) : niceTicks(low, high);
  yAxis(svg, scaleY, ticks.filter((t) => t >= low && t <= high), yLabel, log);
  for (const tick of niceTicks(0, Math.max(n - 1, 1), 6).filter((t) => Number.isInteger(t))) {
    svg.append(el("text", { x: scaleX(tick), y: MARGIN.top + plotH + 14, class: "tick",
      "text-anchor": "middle" }, String(tick)));
  }
  drawn.forEach((s, index) => {
    const tone = s.tone ?? index;
    let d = "";
    let pen = "M";
    s.values.forEach((value, i) => {
      const y = scaleY(transform(value));
      if (Number.isFinite(y)) {
        d += `${pen}${scaleX(i).toFixed(1)},${y.toFixed(1)}`;
        pen = "L";
      } else {
        pen = "M";
      }
    });
    svg.append(el("path", { d, class: `series stroke-${tone}`, "data-series": s.name,
      "data-count": s.values.length }));
    if (n <= 64) {
      s.values.forEach((value, i) => {
        const y = scaleY(transform(value));
        if (Number.isFinite(y)) {
          svg.append(el("circle", { cx: scaleX(i), cy: y, r: 2.2, class: `fill-${tone}` }));
        }
      });
    }
  });
  const first = drawn[0];
  for (const mark of highlight) {
    for (const i of mark.indices) {
      if (!first || i >= first.values.length) continue;
      const y = scaleY(transform(first.values[i]));
      svg.append(el("circle", {
        cx: scaleX(i), cy: Number.isFinite(y) ? y : MARGIN.top + plotH, r: 4.5,
        class: `mark fill-${mark.tone}`, "data-mark": mark.name,
      }, el("title", {}, `${mark.name}: channel ${i}`)));
    }
  }
  legend(svg, [...drawn.map((s, i) => ({ name: s.name, tone: s.tone ?? i })),
    ...highlight.filter((m) => m.indices.length).map((m) => ({ name: m.name, tone: m.tone }))]);
  return svg;
}

// Horizontal bars on a log10 axis, each with an optional limit tick; vertical reference lines.
// rows: [{name, value, limit}], lines: [{name, value}]
export function logBars({ title, rows, lines = [] }) {
  const values = [...rows.map((r) => r.value), ...rows.map((r) => r.limit), ...lines.map((l) => l.value)]
    .filter((v) => Number.isFinite(v) && v > 0);
  const logs = values.map(Math.log10);
  const low = Math.floor(Math.min(...logs, -8)) - 0.2;
  const high = Math.ceil(Math.max(...logs, -1)) + 0.2;
  const rowH = 30;
  const height = MARGIN.top + rows.length * rowH + 44;
  const left = 112;
  const svg = el("svg", { viewBox: `0 0 ${WIDTH} ${height}`, class: "chart", role: "img",
    "data-points": rows.length, preserveAspectRatio: "xMidYMid meet" });
  svg.append(el("title", {}, title),
    el("desc", {}, rows.map((r) => `${r.name} ${format(r.value)} (limit ${format(r.limit)})`).join("; ")));
  const plotW = WIDTH - left - MARGIN.right;
  const scaleX = (v) => left + ((Math.log10(v) - low) / (high - low)) * plotW;
  const bottom = MARGIN.top + rows.length * rowH;
  for (let t = Math.ceil(low); t <= high; t += 1) {
    const x = left + ((t - low) / (high - low)) * plotW;
    svg.append(el("line", { x1: x, x2: x, y1: MARGIN.top, y2: bottom, class: "grid" }),
      el("text", { x, y: bottom + 14, class: "tick", "text-anchor": "middle" }, `1e${t}`));
  }
  rows.forEach((row, i) => {
    const y = MARGIN.top + i * rowH;
    svg.append(el("text", { x: left - 8, y: y + rowH / 2 + 4, class: "tick", "text-anchor": "end" },
      row.name));
    if (Number.isFinite(row.value) && row.value > 0) {
      const over = Number.isFinite(row.limit) && row.value > row.limit;
      svg.append(el("rect", { x: left, y: y + 6, height: rowH - 12,
        width: Math.max(1, scaleX(row.value) - left), class: over ? "bar bad" : `bar fill-${i}`,
        "data-value": row.value }, el("title", {}, `${row.name}: ${format(row.value)}`)));
    }
    if (Number.isFinite(row.limit) && row.limit > 0) {
      const x = scaleX(row.limit);
      svg.append(el("line", { x1: x, x2: x, y1: y + 2, y2: y + rowH - 2, class: "limit",
        "data-limit": row.limit },
        el("title", {}, `limit ${format(row.limit)}`)));
    }
  });
  lines.forEach((line) => {
    if (!(Number.isFinite(line.value) && line.value > 0)) return;
    const x = scaleX(line.value);
    svg.append(el("line", { x1: x, x2: x, y1: MARGIN.top, y2: bottom, class: "reference" },
      el("title", {}, `${line.name}: ${format(line.value)}`)));
  });
  const legendY = height - 8;
  svg.append(
    el("line", { x1: left, x2: left + 14, y1: legendY - 4, y2: legendY - 4, class: "limit" }),
    el("text", { x: left + 18, y: legendY, class: "legend" }, "tolerance"),
  );
  if (lines.some((l) => l.value > 0)) {
    svg.append(
      el("line", { x1: left + 110, x2: left + 124, y1: legendY - 4, y2: legendY - 4, class: "reference" }),
      el("text", { x: left + 128, y: legendY, class: "legend" }, lines.map((l) => l.name).join(", ")),
    );
  }
  return svg;
}

// Vertical bars, one per item: [{name, value}], value axis from 0.
// Vertical bars; log: a log10 axis (for values spanning decades, e.g. a Keras run beside
// ONNX Runtime runs), every bar drawn from the axis' floor.
export function bars({ title, items, unit = "", log = false }) {
  const svg = frame(title, items.map((i) => `${i.name} ${format(i.value)} ${unit}`).join("; "),
    items.length);
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  let scaleY;
  if (log) {
    const logs = items.map((i) => Math.log10(Math.max(i.value, 1e-9)));
    const low = Math.floor(Math.min(...logs)) - 1;  // a decade below the smallest: every bar shows
    const high = Math.max(...logs) + 0.15 * (Math.max(...logs) - low || 1);
    const toY = (t) => MARGIN.top + plotH - ((t - low) / (high - low)) * plotH;
    yAxis(svg, toY, logTicks(low, high), `${unit} (log scale)`, true);
    scaleY = (v) => toY(Math.log10(Math.max(v, 1e-9)));
  } else {
    const high = Math.max(...items.map((i) => i.value), 1e-9) * 1.15;
    scaleY = (v) => MARGIN.top + plotH - (v / high) * plotH;
    yAxis(svg, scaleY, niceTicks(0, high).filter((t) => t <= high), unit, false);
  }
  const slot = plotW / items.length;
  items.forEach((item, i) => {
    const x = MARGIN.left + i * slot + slot * 0.2;
    const y = scaleY(item.value);
    svg.append(
      el("rect", { x, y, width: slot * 0.6, height: MARGIN.top + plotH - y, class: `bar fill-${i}`,
        "data-name": item.name, "data-value": item.value },
        el("title", {}, `${item.name}: ${format(item.value)} ${unit}`)),
      el("text", { x: x + slot * 0.3, y: y - 4, class: "tick", "text-anchor": "middle" },
        `${format(item.value)}`),
      el("text", { x: x + slot * 0.3, y: MARGIN.top + plotH + 14, class: "tick",
        "text-anchor": "middle" }, item.name),
    );
  });
  return svg;
}

// Time series: series [{name, points: [[t seconds, value]]}], over the last `span` seconds.
export function timeSeries({ title, series, span, yLabel }) {
  const count = series.reduce((sum, s) => sum + s.points.length, 0);
  const svg = frame(title, `${series.map((s) => s.name).join(", ")}, last ${span} s`, count);
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const now = Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[0])));
  const high = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[1]))) * 1.15;
  const scaleX = (t) => MARGIN.left + plotW - ((now - t) / span) * plotW;
  const scaleY = (v) => MARGIN.top + plotH - (v / high) * plotH;
  yAxis(svg, scaleY, niceTicks(0, high).filter((t) => t <= high), yLabel, false);
  for (let ago = 0; ago <= span; ago += span / 4) {
    svg.append(el("text", { x: MARGIN.left + plotW - (ago / span) * plotW, y: MARGIN.top + plotH + 14,
      class: "tick", "text-anchor": "middle" }, ago === 0 ? "now" : `-${Math.round(ago)} s`));
  }
  series.forEach((s, index) => {
    const d = s.points.map((p, i) => `${i ? "L" : "M"}${scaleX(p[0]).toFixed(1)},${scaleY(p[1]).toFixed(1)}`)
      .join("");
    svg.append(el("path", { d, class: `series stroke-${index}`, "data-series": s.name,
      "data-count": s.points.length }));
  });
  legend(svg, series.map((s, i) => ({ name: s.name, tone: i })));
  return svg;
}
