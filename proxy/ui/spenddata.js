// Turning the admin endpoints' JSON into what the Spend page shows. Pure functions, no DOM.
// Field names are read tolerantly (several spellings) because the endpoints evolve separately.

export function toNumber(value) {
  if (typeof value === "number" && Number.isFinite(value)) return value;
  if (typeof value === "string" && value.trim() !== "" && Number.isFinite(Number(value))) return Number(value);
  return undefined;
}

export function firstNumber(...values) {
  for (const value of values) {
    const n = toNumber(value);
    if (n !== undefined) return n;
  }
  return undefined;
}

/** An array as is; an object map {name: {...}} as [{[nameField]: name, ...}]. */
export function asList(value, nameField) {
  if (Array.isArray(value)) return value;
  if (!value || typeof value !== "object") return [];
  return Object.entries(value).map(([name, v]) =>
    v && typeof v === "object" ? { [nameField]: name, ...v } : { [nameField]: name, value: v });
}

export function utcDay(date = new Date()) {
  return date.toISOString().slice(0, 10);
}

function budgetsOf(dept) {
  return asList(dept.budgets, "period").map((b) => ({
    period: b.period,
    limit: firstNumber(b.limit_dollars, b.limit_usd, b.limit),
    spent: firstNumber(b.spent_dollars, b.spent_usd, b.spent),
  }));
}

export function departmentsFromSpend(data) {
  return asList(data?.departments ?? data?.by_department, "department").map((d) => {
    const budgets = budgetsOf(d);
    const daily = budgets.find((b) => b.period === "daily");
    const monthly = budgets.find((b) => b.period === "monthly");
    return {
      name: String(d.department ?? d.name ?? "?"),
      today: firstNumber(d.today_usd, d.spent_today_usd, d.today?.cost_usd, d.today, daily?.spent),
      month: firstNumber(d.month_usd, d.spent_month_usd, d.month?.cost_usd, d.month, monthly?.spent),
      dailyLimit: daily?.limit,
      monthlyLimit: monthly?.limit,
      saved: firstNumber(d.saved_usd, d.cache_saved_usd),
    };
  });
}

/** Per department: today's and this month's cost and savings from chargeback rows. */
export function departmentsFromChargeback(rows, today = utcDay()) {
  const month = today.slice(0, 7);
  const byName = new Map();
  for (const row of rows || []) {
    if (!row.department || !String(row.day || "").startsWith(month)) continue;
    const d = byName.get(row.department) || { name: row.department, today: 0, month: 0, saved: 0 };
    const cost = toNumber(row.cost_usd) ?? 0;
    d.month += cost;
    d.saved += toNumber(row.saved_usd) ?? 0;
    if (row.day === today) d.today += cost;
    byName.set(row.department, d);
  }
  return [...byName.values()];
}

/** /admin/spend departments (with budgets) completed by chargeback figures where they lack them. */
export function mergeDepartments(fromSpend, fromChargeback) {
  const extra = new Map(fromChargeback.map((d) => [d.name, d]));
  const merged = fromSpend.map((d) => {
    const c = extra.get(d.name) || {};
    extra.delete(d.name);
    return { ...d, today: d.today ?? c.today, month: d.month ?? c.month, saved: d.saved ?? c.saved };
  });
  return [...merged, ...extra.values()].sort((a, b) => (b.month ?? 0) - (a.month ?? 0) || a.name.localeCompare(b.name));
}

export function topModels(rows, today = utcDay(), limit = 8) {
  const month = today.slice(0, 7);
  const byModel = new Map();
  for (const row of rows || []) {
    if (!row.model || !String(row.day || "").startsWith(month)) continue;
    const m = byModel.get(row.model) || { model: row.model, requests: 0, cost: 0 };
    m.requests += toNumber(row.requests) ?? 0;
    m.cost += toNumber(row.cost_usd) ?? 0;
    byModel.set(row.model, m);
  }
  return [...byModel.values()].sort((a, b) => b.cost - a.cost || b.requests - a.requests).slice(0, limit);
}

export function modelsFromSpend(data, limit = 8) {
  return asList(data?.top_models ?? data?.models ?? data?.by_model, "model")
    .map((m) => ({ model: String(m.model ?? m.name ?? "?"), requests: firstNumber(m.requests, m.count) ?? 0,
      cost: firstNumber(m.cost_usd, m.spent_usd, m.cost, m.value) ?? 0 }))
    .sort((a, b) => b.cost - a.cost).slice(0, limit);
}

export function cacheSummary(data) {
  const hits = firstNumber(data?.hits, data?.hit_count, data?.totals?.hits);
  const misses = firstNumber(data?.misses, data?.miss_count, data?.totals?.misses);
  const lookups = firstNumber(data?.lookups, data?.requests, data?.totals?.requests,
    hits !== undefined && misses !== undefined ? hits + misses : undefined);
  const ratio = firstNumber(data?.hit_rate, data?.hit_ratio, data?.totals?.hit_rate,
    hits !== undefined && lookups ? hits / lookups : undefined);
  return {
    hits, misses, lookups, hitRate: ratio,
    saved: firstNumber(data?.saved_usd, data?.saved_dollars, data?.total_saved_usd, data?.savings_usd, data?.totals?.saved_usd),
    kinds: asList(data?.by_kind ?? data?.kinds, "kind").map((k) => ({
      kind: String(k.kind ?? k.name ?? "?"), hits: firstNumber(k.hits, k.count, k.value) ?? 0,
      saved: firstNumber(k.saved_usd, k.saved_dollars) })),
  };
}

export function recentRequests(data, limit = 20) {
  const list = data?.recent ?? data?.recent_requests ?? data?.records ?? [];
  return (Array.isArray(list) ? list : []).map((r) => ({
    ts: firstNumber(r.ts, r.timestamp),
    department: r.department ?? "",
    model: r.model_used || r.model_requested || r.model || "",
    cache: r.cache ?? "",
    tokens: (firstNumber(r.input_tokens) ?? 0) + (firstNumber(r.output_tokens) ?? 0),
    cost: firstNumber(r.cost_usd, r.cost),
    latencyMs: firstNumber(r.latency_ms),
    status: firstNumber(r.status),
  })).sort((a, b) => (b.ts ?? 0) - (a.ts ?? 0)).slice(0, limit);
}

export function sum(values) {
  const known = values.filter((v) => typeof v === "number");
  return known.length ? known.reduce((a, b) => a + b, 0) : undefined;
}
