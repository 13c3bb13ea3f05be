"""Load-test workload: Zipf resampling, paraphrase mixing, repetition accounting (no network)."""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

LOADTEST = Path(__file__).resolve().parent.parent / "loadtest"


def _load_workload() -> ModuleType:
    spec = importlib.util.spec_from_file_location("loadtest_workload", LOADTEST / "workload.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


wl = _load_workload()


def make_workload(n: int, s: float, paraphrase_rate: float = 0.0, seed: int = 1) -> object:
    catalog = [wl.Item(f"q{i}") for i in range(n)]
    return wl.Workload(catalog, s, paraphrase_rate, random.Random(seed))


def test_zipf_cumulative_matches_formula() -> None:
    assert wl.zipf_cumulative(3, 1.0) == pytest.approx([1.0, 1.5, 1.5 + 1 / 3])
    assert wl.zipf_cumulative(4, 0.0) == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize(("n", "s"), [(0, 1.0), (5, -0.5)])
def test_zipf_cumulative_rejects_bad_parameters(n: int, s: float) -> None:
    with pytest.raises(ValueError, match="need n >= 1"):
        wl.zipf_cumulative(n, s)


def test_draw_frequencies_follow_zipf() -> None:
    workload = make_workload(50, 1.2)
    counts = Counter(workload.draw().rank for _ in range(40_000))
    weights = [k**-1.2 for k in range(1, 51)]
    for rank in (0, 1, 4, 9):
        assert counts[rank] / 40_000 == pytest.approx(weights[rank] / sum(weights), abs=0.01)


@pytest.mark.parametrize(("s", "low", "high"), [(0.0, 0.0, 0.12), (1.2, 0.6, 0.95)])
def test_repetition_rate_grows_with_zipf_exponent(s: float, low: float, high: float) -> None:
    # 1,000 requests over 5,000 items: uniform rarely repeats, Zipf s=1.2 mostly repeats.
    workload = make_workload(5000, s)
    for _ in range(1000):
        workload.next_prompt()
    exact, same_item = workload.repetition()
    assert low <= exact <= high
    assert exact == same_item  # no paraphrases in this catalog
    assert workload.sent == 1000


def test_repetition_counts_exact_and_item_repeats_separately() -> None:
    workload = wl.Workload([wl.Item("a", ("a2",))], 0.0, 0.5, random.Random(3))
    texts = [workload.next_prompt().text for _ in range(400)]
    exact, same_item = workload.repetition()
    assert set(texts) == {"a", "a2"}
    assert same_item == pytest.approx(399 / 400)
    assert exact == pytest.approx(398 / 400)  # only the first "a" and the first "a2" are new


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_paraphrase_rate_controls_mixing(rate: float) -> None:
    catalog = [wl.Item(f"q{i}", (f"p{i}",)) for i in range(20)]
    workload = wl.Workload(catalog, 1.0, rate, random.Random(5))
    draws = [workload.draw() for _ in range(5000)]
    share = sum(d.paraphrased for d in draws) / len(draws)
    assert share == pytest.approx(rate, abs=0.03)
    for draw in draws:
        expected = (
            catalog[draw.rank].paraphrases[0] if draw.paraphrased else catalog[draw.rank].text
        )
        assert draw.text == expected


def test_expected_repetition_leaves_workload_untouched() -> None:
    workload = make_workload(100, 1.0)
    exact, _ = wl.expected_repetition(workload, 500, seed=0)
    assert 0.5 < exact < 1.0
    assert workload.sent == 0 and workload.repetition() == (0.0, 0.0)
    assert "zipf s=1.0" in wl.describe(workload, requests=200)


def test_loaders_truncate_and_keep_only_positive_pairs(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in ["x" * 50, "short"]) + "\n")
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"a": "how old is rome", "b": "what is the age of rome", "label": 1},
        {"a": "stocks?", "b": "bonds?", "label": 0},
        {"a": "same", "b": "same", "label": 1},
        {"a": "y" * 30, "b": "z" * 30, "label": 1},
    ]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [i.text for i in wl.load_prompts(prompts, 10)] == ["x" * 10, "short"]
    items = wl.load_paraphrase_items(pairs, 25, limit=10)
    assert items == [
        wl.Item("how old is rome", ("what is the age of rome",)),
        wl.Item("y" * 25, ("z" * 25,)),
    ]
    assert len(wl.load_paraphrase_items(pairs, 25, limit=1)) == 1
    catalog = wl.build_catalog(wl.load_prompts(prompts, 10), items, seed=7)
    assert sorted(i.text for i in catalog) == sorted(
        ["x" * 10, "short", items[0].text, items[1].text]
    )


def test_workload_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="empty"):
        wl.Workload([], 1.0, 0.5, random.Random(0))
    with pytest.raises(ValueError, match="paraphrase_rate"):
        wl.Workload([wl.Item("a")], 1.0, 1.5, random.Random(0))


def test_locustfile_loads_and_defines_a_user() -> None:
    # A separate process: importing locust monkey-patches the stdlib with gevent.
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOADTEST / "locustfile.py"), "--list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ChatUser" in result.stdout
