"""`meterline cache-train`: deterministic weights from generated pairs, never from QQP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from proxy.__main__ import main as meterline
from proxy.cache.matching import classifier, train
from proxy.cache.matching.evaluate import load_pairs

PROMPTS = [
    "How do I reset my password on a Mac?", "Why is the sky blue?",
    "Write a poem about a cat and a dog.", "What is the capital of France?",
    "Is it safe to run 10 miles a day?", "Can you explain how vaccines work?",
    "How do I convert 5 kilograms to pounds?", "What are the best books about history?",
    "Give me 3 ideas for a birthday party.", "Why does my dog chase cars?",
    "How can I learn Python quickly?", "What is the difference between tea and coffee?",
    "Is coffee bad for the heart?", "How long should I boil an egg?",
    "Translate good morning to Spanish.", "Why did the Roman empire fall?",
]


def write_prompts(path: Path) -> Path:
    path.write_text("\n".join(json.dumps({"prompt": p, "source": "test"}) for p in PROMPTS))
    return path


def test_cache_train_is_deterministic_and_writes_loadable_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / f"weights-{run}.json"
        args = ["cache-train", str(prompts), "--out", str(out), "--per-template", "2",
                "--threads", "1", "--quiet", "--write-eval", str(tmp_path / f"eval-{run}.jsonl")]
        assert meterline(args) == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]
    model = classifier.load(tmp_path / "weights-a.json")
    assert model.coef.shape == (len(json.loads(outputs[0])["features"]),)
    assert "no QQP" in json.loads(outputs[0])["trained_on"]
    held_out = load_pairs(tmp_path / "eval-a.jsonl")
    assert {p.label for p in held_out} == {0, 1}
    assert "wrote" in capsys.readouterr().out


def test_splits_are_by_prompt_and_templates_are_held_out() -> None:
    splits = {p: train.split_of(p) for p in PROMPTS}
    assert set(splits.values()) <= set(train.SPLITS)
    assert train.split_of(PROMPTS[0]) == splits[PROMPTS[0]]  # stable
    trained, held = set(train.template_split("train")), set(train.template_split("test"))
    assert held and not trained & held


def test_threshold_keeps_every_source_under_the_cap() -> None:
    scores = np.array([0.99, 0.5, 0.4, 0.3, 0.2] * 20 + [0.9] * 50)
    labels = np.array([0] * 100 + [1] * 50)
    sources = ["swap"] * 100 + ["para"] * 50
    threshold, limits = train.choose_threshold(scores, labels, sources, target=0.008)
    assert threshold > 0.99  # 20 % of the swap negatives score 0.99: all must be refused
    assert set(limits) == {"overall", "swap"}


def test_bad_prompts_file_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt field"}\n')
    assert meterline(["cache-train", str(bad), "--out", str(tmp_path / "w.json")]) == 2
    assert "bad.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "w.json").exists()


SHARED_PROMPTS = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "prompts.jsonl"


def test_shipped_weights_were_trained_on_what_cache_train_generates_today() -> None:
    """The generated pairs behind the shipped weights are reproduced (their digest is in the
    weights file); the fit itself is checked for determinism above. A change of perturb.py or
    rephrase.py without retraining fails here."""
    shipped = json.loads(classifier.DEFAULT_PATH.read_bytes())
    data = train.examples(train.load_prompts(SHARED_PROMPTS), shipped["seed"])
    assert train.examples_digest(data) == shipped["generated_pairs_sha256"]
