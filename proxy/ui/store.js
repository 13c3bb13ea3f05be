// Conversation history on the server, scoped to the caller's key (proxy/chat/api.py):
//   GET/PUT/DELETE /api/v1/chat/conversations[/{id}], GET /api/v1/chat/search?q=
// Every call returns callJSON's {ok, status, data, error}; nothing is kept in the browser.

import { callJSON } from "./api.js";

const BASE = "/api/v1/chat";

export function newConversation() {
  const id = crypto.randomUUID ? crypto.randomUUID() : `c${Date.now()}${Math.random().toString(16).slice(2)}`;
  return { id, title: "New conversation", created: Date.now() / 1000, updated: Date.now() / 1000, messages: [] };
}

export function titleFor(conv) {
  const first = conv.messages.find((m) => m.role === "user");
  const text = (first && (first.display ?? first.content) || "").replace(/\s+/g, " ").trim();
  return text ? (text.length > 60 ? `${text.slice(0, 59)}…` : text) : "New conversation";
}

const MESSAGE_FIELDS = ["role", "content", "display", "attachments", "model", "meta", "usage", "error", "stopped", "suggestions"];

/** Only the fields the server stores (proxy/chat/history.py Message), without nulls. */
function storable(message) {
  const out = {};
  for (const field of MESSAGE_FIELDS) {
    if (message[field] !== undefined && message[field] !== null) out[field] = message[field];
  }
  return out;
}

export function listConversations(key) {
  return callJSON(`${BASE}/conversations?limit=100`, key);
}

export function fetchConversation(key, id) {
  return callJSON(`${BASE}/conversations/${encodeURIComponent(id)}`, key);
}

export function saveConversation(key, conv) {
  if (!conv.messages.length) return Promise.resolve({ ok: true, data: null });
  conv.title = titleFor(conv);
  return callJSON(`${BASE}/conversations/${encodeURIComponent(conv.id)}`, key, {
    method: "PUT", body: { title: conv.title, created: conv.created, messages: conv.messages.map(storable) },
  });
}

export function deleteConversation(key, id) {
  return callJSON(`${BASE}/conversations/${encodeURIComponent(id)}`, key, { method: "DELETE" });
}

export function searchConversations(key, query, signal) {
  return callJSON(`${BASE}/search?q=${encodeURIComponent(query)}&limit=30`, key, { signal });
}

const OLD_STORAGE = "meterline.conversations.v1"; // where earlier versions of the page kept history

/**
 * Move conversations an earlier version of the page kept in this browser's localStorage to the
 * caller's server-side history, then forget them locally. Kept locally if any upload fails.
 */
export async function migrateLocalHistory(key) {
  let list;
  try {
    list = JSON.parse(localStorage.getItem(OLD_STORAGE) || "null");
  } catch {
    list = null;
  }
  if (!Array.isArray(list) || !list.length) return 0;
  let moved = 0;
  for (const old of list) {
    if (!old || !Array.isArray(old.messages) || !/^[A-Za-z0-9_-]{1,64}$/.test(old.id || "")) continue;
    const conv = { id: old.id, created: (old.created || Date.now()) / 1000, messages: old.messages };
    const result = await saveConversation(key, conv);
    if (!result.ok) return moved; // keep the local copy; try again next time
    moved += 1;
  }
  localStorage.removeItem(OLD_STORAGE);
  return moved;
}
