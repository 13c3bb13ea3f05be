"""Shadow mode's estimate: once the real answer arrives, what a lookup would have served, the
match rule's decision on its best candidate and the LLM judge's verdict are scored against it
(an answer as plausible when its text is identical or its embedding close enough)."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from proxy.cache import stats
from proxy.cache.backend import Entry
from proxy.cache.embedder import EMBED_ERRORS, Embedder
from proxy.cache.lookups import Lookup

log = logging.getLogger("meterline.cache")


class ShadowScore:
    """Scores one lookup's decisions against the real answer `completion`."""

    def __init__(self, embedder: Embedder | None, plausible_similarity: float,
                 completion: dict[str, Any]) -> None:
        self.embedder = embedder
        self.plausible_similarity = plausible_similarity
        self.real = stats.answer_text(completion)
        self._seen: dict[str, bool] = {}  # entry id -> plausible

    async def fields(self, state: Lookup) -> dict[str, float]:
        """The analytics counters to add: would-be hit, the rule's and the judge's verdicts."""
        hit, judged = state.shadow, state.judged
        department, model = state.department, state.key.model
        fields: dict[str, float] = {}
        if hit is not None:
            fields.update(stats.shadow_fields(hit.kind, department, model,
                                              await self.plausible(hit.entry), hit.entry.cost))
        if judged is not None:
            entry, accepted = judged
            fields[stats.verdict_field(accepted, await self.plausible(entry), department,
                                       model)] = 1
        decision = state.judging.decision if state.judging is not None else None
        if decision is not None:
            entry, same = decision
            fields[stats.judge_verdict_field(same, await self.plausible(entry), department,
                                             model)] = 1
        return fields

    async def plausible(self, entry: Entry) -> bool:
        if entry.id not in self._seen:
            served = stats.answer_text(orjson.loads(entry.response))
            similarity = 1.0 if served == self.real else await self._similarity(served)
            self._seen[entry.id] = (similarity is not None
                                    and similarity >= self.plausible_similarity)
        return self._seen[entry.id]

    async def _similarity(self, served: str) -> float | None:
        if self.embedder is None or not served or not self.real:
            return None
        try:
            vectors = await self.embedder.embed([served, self.real])
        except EMBED_ERRORS as exc:
            log.warning("shadow answer comparison failed: %s", exc)
            return None
        return float(vectors[0] @ vectors[1])
