"""Guards that veto a semantic-cache hit when two similar texts differ in a way that matters.

Each text is parsed once into `Parsed` (tokens with their kind). The verifier then aligns the two
token sequences and judges the *differing* words by kind: numbers and units, named entities,
negation, antonyms/direction words, the role of shared arguments (from/to/than, word-order
swaps), and ordinary content words. Guards return a reason string (a bounded set, usable as a
metric label) or None.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from proxy.cache.matching import lexicon as lx

_TOKEN = re.compile(
    r"c\+\+|c#|f#|\.net|\d+(?:st|nd|rd|th)\b|\d+(?:[.,]\d+)*"
    r"|[^\W\d_]+(?:['’][^\W\d_]+)?|[$€£%&/,]"
    r"|[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]",
    re.IGNORECASE,
)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")
_ORDINAL = re.compile(r"(\d+)(?:st|nd|rd|th)")
_PHRASES = (
    (re.compile(r"\bunited states(?: of america)?\b|\bu\.s\.(?:a\.)?", re.I), "usa"),
    (re.compile(r"\bUS\b|\bUSA\b"), "usa"),
    (re.compile(r"\bunited kingdom\b|\bu\.k\.", re.I), "britain"),
    (re.compile(r"\bUK\b"), "britain"),
    (re.compile(r"\bvisual studio code\b|\bvs code\b", re.I), "vscode"),
)
_CONTRACTIONS = {"can't": "can not", "won't": "will not", "shan't": "shall not", "ain't": "is not"}


@dataclass(frozen=True)
class Token:
    """One normalised word: `norm` is canonical (synonyms, units, numbers), `stem` for matching."""

    norm: str
    stem: str
    kind: str  # num | unit | entity | neg | role | stop | content | punct


@dataclass(frozen=True)
class Parsed:
    tokens: tuple[Token, ...]
    key: str  # normalised text, for exact comparison

    @property
    def stems(self) -> tuple[str, ...]:
        return tuple(t.stem for t in self.tokens if t.kind != "punct")


def stem(word: str) -> str:
    """Crude suffix stripper: only needs to map both texts' variants to the same string."""
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, repl in (
        ("ies", "y"),
        ("sses", "ss"),
        ("ing", ""),
        ("ed", ""),
        ("es", ""),
        ("ers", ""),
        ("er", ""),
        ("ly", ""),
        ("s", ""),
    ):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                continue
            word = word[: len(word) - len(suffix)] + repl
            break
    return word.rstrip("e") if len(word) > 3 else word


def _split_words(text: str) -> list[tuple[str, bool]]:
    """Lower-cased words with a flag: written capitalised, not at the start of a sentence."""
    text = unicodedata.normalize("NFKC", text).replace("’", "'")
    for pattern, replacement in _PHRASES:
        text = pattern.sub(replacement, text)
    out: list[tuple[str, bool]] = []
    sentence_start = True
    for match in _TOKEN.finditer(text):
        raw = match.group(0)
        capital = raw[:1].isupper() and not sentence_start
        sentence_start = text[match.end() : match.end() + 2].strip()[:1] in {".", "?", "!", ":"}
        low = raw.lower()
        for piece in _expand(low):
            out.append((piece, capital))
    return out


def _expand(word: str) -> list[str]:
    if word in _CONTRACTIONS:
        return _CONTRACTIONS[word].split()
    if word.endswith("n't"):
        return [word[:-3], "not"]
    if "'" in word:
        head, _, tail = word.partition("'")
        return [head] + (
            ["is"]
            if tail == "s"
            and head in {"what", "it", "that", "who", "how", "where", "there", "here"}
            else []
        )
    if _ORDINAL.fullmatch(word):
        return [word]
    if word[:1].isdigit() and not word.replace(",", "").replace(".", "").isdigit():
        return re.findall(r"\d+(?:[.,]\d+)*|[a-z]+", word)
    return [word]


def _number_value(word: str) -> str | None:
    ordinal = _ORDINAL.fullmatch(word)
    if ordinal:
        return f"#ord{int(ordinal.group(1))}"
    if word[:1].isdigit():
        cleaned = word.replace(",", "")
        try:
            value = float(cleaned)
        except ValueError:
            return None
        return f"#{value:g}"
    if word in lx.NUMBER_WORDS:
        return f"#{lx.NUMBER_WORDS[word]}"
    if word in lx.FRACTION_WORDS:
        return f"#{lx.FRACTION_WORDS[word]}"
    if word in lx.ORDINAL_WORDS:
        return f"#ord{lx.ORDINAL_WORDS[word]}"
    return None


def _classify(word: str, capital: bool, title_case_text: bool, prev: str | None) -> Token:
    if not any(ch.isalnum() for ch in word) and word not in {"%", "$", "€", "£", "&"}:
        return Token(word, word, "punct")
    if word == "second" and prev is not None and prev.startswith("#"):
        word = "sec"
    if word in lx.ENTITY_ALIASES:
        name = lx.ENTITY_ALIASES[word]
        return Token(name, name, "entity")
    norm = lx.SYNONYMS.get(word, word)
    number = _number_value(norm)
    if number is not None:
        return Token(number, number, "num")
    if norm in lx.UNITS:
        return Token(norm, norm, "unit")
    if norm in lx.NEGATORS:
        return Token("not", "not", "neg")
    if norm in lx.ROLE_MARKERS:
        return Token(norm, norm, "role")
    if norm in lx.STOPWORDS:
        return Token(norm, norm, "stop")
    entity = norm in lx.KNOWN_ENTITIES or (capital and not title_case_text) or _is_code(norm)
    root = stem(norm)
    if _CJK.match(norm):
        entity = False
    return Token(norm, lx.SYNONYMS.get(root, root), "entity" if entity else "content")


def _is_code(word: str) -> bool:
    """Model numbers and identifiers such as gpt4, ps5, i7, x86."""
    return any(c.isdigit() for c in word) and any(c.isalpha() for c in word)


@lru_cache(maxsize=8192)
def parse(text: str) -> Parsed:
    """Normalise and classify the words of one text (cached: cached questions recur)."""
    words = _split_words(text)
    # Title Case Questions capitalise ordinary words; then capitals say nothing about names.
    title_case = sum(cap for word, cap in words if word in lx.STOPWORDS) >= 2
    tokens: list[Token] = []
    for word, capital in _merge_number_words(words):
        prev = tokens[-1].norm if tokens else None
        tokens.append(_classify(word, capital, title_case, prev))
    key = " ".join(t.stem for t in tokens if t.kind != "punct")
    return Parsed(tuple(tokens), key)


def _merge_number_words(words: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """'twenty five' -> '25', 'one hundred' -> '100' so spelled and digit numbers compare equal."""
    out: list[tuple[str, bool]] = []
    run: list[int] = []
    for word, capital in words + [("", False)]:
        if word in lx.NUMBER_WORDS and word not in {"half", "dozen"}:
            run.append(lx.NUMBER_WORDS[word])
            continue
        if run:
            out.append((str(_combine(run)), False))
            run = []
        if word:
            out.append((word, capital))
    return out


def _combine(parts: list[int]) -> int:
    total, current = 0, 0
    for value in parts:
        if value >= 1000:
            total += max(current, 1) * value
            current = 0
        elif value == 100:
            current = max(current, 1) * 100
        else:
            current += value
    return total + current
