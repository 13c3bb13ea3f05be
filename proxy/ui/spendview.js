// Spend page building blocks: tables, budget bars and the figures' panels (DOM only, no fetching).

import { formatInt, formatUSD, h } from "./api.js";
import { toDollars } from "./spenddata.js";

export function percent(ratio) {
  return `${(ratio * 100).toFixed(1)}%`;
}

/** "1 h 5 min", "3 d 4 h": time until a budget window resets. */
export function duration(seconds) {
  const minutes = Math.floor(seconds / 60);
  const [d, hrs, min] = [Math.floor(minutes / 1440), Math.floor(minutes / 60) % 24, minutes % 60];
  if (d) return `${d} d ${hrs} h`;
  return hrs ? `${hrs} h ${min} min` : `${min} min`;
}

export function unavailable(text) {
  return h("p", { class: "unavailable", text });
}

export function muted(text) {
  return h("p", { class: "muted", text });
}

/** A labelled bar of `value` dollars against `limit` dollars (text only when there is no limit). */
export function meterBar(value, limit, label) {
  const text = limit ? `${formatUSD(value)} of ${formatUSD(limit)}` : `${formatUSD(value)} · no budget`;
  if (!limit) return h("div", {}, h("div", { class: "bar-text", text }));
  const ratio = value / limit;
  const bar = h("div", {
    class: `bar${ratio >= 1 ? " over" : ratio >= 0.8 ? " warn" : ""}`, role: "meter",
    "aria-label": label, "aria-valuemin": 0, "aria-valuemax": limit, "aria-valuenow": value,
    "aria-valuetext": `${text} (${Math.round(ratio * 100)}%)`,
  }, h("span", { style: { width: `${Math.min(100, ratio * 100).toFixed(1)}%` } }));
  return h("div", {}, bar, h("div", { class: "bar-text", text: `${text} · ${Math.round(ratio * 100)}%` }));
}

function table(headers, rows) {
  const head = h("tr", {}, headers.map(([text, cls]) => h("th", { scope: "col", class: cls, text })));
  return h("table", {}, h("thead", {}, head), h("tbody", {}, rows));
}

function row(name, value) {
  return h("tr", {}, h("th", { scope: "row", text: name }), h("td", { class: "num", text: value }));
}

/** Admin view: every spender this month; amounts in micro-dollars. */
export function renderDepartments(depts) {
  const rows = depts.map((d) => h("tr", { "data-department": d.name },
    h("th", { scope: "row", text: d.name }),
    h("td", { class: "bar-cell" }, meterBar(toDollars(d.today), d.dailyLimit, `${d.name} today`)),
    h("td", { class: "bar-cell" }, meterBar(toDollars(d.month), d.monthlyLimit, `${d.name} this month`)),
    h("td", { class: "num", text: formatUSD(toDollars(d.saved)) })));
  return table([["Department"], ["Today vs daily budget"], ["This month vs monthly budget"],
    ["Saved by cache this month", "num"]], rows);
}

/** Department view: each budget window as the ledger counts it (spent, held, left, reset). */
export function renderBudgets(dept) {
  if (!dept.budgets.length) return muted(`${dept.name} has no budget.`);
  const rows = dept.budgets.map((b) => h("tr", { "data-period": b.period },
    h("th", { scope: "row", text: b.period }),
    h("td", { class: "bar-cell" }, meterBar(b.spent, b.limit, `${b.period} budget`)),
    h("td", { class: "num", text: formatUSD(b.reserved) }),
    h("td", { class: "num", text: formatUSD(b.remaining) }),
    h("td", { class: "num", text: duration(b.resetsIn) })));
  const left = `Budget left: ${formatUSD(dept.budgetLeft)} (the tightest window)`;
  return h("div", {}, table([["Window"], ["Spent vs limit"], ["Held", "num"], ["Left", "num"],
    ["Resets in", "num"]], rows), h("p", { class: "muted", id: "budget-left", text: left }));
}

export function renderModels(models) {
  const top = Math.max(...models.map((m) => m.cost), 0) || 1;
  const rows = models.map((m) => h("tr", { "data-model": m.model },
    h("th", { scope: "row", text: m.model }),
    h("td", { class: "num", text: formatInt(m.requests) }),
    h("td", { class: "num", text: formatUSD(toDollars(m.cost)) }),
    h("td", { class: "bar-cell" }, h("div", { class: "bar", "aria-hidden": "true" },
      h("span", { style: { width: `${((m.cost / top) * 100).toFixed(1)}%` } })))));
  return table([["Model"], ["Requests", "num"], ["Cost", "num"], ["Share"]], rows);
}

export function renderCache(cache) {
  const rows = [
    ["Lookups", formatInt(cache.lookups)], ["Hits", formatInt(cache.hits)],
    ["Misses", formatInt(cache.misses)], ["Hit rate", percent(cache.hitRate)],
    ["Saved", formatUSD(cache.saved)], ["Bypassed", formatInt(cache.bypassed)],
    ...cache.kinds.map((k) => [`${k.kind} hits`, formatInt(k.hits)]),
    ["Cached answers", formatInt(cache.size)],
  ].map(([name, value]) => row(name, value));
  return h("div", {}, table([["Measure"], ["Value", "num"]], rows),
    h("p", { class: "muted", text: `Counted since the cache counters started · scope: ${cache.scope}` }));
}

/** A request's cost; an estimate says so, and why (no price for the model, or usage missing). */
function costCell(r) {
  if (!r.estimated) return h("td", { class: "num", text: formatUSD(r.cost) });
  const why = r.priced ? "usage missing: tokens estimated from the text sent"
    : "model not in the price table: billed at the default price";
  return h("td", { class: "num estimated", title: `Estimated (${why})`, text: `${formatUSD(r.cost)} (est.)` });
}

export function renderRecent(items) {
  if (!items.length) return muted("No requests yet.");
  const rows = items.map((r) => h("tr", {},
    h("td", { text: new Date(r.ts * 1000).toLocaleTimeString() }),
    h("td", { text: r.department }), h("td", { text: r.model }), h("td", { text: r.cache }),
    h("td", { class: "num", text: formatInt(r.tokens) }), costCell(r),
    h("td", { class: "num", text: `${Math.round(r.latencyMs)} ms` })));
  return table([["Time"], ["Department"], ["Model"], ["Cache"], ["Tokens", "num"], ["Cost", "num"],
    ["Latency", "num"]], rows);
}
