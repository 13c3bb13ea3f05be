// The key in the browser and what it may see. The key is kept for the tab (sessionStorage) unless
// the user ticks "remember" (localStorage); an admin key is never persisted. GET /v1/alerts, which
// any key may call, tells the key's kind and its own alerts, so a department key never gets a 401.

import { callJSON, h } from "./api.js";

const KEY_STORAGE = "meterline.apiKey";

export function loadKey() {
  return sessionStorage.getItem(KEY_STORAGE) || localStorage.getItem(KEY_STORAGE) || "";
}

export function isRemembered() {
  return localStorage.getItem(KEY_STORAGE) !== null;
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
  localStorage.removeItem(KEY_STORAGE);
}

/** {ok, admin, department, alerts, error}; admin is null when the proxy couldn't say. */
export async function checkKey(key) {
  const result = await callJSON("/v1/alerts", key);
  if (!result.ok) return { ok: false, admin: null, department: null, alerts: [], error: result.error };
  const data = result.data;
  return { ok: true, admin: data.admin === true, department: data.department, alerts: data.alerts || [], error: null };
}

function alertText(alert) {
  return alert.message || alert.annotations?.summary || alert.labels?.alertname || alert.name || "Alert";
}

/** The banner of the caller's active alerts (hidden when there are none). */
export function renderAlerts(banner, alerts) {
  banner.hidden = true;
  if (!Array.isArray(alerts) || !alerts.length) return;
  const items = alerts.slice(0, 3).map((a) => h("li", {
    class: `sev-${a.severity || a.labels?.severity || "info"}`, text: alertText(a),
  }));
  const more = alerts.length > 3 ? h("span", { text: ` and ${alerts.length - 3} more` }) : null;
  const close = h("button", { type: "button", class: "icon", "aria-label": "Dismiss alerts", text: "×",
    onclick: () => { banner.hidden = true; } });
  banner.replaceChildren(h("strong", { text: `${alerts.length} active alert${alerts.length > 1 ? "s" : ""}:` }),
    h("ul", {}, items), ...(more ? [more] : []), h("a", { href: "/spend", text: "Spend page" }), close);
  banner.hidden = false;
}

/**
 * The key form of both pages: "Use key", "Remember" and "Forget key". `onKey(key)` runs for a key
 * to use ("" after forgetting) and returns checkKey's answer, which decides whether it is stored
 * beyond the tab. Returns `use(key)` for the page's start-up.
 */
export function wireKeyForm(onKey) {
  const $ = (id) => document.getElementById(id);
  const [form, input, remember, forget, note] =
    ["key-form", "api-key", "remember-key", "forget-key", "key-note"].map($);
  let access = null;
  const store = (key) => {
    if (access?.admin === true) {
      localStorage.removeItem(KEY_STORAGE);
      note.textContent = remember.checked ? "Admin keys are not remembered: kept for this tab only." : "";
    } else if (access?.admin === false) {
      if (remember.checked) localStorage.setItem(KEY_STORAGE, key);
      else localStorage.removeItem(KEY_STORAGE);
    } // unknown kind (the proxy couldn't say): leave what was stored as it was
  };
  const use = async (key) => {
    input.value = key;
    forget.hidden = !key;
    note.textContent = "";
    access = null;
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else forgetKey();
    const found = await onKey(key);
    if (!key || input.value !== key) return;
    access = found;
    store(key);
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    use(input.value.trim());
  });
  remember.addEventListener("change", () => {
    if (!remember.checked) localStorage.removeItem(KEY_STORAGE);
    else if (input.value) store(input.value);
  });
  forget.addEventListener("click", () => {
    remember.checked = false;
    use("");
  });
  remember.checked = isRemembered();
  return use;
}
