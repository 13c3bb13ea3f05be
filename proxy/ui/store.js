// Conversation history in localStorage, newest first, with a plain-text search.

const STORAGE = "meterline.conversations.v1";
const MAX_CONVERSATIONS = 100;

export function loadConversations() {
  try {
    const list = JSON.parse(localStorage.getItem(STORAGE) || "[]");
    return Array.isArray(list) ? list.sort((a, b) => b.updated - a.updated) : [];
  } catch {
    return [];
  }
}

function persist(list) {
  // On a full quota drop the oldest conversations rather than losing the newest one.
  for (let keep = list.length; keep > 0; keep = Math.floor(keep / 2)) {
    try {
      localStorage.setItem(STORAGE, JSON.stringify(list.slice(0, keep)));
      return true;
    } catch {
      continue;
    }
  }
  return false;
}

export function newConversation() {
  const id = crypto.randomUUID ? crypto.randomUUID() : `c${Date.now()}${Math.random().toString(16).slice(2)}`;
  return { id, title: "New conversation", created: Date.now(), updated: Date.now(), messages: [] };
}

export function titleFor(conv) {
  const first = conv.messages.find((m) => m.role === "user");
  const text = (first && (first.display ?? first.content) || "").replace(/\s+/g, " ").trim();
  return text ? (text.length > 60 ? `${text.slice(0, 59)}…` : text) : "New conversation";
}

export function saveConversation(conv) {
  if (!conv.messages.length) return false;
  conv.title = titleFor(conv);
  conv.updated = Date.now();
  const list = loadConversations().filter((c) => c.id !== conv.id);
  return persist([conv, ...list].slice(0, MAX_CONVERSATIONS));
}

export function deleteConversation(id) {
  persist(loadConversations().filter((c) => c.id !== id));
}

/** Conversations whose title or any message contains every word of the query (case-insensitive). */
export function searchConversations(list, query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return list.map((conv) => ({ conv, snippet: "" }));
  const hits = [];
  for (const conv of list) {
    const texts = [conv.title, ...conv.messages.map((m) => m.display ?? m.content ?? "")];
    const haystack = texts.join("\n").toLowerCase();
    if (!words.every((w) => haystack.includes(w))) continue;
    const source = texts.find((t) => t.toLowerCase().includes(words[0])) || "";
    const at = source.toLowerCase().indexOf(words[0]);
    const snippet = source.slice(Math.max(0, at - 30), at + 50).replace(/\s+/g, " ");
    hits.push({ conv, snippet });
  }
  return hits;
}
