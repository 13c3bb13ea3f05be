"""What differs between two parsed texts (proxy/cache/matching/verifier.py): each critical kind
of difference gets its stable reason, and rewordings that keep the meaning get none."""

from __future__ import annotations

import pytest

from proxy.cache.matching import verifier as v
from proxy.cache.matching.guards import parse


def differences(a: str, b: str) -> tuple[str, ...]:
    return v.differences(parse(a), parse(b))


LONG_A = ("rewrite this email: keep it formal and short, mention the meeting on tuesday with "
          "the sales team about budget planning")
LONG_B = LONG_A.replace("formal", "friendly")


@pytest.mark.parametrize(("a", "b", "reasons"), [
    ("What is 2+2?", "What is 2+3?", (v.NUMBER,)),
    ("How far is 5 km", "How far is 5 miles", (v.UNIT,)),
    ("What is the capital of France", "What is the capital of Spain", (v.ENTITY,)),
    ("Is this mushroom safe", "Is this mushroom not safe", (v.NEGATION,)),
    ("sort the list ascending", "sort the list descending", (v.ANTONYM, v.WORD_SWAP)),
    ("flights from Paris to Rome", "flights to Paris from Rome", (v.ROLE_SWAP,)),
    ("Did Germany beat Brazil", "Did Brazil beat Germany", (v.ORDER_SWAP,)),
    ("do cats chase mice", "do mice chase cats", (v.ORDER_SWAP,)),
    ("how to bake bread", "how to bake cake", (v.WORD_SWAP,)),
    ("how to bake bread slowly", "how to paint walls slowly", (v.SUBSTITUTION,)),
    ("how to bake bread", "how to bake bread and slice it", (v.INSERTION,)),
    (LONG_A, LONG_B, (v.LONG_TEXT_CHANGE,)),
])
def test_critical_differences_are_named(a: str, b: str, reasons: tuple[str, ...]) -> None:
    assert differences(a, b) == reasons
    assert differences(b, a) == reasons  # the judgement does not depend on which is cached


@pytest.mark.parametrize(("a", "b"), [
    ("how do I install numpy", "how to install numpy"),  # function words
    ("best way to learn python", "how to learn python"),  # filler
    ("what is a huge dog", "what is a big dog"),  # synonyms
    ("how do I walk faster", "how do I walk fast"),  # word forms
    ("Is this mushroom not safe", "Is this mushroom toxic"),  # two flips cancel
    ("is it unsafe to swim", "is it not safe to swim"),  # a negative prefix balances "not"
    ("I do not like tea", "I dislike tea"),
    ("flights from Paris to Rome", "flights to Rome from Paris"),  # roles travel with words
    ("compare Paris and Rome", "compare Rome and Paris"),  # symmetric connector
    ("Is a cheetah faster than a horse", "Is a horse slower than a cheetah"),  # converse
    ("who sent the letter to Ann", "who received the letter from Ann"),
    ("Twenty five apples", "25 apples"),
    ("", ""),
])
def test_rewordings_that_keep_the_meaning_pass(a: str, b: str) -> None:
    assert differences(a, b) == ()
    assert differences(b, a) == ()


def test_a_text_has_no_difference_with_itself() -> None:
    for text in ("What is 2+2?", LONG_A, "東京の天気", "Did Germany beat Brazil"):
        assert differences(text, text) == ()


def test_several_differences_are_all_reported_in_a_fixed_order() -> None:
    found = differences("Is it safe to drive 5 km in France", "Is it not safe to drive 6 mi in "
                        "Spain")
    assert found[:4] == (v.NUMBER, v.UNIT, v.ENTITY, v.NEGATION)


def test_reasons_are_a_small_fixed_set_of_label_values() -> None:
    reasons = {v.NUMBER, v.UNIT, v.ENTITY, v.NEGATION, v.ANTONYM, v.ROLE_SWAP, v.ORDER_SWAP,
               v.SUBSTITUTION, v.WORD_SWAP, v.INSERTION, v.LONG_TEXT_CHANGE}
    assert len(reasons) == 11
    assert all(r.isidentifier() and r == r.lower() for r in reasons)


@pytest.mark.parametrize(("passive", "active"), [
    ("The company was acquired by its largest competitor in 2011.",
     "The company acquired its largest competitor in 2011."),
    ("The striker was fouled by the goalkeeper.", "The striker fouled the goalkeeper."),
])
def test_a_voice_flip_that_keeps_the_words_in_place_is_named(passive: str, active: str) -> None:
    assert v.VOICE_FLIP in differences(passive, active)
    assert v.VOICE_FLIP in differences(active, passive)


@pytest.mark.parametrize(("a", "b"), [
    ("In 1805 the British fleet defeated the French navy off Cape Trafalgar.",
     "In 1805 the French navy was defeated by the British fleet off Cape Trafalgar."),
    ("What is the meaning of surgical strike?", "What is meant by surgical strikes?"),
    ("Why don't men get attached through sex?", "Why don't men get attached by sex?"),
])
def test_a_passive_that_moves_the_arguments_is_no_voice_flip(a: str, b: str) -> None:
    assert v.VOICE_FLIP not in differences(a, b)
    assert v.VOICE_FLIP not in differences(b, a)


@pytest.mark.parametrize(("a", "b", "reordered"), [
    ("What is the difference between Java and Rust?",
     "What is the difference between Rust and Java?", True),
    ("Should I learn French or German?", "Should I learn German or French?", True),
    ("Python vs Java: which is better?", "Java vs Python: which is better?", True),
    ("Was she born in Ohio and raised in Texas?", "Was she born in Texas and raised in Ohio?",
     False),  # the words around "and" are not the ones traded
    ("Replace butter with oil", "Replace oil with butter", False),  # "with" is no coordinator
    ("Did Germany beat Brazil?", "Did Brazil beat Germany?", False),
    ("What is the difference between Java and Rust?",
     "What is the difference between Rust and Go?", False),
])
def test_coordinated_words_traded_are_recognised(a: str, b: str, reordered: bool) -> None:
    assert v.coordination_reordered(parse(a), parse(b)) is reordered
    assert v.coordination_reordered(parse(b), parse(a)) is reordered
