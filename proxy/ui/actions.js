// Suggested actions after an answer (POST /api/v1/chat/suggestions, rules in
// proxy/chat/suggestions.py) and what clicking one does: ask, navigate, analyze, report.

import { authHeaders, callJSON, formatInt, formatUSD, h, readError } from "./api.js";

export async function fetchSuggestions(key, question, answer, messages) {
  const result = await callJSON("/api/v1/chat/suggestions", key, {
    method: "POST", body: { question, answer, messages },
  });
  return result.ok && Array.isArray(result.data.actions) ? result.data.actions : [];
}

export function actionList(actions, onRun) {
  if (!actions.length) return null;
  const items = actions.map((action) => h("li", {}, h("button", {
    type: "button", class: `suggestion action-${action.action}`, "data-action": action.action,
    text: action.label, onclick: () => onRun(action),
  })));
  return h("nav", { class: "followups", "aria-label": "Suggested actions" }, h("ul", {}, items));
}

function withQuery(endpoint, query = {}) {
  const params = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)]));
  const text = params.toString();
  return text ? `${endpoint}?${text}` : endpoint;
}

/** Only the proxy's own read endpoints may be called from a suggestion. */
function allowedEndpoint(endpoint) {
  return typeof endpoint === "string" && /^\/(v1|admin)\/[a-z/-]+$/.test(endpoint);
}

function resultBox(title, ...children) {
  return h("article", { class: "message action-result", "aria-label": title },
    h("div", { class: "bubble" }, h("strong", { text: title }), ...children));
}

function failure(title, error) {
  return resultBox(title, h("p", { class: "error-message", role: "alert", text: error.message }));
}

/** GET /v1/spend/daily's days as a small table: requests, cost, cache hits and savings. */
export function spendTable(data) {
  const rows = data.days.map((day, i) => {
    const cost = Object.values(data.cost_usd).reduce((sum, series) => sum + series[i], 0);
    return h("tr", { "data-day": day },
      h("th", { scope: "row", text: day }),
      h("td", { class: "num", text: formatInt(data.requests[i]) }),
      h("td", { class: "num", text: formatUSD(cost) }),
      h("td", { class: "num", text: `${formatInt(data.cache.hits[i])} / ${formatInt(data.cache.lookups[i])}` }),
      h("td", { class: "num", text: formatUSD(data.cache.saved_usd[i]) }));
  });
  const head = h("tr", {}, ["Day", "Requests", "Cost", "Cache hits", "Saved"].map((text, i) =>
    h("th", { scope: "col", class: i ? "num" : null, text })));
  return h("table", { class: "spend-table" }, h("thead", {}, head), h("tbody", {}, rows),
    h("tfoot", {}, h("tr", {}, h("th", { scope: "row", text: "Total" }),
      h("td", { class: "num", text: formatInt(data.requests.reduce((a, b) => a + b, 0)) }),
      h("td", { class: "num", text: formatUSD(data.total_usd) }), h("td"), h("td"))));
}

async function analyze(action, key) {
  const { endpoint, query } = action.params || {};
  if (!allowedEndpoint(endpoint)) return failure(action.label, { message: "This action is not supported." });
  const result = await callJSON(withQuery(endpoint, query), key);
  if (!result.ok) return failure(action.label, result.error);
  const scope = result.data.department ? `Department: ${result.data.department}` : "All departments";
  return resultBox(action.label, h("p", { class: "muted", text: scope }), spendTable(result.data));
}

async function download(action, key) {
  const { endpoint, query } = action.params || {};
  if (!allowedEndpoint(endpoint)) return failure(action.label, { message: "This action is not supported." });
  let resp;
  try {
    resp = await fetch(withQuery(endpoint, query), { headers: authHeaders(key) });
  } catch (exc) {
    return failure(action.label, { message: `Network error: ${exc.message}` });
  }
  if (!resp.ok) return failure(action.label, await readError(resp));
  const name = /filename="([^"]+)"/.exec(resp.headers.get("content-disposition") || "")?.[1] || "report.csv";
  const url = URL.createObjectURL(await resp.blob());
  const link = h("a", { href: url, download: name, text: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return resultBox(action.label, h("p", { text: `Downloaded ${name}.` }));
}

/**
 * Run one suggestion. `ask(prompt)` sends a chat message (follow-ups and "Summarize this
 * conversation": a model call, charged like any other); `show(node)` puts a result in the chat.
 */
export async function runAction(action, { key, ask, show }) {
  const params = action.params || {};
  if (action.action === "ask" || (action.action === "report" && params.kind === "summary")) {
    return ask(params.prompt || action.label);
  }
  if (action.action === "navigate") {
    if (typeof action.target === "string" && action.target.startsWith("/")) location.assign(action.target);
    else if (/^https?:\/\//.test(action.target || "")) window.open(action.target, "_blank", "noopener,noreferrer");
    return null;
  }
  if (action.action === "analyze") return show(await analyze(action, key));
  if (action.action === "report" && params.kind === "chargeback") return show(await download(action, key));
  return show(failure(action.label, { message: "This action is not supported." }));
}
