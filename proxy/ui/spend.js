// Spend page. An admin key sees every department, top models, the cache and recent requests; a
// department key sees its own spend, budget windows and cache. Polls every 10 s.

import { checkKey, loadKey, renderAlerts, wireKeyForm } from "./access.js";
import { callJSON, formatInt, formatUSD } from "./api.js";
import { cacheDaily, colorsFor, donut, legend, stackedDaily } from "./charts.js";
import {
  ADMIN_NAME, cacheFigures, departmentFigures, recentRequests, spenders, sumOf, toDollars, topModels, utcDay,
} from "./spenddata.js";
import {
  muted, percent, renderBudgets, renderCache, renderDepartments, renderModels, renderRecent, unavailable,
} from "./spendview.js";

const POLL_MS = 10_000;
// ?department=<name> (e.g. from a chat action) narrows an admin key's view to one department
const FILTER = new URLSearchParams(location.search).get("department") || "";
const ONLY = FILTER ? `department=${encodeURIComponent(FILTER)}` : "";
const ADMIN_SOURCES = {
  spend: `/admin/spend${ONLY ? `?${ONLY}` : ""}`, chargeback: `/admin/chargeback?format=json${ONLY ? `&${ONLY}` : ""}`,
  cache: "/v1/cache/analytics",
};
const DEPARTMENT_SOURCES = { spend: "/v1/spend", cache: "/v1/cache/analytics" };
// Charts: 30 days of history and a forecast from today (today's forecast day is skipped: it is drawn as history)
const CHART_SOURCES = {
  admin: { daily: `/v1/spend/daily?days=30${ONLY ? `&${ONLY}` : ""}`, forecast: `/admin/forecast?horizon=8d${ONLY ? `&${ONLY}` : ""}` },
  department: { daily: "/v1/spend/daily?days=30", forecast: "/v1/forecast?horizon=8d" },
};
const $ = (id) => document.getElementById(id);
// mode: null until the key's kind is known, then "admin" or "department"
const state = { key: loadKey(), timer: null, mode: null };

async function fetchAll(sources) {
  const entries = await Promise.all(Object.entries(sources).map(async ([name, path]) => [name, await callJSON(path, state.key)]));
  return Object.fromEntries(entries);
}

function failed(result, path) {
  return unavailable(`GET ${path.split("?")[0]} failed: ${result.error.message}`);
}

function requests(n) {
  return `${formatInt(n)} request${n === 1 ? "" : "s"}`;
}

function setCard(id, value, sub) {
  $(`card-${id}`).textContent = value;
  $(`card-${id}-sub`).textContent = sub;
}

function setCacheCards(cache) {
  if (!cache.ok) {
    for (const id of ["saved", "hit"]) setCard(id, "–", "not available");
    return;
  }
  const c = cacheFigures(cache.data);
  setCard("saved", formatUSD(c.saved), "all time");
  setCard("hit", percent(c.hitRate), `${formatInt(c.hits)} of ${formatInt(c.lookups)} lookups`);
  $("cache").replaceChildren(renderCache(c));
}

function setLayout(mode, department) {
  const admin = mode === "admin";
  $("scope").textContent = admin
    ? (FILTER ? `Department: ${FILTER} (admin key)` : "All departments (admin key)")
    : `Department: ${department} (department key)`;
  $("scope").dataset.department = admin ? "" : department;
  $("dept-title").textContent = admin ? "Departments" : `Budgets of ${department}`;
  $("models-panel").hidden = !admin;
  $("recent-panel").hidden = !admin;
  $("cache-panel").classList.toggle("full", !admin);
}

function renderAdmin({ spend, chargeback, cache }) {
  setLayout("admin");
  if (!cache.ok) $("cache").replaceChildren(failed(cache, ADMIN_SOURCES.cache));
  setCacheCards(cache);
  if (!spend.ok) {
    for (const id of ["today", "month"]) setCard(id, "–", "not available");
    for (const id of ["departments", "recent"]) $(id).replaceChildren(failed(spend, ADMIN_SOURCES.spend));
  } else {
    const today = utcDay();
    const depts = spenders(spend.data, chargeback.ok ? chargeback.data : null, today);
    $("departments").replaceChildren(renderDepartments(depts));
    $("recent").replaceChildren(renderRecent(recentRequests(spend.data)));
    // today's admin-key spend is only in the chargeback rows (/admin/spend has no per-day totals)
    setCard("today", formatUSD(toDollars(sumOf(depts, "today"))), chargeback.ok ? today : `${today} · departments only`);
    setCard("month", formatUSD(spend.data.total_usd), `${today.slice(0, 7)} · ${requests(spend.data.requests)}`);
  }
  if (!chargeback.ok) {
    $("models").replaceChildren(failed(chargeback, ADMIN_SOURCES.chargeback));
  } else {
    const models = topModels(chargeback.data.rows);
    $("models").replaceChildren(models.length ? renderModels(models) : muted("No model usage this month."));
  }
}

