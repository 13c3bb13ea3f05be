"""`meterline cache-eval PAIRS.jsonl`: score labelled pairs with the cache's real match rule.

Each line is {"a": str, "b": str, "label": 0|1, "source": str}. Label 1 means a cache hit would be
correct. Reports per source and overall: precision, recall, false-hit rate (FP / negatives), and
the recall plain cosine similarity reaches at the same false-hit rate. The rule is the learned
verifier (default) or, with `--rule guards`, the hand-written guards; `--rule cosine` is plain
cosine at the threshold.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

from proxy.cache.embedder import OnnxEncoder, ProgressFn
from proxy.cache.matching import classifier
from proxy.cache.matching.features import featurize, load_cache, save_cache
from proxy.cache.matching.match import MatchRule
from proxy.cache.matching.settings import MatchSettings

SWEEP_THRESHOLDS = tuple(round(0.80 + 0.01 * i, 2) for i in range(20))
VERIFIER_SWEEP = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995)


class PairsFileError(ValueError):
    """A pairs file line is not {"a": str, "b": str, "label": 0|1, "source": str}."""


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    label: int
    source: str


@dataclass(frozen=True)
class Scores:
    pairs: int
    positives: int
    negatives: int
    true_hits: int
    false_hits: int
    precision: float
    recall: float
    false_hit_rate: float
    plain_cosine_recall_at_same_fhr: float


def load_pairs(path: Path, limit: int | None = None) -> list[Pair]:
    pairs: list[Pair] = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            pairs.append(_parse_line(line, path, number))
            if limit is not None and len(pairs) >= limit:
                break
    return pairs


def _parse_line(line: bytes, path: Path, number: int) -> Pair:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise PairsFileError(f"{path}:{number}: not JSON ({exc})") from exc
    if not isinstance(row, dict):
        raise PairsFileError(f"{path}:{number}: expected an object")
    for key, kind in (("a", str), ("b", str), ("label", int)):
        if not isinstance(row.get(key), kind):
            raise PairsFileError(f"{path}:{number}: field '{key}' has value {row.get(key)!r}")
    if row["label"] not in (0, 1):
        raise PairsFileError(f"{path}:{number}: field 'label' has value {row['label']!r}")
    return Pair(row["a"], row["b"], row["label"], str(row.get("source", "unknown")))


def similarities(
    pairs: Sequence[Pair], encoder: OnnxEncoder, batch_size: int, quiet: bool
) -> npt.NDArray[np.float32]:
    """Cosine of each pair; every distinct text is embedded once, in length-sorted batches."""
    texts = sorted({t for p in pairs for t in (p.a, p.b)})
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        if not quiet and (done == total or done % (batch_size * 20) == 0):
            rate = done / max(time.monotonic() - started, 1e-9)
            print(f"embedded {done}/{total} texts ({rate:.0f}/s)", file=sys.stderr, flush=True)

    vectors = encoder.encode_sorted(texts, batch_size=batch_size, progress=progress)
    row = {text: i for i, text in enumerate(texts)}
    a = vectors[[row[p.a] for p in pairs]]
    b = vectors[[row[p.b] for p in pairs]]
    sims: npt.NDArray[np.float32] = np.einsum("ij,ij->i", a, b).astype(np.float32)
    return sims


def plain_recall_at(
    fhr: float, sims: npt.NDArray[np.float32], labels: npt.NDArray[np.int_]
) -> float:
    """Best recall plain cosine reaches while its false-hit rate stays <= `fhr`."""
    negatives = np.sort(sims[labels == 0])[::-1]
    positives = sims[labels == 1]
    if positives.size == 0:
        return 0.0
    allowed = int(np.floor(fhr * negatives.size + 1e-9))
    if allowed >= negatives.size:
        return 1.0
    return float(np.mean(positives > negatives[allowed]))


def score(
    accepted: npt.NDArray[np.bool_], sims: npt.NDArray[np.float32], labels: npt.NDArray[np.int_]
) -> Scores:
    positives, negatives = int(labels.sum()), int((labels == 0).sum())
    tp = int((accepted & (labels == 1)).sum())
    fp = int((accepted & (labels == 0)).sum())
    fhr = fp / negatives if negatives else 0.0
    return Scores(
        pairs=int(labels.size),
        positives=positives,
        negatives=negatives,
        true_hits=tp,
        false_hits=fp,
        precision=tp / (tp + fp) if tp + fp else 1.0,
        recall=tp / positives if positives else 0.0,
        false_hit_rate=fhr,
        plain_cosine_recall_at_same_fhr=plain_recall_at(fhr, sims, labels),
    )


def decide_all(
    rule: MatchRule, diffs: Sequence[tuple[str, ...]], sims: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.bool_], list[str]]:
    decisions = [rule.judge(d, float(s)) for d, s in zip(diffs, sims, strict=True)]
    return np.array([d.accept for d in decisions], dtype=bool), [d.reason for d in decisions]


def report(
    pairs: Sequence[Pair],
    sims: npt.NDArray[np.float32],
    settings: MatchSettings,
    sweep: bool,
    rows: npt.NDArray[np.float64] | None = None,
    model: classifier.PairClassifier | None = None,
) -> dict[str, object]:
    """Scores of the guards rule, or of the verifier when feature `rows` and a `model` are given."""
    rule = MatchRule(settings, model)
    labels = np.array([p.label for p in pairs], dtype=np.int_)
    if rows is not None and rule.model is not None:
        vetoes = [rule.veto(p.a, p.b) for p in pairs]
        vouched = np.array([rule.vouch(p.a, p.b) for p in pairs], dtype=bool)
        scores = rule.model.probability(rows)
        scores[np.array([v is not None for v in vetoes], dtype=bool)] = 0.0  # for the sweep
        scores[vouched & (sims >= settings.threshold)] = 1.0
        decisions = [rule.verdict(float(p), float(s), v, bool(w))
                     for p, s, v, w in zip(scores, sims, vetoes, vouched, strict=True)]
        accepted = np.array([d.accept for d in decisions], dtype=bool)
        reasons = [d.reason for d in decisions]
        rule_name = "verifier"
    else:
        diffs = [rule.differences(p.a, p.b) for p in pairs]
        accepted, reasons = decide_all(rule, diffs, sims)
        rule_name = "guards" if settings.guards else "cosine"
    out: dict[str, object] = {
        "rule": rule_name,
        "settings": settings.model_dump(),
        "verifier_threshold": rule.verifier_threshold if rule_name == "verifier" else None,
        "sources": _grouped([p.source for p in pairs], accepted, sims, labels),
        "families": _grouped([family_of(p.source) for p in pairs], accepted, sims, labels),
        "overall": asdict(score(accepted, sims, labels)),
        "veto_reasons": {r: reasons.count(r) for r in sorted(set(reasons))},
    }
    if sweep and rule_name == "verifier":
        out["sweep"] = [_verifier_sweep_row(rule, t, scores, sims, labels) for t in VERIFIER_SWEEP]
    elif sweep:
        out["sweep"] = [_sweep_row(settings, t, diffs, sims, labels) for t in SWEEP_THRESHOLDS]
    return out


def family_of(source: str) -> str:
    """'re-finance-keep' -> 're-finance', 'gen-swap' -> 'gen': a source holding one label has no
    false-hit rate or no recall, so the comparison with cosine is made per family."""
    return source.rsplit("-", 1)[0]


def _grouped(
    names: Sequence[str], accepted: npt.NDArray[np.bool_], sims: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int_],
) -> dict[str, dict[str, object]]:
    keys = np.array(names)
    return {
        name: asdict(score(accepted[keys == name], sims[keys == name], labels[keys == name]))
        for name in sorted(set(names))
    }


def _verifier_sweep_row(
    rule: MatchRule,
    threshold: float,
    scores: npt.NDArray[np.float64],
    sims: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int_],
) -> dict[str, float]:
    accepted = (sims >= rule.candidate_threshold) & (scores >= threshold)
    s = score(accepted, sims, labels)
    return _row(threshold, s)


def _sweep_row(
    settings: MatchSettings,
    threshold: float,
    diffs: Sequence[tuple[str, ...]],
    sims: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int_],
) -> dict[str, float]:
    raised = {
        name: max(getattr(settings, name), threshold)
        for name in ("insertion_threshold", "substitution_threshold", "word_substitution_threshold")
    }
    rule = MatchRule(settings.model_copy(update={"threshold": threshold, **raised}))
    accepted, _ = decide_all(rule, diffs, sims)
    s = score(accepted, sims, labels)
    return _row(threshold, s)


def format_text(result: dict[str, object]) -> str:
    header = f"{'source':<22}{'pairs':>7}{'pos':>7}{'neg':>7}{'TP':>6}{'FP':>5}"
    header += f"{'precision':>11}{'recall':>8}{'FHR':>8}{'cosine recall@FHR':>19}"
    lines = [header]
    rows = dict(result["sources"])  # type: ignore[call-overload]
    families = {f"[{k}]": v for k, v in result["families"].items()  # type: ignore[attr-defined]
                if k not in rows}
    rows.update(families)
    rows["OVERALL"] = result["overall"]
    for name, s in rows.items():
        lines.append(
            f"{name:<22}{s['pairs']:>7}{s['positives']:>7}{s['negatives']:>7}{s['true_hits']:>6}"
            f"{s['false_hits']:>5}{s['precision']:>11.4f}{s['recall']:>8.4f}"
            f"{s['false_hit_rate']:>8.4f}{s['plain_cosine_recall_at_same_fhr']:>19.4f}"
        )
    lines.append(f"rule: {result['rule']}"
                 + (f" (verifier threshold {result['verifier_threshold']:.4f})"
                    if result["verifier_threshold"] is not None else ""))
    lines.append("vetoes: " + ", ".join(f"{k}={v}" for k, v in result["veto_reasons"].items()))  # type: ignore[attr-defined]
    for row in result.get("sweep", []):  # type: ignore[attr-defined]
        lines.append(
            f"sweep t={row['threshold']:.3f} precision={row['precision']:.4f} "
            f"recall={row['recall']:.4f} FHR={row['false_hit_rate']:.4f} "
            f"cosine-recall@FHR={row['plain_cosine_recall_at_same_fhr']:.4f}"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meterline cache-eval",
        description="Score labelled pairs with the semantic cache's match rule.",
    )
    parser.add_argument("pairs", type=Path, help='JSONL of {"a","b","label","source"}')
    parser.add_argument("--threshold", type=float, help="cosine threshold (default: configured)")
    parser.add_argument(
        "--rule",
        choices=("verifier", "guards", "cosine"),
        default="verifier",
        help="learned verifier (default), hand-written guards, or plain cosine at the threshold",
    )
    parser.add_argument("--no-guards", action="store_true", help="same as --rule cosine")
    parser.add_argument("--weights", type=Path, help="verifier weights (default: shipped)")
    parser.add_argument("--sweep", action="store_true", help="add a threshold sweep")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--limit", type=int, help="only the first N pairs")
    parser.add_argument("--embedding-cache", type=Path,
                        help="pickle of MiniLM outputs by text (cache-train's), read and updated")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    rule = "cosine" if args.no_guards else args.rule
    try:
        pairs = load_pairs(args.pairs, args.limit)
        settings = _settings(args.threshold, rule)
        model = classifier.load(args.weights) if args.weights else None
    except (OSError, PairsFileError, ValueError) as exc:
        print(f"cache-eval: {exc}", file=sys.stderr)
        return 2
    if not pairs:
        print(f"cache-eval: {args.pairs} holds no pairs", file=sys.stderr)
        return 2
    encoder = OnnxEncoder(threads=args.threads)
    rows = None
    if rule == "verifier":
        cache = load_cache(args.embedding_cache)
        sims, rows = featurize([(p.a, p.b) for p in pairs], encoder, args.batch_size,
                               progress=_progress(args.quiet), cache=cache)
        if args.embedding_cache is not None:
            save_cache(args.embedding_cache, cache)
    else:
        sims = similarities(pairs, encoder, args.batch_size, args.quiet)
    result = report(pairs, sims, settings, args.sweep, rows, model)
    print(
        orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
        if args.json
        else format_text(result)
    )
    return 0


def _progress(quiet: bool) -> ProgressFn | None:
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        rate = done / max(time.monotonic() - started, 1e-9)
        print(f"scored {done}/{total} pairs ({rate:.0f}/s)", file=sys.stderr, flush=True)

    return None if quiet else report


def _settings(threshold: float | None, rule: str) -> MatchSettings:
    base = MatchSettings(guards=rule != "cosine", verifier=rule == "verifier")
    if threshold is None:
        return base
    raised = {
        name: max(getattr(base, name), threshold)
        for name in ("insertion_threshold", "substitution_threshold", "word_substitution_threshold")
    }
    return MatchSettings(**{**base.model_dump(), "threshold": threshold, **raised})


def _row(threshold: float, s: Scores) -> dict[str, float]:
    """One sweep row: the threshold and the scores at it."""
    return {
        "threshold": threshold,
        "precision": s.precision,
        "recall": s.recall,
        "false_hit_rate": s.false_hit_rate,
        "plain_cosine_recall_at_same_fhr": s.plain_cosine_recall_at_same_fhr,
    }
