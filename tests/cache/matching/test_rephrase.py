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
