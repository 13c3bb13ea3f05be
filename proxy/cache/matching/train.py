"""`meterline cache-train PROMPTS.jsonl`: train the match verifier and write its weights.

Training data is generated (`perturb.py`) from licence-clean prompts and our own templates, never
from QQP: prompts are split by a hash of their text into train / validation / test (70/15/15),
and one third of the templates is kept out of training altogether; hand-written rephrasings
(`rephrase.py`: lay vs expert wording, mostly below cosine 0.95) are split by intent, and their
finance domain is never trained on. A logistic regression over
`features.FEATURE_NAMES` is fitted on the train split (fixed seed, deterministic solver); its
decision threshold is the lowest probability at which, among validation pairs above the cache's
candidate floor, the false-hit rate is at most the target overall and at most 2 % for every
source with enough negatives. Besides the edits, each prompt's nearest other prompt (same split,
cosine >= 0.70) is a negative ("gen-neighbour"): different questions on the same topic, the kind
of near miss a real cache sees most. `--write-eval` saves the test split as a pairs file for
`meterline cache-eval`; `--embedding-cache` keeps MiniLM outputs between runs (same results).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from proxy.cache.embedder import OnnxEncoder
from proxy.cache.matching import perturb, rephrase
from proxy.cache.matching.classifier import DEFAULT_PATH, PairClassifier
from proxy.cache.matching.features import (
    FEATURE_NAMES,
    Embedded,
    featurize,
    load_cache,
    save_cache,
)
from proxy.cache.matching.settings import MatchSettings

TRAIN_FLOOR = 0.80  # pairs below this cosine teach nothing the candidate floor does not
TARGET_FALSE_HIT_RATE = 0.008  # validation target, a margin under the 1 % goal
SOURCE_CAP = 0.02  # no validation source may exceed this
MIN_NEGATIVES = 40  # a validation source with fewer negatives cannot estimate a rate
NEIGHBOUR_FLOOR = 0.70
SPLITS = ("train", "validation", "test")


def load_prompts(path: Path) -> list[str]:
    """Single-line prompts of 10..300 characters (questions and short instructions)."""
    prompts: set[str] = set()
    with path.open("rb") as handle:
        for line in handle:
            text = str(orjson.loads(line)["prompt"]).strip()
            if 10 <= len(text) <= 300 and "\n" not in text:
                prompts.add(text)
    return sorted(prompts)


def split_of(text: str) -> str:
    bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 100
    return "train" if bucket < 70 else "validation" if bucket < 85 else "test"


def template_split(split: str) -> list[int]:
    numbers = range(len(perturb.TEMPLATES))
    if split == "test":
        return [n for n in numbers if n % 3 == 2]  # never trained on
    return [n for n in numbers if n % 3 != 2]


def examples(prompts: Sequence[str], seed: int, per_prompt: int = 2,
             per_template: int = 60) -> dict[str, list[perturb.Example]]:
    out: dict[str, list[perturb.Example]] = {}
    for offset, split in enumerate(SPLITS):
        mine = [p for p in prompts if split_of(p) == split]
        pairs = list(perturb.perturbations(mine, seed + offset, per_prompt))
        count = per_template if split == "train" else max(per_template // 2, 1)
        pairs += perturb.template_pairs(seed + offset, count, template_split(split))
        pairs += rephrase.rephrase_pairs(seed + offset, split)
        out[split] = pairs
    return out


def examples_digest(data: dict[str, list[perturb.Example]]) -> str:
    """sha256 of the generated train and validation pairs (before the embedding-dependent
    neighbours): the weights file records it, so a test can show the shipped weights' data
    is what `cache-train` generates today without embedding anything."""
    digest = hashlib.sha256()
    for split in ("train", "validation"):
        for e in data[split]:
            digest.update(orjson.dumps([split, e.a, e.b, e.label, e.source]) + b"\n")
    return digest.hexdigest()


def fit(rows: npt.NDArray[np.float64], labels: npt.NDArray[np.int_],
        seed: int) -> dict[str, Any]:
    from sklearn.linear_model import (  # type: ignore[import-untyped]  # training only
        LogisticRegression,
    )

    mean = rows.mean(axis=0)
    scale = rows.std(axis=0)
    scale[scale < 1e-9] = 1.0
    # run to the (unique, L2-regularised) optimum: with the default tolerance the solver stops
    # early on these correlated features and a rerun's thread timing moved the intercept by 0.7
    model = LogisticRegression(C=1.0, tol=1e-10, max_iter=100_000, random_state=seed)
    model.fit((rows - mean) / scale, labels)
    return {
        "mean": mean.round(6).tolist(),
        "scale": scale.round(6).tolist(),
        "coef": model.coef_[0].round(5).tolist(),
        "intercept": round(float(model.intercept_[0]), 5),
    }


def probability(
    weights: dict[str, Any], rows: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    model = PairClassifier.from_dict({**weights, "features": list(FEATURE_NAMES),
                                      "threshold": 0.5})
    return model.probability(rows)


def _threshold_for(negative_scores: npt.NDArray[np.float64], rate: float) -> float:
    """Lowest threshold letting at most `rate` of these negatives through."""
    ordered = np.sort(negative_scores)[::-1]
    allowed = int(np.floor(rate * ordered.size))
    return float(ordered[allowed]) + 1e-6 if allowed < ordered.size else 0.0


def choose_threshold(
    scores: npt.NDArray[np.float64], labels: npt.NDArray[np.int_], sources: Sequence[str],
    target: float,
) -> tuple[float, dict[str, float]]:
    """Lowest threshold with FHR <= target overall and <= SOURCE_CAP on every source with
    enough negatives; also returns each constraint's own threshold."""
    limits = {"overall": _threshold_for(scores[labels == 0], target)}
    names = np.array(sources)
    for source in sorted(set(sources)):
        negatives = scores[(names == source) & (labels == 0)]
        if negatives.size >= MIN_NEGATIVES:
            limits[source] = _threshold_for(negatives, SOURCE_CAP)
    return max(limits.values()), limits


