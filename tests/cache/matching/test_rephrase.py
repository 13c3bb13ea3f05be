"""Hand-written rephrasings for the verifier's data (proxy/cache/matching/rephrase.py)."""

from __future__ import annotations

from proxy.cache.matching import rephrase


def test_held_out_domain_and_intents_never_reach_training() -> None:
    splits = {n: rephrase.intent_split(n) for n in range(len(rephrase.INTENTS))}
    for number, split in splits.items():
        if rephrase.INTENTS[number][0] in rephrase.HELD_OUT_DOMAINS:
            assert split == "test"
    assert {"train", "validation", "test"} == set(splits.values())
    trained = {e.a for e in rephrase.rephrase_pairs(1, "train")}
    assert not any("IRA" in text or "401(k)" in text for text in trained)


def test_pairs_are_labelled_by_kind_and_reproducible() -> None:
    pairs = list(rephrase.rephrase_pairs(7, "validation"))
    assert pairs == list(rephrase.rephrase_pairs(7, "validation"))
    for example in pairs:
        kind = example.source.rsplit("-", 1)[1]
        assert example.label == (1 if kind == "keep" else 0)
        assert example.a != example.b
    assert {e.source.rsplit("-", 1)[1] for e in pairs} == {"keep", "sibling", "intent"}


def test_narrower_questions_and_the_new_domains_are_for_evaluation_only() -> None:
    """Training on them was measured worse (docs/cache-quality.md): they only test."""
    trained = [e for split in ("train", "validation") for e in rephrase.rephrase_pairs(3, split)]
    tested = list(rephrase.rephrase_pairs(3, "test"))
    assert not any(e.source.endswith("-narrower") for e in trained)
    assert not any(e.source.startswith(("re-tech", "re-cooking", "re-travel")) for e in trained)
    narrower = [e for e in tested if e.source.endswith("-narrower")]
    assert narrower and all(e.label == 0 for e in narrower)
    assert {e.source.split("-")[1] for e in tested} >= {"finance", "tech", "cooking", "travel"}
    qualified = rephrase._narrowed("What are the symptoms of gout?", "in children")
    assert qualified == "What are the symptoms of gout in children?"
