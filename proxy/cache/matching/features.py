"""Features of a (query, cached) text pair for the learned match verifier.

Three groups, all cheap once both texts are embedded:

* sentence similarity (cosine of the pooled MiniLM vectors, and how close it is to 1);
* token alignment from the same MiniLM's per-word-piece outputs: how much of each side finds a
  close partner on the other side (mean, weakest word), whether mutually aligned pieces keep
  their order and their neighbours (a swap of who-did-what-to-whom breaks them, a moved clause
  keeps most of them), and how much context the moved pieces kept (their outputs change with
  their role);
* the hand-written guards (`verifier.differences`) as 0/1 features rather than vetoes, and
  lengths.
"""

from __future__ import annotations

import pickle  # nosec B403 # only for the operator's own embedding-cache file, below
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from proxy.cache.embedder import OnnxEncoder, ProgressFn
from proxy.cache.matching import verifier
from proxy.cache.matching.guards import parse

Vectors = npt.NDArray[np.float32]

# the order is the trained weights' order: the critical guards first, then the soft ones
GUARD_REASONS: tuple[str, ...] = (
    *verifier.CRITICAL, verifier.WORD_SWAP, verifier.SUBSTITUTION, verifier.INSERTION)

FEATURE_NAMES: tuple[str, ...] = (
    "cosine",
    "cosine_gap_log",
    "align_mean",
    "align_min",
    "align_low_fraction",
    "coverage_min",
    "aligned_share_min",
    "order_concordance",
    "neighbours_kept",
    "moved_similarity",
    "same_after_normalising",
    "length_log",
    "length_ratio",
    *(f"guard_{reason}" for reason in GUARD_REASONS),
)

_LOW_ALIGNMENT = 0.6  # a word piece whose best partner is below this has no counterpart
_CLOSE_ALIGNMENT = 0.8  # ... and one whose best partner is above this has a close counterpart


def pair_features(
    text_a: str, text_b: str, cosine: float, tokens_a: Vectors, tokens_b: Vectors
) -> npt.NDArray[np.float64]:
    """One row of `FEATURE_NAMES` for the pair (order of a and b does not matter)."""
    alignment = _alignment(tokens_a, tokens_b)
    a, b = parse(text_a), parse(text_b)
    same = a.key == b.key
    found = () if same else verifier.differences(a, b)
    na, nb = max(len(tokens_a), 1), max(len(tokens_b), 1)
    row = [
        cosine,
        -np.log(max(1.0 - cosine, 1e-4)),
        *alignment,
        float(same),
        np.log1p(max(na, nb)),
        min(na, nb) / max(na, nb),
        *(float(reason in found) for reason in GUARD_REASONS),
    ]
    return np.asarray(row, dtype=np.float64)


def _alignment(ta: Vectors, tb: Vectors) -> tuple[float, ...]:
    """Alignment features; `coverage_min` and `aligned_share_min` take the side that is worse
    covered by the other, so text added on one side only (a narrower question) shows."""
    if len(ta) == 0 or len(tb) == 0:
        return 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0
    sim = ta @ tb.T
    best_a, best_b = sim.max(axis=1), sim.max(axis=0)
    both = np.concatenate([best_a, best_b])
    mean = float(both.mean())
    weakest = float(min(best_a.min(), best_b.min()))
    low = float((both < _LOW_ALIGNMENT).mean())
    coverage = float(min(best_a.mean(), best_b.mean()))
    close = float(min((best_a >= _CLOSE_ALIGNMENT).mean(), (best_b >= _CLOSE_ALIGNMENT).mean()))
    pairs = _mutual_pairs(sim)
    return (mean, weakest, low, coverage, close, *_order(pairs, sim))


def _mutual_pairs(sim: Vectors) -> list[tuple[int, int]]:
    """Word pieces that are each other's best partner, in the order of text a."""
    to_b, to_a = sim.argmax(axis=1), sim.argmax(axis=0)
    return [(i, int(j)) for i, j in enumerate(to_b) if int(to_a[j]) == i]


def _order(pairs: Sequence[tuple[int, int]], sim: Vectors) -> tuple[float, float, float]:
    """Concordance of aligned positions, share of neighbours kept, similarity of moved pieces."""
    if len(pairs) < 2:
        return 1.0, 1.0, 1.0
    js = np.array([j for _, j in pairs])
    later = js[None, :] > js[:, None]
    upper = np.triu(np.ones_like(later, dtype=bool), k=1)
    concordance = float(later[upper].mean())
    position = dict(pairs)
    adjacent = [(i, i + 1) for i, _ in pairs if i + 1 in position]
    kept = sum(1 for i, k in adjacent if position[k] == position[i] + 1)
    neighbours = kept / len(adjacent) if adjacent else 1.0
    moved = [sim[i, j] for n, (i, j) in enumerate(pairs) if _out_of_order(js, n)]
    moved_similarity = float(np.mean(moved)) if moved else 1.0
    return concordance, neighbours, moved_similarity


def _out_of_order(js: npt.NDArray[np.int_], n: int) -> bool:
    return bool((js[:n] > js[n]).any() or (js[n + 1 :] < js[n]).any())


Embedded = dict[str, tuple[Vectors, Vectors]]


def load_cache(path: Path | None) -> Embedded:
    """MiniLM outputs by text that `cache-train` / `cache-eval --embedding-cache` wrote."""
    if path is None or not path.exists():
        return {}
    # a local file these commands wrote (never downloaded): pickle keeps the arrays as they are
    loaded: Embedded = pickle.loads(path.read_bytes())  # nosec B301 # our own file, not input
    return loaded


def save_cache(path: Path, cache: Embedded) -> None:
    path.write_bytes(pickle.dumps(cache))


def featurize(
    pairs: Sequence[tuple[str, str]],
    encoder: OnnxEncoder,
    batch_size: int = 64,
    chunk: int = 512,
    progress: ProgressFn | None = None,
    cache: Embedded | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """Cosine and feature row of every pair. Pairs are embedded a chunk at a time (each
    distinct text once per chunk), so per-token outputs never pile up in memory; with a
    `cache` (text -> outputs) known texts are not embedded again and new ones are added."""
    cosines = np.zeros(len(pairs), dtype=np.float32)
    rows = np.zeros((len(pairs), len(FEATURE_NAMES)), dtype=np.float64)
    for start in range(0, len(pairs), chunk):
        part = pairs[start : start + chunk]
        known = _embed_all(sorted({t for pair in part for t in pair}), encoder, batch_size, cache)
        for k, (a, b) in enumerate(part):
            (va, ta), (vb, tb) = known[a], known[b]
            cosine = float(va @ vb)
            cosines[start + k] = cosine
            rows[start + k] = pair_features(
                a, b, cosine, ta.astype(np.float32), tb.astype(np.float32)
            )
        if progress is not None:
            progress(min(start + chunk, len(pairs)), len(pairs))
    return cosines, rows


def _embed_all(
    texts: list[str], encoder: OnnxEncoder, batch_size: int, cache: Embedded | None
) -> Embedded:
    known: Embedded = {t: cache[t] for t in texts if t in cache} if cache is not None else {}
    todo = sorted((t for t in texts if t not in known), key=len)
    for b in range(0, len(todo), batch_size):
        pooled, pieces = encoder.encode_with_tokens(todo[b : b + batch_size])
        for text, vector, tokens in zip(todo[b : b + batch_size], pooled, pieces, strict=True):
            known[text] = (vector, tokens.astype(np.float16))
            if cache is not None:
                cache[text] = known[text]
    return known
