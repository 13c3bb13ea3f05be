"""The match rule's settings, apart from the rule: cache.yaml is loaded (check-config, every
reload) without importing numpy or the embedder the rule itself needs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class MatchSettings(BaseModel):
    """Thresholds of the match rule (cosine similarity of unit-normalised embeddings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threshold: float = Field(default=0.95, ge=-1.0, le=1.0)
    guards: bool = True
    # The learned verifier decides on candidates from threshold - candidate_margin; raising the
    # threshold (or a tightening after a wrong-answer report) raises that floor with it. 0 by
    # default: below 0.95 the verifier (trained on generated edits) ranks real rephrasings
    # worse than cosine does on QQP, see docs/cache-quality.md.
    verifier: bool = True
    candidate_margin: float = Field(default=0.0, ge=0.0, le=1.0)
    verifier_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
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
