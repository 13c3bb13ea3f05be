// Talking to the proxy: JSON calls, OpenAI-shaped errors and the SSE reader.

export function authHeaders(key, extra = {}) {
  return { Authorization: `Bearer ${key}`, ...extra };
}

/** The `error` object of an OpenAI-shaped body, or one built from the status line. */
export async function readError(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    body = null;
  }
  const err = body && typeof body.error === "object" && body.error ? body.error : {};
  return {
    status: resp.status,
    message: err.message || `HTTP ${resp.status} ${resp.statusText || ""}`.trim(),
    type: err.type || null,
    code: err.code || null,
  };
}

/** GET or POST JSON; never throws: {ok, status, data, error}. */
export async function callJSON(path, key, { method = "GET", body, signal } = {}) {
  const headers = authHeaders(key, body === undefined ? {} : { "Content-Type": "application/json" });
  let resp;
  try {
    resp = await fetch(path, {
      method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (exc) {
    return { ok: false, status: 0, data: null, error: { status: 0, message: `Network error: ${exc.message}` } };
  }
  if (!resp.ok) return { ok: false, status: resp.status, data: null, error: await readError(resp) };
  try {
    return { ok: true, status: resp.status, data: await resp.json(), error: null };
  } catch {
    return { ok: false, status: resp.status, data: null, error: { status: resp.status, message: "Response was not JSON" } };
  }
}

/** Yields the data payload of each server-sent event ("[DONE]" included) from a fetch body. */
export async function* readSSE(body) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      const events = buffer.split(/\r?\n\r?\n/);
      buffer = done ? "" : events.pop();
      for (const event of events) {
        const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (data) yield data;
      }
      if (done) return;
    }
  } finally {
    reader.releaseLock();
  }
}

export function formatUSD(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–";
  const abs = Math.abs(value);
  // per-request costs are fractions of a cent, exact to the nano-dollar (up to 9 decimals);
  // budgets and totals read best in cents
  const digits = abs === 0 || abs >= 1 ? 2 : abs >= 0.01 ? 4 : 6;
  const most = digits === 6 ? 9 : digits;
  const text = abs.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: most });
  return `${value < 0 ? "-" : ""}$${text}`;
}

export function formatInt(value) {
  return typeof value === "number" && Number.isFinite(value) ? value.toLocaleString("en-US") : "–";
}

/** Create an element with properties and children (strings become text nodes, never markup). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "style") Object.assign(el.style, value); // CSSOM: allowed by the page's CSP
    else if (name === "text") el.textContent = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}
