// Spend page: department budgets, top models, cache savings, recent requests; polls every 10 s.

import { callJSON, formatInt, formatUSD, h, loadKey, saveKey } from "./api.js";
import {
  cacheSummary, departmentsFromChargeback, departmentsFromSpend, mergeDepartments, modelsFromSpend,
  recentRequests, sum, topModels, utcDay,
} from "./spenddata.js";

const POLL_MS = 10_000;
const SOURCES = { spend: "/admin/spend", chargeback: "/admin/chargeback?format=json", cache: "/v1/cache/analytics" };
const $ = (id) => document.getElementById(id);
const state = { key: loadKey(), timer: null };

/** One sentence on why figures are missing, from [result, path] pairs that failed. */
function whyMissing(...failures) {
  const absent = failures.filter(([r]) => r.status === 404).map(([, path]) => `GET ${path.split("?")[0]}`);
  const other = failures.filter(([r]) => r.status !== 404).map(([r]) =>
    r.status === 401 || r.status === 403 ? `Needs an admin key (${r.error.message}).` : `Failed: ${r.error.message}`);
  const parts = absent.length ? [`Not available: this proxy does not serve ${absent.join(" or ")} yet.`] : [];
  return [...parts, ...new Set(other)].join(" ");
}

function unavailable(...failures) {
  return h("p", { class: "unavailable", text: whyMissing(...failures) });
}

function meterBar(value, limit, label) {
  const text = limit ? `${formatUSD(value)} of ${formatUSD(limit)}` : `${formatUSD(value)} · no budget`;
  if (!limit) return h("div", {}, h("div", { class: "bar-text", text }));
  const ratio = (value ?? 0) / limit;
  const bar = h("div", {
    class: `bar${ratio >= 1 ? " over" : ratio >= 0.8 ? " warn" : ""}`, role: "meter",
    "aria-label": label, "aria-valuemin": 0, "aria-valuemax": limit, "aria-valuenow": value ?? 0,
    "aria-valuetext": `${text} (${Math.round(ratio * 100)}%)`,
  }, h("span", { style: { width: `${Math.min(100, ratio * 100).toFixed(1)}%` } }));
  return h("div", {}, bar, h("div", { class: "bar-text", text: `${text} · ${Math.round(ratio * 100)}%` }));
}

function table(headers, rows) {
  const head = h("tr", {}, headers.map(([text, cls]) => h("th", { scope: "col", class: cls, text })));
  return h("table", {}, h("thead", {}, head), h("tbody", {}, rows));
}

function renderDepartments(depts) {
  const rows = depts.map((d) => h("tr", { "data-department": d.name },
    h("th", { scope: "row", text: d.name }),
    h("td", { class: "bar-cell" }, meterBar(d.today, d.dailyLimit, `${d.name} today`)),
    h("td", { class: "bar-cell" }, meterBar(d.month, d.monthlyLimit, `${d.name} this month`)),
    h("td", { class: "num", text: formatUSD(d.saved) })));
  return table([["Department"], ["Today vs daily budget"], ["This month vs monthly budget"], ["Saved by cache", "num"]], rows);
}

function renderModels(models) {
  const top = Math.max(...models.map((m) => m.cost), 0) || 1;
  const rows = models.map((m) => h("tr", {},
    h("th", { scope: "row", text: m.model }),
    h("td", { class: "num", text: formatInt(m.requests) }),
    h("td", { class: "num", text: formatUSD(m.cost) }),
    h("td", { class: "bar-cell" }, h("div", { class: "bar", "aria-hidden": "true" },
      h("span", { style: { width: `${((m.cost / top) * 100).toFixed(1)}%` } })))));
  return table([["Model"], ["Requests", "num"], ["Cost", "num"], ["Share"]], rows);
}

function renderCache(cache) {
  const rows = [
    ["Lookups", formatInt(cache.lookups)], ["Hits", formatInt(cache.hits)],
    ["Hit rate", cache.hitRate === undefined ? "–" : `${(cache.hitRate * 100).toFixed(1)}%`],
    ["Saved", formatUSD(cache.saved)],
    ...cache.kinds.map((k) => [`${k.kind} hits`, `${formatInt(k.hits)}${k.saved !== undefined ? ` · ${formatUSD(k.saved)}` : ""}`]),
  ].map(([name, value]) => h("tr", {}, h("th", { scope: "row", text: name }), h("td", { class: "num", text: value })));
  return table([["Measure"], ["Value", "num"]], rows);
}

