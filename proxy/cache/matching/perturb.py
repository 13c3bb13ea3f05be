"""Labelled pairs made from licence-clean prompts and our own templates (training data).

Every pair is (original, edited). Meaning-changing edits are negatives (label 0): swap two words
or the two sides of a relation, change a number, unit, name, language or negation, replace a
word by a sibling term or by its antonym. Meaning-keeping edits are positives (label 1): casing,
punctuation, typos, filler, symmetric reorders ("A and B"), a moved clause, and template
rephrasings ("How do I X?" -> "What is the way to X?"). All choices come from one seeded
`random.Random`, so the same prompts and seed give the same pairs.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from proxy.cache.matching import lexicon as lx

_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*|\d+(?:\.\d+)?")

SIBLINGS: tuple[tuple[str, ...], ...] = (
    ("cat", "dog", "horse", "rabbit", "parrot", "hamster", "goldfish"),
    ("python", "java", "javascript", "rust", "go", "ruby", "c++", "kotlin"),
    ("french", "german", "spanish", "italian", "japanese", "portuguese", "russian"),
    ("france", "germany", "spain", "italy", "japan", "brazil", "canada", "india"),
    ("paris", "berlin", "madrid", "rome", "tokyo", "london", "toronto"),
    ("windows", "linux", "macos", "android", "ios"),
    ("apple", "banana", "orange", "mango", "strawberry", "grape"),
    ("chicken", "beef", "pork", "salmon", "tofu", "lamb"),
    ("piano", "guitar", "violin", "drums", "flute", "cello"),
    ("football", "tennis", "basketball", "baseball", "golf", "cricket"),
    ("poem", "essay", "story", "song", "email", "letter", "haiku", "limerick"),
    ("red", "blue", "green", "yellow", "purple", "black"),
    ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    ("january", "march", "april", "june", "july", "october", "december"),
    ("summer", "winter", "spring", "autumn"),
    ("morning", "evening", "night", "afternoon"),
    ("husband", "wife", "son", "daughter", "mother", "father", "brother", "sister"),
    ("car", "bike", "bus", "train", "plane", "boat"),
    ("coffee", "tea", "beer", "wine", "milk", "juice"),
    ("doctor", "lawyer", "teacher", "nurse", "engineer", "chef"),
    ("heart", "liver", "kidney", "lung", "brain", "stomach", "skin"),
    ("diabetes", "asthma", "cancer", "arthritis", "migraine", "flu", "anemia"),
    ("ibuprofen", "paracetamol", "aspirin", "amoxicillin", "insulin", "metformin"),
    ("mysql", "postgresql", "mongodb", "redis", "sqlite"),
)
UNIT_SIBLINGS: tuple[tuple[str, ...], ...] = (
    ("seconds", "minutes", "hours", "days", "weeks", "months", "years"),
    ("grams", "kilograms", "pounds", "ounces"),
    ("meters", "kilometers", "miles", "feet", "inches", "centimeters"),
    ("dollars", "euros", "pounds", "yen"),
    ("MB", "GB", "TB", "KB"),
    ("celsius", "fahrenheit"),
    ("liters", "gallons", "milliliters", "cups"),
)
ANTONYM_OF: dict[str, str] = {}
for _pair in sorted(lx.ANTONYMS, key=sorted):  # a fixed order: words with two antonyms
    _x, _y = sorted(_pair)
    ANTONYM_OF.setdefault(_x, _y)
    ANTONYM_OF.setdefault(_y, _x)
_AUXILIARIES = ("is", "are", "was", "were", "can", "should", "does", "do", "will", "could")
_PREFIXES = ("Please ", "Hey, ", "Quick question: ", "Can you tell me: ", "I was wondering, ",
             "Hi! ", "Help me out: ")
_SUFFIXES = (" Thanks!", " Thank you.", " Please.", " Thanks in advance.", " :)")
_LANGUAGES = ("French", "German", "Spanish", "Italian", "Japanese", "Portuguese", "Chinese")

Edit = Callable[[str, random.Random], str | None]


@dataclass(frozen=True)
class Example:
    a: str
    b: str
    label: int
    source: str


def _words(text: str) -> list[re.Match[str]]:
    return list(_WORD.finditer(text))


def _replace(text: str, match: re.Match[str], new: str) -> str:
    return text[: match.start()] + _same_case(match.group(0), new) + text[match.end() :]


def _same_case(old: str, new: str) -> str:
    if old.isupper() and len(old) > 1 and not new.isupper():
        return new.upper()
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def _content(match: re.Match[str]) -> bool:
    word = match.group(0).lower()
    return word.isalpha() and len(word) >= 3 and word not in lx.STOPWORDS


# -- meaning-changing edits (negatives) -----------------------------------------------------


def swap_words(text: str, rng: random.Random) -> str | None:
    """Trade two content words ("who did what to whom", "born in A and raised in B"), except
    two words joined only by a symmetric connector ("cats and dogs", which keeps the meaning)."""
    words = [m for m in _words(text) if _content(m)]
    options = []
    for x in range(len(words)):
        for y in range(x + 1, min(x + 6, len(words))):
            between = text[words[x].end() : words[y].start()].strip(" ,").lower()
            if words[x].group(0).lower() == words[y].group(0).lower():
                continue
            if between in lx.SYMMETRIC_CONNECTORS or not between:
                continue
            options.append((words[x], words[y]))
    if not options:
        return None
    first, second = rng.choice(options)
    one, two = first.group(0), second.group(0)
    if first.start() == 0:  # the word that moves to the front is capitalised, the other not
        one, two = _lower(one), _capital(two)
    return (text[: first.start()] + two + text[first.end() : second.start()] + one
            + text[second.end() :])


def change_number(text: str, rng: random.Random) -> str | None:
    numbers = [m for m in _words(text) if m.group(0)[0].isdigit()]
    if not numbers:
        return None
    match = rng.choice(numbers)
    value = float(match.group(0))
    new = rng.choice([value + rng.randint(1, 9), value * 10, max(value - 1, 0) + 2, value * 2])
    out = f"{new:g}" if new != value else f"{value + 1:g}"
    return _replace(text, match, out)


def _sibling_swap(groups: Sequence[tuple[str, ...]]) -> Edit:
    def edit(text: str, rng: random.Random) -> str | None:
        hits = []
        for m in _words(text):
            for group in groups:
                if m.group(0).lower() in (g.lower() for g in group):
                    hits.append((m, group))
        if not hits:
            return None
        match, group = rng.choice(hits)
        others = [g for g in group if g.lower() != match.group(0).lower()]
        return _replace(text, match, rng.choice(others))

    return edit


change_sibling = _sibling_swap(SIBLINGS)
change_unit = _sibling_swap(UNIT_SIBLINGS)


def change_antonym(text: str, rng: random.Random) -> str | None:
    hits = [m for m in _words(text) if m.group(0).lower() in ANTONYM_OF and _content(m)]
    if not hits:
        return None
    match = rng.choice(hits)
    return _replace(text, match, ANTONYM_OF[match.group(0).lower()])


def change_negation(text: str, rng: random.Random) -> str | None:
    """Add "not" after an auxiliary, or take an existing "not"/"n't" away."""
    negated = re.search(r"\b(\w+)n['’]t\b|\bnot\b ?", text, re.IGNORECASE)
    if negated is not None:
        if negated.group(1):
            stem = negated.group(1)
            positive = {"ca": "can", "wo": "will", "sha": "shall"}.get(stem.lower(), stem)
            return text[: negated.start()] + _same_case(stem, positive) + text[negated.end() :]
        return text[: negated.start()] + text[negated.end() :]
    hits = [m for m in _words(text) if m.group(0).lower() in _AUXILIARIES]
    if not hits:
        return None
    match = rng.choice(hits)
    return text[: match.end()] + " not" + text[match.end() :]


def change_language(text: str, rng: random.Random) -> str | None:
    for m in _words(text):
        if m.group(0) in _LANGUAGES:
            return _replace(text, m, rng.choice([x for x in _LANGUAGES if x != m.group(0)]))
    first, second = rng.sample(_LANGUAGES, 2)
    return None if rng.random() < 0.5 else f"{text} Answer in {first}." + f"\x00{second}"


def replace_word(vocabulary: Sequence[str]) -> Edit:
    """Replace one content word by an unrelated one (a different question about other things)."""

    def edit(text: str, rng: random.Random) -> str | None:
        words = [m for m in _words(text) if _content(m)]
        if not words:
            return None
        match = rng.choice(words)
        new = rng.choice(vocabulary)
        return None if new == match.group(0).lower() else _replace(text, match, new)

    return edit


# -- meaning-keeping edits (positives) ------------------------------------------------------


def change_case(text: str, rng: random.Random) -> str | None:
    choice = rng.randrange(3)
    out = text.lower() if choice == 0 else text.upper() if choice == 1 else text.capitalize()
    return out if out != text else None


def change_punctuation(text: str, rng: random.Random) -> str | None:
    stripped = text.rstrip("?.! ")
    out = rng.choice([stripped, stripped + "?", stripped + "??", text.replace(",", ""),
                      stripped + "."])
    return out if out != text else None


def add_typos(text: str, rng: random.Random) -> str | None:
    words = [m for m in _words(text) if len(m.group(0)) >= 5 and m.group(0).isalpha()]
    if not words:
        return None
    for match in sorted(rng.sample(words, min(len(words), rng.randint(1, 2))),
                        key=lambda m: -m.start()):
        w = match.group(0)
        i = rng.randrange(1, len(w) - 2)
        kind = rng.randrange(3)
        typo = (w[:i] + w[i + 1] + w[i] + w[i + 2 :] if kind == 0 else w[:i] + w[i + 1 :]
                if kind == 1 else w[:i] + w[i] + w[i:])
        text = text[: match.start()] + typo + text[match.end() :]
    return text


def add_filler(text: str, rng: random.Random) -> str | None:
    body = text[:1].lower() + text[1:] if rng.random() < 0.5 else text
    if rng.random() < 0.6:
        return rng.choice(_PREFIXES) + body
    return text + rng.choice(_SUFFIXES)


def symmetric_reorder(text: str, rng: random.Random) -> str | None:
    """"A and B" -> "B and A" for single words around and/or."""
    hits = list(re.finditer(r"(?:^|\b(?:the|a|an|between|of|about|for|with)\s|[,:(]\s?)"
                            r"([A-Za-z]{3,}) (and|or) ([A-Za-z]{3,})(?=[\s]*(?:[.,?!:;)]|$))",
                            text, re.IGNORECASE))
    hits = [h for h in hits if h.group(1).lower() not in lx.STOPWORDS
            and h.group(3).lower() not in lx.STOPWORDS]
    if not hits:
        return None
    h = rng.choice(hits)
    return text[: h.start(1)] + f"{h.group(3)} {h.group(2)} {h.group(1)}" + text[h.end() :]


def move_clause(text: str, rng: random.Random) -> str | None:
    """Move a trailing "in/on/at/for/during ..." phrase or a leading clause to the other end."""
    body = text.rstrip("?.! ")
    end = text[len(body) :]
    if re.search(r"[.?!]\s", body):
        return None  # one sentence only: across sentences the phrase would change its anchor
    lead = re.match(r"^((?:In|On|At|For|During|After|Before|When|If) [^,]{3,40}), (.+)$", body)
    if lead:
        return _capital(lead.group(2)) + " " + _lower(lead.group(1)) + end
    tail = re.match(r"^(.{10,}?) ((?:in|on|at|during|for) [^,]{3,30})$", body)
    if tail and rng.random() < 0.8:
        return _capital(tail.group(2)) + ", " + _lower(tail.group(1)) + end
    return None


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


REPHRASINGS: tuple[tuple[str, str], ...] = (
    (r"^How do I (.+?)\?$", "What is the way to {0}?"),
    (r"^How do I (.+?)\?$", "How can I {0}?"),
    (r"^How can I (.+?)\?$", "What should I do to {0}?"),
    (r"^How to (.+?)\??$", "How do you {0}?"),
    (r"^What is (.+?)\?$", "Can you explain what {0} is?"),
    (r"^What are (.+?)\?$", "Could you tell me what {0} are?"),
    (r"^Explain (.+?)\.?$", "Can you explain {0}?"),
    (r"^Write (.+?)\.?$", "Please write {0}."),
    (r"^Give me (.+?)\.?$", "I'd like {0}."),
    (r"^Why (.+?)\?$", "For what reason {0}?"),
    (r"^Can you (.+?)\?$", "Could you {0}?"),
    (r"^Is it (.+?)\?$", "Would it be {0}?"),
)


def rephrase(text: str, rng: random.Random) -> str | None:
    found = [(re.match(p, text.strip()), r) for p, r in REPHRASINGS]
    options = [(m, r) for m, r in found if m is not None]
    if not options:
        return None
    match, template = rng.choice(options)
    return template.format(*match.groups())


NEGATIVE_EDITS: dict[str, Edit] = {
    "swap": swap_words,
    "number": change_number,
    "unit": change_unit,
    "sibling": change_sibling,
    "antonym": change_antonym,
    "negation": change_negation,
    "language": change_language,
}
POSITIVE_EDITS: dict[str, Edit] = {
    "case": change_case,
    "punctuation": change_punctuation,
    "typo": add_typos,
    "filler": add_filler,
    "symmetric": symmetric_reorder,
    "clause": move_clause,
    "rephrase": rephrase,
}


def _apply(edit: Edit, text: str, rng: random.Random) -> tuple[str, str] | None:
    out = edit(text, rng)
    if out is None:
        return None
    if "\x00" in out:  # the language edit adds an instruction to both sides, differently
        head, second = out.split("\x00")
        return head, head.rsplit(" Answer in ", 1)[0] + f" Answer in {second}."
    return (text, out) if out.strip() != text.strip() else None


def perturbations(
    prompts: Sequence[str], seed: int, per_prompt: int = 3, family: str = "gen"
) -> Iterator[Example]:
    """Pairs from `prompts`: each prompt gets up to `per_prompt` edits of each label."""
    rng = random.Random(seed)  # nosec B311 # training data generation, not a secret
    vocabulary = sorted({m.group(0).lower() for p in prompts for m in _words(p) if _content(m)})
    negatives = {**NEGATIVE_EDITS, "word": replace_word(vocabulary)}
    for text in prompts:
        for edits, label in ((negatives, 0), (POSITIVE_EDITS, 1)):
            names = sorted(edits)
            rng.shuffle(names)
            made = 0
            for name in names:
                pair = _apply(edits[name], text, rng)
                if pair is not None:
                    yield Example(pair[0], pair[1], label, f"{family}-{name}")
                    made += 1
                    if made >= per_prompt:
                        break


# -- our own templates: relations between two names --------------------------------------------

_NAMES = ("Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Maria", "Omar",
          "Priya", "Tom", "Yuki", "Lena", "Ivan", "Sara")
_TEAMS = ("Brazil", "Germany", "France", "Spain", "Italy", "Japan", "Mexico", "Canada",
          "Argentina", "England", "Chile", "Peru")
_THINGS = ("Python", "Java", "Rust", "Go", "MySQL", "PostgreSQL", "Excel", "Word", "CSV", "JSON",
           "Celsius", "Fahrenheit", "dollars", "euros", "miles", "kilometers", "English",
           "French", "German", "Spanish")
_ANIMALS = ("cat", "dog", "lion", "zebra", "fox", "rabbit", "hawk", "mouse", "shark", "seal")

# (family, template A, meaning-changing variant, meaning-keeping variant); {x} and {y} are
# filled from one pool. The variant with {x} and {y} exchanged is the negative.
TEMPLATES: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("relation", "Did {x} beat {y} in the final?", "Did {y} beat {x} in the final?",
     "Did {y} lose to {x} in the final?"),
    ("relation", "Why did {x} sue {y}?", "Why did {y} sue {x}?", "Why was {y} sued by {x}?"),
    ("relation", "How much does {x} owe {y}?", "How much does {y} owe {x}?",
     "How much money does {x} owe to {y}?"),
    ("relation", "When did {x} first meet {y}?", "When did {y} first meet {x}?",
     "When did {x} and {y} first meet?"),
    ("relation", "Can a {x} outrun a {y}?", "Can a {y} outrun a {x}?",
     "Is a {x} able to outrun a {y}?"),
    ("relation", "Does the {x} hunt the {y}?", "Does the {y} hunt the {x}?",
     "Is the {y} hunted by the {x}?"),
    ("convert", "How do I convert {x} to {y}?", "How do I convert {y} to {x}?",
     "How do I convert from {x} to {y}?"),
    ("convert", "Translate this from {x} into {y}: good morning",
     "Translate this from {y} into {x}: good morning",
     "Translate from {x} into {y}: good morning"),
    ("convert", "Migrate my project from {x} to {y}", "Migrate my project from {y} to {x}",
     "Help me migrate my project from {x} to {y}"),
    ("compare", "Is {x} faster than {y}?", "Is {y} faster than {x}?", "Is {y} slower than {x}?"),
    ("compare", "Why is {x} more popular than {y}?", "Why is {y} more popular than {x}?",
     "What makes {x} more popular than {y}?"),
    ("compare", "What is the difference between {x} and {y}?",
     "What is the difference between {x} and {x}?", "What is the difference between {y} and {x}?"),
    ("compare", "{x} vs {y}: which is better for beginners?",
     "Which is better for experts, {x} or {y}?", "{y} vs {x}: which is better for beginners?"),
    ("relation", "Who taught {x} to paint, {y}?", "Who taught {y} to paint, {x}?", None),
    ("relation", "Is {x} the manager of {y}?", "Is {y} the manager of {x}?",
     "Does {y} report to {x} as their manager?"),
)
_POOLS = {"relation": _NAMES + _TEAMS, "convert": _THINGS, "compare": _THINGS}
_ANIMAL_TEMPLATES = {"Can a {x} outrun a {y}?", "Does the {x} hunt the {y}?"}


def template_pairs(seed: int, per_template: int, templates: Sequence[int]) -> Iterator[Example]:
    """Pairs from the templates numbered `templates` (lets training and evaluation use
    disjoint templates)."""
    rng = random.Random(seed)  # nosec B311 # training data generation, not a secret
    for number in templates:
        family, base, negative, positive = TEMPLATES[number]
        pool = _ANIMALS if base in _ANIMAL_TEMPLATES else _POOLS[family]
        for _ in range(per_template):
            x, y = rng.sample(pool, 2)
            a = base.format(x=x, y=y)
            if negative is not None:
                yield Example(a, negative.format(x=x, y=y), 0, f"tmpl-{family}-swap")
            if positive is not None:
                yield Example(a, positive.format(x=x, y=y), 1, f"tmpl-{family}-keep")
            z = rng.choice([p for p in pool if p not in (x, y)])
            yield Example(a, base.format(x=x, y=z), 0, f"tmpl-{family}-other")
