// Chat page: key + model, streaming answers with badges, history, attachments, feedback.

import { checkKey, loadKey, renderAlerts, wireKeyForm } from "./access.js";
import { authHeaders, callJSON, h, readError, readSSE } from "./api.js";
import { answerActions, assistantBubble, metaFromHeaders, userBubble } from "./chatview.js";
import { attachmentBlock, formatSize, readAttachment } from "./files.js";
import { actionList, fetchSuggestions, runAction } from "./actions.js";
import {
  deleteConversation, fetchConversation, listConversations, migrateLocalHistory, newConversation, saveConversation,
  searchConversations,
} from "./store.js";

const MODEL_STORAGE = "meterline.model";
const PREFERRED_MODELS = ["gpt-4o-mini", "gpt-4.1-mini"];
const $ = (id) => document.getElementById(id);
const ui = {
  keyForm: $("key-form"), key: $("api-key"), model: $("model"), alerts: $("alerts"),
  newChat: $("new-chat"), search: $("search"), history: $("history"), messages: $("messages"),
  empty: $("empty"), notice: $("notice"), composer: $("composer"), chips: $("attachments"),
  prompt: $("prompt"), file: $("file"), stop: $("stop"), send: $("send"),
};
const state = {
  key: loadKey(), conv: newConversation(), attachments: [], reading: null, controller: null, search: null,
  inputs: new Map(), // model id -> input_modalities from /v1/models
};
const SEARCH_DELAY_MS = 250;

function showNotice(text) {
  ui.notice.textContent = text || "";
  ui.notice.hidden = !text;
}

// ----- key, models, alerts ---------------------------------------------------------------

async function loadModels() {
  ui.model.disabled = true;
  const result = await callJSON("/v1/models", state.key);
  if (!result.ok) {
    const why = result.status === 401 ? "Key rejected" : "Could not load models";
    showNotice(`${why}: ${result.error.message}`);
    ui.model.replaceChildren(h("option", { value: "", text: "No models available" }));
    return;
  }
  showNotice(null);
  const models = (result.data.data || []).filter((m) => !m.id.includes("embedding"));
  state.inputs = new Map(models.map((m) => [m.id, m.input_modalities || ["text"]]));
  const ids = models.map((m) => m.id).sort();
  ui.model.replaceChildren(...ids.map((id) => h("option", { value: id, text: id })));
  const saved = localStorage.getItem(MODEL_STORAGE);
  ui.model.value = [saved, ...PREFERRED_MODELS, ids[0]].find((id) => id && ids.includes(id)) || "";
  ui.model.disabled = ids.length === 0;
}

async function useKey(key) {
  state.key = key;
  if (!key) {
    ui.model.disabled = true;
    ui.model.replaceChildren(h("option", { value: "", text: "Enter a key first" }));
    renderAlerts(ui.alerts, []);
    startConversation();
    return null;
  }
  const [access] = await Promise.all([checkKey(key), loadModels(), migrateLocalHistory(key)]);
  renderHistory();
  renderAlerts(ui.alerts, access.alerts);
  return access;
}

// ----- history ---------------------------------------------------------------------------------

function historyRow(item, sub, open) {
  const current = item.id === state.conv.id;
  return h("li", { class: current ? "current" : "", "data-conversation": item.id },
    h("button", { type: "button", class: "history-item", "aria-current": current ? "true" : null, onclick: open },
      h("span", { class: "history-title", text: item.title }), sub),
    h("button", { type: "button", class: "icon delete", "aria-label": `Delete conversation: ${item.title}`, text: "×",
      onclick: () => removeConversation(item.id) }));
}

/** The snippet as text with <mark> around the server's highlight ranges (never markup). */
function snippetNode(snippet, highlights) {
  const parts = [];
  let at = 0;
  for (const [start, end] of highlights) {
    if (start > at) parts.push(snippet.slice(at, start));
    parts.push(h("mark", { text: snippet.slice(start, end) }));
    at = end;
  }
  parts.push(snippet.slice(at));
  return h("span", { class: "history-sub snippet" }, parts);
}

function showHistory(rows, empty) {
  if (!rows.length) rows.push(h("li", { class: "muted", text: empty }));
  ui.history.replaceChildren(...rows);
}

async function renderHistory() {
  const query = ui.search.value.trim();
  if (!state.key) return showHistory([], "Enter a key to see your conversations");
  if (query) return runSearch(query);
  const result = await listConversations(state.key);
  if (ui.search.value.trim()) return; // a search started meanwhile
  if (!result.ok) return showHistory([], `History unavailable: ${result.error.message}`);
  showHistory(result.data.data.map((item) => historyRow(item,
    h("span", { class: "history-sub", text: new Date(item.updated * 1000).toLocaleString() }),
    () => openConversation(item.id))), "No conversations yet");
}

