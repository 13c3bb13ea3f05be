// Small SVG charts for the Spend page, built with the DOM (no library, nothing fetched): stacked
// daily bars with a forecast band, a donut of shares, bars with a rate line. Every mark carries
// data-* attributes and a <title> with its number, so what is drawn can be read back and checked.

import { formatUSD, h } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
export const PALETTE = ["#4f46e5", "#0ea5e9", "#16a34a", "#f59e0b", "#dc2626", "#9333ea", "#64748b", "#db2777"];
const PAD = { top: 12, right: 48, bottom: 26, left: 64 };

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(name, String(value));
  }
  for (const child of children) if (child) el.append(child);
  return el;
}

function tip(text) {
  const title = s("title");
  title.textContent = text;
  return title;
}

function svgRoot(width, height, label) {
  return s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "chart" });
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * step).find((v) => v >= value);
}

function yAxis(svg, max, width, height, format, side = "left") {
  const x = side === "left" ? PAD.left : width - PAD.right;
  for (let i = 0; i <= 4; i += 1) {
    const value = (max * i) / 4;
    const y = height - PAD.bottom - ((height - PAD.top - PAD.bottom) * i) / 4;
    if (side === "left") svg.append(s("line", { x1: PAD.left, x2: width - PAD.right, y1: y, y2: y, class: "grid" }));
    const label = s("text", { x: side === "left" ? x - 6 : x + 6, y: y + 4, class: "axis",
      "text-anchor": side === "left" ? "end" : "start" });
    label.textContent = format(value);
    svg.append(label);
  }
}

function xLabels(svg, dates, band, height) {
  dates.forEach((date, i) => {
    const last = i === dates.length - 1;
    if (!last && (i % 7 !== 0 || dates.length - 1 - i < 4)) return; // keep labels apart
    const label = s("text", { x: PAD.left + band * (i + 0.5), y: height - 8, class: "axis", "text-anchor": "middle" });
    label.textContent = date.slice(5);
    svg.append(label);
  });
}

/** One colour per name, the same in every chart of the page (names sorted, then the palette). */
export function colorsFor(names) {
  const sorted = [...new Set(names)].sort();
  return new Map(sorted.map((name, k) => [name, PALETTE[k % PALETTE.length]]));
}

export function legend(items) {
  return h("ul", { class: "legend" }, items.map((item) => h("li", {},
    h("span", { class: "swatch", style: { background: item.color } }), item.text)));
}

/**
 * Daily cost stacked by series, then forecast days drawn as an expected bar with a low-high
 * whisker. series: [{name, values}] aligned with `days`; forecast: [{date, expected, low, high}].
 */
export function stackedDaily(days, series, forecast = [], { width = 760, height = 240, colors = null } = {}) {
  const dates = [...days, ...forecast.map((f) => f.date)];
  const totals = days.map((_, i) => series.reduce((sum, one) => sum + one.values[i], 0));
  const max = niceMax(Math.max(0, ...totals, ...forecast.map((f) => f.high)));
  const svg = svgRoot(width, height, "Daily cost by department with the forecast");
  const band = (width - PAD.left - PAD.right) / Math.max(1, dates.length);
  const y = (value) => ((height - PAD.top - PAD.bottom) * value) / max;
  const base = height - PAD.bottom;
  yAxis(svg, max, width, height, formatUSD);
  days.forEach((day, i) => {
    let top = base;
    series.forEach((one, k) => {
      const value = one.values[i];
      if (!(value > 0)) return;
      top -= y(value);
      svg.append(s("rect", { x: PAD.left + band * i + 1, y: top, width: Math.max(1, band - 2), height: y(value),
        fill: colors?.get(one.name) || PALETTE[k % PALETTE.length], "data-day": day, "data-series": one.name, "data-value": value },
      tip(`${day} · ${one.name}: ${formatUSD(value)}`)));
    });
  });
  forecast.forEach((f, j) => {
    const i = days.length + j;
    const cx = PAD.left + band * (i + 0.5);
    svg.append(s("rect", { x: PAD.left + band * i + 2, y: base - y(f.expected), width: Math.max(1, band - 4),
      height: y(f.expected), class: "forecast", "data-day": f.date, "data-expected": f.expected,
      "data-low": f.low, "data-high": f.high },
    tip(`${f.date} · forecast ${formatUSD(f.expected)} (${formatUSD(f.low)}–${formatUSD(f.high)})`)));
    svg.append(s("line", { x1: cx, x2: cx, y1: base - y(f.high), y2: base - y(f.low), class: "whisker" }));
  });
  xLabels(svg, dates, band, height);
  return svg;
}

