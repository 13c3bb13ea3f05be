"""What the load test sends: prompts resampled with Zipf-like popularity, some as paraphrases.

Pure and network-free (no locust import), so tests/test_loadtest.py can check the sampling.
A catalog item is one "question": the prompts from prompts.jsonl have no paraphrase; the positive
pairs from dev_pairs.jsonl (label 1) give a question `a` and its paraphrase `b`. Popularity ranks
are assigned by a seeded shuffle, so both kinds appear among the popular items.

Hard negatives make a false hit possible, so the run can count them: each negative pair of
dev_pairs.jsonl (label 0: near-duplicate wording, another meaning) and each meaning-changing
perturbation of a prompt (another number, an added negation) becomes a question of its own,
ranked right after the question it resembles, so both are asked about as often. A cached answer
served for a question other than the one that produced it is a false hit.
"""

from __future__ import annotations

import bisect
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROMPTS = REPO_ROOT.parent / "shared" / "data" / "prompts.jsonl"
DEFAULT_PAIRS = REPO_ROOT.parent / "shared" / "data" / "dev_pairs.jsonl"


@dataclass(frozen=True)
class Item:
    """One question of the catalog and the other ways the same question is asked."""

    text: str
    paraphrases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Draw:
    """A sampled prompt: which catalog item it came from and whether it was a paraphrase."""

    rank: int
    text: str
    paraphrased: bool


def truncate(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars]


def read_jsonl(path: Path) -> Iterable[dict[str, object]]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield json.loads(line)


def load_prompts(path: Path, max_chars: int) -> list[Item]:
    return [Item(truncate(str(row["prompt"]), max_chars)) for row in read_jsonl(path)]


def load_paraphrase_items(path: Path, max_chars: int, limit: int) -> list[Item]:
    """Positive pairs (label 1) as items whose paraphrase is the pair's other side."""
    items: list[Item] = []
    for row in read_jsonl(path):
        if len(items) >= limit:
            break
        if row.get("label") == 1 and row["a"] != row["b"]:
            items.append(
                Item(truncate(str(row["a"]), max_chars), (truncate(str(row["b"]), max_chars),))
            )
    return items


def load_negative_pairs(path: Path, max_chars: int, limit: int) -> list[tuple[Item, Item]]:
    """Negative pairs (label 0): two questions worded alike that mean different things."""
    pairs: list[tuple[Item, Item]] = []
    for row in read_jsonl(path):
        if len(pairs) >= limit:
            break
        if row.get("label") == 0 and row["a"] != row["b"]:
            pairs.append((Item(truncate(str(row["a"]), max_chars)),
                          Item(truncate(str(row["b"]), max_chars))))
    return pairs


NUMBER = re.compile(r"\b\d+\b")
NEGATABLE = re.compile(r"\b(is|are|can|should|does|do|will|was)\b", re.IGNORECASE)
NEGATION = {"can": "cannot", "will": "won't"}


def perturb(text: str) -> str | None:
    """A version of `text` that asks something else: its first number changed, or else a
    negation added to its first auxiliary verb; None when neither applies."""
    number = NUMBER.search(text)
    if number is not None:
        value = int(number.group())
        changed = str(value * 10 if value < 10 else value + 7)
        return text[:number.start()] + changed + text[number.end():]
    verb = NEGATABLE.search(text)
    if verb is not None:
        word = verb.group()
        negated = NEGATION.get(word.lower(), f"{word} not")
        return text[:verb.start()] + negated + text[verb.end():]
    return None


def perturbed_pairs(prompts: Sequence[Item], limit: int, seed: int) -> list[tuple[Item, Item]]:
    """Up to `limit` (prompt, meaning-changed prompt) pairs from short prompts."""
    rng = random.Random(seed)
    candidates = [item for item in prompts if len(item.text) <= 300]
    rng.shuffle(candidates)
    pairs: list[tuple[Item, Item]] = []
    for item in candidates:
        if len(pairs) >= limit:
            break
        changed = perturb(item.text)
        if changed is not None and changed != item.text:
            pairs.append((item, Item(changed)))
    return pairs


