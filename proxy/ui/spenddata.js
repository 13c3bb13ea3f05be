// Turning the spend and cache endpoints' JSON into what the Spend page shows. Pure functions, no DOM.
// Shapes, read from the proxy's code:
//   GET /admin/spend, GET /v1/spend           proxy/spend/api.py, proxy/spend/views.py
//   GET /admin/chargeback?format=json         proxy/spend/chargeback.py (rows per UTC day x department x model)
//   GET /v1/cache/analytics                   proxy/cache/stats.py, proxy/cache/ops.py
// Money is added up in integer nano-dollars, as the proxy does, so a total equals its parts exactly
// (numbers are exact integers up to 2^53 nano-dollars, $9 million).

/** How /admin/spend names usage by admin keys (they have no department). */
export const ADMIN_NAME = "admin";

/** "0.000022350" or 2.235e-05 (dollars) -> 22350 (nano-dollars). */
export function toNanos(usd) {
  return Math.round(Number(usd) * 1_000_000_000);
}

export function toDollars(nanos) {
  return nanos / 1_000_000_000;
}

export function utcDay(date = new Date()) {
  return date.toISOString().slice(0, 10);
}

/** A budget window of spend_views.budget_view. */
export function budgetWindow(b) {
  return {
    period: b.period, limit: b.limit_dollars, spent: b.spent_dollars, reserved: b.reserved_dollars,
    remaining: b.remaining_dollars, resetsIn: b.resets_in_seconds,
  };
}

/** One department of spend_views.department_view (an /admin/spend `departments` item, or /v1/spend). */
export function departmentFigures(view) {
  const budgets = view.budgets.map(budgetWindow);
  return {
    name: view.department, paused: view.paused, budgets,
    today: toNanos(view.today_usd), month: toNanos(view.month_usd), saved: toNanos(view.saved_usd),
    requestsToday: view.requests_today, requestsMonth: view.requests_month,
    dailyLimit: budgets.find((b) => b.period === "daily")?.limit,
    monthlyLimit: budgets.find((b) => b.period === "monthly")?.limit,
    budgetLeft: view.budget_remaining_usd,
  };
}

/** Chargeback spend that no configured department covers (admin keys, departments since removed). */
export function otherSpenders(rows, known, today) {
  const byName = new Map();
  for (const row of rows) {
    const name = row.department || ADMIN_NAME;
    if (known.has(name)) continue;
    const d = byName.get(name) || { name, budgets: [], today: 0, month: 0, saved: 0 };
    d.month += row.cost_nanos;
    d.saved += row.saved_nanos;
    if (row.day === today) d.today += row.cost_nanos;
    byName.set(name, d);
  }
  return [...byName.values()];
}

/** Every spender this month: configured departments (with budgets), then the rest from chargeback. */
export function spenders(spend, chargeback, today = utcDay()) {
  const configured = spend.departments.map(departmentFigures);
  const rows = chargeback ? chargeback.rows : [];
  const all = [...configured, ...otherSpenders(rows, new Set(configured.map((d) => d.name)), today)];
  return all.sort((a, b) => b.month - a.month || a.name.localeCompare(b.name));
}

/** Cost and requests per model from chargeback rows (the same month as /admin/spend). */
export function topModels(rows, limit = 8) {
  const byModel = new Map();
  for (const row of rows) {
    const m = byModel.get(row.model) || { model: row.model, requests: 0, cost: 0 };
    m.requests += row.requests;
    m.cost += row.cost_nanos;
    byModel.set(row.model, m);
  }
  return [...byModel.values()].sort((a, b) => b.cost - a.cost || b.requests - a.requests).slice(0, limit);
}

/** GET /v1/cache/analytics: counters since they started (all time), for the caller's scope. */
export function cacheFigures(data) {
  return {
    scope: data.scope, hits: data.hits, misses: data.misses, lookups: data.lookups,
    bypassed: data.bypassed, hitRate: data.hit_rate, saved: data.savings, size: data.cache_size,
    kinds: Object.entries(data.hits_by_kind).map(([kind, hits]) => ({ kind, hits })),
  };
}

/** The `recent` usage records of /admin/spend (records.UsageRecord.to_dict), newest first. */
export function recentRequests(data) {
  return data.recent.map((r) => ({
    ts: r.ts, department: r.department || ADMIN_NAME, model: r.model_used, cache: r.cache,
    tokens: r.input_tokens + r.output_tokens, cost: r.cost, latencyMs: r.latency_ms,
    estimated: Boolean(r.cost_estimated), priced: r.priced !== false,
  }));
}

export function sumOf(items, field) {
  return items.reduce((total, item) => total + item[field], 0);
}