async function runSearch(query) {
  state.search?.abort();
  const controller = state.search = new AbortController();
  const result = await searchConversations(state.key, query, controller.signal);
  if (controller !== state.search) return; // a newer search replaced this one
  state.search = null;
  if (!result.ok) return showHistory([], `Search failed: ${result.error.message}`);
  showHistory(result.data.data.map((hit) => historyRow({ id: hit.conversation_id, title: hit.title },
    snippetNode(hit.snippet, hit.highlights), () => openConversation(hit.conversation_id, hit.message_index))),
    "No matches");
}

let searchTimer = null;
function scheduleSearch() {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(renderHistory, SEARCH_DELAY_MS);
}

async function openConversation(id, messageIndex = null) {
  if (state.controller) return;
  const result = await fetchConversation(state.key, id);
  if (!result.ok) return showNotice(`Could not open the conversation: ${result.error.message}`);
  showNotice(null);
  state.conv = result.data;
  renderConversation(messageIndex);
  ui.history.querySelectorAll("li[data-conversation]").forEach((li) =>
    li.classList.toggle("current", li.dataset.conversation === id));
}

function startConversation() {
  if (state.controller) return;
  state.conv = newConversation();
  renderConversation();
  renderHistory();
}

async function removeConversation(id) {
  const result = await deleteConversation(state.key, id);
  if (!result.ok && result.status !== 404) return showNotice(`Not deleted: ${result.error.message}`);
  if (id === state.conv.id) startConversation();
  else renderHistory();
}

// ----- messages --------------------------------------------------------------------------------

async function sendFeedback(answer, score) {
  const requestId = answer.usage?.request_id || answer.meta?.requestId;
  const result = await callJSON("/v1/feedback", state.key, { method: "POST", body: { request_id: requestId, score } });
  if (result.ok) return { ok: true, message: "Thanks for the feedback." };
  return { ok: false, message: unavailable(result) ? "Feedback isn't available on this proxy yet." : `Feedback not sent: ${result.error.message}` };
}

async function reportWrong(answer) {
  const requestId = answer.usage?.request_id || answer.meta?.requestId;
  const result = await callJSON("/v1/cache/report", state.key, { method: "POST", body: { request_id: requestId } });
  if (result.ok) return { ok: true, message: "Reported: this cached answer will be reviewed." };
  return { ok: false, message: unavailable(result) ? "Reporting isn't available on this proxy yet." : `Report not sent: ${result.error.message}` };
}

/** A 404 from the router (endpoint not deployed) rather than from the endpoint itself. */
function unavailable(result) {
  return result.status === 404 && /^Unknown path/.test(result.error.message || "");
}

function settleAnswer(bubble, answer) {
  bubble.settle(answer, answerActions(answer, { onFeedback: sendFeedback, onWrong: reportWrong }));
}

/** Every message; with `found`, that message is marked and scrolled to (a search result). */
function renderConversation(found = null) {
  const nodes = [];
  const messages = state.conv.messages;
  let target = null;
  messages.forEach((message, i) => {
    let el;
    if (message.role === "user") {
      el = userBubble(message);
    } else {
      const bubble = assistantBubble();
      settleAnswer(bubble, message);
      el = bubble.el;
    }
    el.dataset.index = String(i);
    if (i === found) {
      el.classList.add("found");
      target = el;
    }
    nodes.push(el);
    if (message.role === "assistant" && i === messages.length - 1) nodes.push(actionList(message.suggestions || [], runSuggestion));
  });
  ui.empty.hidden = nodes.length > 0;
  ui.messages.replaceChildren(ui.empty, ...nodes.filter(Boolean));
  if (target) target.scrollIntoView({ block: "center" });
  else ui.messages.scrollTop = ui.messages.scrollHeight;
}

function apiMessages() {
  return state.conv.messages
    .filter((m) => m.role === "user" || (m.content && !m.error))
    .map((m) => ({ role: m.role, content: m.parts || m.content }));
}

function parseEvent(data) {
  try {
    return JSON.parse(data);
  } catch {
    return null;
  }
}

async function streamAnswer(answer, bubble) {
  const controller = new AbortController();
  state.controller = controller;
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST", signal: controller.signal,
      headers: authHeaders(state.key, { "Content-Type": "application/json" }),
      body: JSON.stringify({ model: answer.model, messages: apiMessages(), stream: true,
        stream_options: { include_usage: true } }),
    });
    answer.meta = metaFromHeaders(resp.headers);
    if (!resp.ok) {
      answer.error = await readError(resp);
      return;
    }
    for await (const data of readSSE(resp.body)) {
      if (data === "[DONE]") break;
      const event = parseEvent(data);
      if (!event) continue;
      if (event.error) answer.error = { message: event.error.message || "The stream failed", type: event.error.type, code: event.error.code };
      if (event.meterline) answer.usage = event.meterline;
      if (event.model) answer.model = event.model;
      const delta = event.choices?.[0]?.delta?.content;
      if (delta) {
        answer.content += delta;
        bubble.setText(answer.content);
      }
    }
  } catch (exc) {
    if (exc.name === "AbortError") answer.stopped = true;
    else answer.error = { status: 0, message: `Network error: ${exc.message}` };
  } finally {
    state.controller = null;
  }
}

