"""The learned match verifier: a logistic regression over `features.FEATURE_NAMES`.

The weights are a small JSON file next to this module (`pair_classifier.json`), written by
`meterline cache-train` (`train.py`) and read here with numpy only: scikit-learn is needed to
train, never to serve. The file also carries the decision threshold chosen on a validation split
and what the weights were trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from proxy.cache.matching.features import FEATURE_NAMES

DEFAULT_PATH = Path(__file__).with_name("pair_classifier.json")


class ClassifierFileError(ValueError):
    """The weights file does not match the features this code computes."""


@dataclass(frozen=True)
class PairClassifier:
    """Probability that two texts ask the same thing; accept at `threshold`."""

    mean: npt.NDArray[np.float64]
    scale: npt.NDArray[np.float64]
    coef: npt.NDArray[np.float64]
    intercept: float
    threshold: float

    def probability(self, rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        z = ((np.atleast_2d(rows) - self.mean) / self.scale) @ self.coef + self.intercept
        out: npt.NDArray[np.float64] = 1.0 / (1.0 + np.exp(-z))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairClassifier:
        names = tuple(data.get("features", ()))
        if names != FEATURE_NAMES:
            raise ClassifierFileError(f"weights are for features {names}, not {FEATURE_NAMES}")
        return cls(
            mean=np.asarray(data["mean"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64),
            coef=np.asarray(data["coef"], dtype=np.float64),
            intercept=float(data["intercept"]),
            threshold=float(data["threshold"]),
        )


@lru_cache(maxsize=4)
def load(path: Path = DEFAULT_PATH) -> PairClassifier:
    return PairClassifier.from_dict(orjson.loads(path.read_bytes()))