function arc(cx, cy, r, start, end) {
  const large = end - start > Math.PI ? 1 : 0;
  const p = (angle) => [cx + r * Math.sin(angle), cy - r * Math.cos(angle)];
  const [x1, y1] = p(start);
  const [x2, y2] = p(end);
  return `M ${cx} ${cy} L ${x1} ${y1} A ${r} ${r} 0 ${large} 1 ${x2} ${y2} Z`;
}

/** A donut of [{name, cost_usd}] shares; the legend says each share and amount. */
export function donut(shares, label, { size = 180, colors = null } = {}) {
  const total = shares.reduce((sum, item) => sum + item.cost_usd, 0);
  const svg = svgRoot(size, size, label);
  const c = size / 2;
  const visible = shares.filter((item) => item.cost_usd > 0);
  const color = (item, k) => colors?.get(item.name) || PALETTE[k % PALETTE.length];
  let angle = 0;
  visible.forEach((item, k) => {
    const sweep = (item.cost_usd / total) * Math.PI * 2;
    const attrs = { fill: color(item, k), "data-name": item.name, "data-value": item.cost_usd };
    const shape = visible.length === 1
      ? s("circle", { cx: c, cy: c, r: c - 2, ...attrs })
      : s("path", { d: arc(c, c, c - 2, angle, angle + sweep), ...attrs });
    shape.append(tip(`${item.name}: ${formatUSD(item.cost_usd)} (${((item.cost_usd / total) * 100).toFixed(1)}%)`));
    svg.append(shape);
    angle += sweep;
  });
  svg.append(s("circle", { cx: c, cy: c, r: c * 0.55, class: "hole" }));
  const centre = s("text", { x: c, y: c + 5, "text-anchor": "middle", class: "axis total" });
  centre.textContent = formatUSD(total);
  svg.append(centre);
  const items = visible.map((item, k) => ({ color: color(item, k),
    text: `${item.name} · ${((item.cost_usd / total) * 100).toFixed(1)}% · ${formatUSD(item.cost_usd)}` }));
  return h("div", { class: "donut" }, svg, items.length ? legend(items) : h("p", { class: "muted", text: "No spend yet." }));
}

/** Savings per day as bars (left axis, dollars) and the hit rate as a line (right axis, %). */
export function cacheDaily(days, saved, hitRate, { width = 760, height = 220 } = {}) {
  const max = niceMax(Math.max(0, ...saved));
  const svg = svgRoot(width, height, "Cache savings and hit rate by day");
  const band = (width - PAD.left - PAD.right) / Math.max(1, days.length);
  const inner = height - PAD.top - PAD.bottom;
  const base = height - PAD.bottom;
  yAxis(svg, max, width, height, formatUSD);
  yAxis(svg, 1, width, height, (v) => `${Math.round(v * 100)}%`, "right");
  const points = [];
  days.forEach((day, i) => {
    if (saved[i] > 0) {
      svg.append(s("rect", { x: PAD.left + band * i + 1, y: base - (inner * saved[i]) / max,
        width: Math.max(1, band - 2), height: (inner * saved[i]) / max, class: "saved", "data-day": day,
        "data-value": saved[i] }, tip(`${day} · saved ${formatUSD(saved[i])}`)));
    }
    if (hitRate[i] !== null && hitRate[i] !== undefined) {
      const cx = PAD.left + band * (i + 0.5);
      const cy = base - inner * hitRate[i];
      points.push(`${cx},${cy}`);
      svg.append(s("circle", { cx, cy, r: 3, class: "rate", "data-day": day, "data-value": hitRate[i] },
        tip(`${day} · hit rate ${(hitRate[i] * 100).toFixed(1)}%`)));
    }
  });
  if (points.length > 1) svg.insertBefore(s("polyline", { points: points.join(" "), class: "rate-line" }), svg.querySelector("circle.rate"));
  xLabels(svg, days, band, height);
  return svg;
}