def neighbours(prompts: Sequence[str], cache: Embedded) -> list[perturb.Example]:
    """Each prompt with its nearest other prompt: distinct questions on one topic."""
    if len(prompts) < 2:
        return []
    vectors = np.stack([cache[p][0] for p in prompts])
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1.0)
    out = []
    for i, j in enumerate(sims.argmax(axis=1)):
        if sims[i, j] >= NEIGHBOUR_FLOOR:
            out.append(perturb.Example(prompts[i], prompts[int(j)], 0, "gen-neighbour"))
    return out


def _progress(label: str, quiet: bool) -> object:
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        if not quiet:
            rate = done / max(time.monotonic() - started, 1e-9)
            print(f"{label}: {done}/{total} pairs ({rate:.0f}/s)", file=sys.stderr, flush=True)

    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meterline cache-train",
        description="Train the semantic cache's match verifier on generated pairs.",
    )
    parser.add_argument("prompts", type=Path, help='JSONL of {"prompt": str} (licence-clean)')
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH, help="weights file to write")
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--write-eval", type=Path, help="also write the test split as pairs")
    parser.add_argument("--per-prompt", type=int, default=2,
                        help="edits of each label per prompt (default 2)")
    parser.add_argument("--per-template", type=int, default=60,
                        help="fillings of each training template (default 60)")
    parser.add_argument("--embedding-cache", type=Path,
                        help="pickle of MiniLM outputs by text, read and updated (speeds reruns)")
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--quiet", action="store_true")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        prompts = load_prompts(args.prompts)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"cache-train: {args.prompts}: {exc}", file=sys.stderr)
        return 2
    data = examples(prompts, args.seed, args.per_prompt, args.per_template)
    generated = examples_digest(data)
    encoder = OnnxEncoder(threads=args.threads)
    cache = load_cache(args.embedding_cache)
    floor = MatchSettings().threshold - MatchSettings().candidate_margin
    featured = {}
    for split in ("train", "validation"):
        mine = [p for p in prompts if split_of(p) == split]
        featurize([(p, p) for p in mine], encoder, cache=cache)  # pooled vectors for neighbours
        data[split] += neighbours(mine, cache)
        pairs = [(e.a, e.b) for e in data[split]]
        cosines, rows = featurize(pairs, encoder, cache=cache,
                                  progress=_progress(split, args.quiet))  # type: ignore[arg-type]
        keep = cosines >= (TRAIN_FLOOR if split == "train" else floor)
        featured[split] = (rows[keep], np.array([e.label for e in data[split]])[keep],
                           [e.source for e, k in zip(data[split], keep, strict=True) if k])
    if args.embedding_cache is not None:
        save_cache(args.embedding_cache, cache)
    rows, labels, _ = featured["train"]
    weights = fit(rows, labels, args.seed)
    val_rows, val_labels, val_sources = featured["validation"]
    threshold, per_source = choose_threshold(
        probability(weights, val_rows), val_labels, val_sources, TARGET_FALSE_HIT_RATE)
    document = {
        "features": list(FEATURE_NAMES),
        **weights,
        "threshold": round(threshold, 4),
        "trained_on": (
            f"{len(labels)} generated pairs (cosine >= {TRAIN_FLOOR}) from "
            f"{args.prompts.name} (train split), perturb.TEMPLATES "
            f"{template_split('train')} and rephrase.INTENTS "
            f"{[n for n in range(len(rephrase.INTENTS)) if rephrase.intent_split(n) == 'train']}"
            "; no QQP"),
        "threshold_chosen_on": (
            f"validation split, pairs with cosine >= {floor}: FHR <= {TARGET_FALSE_HIT_RATE} "
            f"overall and <= {SOURCE_CAP} per source"),
        "validation_thresholds": {k: round(v, 4) for k, v in per_source.items()},
        "seed": args.seed,
        "generated_pairs_sha256": generated,
    }
    args.out.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    print(f"wrote {args.out}: threshold {threshold:.4f}, {len(labels)} training pairs")
    if args.write_eval is not None:
        lines = [orjson.dumps({"a": e.a, "b": e.b, "label": e.label, "source": e.source})
                 for e in data["test"]]
        args.write_eval.write_bytes(b"\n".join(lines) + b"\n")
        print(f"wrote {args.write_eval}: {len(lines)} test pairs (never trained on)")
    return 0
