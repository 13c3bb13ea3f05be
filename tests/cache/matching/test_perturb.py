from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from proxy.cache.matching import perturb

QUESTION = "Why does the cat chase the mouse in the garden?"


@pytest.mark.parametrize(
    ("edit", "text", "expected"),
    [
        (perturb.swap_words, "Dogs chase cats.", "Cats chase dogs."),
        (perturb.change_negation, "Why can't I sleep at night?", "Why can I sleep at night?"),
        (perturb.change_negation, "It doesn't work", "It does work"),
        (perturb.symmetric_reorder, "What is the difference between cats and dogs?",
         "What is the difference between dogs and cats?"),
        (perturb.move_clause, QUESTION, "In the garden, why does the cat chase the mouse?"),
        (perturb.rephrase, "Why does the cat chase the mouse?",
         "For what reason does the cat chase the mouse?"),
    ],
)
def test_edits(edit: perturb.Edit, text: str, expected: str) -> None:
    assert edit(text, random.Random(1)) == expected


@pytest.mark.parametrize(
    ("edit", "text", "changed"),
    [
        (perturb.change_number, "Give me 5 ideas for a 10 minute talk", ("5", "10")),
        (perturb.change_unit, "Is 5 miles a long run?", ("miles",)),
        (perturb.change_sibling, "Is my cat too fat?", ("cat",)),
        (perturb.change_antonym, "Which country consumes the most chocolate?", ("most",)),
    ],
)
def test_meaning_changing_edits_replace_the_word(
    edit: perturb.Edit, text: str, changed: tuple[str, ...]
) -> None:
    out = edit(text, random.Random(3))
    assert out is not None and out != text
    assert not all(word in out.split() for word in changed)


def test_swaps_cross_a_connector_but_never_trade_coordinated_words() -> None:
    text = "She was born in Ohio and raised in Texas"
    seen = {perturb.swap_words(text, random.Random(seed)) for seed in range(40)}
    assert "She was born in Texas and raised in Ohio" in seen  # the held-out A failure
    assert perturb.swap_words("Compare cats and dogs", random.Random(1)) != "Compare dogs and cats"


def test_edits_that_do_not_apply_say_so() -> None:
    assert perturb.change_number("No digits here", random.Random(1)) is None
    assert perturb.symmetric_reorder("Nothing to reorder", random.Random(1)) is None
    assert perturb.move_clause("First sentence. In the end, two sentences.", random.Random(1)) \
        is None


def test_pairs_are_deterministic_labelled_and_sourced() -> None:
    prompts = [QUESTION, "How do I convert 5 miles to kilometers?", "Write a poem about tea."]
    first = list(perturb.perturbations(prompts, seed=7))
    assert first == list(perturb.perturbations(prompts, seed=7))
    assert {e.label for e in first} == {0, 1}
    assert all(e.a != e.b and e.source.startswith("gen-") for e in first)
    negatives = {e.source for e in first if e.label == 0}
    assert negatives <= {f"gen-{n}" for n in (*perturb.NEGATIVE_EDITS, "word")}


def test_template_pairs_swap_the_roles() -> None:
    pairs = list(perturb.template_pairs(seed=1, per_template=2, templates=[0]))
    swaps = [e for e in pairs if e.source == "tmpl-relation-swap"]
    assert len(swaps) == 2 and all(e.label == 0 for e in swaps)
    x, y = swaps[0].a.split()[1], swaps[0].a.split()[3]
    assert swaps[0].b == f"Did {y} beat {x} in the final?"
    assert {e.label for e in pairs if e.source == "tmpl-relation-keep"} == {1}


def test_generated_pairs_do_not_depend_on_the_hash_seed() -> None:
    """Set iteration order changes with PYTHONHASHSEED; the training data must not."""
    code = ("from proxy.cache.matching import perturb; "
            "print(sorted(perturb.ANTONYM_OF.items()))")
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1
