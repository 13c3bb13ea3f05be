// Suggested follow-ups, built in the browser from the answer itself: no extra (paid) model call.

import { parseBlocks } from "./markdown.js";

const STOPWORDS = new Set((
  "about above after again against almost along already also although always among another any anything " +
  "around because been before being below between both cannot could does doing down during each either " +
  "else enough even every example first from further have having here however into itself just least less " +
  "like likely made make many might more most much must need never often once only other otherwise over " +
  "rather really same should since some something such than that their them then there these they thing " +
  "things this those though through under until upon used using very want well were what when where " +
  "whether which while will with within without would your yours answer question sure mock"
).split(" "));
const MAX_SUGGESTIONS = 3;

function clip(text, max = 60) {
  const clean = text.replace(/`|\*\*/g, "").replace(/\s+/g, " ").trim();
  return clean.length > max ? `${clean.slice(0, max - 1)}…` : clean;
}

/** Frequent content words of the answer that the question didn't already use, most frequent first. */
export function keywords(answer, question = "") {
  const asked = new Set((question.toLowerCase().match(/[a-z][a-z0-9-]+/g) || []));
  const counts = new Map();
  for (const word of answer.toLowerCase().match(/[a-z][a-z0-9-]{4,}/g) || []) {
    if (STOPWORDS.has(word) || asked.has(word)) continue;
    counts.set(word, (counts.get(word) || 0) + 1);
  }
  // Map keeps first-seen order, and sort is stable: ties go to the word that came first.
  return [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([word]) => word);
}

export function suggestFollowUps(answer, question = "") {
  const out = [];
  const add = (text) => { if (text && !out.includes(text)) out.push(text); };
  const blocks = parseBlocks(answer);
  for (const b of blocks) if (b.type === "heading") add(`Tell me more about “${clip(b.text)}”`);
  for (const b of blocks) if (b.type === "code") add(`Explain the ${b.lang || "code"} example step by step`);
  for (const m of answer.matchAll(/\*\*([^*\n]{3,40})\*\*/g)) add(`What does “${clip(m[1])}” mean here?`);
  const [first, second] = keywords(answer, question);
  if (first) add(`Give a concrete example of “${first}”`);
  if (second) add(`What are the trade-offs around “${second}”?`);
  add("Summarise that in three bullet points");
  return out.slice(0, MAX_SUGGESTIONS);
}
