// Text-like file attachments: read in the browser, size-limited, sent as a fenced block.

export const MAX_FILE_BYTES = 100 * 1024;
const TEXT_TYPES = /^(text\/|application\/(json|xml|x-yaml|yaml|javascript|x-sh|sql|toml|x-python))/;
const TEXT_EXTENSIONS = new Set(("txt md markdown rst csv tsv json jsonl yaml yml toml ini cfg conf env log " +
  "xml html css js mjs ts tsx jsx py rb go rs java kt c h cc cpp hpp cs php sh bash zsh sql r swift " +
  "scala lua pl dockerfile makefile tf proto graphql").split(" "));

function extensionOf(name) {
  const lower = name.toLowerCase();
  const dot = lower.lastIndexOf(".");
  return dot >= 0 ? lower.slice(dot + 1) : lower;
}

export function isTextLike(file) {
  return TEXT_TYPES.test(file.type || "") || TEXT_EXTENSIONS.has(extensionOf(file.name));
}

/** {name, size, lang, text}; throws an Error whose message is shown to the user. */
export async function readAttachment(file) {
  if (!isTextLike(file)) throw new Error(`“${file.name}” is not a text file; only text-like files can be attached.`);
  if (file.size > MAX_FILE_BYTES) {
    throw new Error(`“${file.name}” is ${Math.ceil(file.size / 1024)} KB; the limit is ${MAX_FILE_BYTES / 1024} KB.`);
  }
  const text = await file.text();
  if (text.includes("\u0000")) throw new Error(`“${file.name}” looks binary; only text can be attached.`);
  const ext = extensionOf(file.name);
  return { name: file.name, size: file.size, lang: /^[a-z0-9]+$/.test(ext) && ext !== "txt" ? ext : "", text };
}

/** A fence longer than any backtick run inside the text, so the file can't close it early. */
export function fenceFor(text) {
  const longest = Math.max(0, ...(text.match(/`+/g) || []).map((run) => run.length));
  return "`".repeat(Math.max(3, longest + 1));
}

export function attachmentBlock(att) {
  const fence = fenceFor(att.text);
  return `File: ${att.name}\n${fence}${att.lang}\n${att.text.replace(/\n$/, "")}\n${fence}`;
}

export function formatSize(bytes) {
  return bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KB`;
}
