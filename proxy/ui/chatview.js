// Message bubbles, badges and per-answer actions. Pure DOM building; state lives in chat.js.

import { formatInt, formatUSD, h } from "./api.js";
import { renderMarkdown } from "./markdown.js";

export const HEADER_BADGES = {
  route: "x-meterline-route",
  experiment: "x-meterline-experiment",
  variant: "x-meterline-variant",
  cache: "x-meterline-cache",
  provider: "x-meterline-provider",
  requestId: "x-request-id",
};

export function metaFromHeaders(headers) {
  const meta = {};
  for (const [field, name] of Object.entries(HEADER_BADGES)) {
    const value = headers.get(name);
    if (value) meta[field] = value;
  }
  return meta;
}

export function isCached(answer) {
  const cache = answer.usage?.cache || answer.meta?.cache || "";
  return cache.startsWith("hit");
}

function badge(kind, label, value, title) {
  return h("li", { class: `badge badge-${kind}`, "data-badge": kind, title },
    h("span", { class: "badge-label", text: label }), h("span", { class: "badge-value", text: value }));
}

export function badgeList(answer) {
  const meta = answer.meta || {};
  const usage = answer.usage || {};
  const items = [];
  if (answer.model) items.push(badge("model", "model", answer.model));
  if (typeof usage.cost_usd === "number") {
    items.push(badge("cost", "cost", formatUSD(usage.cost_usd) + (usage.estimated ? " (est.)" : ""),
      usage.estimated ? "Estimated: the stream ended before usage was reported" : "Charged to your department"));
  }
  if (typeof usage.input_tokens === "number") {
    items.push(badge("tokens", "tokens", `${formatInt(usage.input_tokens)} in · ${formatInt(usage.output_tokens)} out`));
  }
  if (typeof usage.budget_remaining_usd === "number") {
    items.push(badge("budget", "budget left", formatUSD(usage.budget_remaining_usd)));
  }
  if (meta.route) items.push(badge("route", "route", meta.route, "Routing rule that picked the model"));
  if (meta.experiment) items.push(badge("experiment", "experiment", `${meta.experiment} / ${meta.variant || "?"}`));
  const cache = usage.cache || meta.cache;
  if (cache && cache !== "off") items.push(badge(cache.startsWith("hit") ? "cache-hit" : "cache", "cache", cache));
  if (meta.provider) items.push(badge("provider", "provider", meta.provider));
  return h("ul", { class: "badges", "aria-label": "About this answer" }, items);
}

export function userBubble(message) {
  const chips = (message.attachments || []).map((name) => h("li", { class: "chip", text: name }));
  return h("article", { class: "message user", "aria-label": "You" },
    h("div", { class: "bubble" }, h("p", { class: "plain", text: message.display ?? message.content }),
      chips.length ? h("ul", { class: "chips", "aria-label": "Attached files" }, chips) : null));
}

export function errorBox(error) {
  const detail = [error.type, error.code, error.status ? `HTTP ${error.status}` : null].filter(Boolean).join(" · ");
  return h("div", { class: "error-box", role: "alert" },
    h("strong", { text: "Request failed: " }), h("span", { class: "error-message", text: error.message }),
    detail ? h("div", { class: "error-detail", text: detail }) : null);
}

/** An assistant bubble whose text can be replaced while streaming. */
export function assistantBubble() {
  const body = h("div", { class: "markdown" });
  const footer = h("div", { class: "answer-footer" });
  const el = h("article", { class: "message assistant", "aria-label": "Assistant" },
    h("div", { class: "bubble" }, body, footer));
  let pending = null;
  let latest = "";
  const flush = () => { pending = null; body.replaceChildren(renderMarkdown(latest)); };
  return {
    el,
    setText(text) {
      latest = text;
      if (pending === null) pending = requestAnimationFrame(flush);
    },
    settle(answer, actions) {
      if (pending !== null) cancelAnimationFrame(pending);
      latest = answer.content;
      flush();
      if (!answer.content && !answer.error) body.replaceChildren(h("p", { class: "muted", text: "(no text)" }));
      footer.replaceChildren(...[
        answer.error ? errorBox(answer.error) : null,
        answer.stopped ? h("p", { class: "muted stopped", text: "Stopped." }) : null,
        badgeList(answer),
        actions,
      ].filter(Boolean));
    },
  };
}

const SVG_NS = "http://www.w3.org/2000/svg";
const THUMB = "M7 10v11H3V10h4zm0 0 4.2-7.2a1.8 1.8 0 0 1 3.3 1.3L13.6 9H19a2 2 0 0 1 2 2.3l-1.3 7.6A2.5 2.5 0 0 1 17.2 21H7";

function thumb(down) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(SVG_NS, "path");
  path.setAttribute("d", THUMB);
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", "1.8");
  path.setAttribute("stroke-linejoin", "round");
  if (down) path.setAttribute("transform", "rotate(180 12 12)");
  svg.append(path);
  return svg;
}

function statusLine() {
  return h("span", { class: "action-status", role: "status" });
}

/** Thumbs up/down and, for cached answers, "wrong answer". Handlers return a message to show. */
export function answerActions(answer, { onFeedback, onWrong }) {
  if (!answer.meta?.requestId && !answer.usage?.request_id) return null;
  const status = statusLine();
  const run = async (button, work) => {
    button.disabled = true;
    status.textContent = "Sending…";
    const result = await work();
    status.textContent = result.message;
    button.disabled = false;
    if (result.ok) button.setAttribute("aria-pressed", "true");
  };
  const up = h("button", { type: "button", class: "icon", "aria-label": "Good answer", "aria-pressed": "false" }, thumb(false));
  const down = h("button", { type: "button", class: "icon", "aria-label": "Bad answer", "aria-pressed": "false" }, thumb(true));
  up.addEventListener("click", () => run(up, () => onFeedback(answer, 1)));
  down.addEventListener("click", () => run(down, () => onFeedback(answer, 0)));
  const wrong = isCached(answer)
    ? h("button", { type: "button", class: "secondary small wrong-answer", text: "Wrong answer" })
    : null;
  wrong?.addEventListener("click", () => run(wrong, () => onWrong(answer)));
  return h("div", { class: "answer-actions" }, up, down, wrong, status);
}
