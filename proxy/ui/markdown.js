// Markdown-ish rendering built from DOM nodes: model text only ever lands in text nodes.

const FENCE = /^\s*(`{3,}|~{3,})\s*([\w+#.-]*)\s*$/;
const HEADING = /^(#{1,6})\s+(.*)$/;
const BULLET = /^\s*[-*+]\s+(.*)$/;
const NUMBERED = /^\s*\d+[.)]\s+(.*)$/;
const QUOTE = /^>\s?(.*)$/;
const INLINE = /(`+)([^`]+?)\1(?!`)|\*\*([^*\n]+)\*\*|\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g;

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || BULLET.test(line) || NUMBERED.test(line) || QUOTE.test(line);
}

function readFence(lines, i, match) {
  const marker = match[1];
  const body = [];
  let j = i + 1;
  while (j < lines.length && !lines[j].trim().startsWith(marker)) body.push(lines[j++]);
  return [{ type: "code", lang: match[2] || "", text: body.join("\n"), closed: j < lines.length }, j + 1];
}

function readRun(lines, i, pattern) {
  const items = [];
  let j = i;
  for (let m; j < lines.length && (m = pattern.exec(lines[j])); j++) items.push(m[1]);
  return [items, j];
}

/** Text -> blocks: code, heading, list, quote, paragraph. Unclosed fences (mid-stream) run to the end. */
export function parseBlocks(text) {
  const lines = text.replace(/\r\n?/g, "\n").split("\n");
  const blocks = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if ((m = FENCE.exec(line))) {
      const [block, next] = readFence(lines, i, m);
      blocks.push(block);
      i = next;
    } else if ((m = HEADING.exec(line))) {
      blocks.push({ type: "heading", level: m[1].length, text: m[2].trim() });
      i += 1;
    } else if (BULLET.test(line) || NUMBERED.test(line)) {
      const ordered = !BULLET.test(line);
      const [items, next] = readRun(lines, i, ordered ? NUMBERED : BULLET);
      blocks.push({ type: "list", ordered, items });
      i = next;
    } else if (QUOTE.test(line)) {
      const [items, next] = readRun(lines, i, QUOTE);
      blocks.push({ type: "quote", text: items.join("\n") });
      i = next;
    } else if (!line.trim()) {
      i += 1;
    } else {
      const para = [line];
      for (i += 1; i < lines.length && lines[i].trim() && !startsBlock(lines[i]); i++) para.push(lines[i]);
      blocks.push({ type: "paragraph", text: para.join("\n") });
    }
  }
  return blocks;
}

/** Inline code, **bold** and http(s) links; everything else stays plain text. */
export function renderInline(text, doc = document) {
  const frag = doc.createDocumentFragment();
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) frag.append(doc.createTextNode(text.slice(last, m.index)));
    if (m[1]) {
      const code = doc.createElement("code");
      code.textContent = m[2];
      frag.append(code);
    } else if (m[3]) {
      const strong = doc.createElement("strong");
      strong.textContent = m[3];
      frag.append(strong);
    } else {
      const a = doc.createElement("a");
      a.href = m[5];
      a.textContent = m[4];
      a.rel = "noopener noreferrer";
      a.target = "_blank";
      frag.append(a);
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) frag.append(doc.createTextNode(text.slice(last)));
  return frag;
}

function codeBlock(block, doc) {
  const wrap = doc.createElement("div");
  wrap.className = "code-block";
  const bar = doc.createElement("div");
  bar.className = "code-bar";
  bar.textContent = block.lang || "text";
  const copy = doc.createElement("button");
  copy.type = "button";
  copy.className = "copy";
  copy.textContent = "Copy";
  copy.setAttribute("aria-label", `Copy ${block.lang || "code"} block`);
  copy.addEventListener("click", () => {
    navigator.clipboard?.writeText(block.text).then(() => { copy.textContent = "Copied"; }, () => { copy.textContent = "Copy failed"; });
  });
  bar.append(copy);
  const pre = doc.createElement("pre");
  const code = doc.createElement("code");
  if (block.lang) code.className = `language-${block.lang}`;
  code.textContent = block.text;
  pre.append(code);
  wrap.append(bar, pre);
  return wrap;
}

function blockNode(block, doc) {
  if (block.type === "code") return codeBlock(block, doc);
  if (block.type === "heading") {
    const el = doc.createElement(`h${Math.min(6, block.level + 2)}`);
    el.append(renderInline(block.text, doc));
    return el;
  }
  if (block.type === "list") {
    const el = doc.createElement(block.ordered ? "ol" : "ul");
    for (const item of block.items) {
      const li = doc.createElement("li");
      li.append(renderInline(item, doc));
      el.append(li);
    }
    return el;
  }
  const el = doc.createElement(block.type === "quote" ? "blockquote" : "p");
  el.append(renderInline(block.text, doc));
  return el;
}

export function renderMarkdown(text, doc = document) {
  const frag = doc.createDocumentFragment();
  for (const block of parseBlocks(text)) frag.append(blockNode(block, doc));
  return frag;
}