function runSuggestion(action) {
  return runAction(action, {
    key: state.key,
    ask: send,
    show: (node) => {
      ui.messages.append(node);
      node.scrollIntoView({ block: "nearest" });
    },
  });
}

function setBusy(busy) {
  ui.stop.hidden = !busy;
  ui.send.disabled = busy;
  ui.messages.setAttribute("aria-busy", String(busy));
}

async function send(text) {
  text = text.trim();
  if (state.controller) return;
  // a file picked a moment ago may still be reading: it belongs to this question, so wait for it
  if (state.reading) {
    ui.send.disabled = true;
    await state.reading;
    ui.send.disabled = false;
    if (state.controller) return;
  }
  if (!text && !state.attachments.length) return;
  if (!state.key) {
    showNotice("Enter an API key first.");
    ui.key.focus();
    return;
  }
  const images = state.attachments.filter((a) => a.kind === "image");
  const model = ui.model.value;
  if (images.length && !(state.inputs.get(model) || []).includes("image")) {
    const able = [...state.inputs].filter(([, inputs]) => inputs.includes("image")).map(([id]) => id);
    showNotice(`${model} does not accept images. ${able.length ? `Choose one that does: ${able.join(", ")}.` : "No model here accepts images."}`);
    return;
  }
  const blocks = state.attachments.filter((a) => a.kind !== "image").map(attachmentBlock);
  const content = [text, ...blocks].filter(Boolean).join("\n\n");
  // images travel as content parts in this request only; the history keeps the text and file names
  const parts = images.length
    ? [{ type: "text", text: content }, ...images.map((a) => ({ type: "image_url", image_url: { url: a.dataUrl } }))]
    : null;
  state.conv.messages.push({ role: "user", content, display: text, parts,
    attachments: state.attachments.map((a) => a.name) });
  state.attachments = [];
  renderChips();
  ui.prompt.value = "";
  const answer = { role: "assistant", content: "", model: ui.model.value, meta: {}, usage: null, error: null, stopped: false };
  renderConversation();
  const bubble = assistantBubble();
  ui.messages.append(bubble.el);
  setBusy(true);
  await streamAnswer(answer, bubble);
  setBusy(false);
  state.conv.messages.push(answer);
  if (!answer.error && answer.content) {
    answer.suggestions = await fetchSuggestions(state.key, text, answer.content, state.conv.messages.length);
  }
  renderConversation();
  const saved = await saveConversation(state.key, state.conv);
  if (!saved.ok) showNotice(`Not saved to your history: ${saved.error.message}`);
  renderHistory();
  ui.prompt.focus();
}

// ----- attachments -----------------------------------------------------------------------------

function csvPreview(att) {
  const [head = [], ...rows] = att.preview;
  return h("table", { class: "csv-preview", "aria-label": `Preview of ${att.name}` },
    h("thead", {}, h("tr", {}, head.map((cell) => h("th", { scope: "col", text: cell })))),
    h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell) => h("td", { text: cell }))))));
}

function chip(att, i) {
  const about = att.kind === "pdf" ? ` · ${att.pages} page${att.pages === 1 ? "" : "s"}` : "";
  return h("li", { class: `chip chip-${att.kind}`, "data-kind": att.kind },
    att.kind === "image" ? h("img", { src: att.dataUrl, alt: "", class: "thumb" }) : null,
    h("span", { text: `${att.name} · ${formatSize(att.size)}${about}` }),
    h("button", { type: "button", class: "icon", "aria-label": `Remove ${att.name}`, text: "×",
      onclick: () => { state.attachments.splice(i, 1); renderChips(); } }),
    att.kind === "csv" ? csvPreview(att) : null,
    att.note ? h("span", { class: "chip-note", text: att.note }) : null);
}

function renderChips() {
  ui.chips.replaceChildren(...state.attachments.map(chip));
}

function attach(files) {
  const reading = readAll(files, state.reading);
  state.reading = reading;
  return reading.finally(() => { if (state.reading === reading) state.reading = null; });
}

async function readAll(files, before) {
  await before;  // files are kept in the order they were picked
  for (const file of files) {
    try {
      state.attachments.push(await readAttachment(file, state.key));
      showNotice(null);
    } catch (exc) {
      showNotice(exc.message);
    }
  }
  renderChips();
}

// ----- wiring ----------------------------------------------------------------------------------

const useKeyFromForm = wireKeyForm(useKey);
ui.model.addEventListener("change", () => localStorage.setItem(MODEL_STORAGE, ui.model.value));
ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send(ui.prompt.value);
});
ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send(ui.prompt.value);
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state.controller) state.controller.abort();
});
ui.stop.addEventListener("click", () => state.controller?.abort());
ui.file.addEventListener("change", async () => {
  await attach([...ui.file.files]);
  ui.file.value = "";
});
ui.newChat.addEventListener("click", startConversation);
ui.search.addEventListener("input", scheduleSearch);

renderConversation();
if (state.key) {
  useKeyFromForm(state.key);
} else {
  renderHistory();
  ui.key.focus();
}