function renderDepartment({ spend, cache }) {
  if (!cache.ok) $("cache").replaceChildren(failed(cache, DEPARTMENT_SOURCES.cache));
  setCacheCards(cache);
  if (!spend.ok) {
    for (const id of ["today", "month"]) setCard(id, "–", "not available");
    $("departments").replaceChildren(failed(spend, DEPARTMENT_SOURCES.spend));
    setLayout("department", "this key's department");
    return;
  }
  const dept = departmentFigures(spend.data);
  setLayout("department", dept.name);
  $("departments").replaceChildren(renderBudgets(dept));
  setCard("today", formatUSD(toDollars(dept.today)), requests(dept.requestsToday));
  setCard("month", formatUSD(toDollars(dept.month)), requests(dept.requestsMonth));
  if (dept.paused) showNotice(`Requests from ${dept.name} are paused by its circuit breaker; an admin can resume them.`);
}

/** Charts from /v1/spend/daily and the forecast endpoint: the same records as the tables. */
async function loadCharts(mode) {
  const { daily, forecast } = await fetchAll(CHART_SOURCES[mode]);
  $("share-dept-panel").hidden = mode !== "admin" || Boolean(FILTER);
  $("share-model-panel").classList.toggle("full", mode !== "admin" || Boolean(FILTER));
  if (!daily.ok) {
    for (const id of ["trend-chart", "share-departments", "share-models", "cache-chart"]) {
      $(id).replaceChildren(failed(daily, CHART_SOURCES[mode].daily));
    }
    return;
  }
  const d = daily.data;
  const named = (name) => name || ADMIN_NAME; // usage by admin keys has no department
  const series = Object.entries(d.cost_usd).map(([name, values]) => ({ name: named(name), values }));
  const today = d.days[d.days.length - 1];
  const ahead = forecast.ok ? forecast.data.totals.days.filter((f) => f.date > today).slice(0, 7) : [];
  const colors = colorsFor(series.map((one) => one.name));
  const items = series.map((one) => ({ color: colors.get(one.name), text: one.name }));
  const note = forecast.ok ? muted(`Forecast: ${forecast.data.interval * 100}% interval shown as whiskers.`)
    : failed(forecast, CHART_SOURCES[mode].forecast);
  $("trend-chart").replaceChildren(stackedDaily(d.days, series, ahead, { colors }), legend(items), note);
  const departments = d.by_department.map((item) => ({ ...item, name: named(item.name) }));
  $("share-departments").replaceChildren(donut(departments, "Share of cost by department", { colors }));
  $("share-models").replaceChildren(donut(d.by_model, "Share of cost by model"));
  $("cache-chart").replaceChildren(cacheDaily(d.days, d.cache.saved_usd, d.cache.hit_rate),
    muted(`Saved by the cache over ${d.days.length} days: ${formatUSD(d.cache.saved_usd.reduce((a, b) => a + b, 0))}`));
}

function showNotice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

/** The key's kind and alerts from /v1/alerts, then its sources. Should /v1/alerts fail, admin
 * sources are tried first and a department key is told apart by admin_key_required. */
async function load() {
  const access = await checkKey(state.key);
  if (access.error?.code === "invalid_api_key") {
    showNotice(`Key rejected: ${access.error.message}`);
    return access;
  }
  renderAlerts($("alerts"), access.alerts);
  if (access.ok) state.mode = access.admin ? "admin" : "department";
  await loadFigures();
  if (state.mode) await loadCharts(state.mode);
  return access;
}

async function loadFigures() {
  if (state.mode !== "department") {
    const results = await fetchAll(ADMIN_SOURCES);
    const error = results.spend.error;
    if (error?.code === "invalid_api_key") return showNotice(`Key rejected: ${error.message}`);
    if (error?.code !== "admin_key_required") {
      state.mode = "admin";
      return renderAdmin(results);
    }
    state.mode = "department";
  }
  renderDepartment(await fetchAll(DEPARTMENT_SOURCES));
}

async function refresh() {
  clearTimeout(state.timer);
  if (!state.key) {
    showNotice("Enter an admin key or a department key to see spend.");
    $("updated").textContent = "";
    return null;
  }
  let access = null;
  if (!document.hidden) {
    showNotice("");
    access = await load();
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ${POLL_MS / 1000} s`;
  }
  state.timer = setTimeout(refresh, POLL_MS);
  return access;
}

const useKey = wireKeyForm(async (key) => {
  if (!key && state.key) location.reload(); // forgotten: show nothing of the old key's figures
  state.key = key;
  state.mode = null;
  return refresh();
});
document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
if (state.key) useKey(state.key);
else refresh();