def build_catalog(
    prompts: Sequence[Item], paraphrase_items: Sequence[Item], seed: int,
    negatives: Sequence[tuple[Item, Item]] = (),
) -> list[Item]:
    """Shuffled questions; each negative pair's second question right after its first. A text
    (question or paraphrase) belongs to one question only: a later item sharing one is left
    out, so an exact repeat is always the same question."""
    paired = {id(first) for first, _ in negatives}
    units: list[tuple[Item, ...]] = [(item,) for item in [*prompts, *paraphrase_items]
                                     if id(item) not in paired]
    units += [(first, second) for first, second in negatives]
    random.Random(seed).shuffle(units)
    catalog: list[Item] = []
    seen: set[str] = set()
    for unit in units:
        for item in unit:
            texts = {item.text, *item.paraphrases}
            if texts.isdisjoint(seen):  # a text asked as two questions would blur the truth
                seen.update(texts)
                catalog.append(item)
    return catalog


def zipf_cumulative(n: int, s: float) -> list[float]:
    """Cumulative weights of ranks 1..n with P(rank k) proportional to 1 / k**s (s=0: uniform)."""
    if n < 1 or s < 0:
        raise ValueError(f"need n >= 1 and s >= 0, got n={n}, s={s}")
    total = 0.0
    cumulative: list[float] = []
    for rank in range(1, n + 1):
        total += rank**-s
        cumulative.append(total)
    return cumulative


@dataclass
class Workload:
    """Samples prompts; remembers what it sent so it can report its repetition rate."""

    catalog: list[Item]
    zipf_s: float
    paraphrase_rate: float
    rng: random.Random
    _cumulative: list[float] = field(init=False, repr=False)
    sent: int = 0
    sent_texts: set[str] = field(default_factory=set, repr=False)
    sent_ranks: set[int] = field(default_factory=set, repr=False)
    repeated_exact: int = 0
    repeated_item: int = 0

    def __post_init__(self) -> None:
        if not self.catalog:
            raise ValueError("empty prompt catalog")
        if not 0.0 <= self.paraphrase_rate <= 1.0:
            raise ValueError(f"paraphrase_rate must be in [0, 1], got {self.paraphrase_rate}")
        self._cumulative = zipf_cumulative(len(self.catalog), self.zipf_s)

    def draw(self) -> Draw:
        point = self.rng.random() * self._cumulative[-1]
        rank = min(bisect.bisect_right(self._cumulative, point), len(self.catalog) - 1)
        item = self.catalog[rank]
        if item.paraphrases and self.rng.random() < self.paraphrase_rate:
            return Draw(rank, self.rng.choice(item.paraphrases), True)
        return Draw(rank, item.text, False)

    def next_prompt(self) -> Draw:
        """Draw and record: counts a repeat of the exact text and a repeat of the same item."""
        drawn = self.draw()
        self.sent += 1
        self.repeated_exact += drawn.text in self.sent_texts
        self.repeated_item += drawn.rank in self.sent_ranks
        self.sent_texts.add(drawn.text)
        self.sent_ranks.add(drawn.rank)
        return drawn

    def repetition(self) -> tuple[float, float]:
        """(exact-text repeat rate, same-item repeat rate) over what was sent so far."""
        if self.sent == 0:
            return 0.0, 0.0
        return self.repeated_exact / self.sent, self.repeated_item / self.sent


def expected_repetition(workload: Workload, requests: int, seed: int) -> tuple[float, float]:
    """Repetition rates a fresh copy of `workload` would show after `requests` requests."""
    probe = Workload(
        workload.catalog, workload.zipf_s, workload.paraphrase_rate, random.Random(seed)
    )
    for _ in range(requests):
        probe.next_prompt()
    return probe.repetition()


def describe(workload: Workload, requests: int = 1000) -> str:
    exact, same_item = expected_repetition(workload, requests, seed=0)
    with_paraphrase = sum(1 for item in workload.catalog if item.paraphrases)
    return (
        f"catalog {len(workload.catalog)} items ({with_paraphrase} with a paraphrase), "
        f"zipf s={workload.zipf_s}, paraphrase rate {workload.paraphrase_rate}; "
        f"expected over {requests} requests: exact repeats {exact:.1%}, "
        f"same question {same_item:.1%}"
    )
