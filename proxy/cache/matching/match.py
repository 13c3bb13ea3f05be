"""The semantic cache's match rule: may this cached question answer that new question?

`MatchRule.decide` is pure and cheap (text parsing is memoised per text). The cache store calls it
on the top-k candidates from the vector index, best similarity first, and serves the first one it
accepts. A false hit (someone else's answer to a different question) is the worst outcome, so
the rule is: similarity above the threshold AND no critical difference between the texts
(numbers, units, names, negation, antonyms, swapped roles), AND ordinary content-word changes
only when the similarity is high enough to vouch for them. See docs/cache-quality.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from proxy.cache.matching import verifier
from proxy.cache.matching.guards import parse

ACCEPT = "accept"
BELOW_THRESHOLD = "below_threshold"
TOO_LONG = "text_too_long"

CRITICAL = (
    verifier.NUMBER,
    verifier.UNIT,
    verifier.ENTITY,
    verifier.NEGATION,
    verifier.ANTONYM,
    verifier.ROLE_SWAP,
    verifier.ORDER_SWAP,
    verifier.LONG_TEXT_CHANGE,
)

#: Every reason `decide` can return (a bounded set, safe as a metric label).
REASONS: tuple[str, ...] = (
    ACCEPT,
    BELOW_THRESHOLD,
    TOO_LONG,
    *CRITICAL,
    verifier.WORD_SWAP,
    verifier.SUBSTITUTION,
    verifier.INSERTION,
)


class MatchSettings(BaseModel):
    """Thresholds of the match rule (cosine similarity of unit-normalised embeddings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(default=0.95, ge=-1.0, le=1.0)
    guards: bool = True
    insertion_threshold: float = Field(default=0.96, ge=-1.0, le=1.01)
    substitution_threshold: float = Field(default=0.97, ge=-1.0, le=1.01)
    word_substitution_threshold: float = Field(default=1.01, ge=-1.0, le=1.01)
    max_chars: int = Field(default=4000, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> MatchSettings:
        for name in (
            "insertion_threshold",
            "substitution_threshold",
            "word_substitution_threshold",
        ):
            if getattr(self, name) < self.threshold:
                raise ValueError(
                    f"Config '{name}' has value {getattr(self, name)}. "
                    f"Must be >= threshold ({self.threshold})."
                )
        return self


@dataclass(frozen=True)
class MatchDecision:
    accept: bool
    reason: str
    similarity: float


class MatchRule:
    """Similarity threshold plus guards; see module docstring."""

    def __init__(self, settings: MatchSettings | None = None) -> None:
        self.settings = settings or MatchSettings()
        self._content_thresholds = {
            verifier.INSERTION: self.settings.insertion_threshold,
            verifier.SUBSTITUTION: self.settings.substitution_threshold,
            verifier.WORD_SWAP: self.settings.word_substitution_threshold,
        }

    @property
    def threshold(self) -> float:
        return self.settings.threshold

    def decide(self, query_text: str, cached_text: str, similarity: float) -> MatchDecision:
        """Accept only if `similarity` clears the threshold and no guard objects."""
        similarity = float(similarity)
        if similarity < self.settings.threshold:
            return MatchDecision(False, BELOW_THRESHOLD, similarity)
        if not self.settings.guards:
            return MatchDecision(True, ACCEPT, similarity)
        return self.judge(self.differences(query_text, cached_text), similarity)

    def differences(self, query_text: str, cached_text: str) -> tuple[str, ...]:
        """What differs between the texts, by kind (independent of similarity and thresholds)."""
        if max(len(query_text), len(cached_text)) > self.settings.max_chars:
            # Beyond the embedder's window the vectors stop seeing the text: exact reuse only.
            return () if query_text.strip() == cached_text.strip() else (TOO_LONG,)
        a, b = parse(query_text), parse(cached_text)
        return () if a.key == b.key else verifier.differences(a, b)

    def judge(self, differences: Sequence[str], similarity: float) -> MatchDecision:
        """Decide from precomputed `differences` (lets evaluation sweep thresholds cheaply)."""
        if similarity < self.settings.threshold:
            return MatchDecision(False, BELOW_THRESHOLD, similarity)
        if self.settings.guards:
            for reason in differences:
                if similarity < self._content_thresholds.get(reason, 2.0):
                    return MatchDecision(False, reason, similarity)
        return MatchDecision(True, ACCEPT, similarity)

    def first_accepted(
        self, query_text: str, candidates: Sequence[tuple[str, float]]
    ) -> tuple[int, MatchDecision] | None:
        """Index and decision of the best acceptable (text, similarity) candidate, or None."""
        order = sorted(range(len(candidates)), key=lambda i: candidates[i][1], reverse=True)
        for i in order:
            decision = self.decide(query_text, *candidates[i])
            if decision.accept:
                return i, decision
        return None
