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

from tests.conftest import ProxyStarter

LOADTEST = Path(__file__).resolve().parents[1] / "loadtest"


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


# ----- hard negatives and the KPI report ------------------------------------------------------

def _load_kpi() -> ModuleType:
    spec = importlib.util.spec_from_file_location("loadtest_kpi", LOADTEST / "kpi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


kpi = _load_kpi()


@pytest.mark.parametrize(("text", "expected"), [
    ("How do I install 3 GB of RAM?", "How do I install 30 GB of RAM?"),
    ("Is 25 a prime?", "Is 32 a prime?"),
    ("Python can parse YAML", "Python cannot parse YAML"),
    ("Why is the sky blue?", "Why is not the sky blue?"),
    ("Tell me a joke", None),
])
def test_perturb_changes_the_meaning(text: str, expected: str | None) -> None:
    assert wl.perturb(text) == expected


def test_negatives_sit_right_after_the_question_they_resemble(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"a": f"what is {i} plus one", "b": f"what is {i} minus one", "label": 0}
            for i in range(30)] + [{"a": "x", "b": "x", "label": 0}]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    negatives = wl.load_negative_pairs(pairs, 100, limit=50)
    assert len(negatives) == 30  # identical texts are no negative pair
    prompts = [wl.Item(f"prompt {i}") for i in range(40)] + [wl.Item("prompt 40")]
    catalog = wl.build_catalog(prompts, [], seed=3, negatives=negatives)
    texts = [item.text for item in catalog]
    assert len(texts) == len(set(texts)) == 41 + 60
    for first, second in negatives:
        assert texts.index(second.text) == texts.index(first.text) + 1


def test_a_text_belongs_to_one_question_only() -> None:
    shared = wl.Item("how do I lose weight fast", ("what is the quickest way to lose weight",))
    clash = wl.Item("what is the quickest way to lose weight")  # another item's paraphrase
    catalog = wl.build_catalog([wl.Item("q1"), clash], [shared], seed=1)
    texts = [t for item in catalog for t in (item.text, *item.paraphrases)]
    assert len(texts) == len(set(texts))
    assert len(catalog) == 2


def test_ground_truth_counts_false_hits_by_the_question_that_made_the_answer() -> None:
    truth = kpi.GroundTruth()
    truth.observe("miss", 1, "answer one", "q1")
    truth.observe("miss", 2, "answer two", "q2")
    truth.observe("hit-exact", 1, "answer one", "q1")  # right question
    truth.observe("hit-semantic", 1, "answer one", "q1 reworded")  # paraphrase: right
    truth.observe("hit-semantic", 2, "answer one", "q2")  # someone else's answer
    truth.observe("hit-semantic", 3, "never seen", "q3")  # origin unknown
    assert truth.hits == {"exact": 1, "semantic": 3}
    assert truth.false_hits == {"exact": 0, "semantic": 1}
    assert truth.unattributed == 1
    assert truth.false_examples[0]["answer_from_rank"] == 1


METRICS_BEFORE = """\
# TYPE meterline_cache_requests counter
meterline_cache_requests_total{kind="exact",result="hit"} 10
meterline_cache_requests_total{kind="exact",result="miss"} 90
# TYPE meterline_cost_dollars counter
meterline_cost_dollars_total{department="sales",model="gpt-4o-mini"} 1.0
"""
METRICS_AFTER = """\
# TYPE meterline_cache_requests counter
meterline_cache_requests_total{kind="exact",result="hit"} 40
meterline_cache_requests_total{kind="semantic",result="hit"} 10
meterline_cache_requests_total{kind="exact",result="miss"} 140
# TYPE meterline_cost_dollars counter
meterline_cost_dollars_total{department="sales",model="gpt-4o-mini"} 3.0
# TYPE meterline_cache_saved_dollars counter
meterline_cache_saved_dollars_total{department="sales"} 1.5
# TYPE meterline_routing_saved_dollars counter
meterline_routing_saved_dollars_total{department="sales"} 0.5
"""


def test_report_takes_hit_rates_and_dollars_from_the_metrics_delta() -> None:
    truth = kpi.GroundTruth()
    truth.observe("miss", 1, "a")
    truth.observe("hit-exact", 1, "a")
    report = kpi.build_report(
        workload={"zipf_s": 1.1}, truth=truth, before=kpi.sample_sums(METRICS_BEFORE),
        after=kpi.sample_sums(METRICS_AFTER), latencies_ms=[float(i) for i in range(1, 101)],
        overheads_ms=[0.5, 0.7], requests=100, errors=2)
    # lookups: 140-90 misses + 30 exact hits + 10 semantic hits = 90
    assert report["hit_rate"]["cache_lookups"] == 90
    assert report["hit_rate"]["exact"] == pytest.approx(30 / 90)
    assert report["hit_rate"]["total"] == pytest.approx(40 / 90)
    assert report["dollars"] == pytest.approx({
        "spent": 2.0, "saved_by_cache": 1.5, "saved_by_routing": 0.5, "without_proxy": 4.0,
        "reduction": 0.5})
    assert report["latency_ms"] == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
    assert report["false_hits"]["rate_of_hits"] == 0.0
    text = kpi.markdown(report)
    assert "| cost reduction | 50.0% |" in text and "| zipf_s | 1.1 |" in text


@pytest.mark.slow
def test_headless_run_against_the_demo_writes_the_kpi_report(start_proxy: ProxyStarter,
                                                             tmp_path: Path) -> None:
    proxy = start_proxy()
    stem = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOADTEST / "locustfile.py"), "--headless",
         "--host", proxy.url, "--users", "5", "--spawn-rate", "5", "--run-time", "8s",
         "--only-summary", "--zipf-s", "1.3", "--stop-timeout", "5"],
        capture_output=True, text=True, timeout=180, check=False,
        env={**__import__("os").environ, "MET_KPI_STEM": str(stem)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "run_kpi.json").read_text())
    assert report["requests"] > 10 and report["errors"] == 0
    assert report["hit_rate"]["cache_lookups"] > 0
    assert report["hit_rate"]["total"] is not None and report["hit_rate"]["total"] > 0
    assert report["dollars"]["spent"] > 0
    assert report["latency_ms"]["p50"] is not None
    assert (tmp_path / "run_kpi.md").read_text().startswith("# Meterline load test: KPIs")