function renderRecent(items) {
  if (!items.length) return h("p", { class: "muted", text: "No requests yet." });
  const rows = items.map((r) => h("tr", {},
    h("td", { text: r.ts ? new Date(r.ts * 1000).toLocaleTimeString() : "–" }),
    h("td", { text: r.department }), h("td", { text: r.model }), h("td", { text: r.cache || "–" }),
    h("td", { class: "num", text: formatInt(r.tokens) }), h("td", { class: "num", text: formatUSD(r.cost) }),
    h("td", { class: "num", text: r.latencyMs === undefined ? "–" : `${Math.round(r.latencyMs)} ms` })));
  return table([["Time"], ["Department"], ["Model"], ["Cache"], ["Tokens", "num"], ["Cost", "num"], ["Latency", "num"]], rows);
}

function setCard(id, value, sub) {
  $(`card-${id}`).textContent = value;
  $(`card-${id}-sub`).textContent = sub || "";
}

function render({ spend, chargeback, cache }) {
  const today = utcDay();
  const rows = chargeback.ok ? chargeback.data.rows || [] : [];
  const depts = mergeDepartments(spend.ok ? departmentsFromSpend(spend.data) : [],
    chargeback.ok ? departmentsFromChargeback(rows, today) : []);
  const missing = [spend, chargeback].every((r) => !r.ok);
  const reasons = [[spend, SOURCES.spend], [chargeback, SOURCES.chargeback]];
  $("departments").replaceChildren(missing ? unavailable(...reasons) : depts.length ? renderDepartments(depts) : h("p", { class: "muted", text: "No spend yet." }));
  const models = chargeback.ok ? topModels(rows, today) : spend.ok ? modelsFromSpend(spend.data) : [];
  $("models").replaceChildren(missing ? unavailable(...reasons) : models.length ? renderModels(models) : h("p", { class: "muted", text: "No model usage this month." }));
  const summary = cache.ok ? cacheSummary(cache.data) : null;
  $("cache").replaceChildren(summary ? renderCache(summary) : unavailable([cache, SOURCES.cache]));
  $("recent").replaceChildren(spend.ok ? renderRecent(recentRequests(spend.data)) : unavailable([spend, SOURCES.spend]));
  const na = missing ? "not available" : "";
  setCard("today", missing ? "–" : formatUSD(sum(depts.map((d) => d.today)) ?? 0), na || `${depts.length} departments`);
  setCard("month", missing ? "–" : formatUSD(sum(depts.map((d) => d.month)) ?? 0), na || today.slice(0, 7));
  const saved = summary?.saved ?? (chargeback.ok ? Number(chargeback.data.total?.saved_usd) : undefined);
  setCard("saved", saved === undefined || Number.isNaN(saved) ? "–" : formatUSD(saved), saved === undefined ? "not available" : "");
  setCard("hit", summary?.hitRate === undefined ? "–" : `${(summary.hitRate * 100).toFixed(1)}%`,
    summary ? `${formatInt(summary.hits)} hits` : "not available");
}

async function refresh() {
  clearTimeout(state.timer);
  if (!state.key) {
    $("notice").textContent = "Enter an admin key to see spend.";
    $("notice").hidden = false;
    $("updated").textContent = "";
    return;
  }
  if (!document.hidden) {
    const entries = await Promise.all(Object.entries(SOURCES).map(async ([name, path]) => [name, await callJSON(path, state.key)]));
    const results = Object.fromEntries(entries);
    const denied = Object.values(results).find((r) => r.status === 401 || r.status === 403);
    $("notice").textContent = denied ? `This page needs an admin key: ${denied.error.message}` : "";
    $("notice").hidden = !denied;
    render(results);
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ${POLL_MS / 1000} s`;
  }
  state.timer = setTimeout(refresh, POLL_MS);
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("api-key").value.trim();
  saveKey(state.key);
  refresh();
});
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
$("api-key").value = state.key;
refresh();
