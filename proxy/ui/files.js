// Attachments read in the browser, each kind with a clear size cap:
//   text  ≤ 100 KB, sent as a fenced block
//   CSV   ≤ 5 MB, previewed as a table, sent as a fenced block cut at 100 KB with a note
//   PDF   ≤ 10 MB, turned into text with page markers by POST /api/v1/chat/extract (pypdf)
//   image ≤ 4 MB (PNG, JPEG, GIF, WebP), sent as an image_url data-URL part to models that accept images
// Nothing is stored: the content goes into the request (and the text into the user's history).

import { authHeaders, readError } from "./api.js";

export const MAX_FILE_BYTES = 100 * 1024;
export const MAX_CSV_BYTES = 5 * 1024 * 1024;
export const MAX_PDF_BYTES = 10 * 1024 * 1024;
export const MAX_IMAGE_BYTES = 4 * 1024 * 1024;
const PREVIEW_ROWS = 8;
const IMAGE_TYPES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);
const IMAGE_EXTENSIONS = { png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp" };
const TEXT_TYPES = /^(text\/|application\/(json|xml|x-yaml|yaml|javascript|x-sh|sql|toml|x-python))/;
const TEXT_EXTENSIONS = new Set(("txt md markdown rst tsv json jsonl yaml yml toml ini cfg conf env log " +
  "xml html css js mjs ts tsx jsx py rb go rs java kt c h cc cpp hpp cs php sh bash zsh sql r swift " +
  "scala lua pl dockerfile makefile tf proto graphql").split(" "));

function extensionOf(name) {
  const lower = name.toLowerCase();
  const dot = lower.lastIndexOf(".");
  return dot >= 0 ? lower.slice(dot + 1) : lower;
}

export function kindOf(file) {
  const ext = extensionOf(file.name);
  if (ext === "csv" || file.type === "text/csv") return "csv";
  if (ext === "pdf" || file.type === "application/pdf") return "pdf";
  if (IMAGE_TYPES.has(file.type) || IMAGE_EXTENSIONS[ext]) return "image";
  if (TEXT_TYPES.test(file.type || "") || TEXT_EXTENSIONS.has(ext)) return "text";
  return null;
}

function kb(bytes) {
  return `${Math.ceil(bytes / 1024).toLocaleString("en-US")} KB`;
}

function tooBig(file, limit) {
  const size = limit >= 1024 * 1024 ? `${limit / 1024 / 1024} MB` : `${limit / 1024} KB`;
  return new Error(`“${file.name}” is ${kb(file.size)}; the limit is ${size}.`);
}

/** RFC 4180 rows: quoted fields may hold commas, quotes ("") and newlines. */
export function parseCSV(text, maxRows = Infinity) {
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length && rows.length < maxRows; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i += 1; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i += 1;
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else field += c;
  }
  if ((field || row.length) && rows.length < maxRows) rows.push([...row, field]);
  return rows;
}

/** The CSV cut at a line end within MAX_FILE_BYTES characters, with a note saying what was left out. */
export function capCSV(text) {
  const lines = text.replace(/\r?\n$/, "").split(/\r?\n/).length;
  if (text.length <= MAX_FILE_BYTES) return { text, note: "" };
  const cut = text.lastIndexOf("\n", MAX_FILE_BYTES);
  const kept = text.slice(0, cut > 0 ? cut : MAX_FILE_BYTES);
  const shown = kept.split(/\r?\n/).length;
  return { text: kept, note: `[Truncated: the first ${shown - 1} of ${lines - 1} data rows; the file is ${kb(text.length)}, the cap is ${MAX_FILE_BYTES / 1024} KB.]` };
}

async function readText(file, limit) {
  if (file.size > limit) throw tooBig(file, limit);
  const text = await file.text();
  if (text.includes("\u0000")) throw new Error(`“${file.name}” looks binary; only text can be attached.`);
  return text;
}

function dataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`“${file.name}” could not be read.`));
    reader.readAsDataURL(file);
  });
}

async function extractPDF(file, key) {
  if (file.size > MAX_PDF_BYTES) throw tooBig(file, MAX_PDF_BYTES);
  let resp;
  try {
    resp = await fetch("/api/v1/chat/extract", {
      method: "POST", headers: authHeaders(key, { "Content-Type": "application/pdf" }), body: file,
    });
  } catch (exc) {
    throw new Error(`“${file.name}” was not read: ${exc.message}`);
  }
  if (!resp.ok) throw new Error(`“${file.name}”: ${(await readError(resp)).message}`);
  return resp.json();
}

/** {name, size, kind, text | dataUrl, ...}; throws an Error whose message is shown to the user. */
export async function readAttachment(file, key) {
  const kind = kindOf(file);
  const base = { name: file.name, size: file.size, kind };
  if (kind === "text") {
    const ext = extensionOf(file.name);
    return { ...base, text: await readText(file, MAX_FILE_BYTES), lang: /^[a-z0-9]+$/.test(ext) && ext !== "txt" ? ext : "" };
  }
  if (kind === "csv") {
    const whole = await readText(file, MAX_CSV_BYTES);
    const { text, note } = capCSV(whole);
    return { ...base, text, note, lang: "csv", preview: parseCSV(whole, PREVIEW_ROWS + 1) };
  }
  if (kind === "pdf") {
    const doc = await extractPDF(file, key);
    return { ...base, text: doc.text, lang: "", pages: doc.pages };
  }
  if (kind === "image") {
    if (file.size > MAX_IMAGE_BYTES) throw tooBig(file, MAX_IMAGE_BYTES);
    return { ...base, dataUrl: await dataURL(file) };
  }
  throw new Error(`“${file.name}” is not a supported file: attach text, CSV, PDF or an image (PNG, JPEG, GIF, WebP).`);
}

/** A fence longer than any backtick run inside the text, so the file can't close it early. */
export function fenceFor(text) {
  const longest = Math.max(0, ...(text.match(/`+/g) || []).map((run) => run.length));
  return "`".repeat(Math.max(3, longest + 1));
}

export function attachmentBlock(att) {
  const fence = fenceFor(att.text);
  const title = att.kind === "pdf" ? `File: ${att.name} (PDF, ${att.pages} page${att.pages === 1 ? "" : "s"})` : `File: ${att.name}`;
  const note = att.note ? `\n${att.note}` : "";
  return `${title}\n${fence}${att.lang}\n${att.text.replace(/\n$/, "")}\n${fence}${note}`;
}

export function formatSize(bytes) {
  return bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KB`;
}
