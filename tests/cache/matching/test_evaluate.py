from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from proxy.__main__ import main as meterline
from proxy.cache.matching.evaluate import (
    Pair,
    PairsFileError,
    format_text,
    load_pairs,
    main,
    plain_recall_at,
    report,
    score,
)
from proxy.cache.matching.settings import MatchSettings

ADVERSARIAL = Path(__file__).resolve().parents[2] / "data" / "adversarial_pairs.jsonl"


def write_pairs(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_adversarial_file_is_well_formed_and_large_enough() -> None:
    pairs = load_pairs(ADVERSARIAL)
    assert len(pairs) >= 150
    assert len({p.source for p in pairs}) >= 6
    assert {p.label for p in pairs} == {0, 1}
    assert len({(p.a, p.b) for p in pairs}) == len(pairs)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "not JSON"),
        ('{"a": "x", "b": "y", "label": 2}', "field 'label' has value 2"),
        ('{"a": "x", "label": 1}', "field 'b' has value None"),
        ("[1, 2]", "expected an object"),
    ],
)
def test_bad_lines_name_the_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"a": "x", "b": "y", "label": 1, "source": "s"}\n' + line + "\n")
    with pytest.raises(PairsFileError, match=f"pairs.jsonl:2: {message}"):
        load_pairs(path)


def test_plain_recall_at_fixed_false_hit_rate() -> None:
    sims = np.array([0.99, 0.97, 0.95, 0.90, 0.98, 0.96, 0.80, 0.70], dtype=np.float32)
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    assert plain_recall_at(0.0, sims, labels) == 0.25  # must stay above the 0.98 negative
    assert plain_recall_at(0.25, sims, labels) == 0.5  # may let the 0.98 negative through
    assert plain_recall_at(1.0, sims, labels) == 1.0


def test_score_counts() -> None:
    accepted = np.array([True, True, False, True])
    sims = np.array([0.99, 0.96, 0.9, 0.97], dtype=np.float32)
    s = score(accepted, sims, np.array([1, 1, 1, 0]))
    assert (s.true_hits, s.false_hits, s.positives, s.negatives) == (2, 1, 3, 1)
    assert s.precision == pytest.approx(2 / 3) and s.recall == pytest.approx(2 / 3)
    assert s.false_hit_rate == 1.0


def test_cli_json_per_source_with_the_guards_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows: list[dict[str, object]] = [
        {"a": "Who founded Microsoft?", "b": "Who founded Apple?", "label": 0, "source": "ent"},
        {
            "a": "How do I reset my password?",
            "b": "How can I reset my password?",
            "label": 1,
            "source": "para",
        },
        {
            "a": "Set a timer for 10 minutes",
            "b": "Set a timer for 10 hours",
            "label": 0,
            "source": "num",
        },
        {"a": "Best pizza in Naples", "b": "How do airplanes fly?", "label": 0, "source": "num"},
    ]
    path = write_pairs(tmp_path / "p.jsonl", rows)
    args = ["cache-eval", str(path), "--json", "--sweep", "--threads", "1", "--rule", "guards"]
    assert meterline(args) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert "embedded" in err
    assert result["overall"]["true_hits"] == 1 and result["overall"]["false_hits"] == 0
    assert result["sources"]["num"]["negatives"] == 2 and result["sources"]["num"]["recall"] == 0.0
    assert sum(result["veto_reasons"].values()) == 4 and result["veto_reasons"]["accept"] == 1
    assert [row["threshold"] for row in result["sweep"]][:2] == [0.8, 0.81]
    assert result["settings"]["threshold"] == 0.95


def test_cli_plain_cosine_and_limit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                str(ADVERSARIAL),
                "--limit",
                "10",
                "--no-guards",
                "--threshold",
                "0.9",
                "--quiet",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert err == ""
    overall = next(line for line in out.splitlines() if line.startswith("OVERALL"))
    assert overall.split()[1] == "10"


def test_cli_reports_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
    assert main([str(write_pairs(tmp_path / "e.jsonl", []))]) == 2
    assert "holds no pairs" in capsys.readouterr().err


def test_families_compare_with_cosine_on_both_labels() -> None:
    pairs = [Pair("a", "b", 1, "re-x-keep"), Pair("c", "d", 1, "re-x-keep"),
             Pair("e", "f", 0, "re-x-intent"), Pair("g", "h", 0, "qqp")]
    sims = np.array([0.99, 0.90, 0.93, 0.5], dtype=np.float32)
    result = report(pairs, sims, MatchSettings(verifier=False), sweep=False)
    family = result["families"]["re-x"]  # type: ignore[index]
    assert (family["positives"], family["negatives"], family["recall"]) == (2, 1, 0.5)
    # cosine can serve the 0.99 positive with no false hit: its recall at FHR 0 is 1 of 2
    assert family["plain_cosine_recall_at_same_fhr"] == 0.5
    assert result["sources"]["re-x-keep"]["negatives"] == 0  # type: ignore[index]
    assert "[re-x]" in format_text(result)


def test_encyclopedia_swaps_pair_each_sentence_with_a_swap_and_a_rewrite() -> None:
    pairs = load_pairs(ADVERSARIAL.with_name("encyclopedia_swaps.jsonl"))
    sentences = {p.a for p in pairs}
    assert len(sentences) == 30 and len(pairs) == 60
    for sentence in sentences:
        mine = sorted((p.source, p.label) for p in pairs if p.a == sentence)
        assert mine == [("ency-keep", 1), ("ency-swap", 0)]


@pytest.mark.parametrize(("intercept", "served"), [(10.0, [False, True]), (-10.0, [False, True])])
def test_the_verifier_report_applies_the_rules_veto_and_vouch(
        intercept: float, served: list[bool]) -> None:
    """cache-eval scores the verifier from precomputed probabilities: the voice-flip veto and
    the coordination rule must apply there as in MatchRule.verify, whatever the model says."""
    from proxy.cache.matching.classifier import PairClassifier
    from proxy.cache.matching.features import FEATURE_NAMES

    n = len(FEATURE_NAMES)
    model = PairClassifier(np.zeros(n), np.ones(n), np.zeros(n), intercept, 0.5)
    pairs = [
        Pair("The company was acquired by its largest competitor.",
             "The company acquired its largest competitor.", 0, "flip"),
        Pair("What is the difference between Java and Rust?",
             "What is the difference between Rust and Java?", 1, "coordination"),
    ]
    sims = np.array([0.98, 0.99], dtype=np.float32)
    result = report(pairs, sims, MatchSettings(), False, np.zeros((2, n)), model)
    sources: dict[str, dict[str, int]] = result["sources"]  # type: ignore[assignment]
    assert [sources[p.source]["true_hits"] + sources[p.source]["false_hits"] == 1
            for p in pairs] == served
