"""The learned verifier: shipped weights, features, and decisions on real MiniLM outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from proxy.cache.embedder import OnnxEncoder
from proxy.cache.matching import classifier
from proxy.cache.matching.features import FEATURE_NAMES, featurize, pair_features
from proxy.cache.matching.match import (
    ACCEPT,
    BELOW_THRESHOLD,
    VERIFIER_REJECT,
    Candidate,
    MatchRule,
    MatchSettings,
)


@pytest.fixture(scope="module")
def encoder() -> OnnxEncoder:
    return OnnxEncoder(threads=1)


def verdict(encoder: OnnxEncoder, query: str, cached: str, rule: MatchRule | None = None) -> str:
    (vq, vc), (tq, tc) = encoder.encode_with_tokens([query, cached])
    return (rule or MatchRule()).decide(query, cached, float(vq @ vc), tq, tc).reason


def test_shipped_weights_match_the_features_and_say_what_they_were_trained_on() -> None:
    document = json.loads(classifier.DEFAULT_PATH.read_text())
    assert document["features"] == list(FEATURE_NAMES)
    assert len(document["coef"]) == len(FEATURE_NAMES)
    assert 0.5 <= document["threshold"] < 1.0
    assert "no QQP" in document["trained_on"] and "prompts" in document["trained_on"]
    assert classifier.DEFAULT_PATH.stat().st_size < 16_000
    model = classifier.load()
    assert model.threshold == document["threshold"]


def test_weights_for_other_features_are_refused(tmp_path: pytest.TempPathFactory) -> None:
    document = json.loads(classifier.DEFAULT_PATH.read_text())
    document["features"] = document["features"][:-1]
    with pytest.raises(classifier.ClassifierFileError, match="weights are for features"):
        classifier.PairClassifier.from_dict(document)


def test_alignment_sees_a_swap_that_the_bag_of_words_does_not(encoder: OnnxEncoder) -> None:
    a, b = "Dogs chase cats in the garden.", "Cats chase dogs in the garden."
    cosines, rows = featurize([(a, a), (a, b)], encoder)
    same, swapped = (dict(zip(FEATURE_NAMES, row, strict=True)) for row in rows)
    assert same["order_concordance"] == 1.0 and same["align_mean"] == pytest.approx(1.0, abs=1e-3)
    assert swapped["order_concordance"] < 1.0
    assert swapped["neighbours_kept"] < same["neighbours_kept"]
    assert cosines[1] > 0.9  # plain cosine barely notices


# Word swaps and role changes the hand-written guards accept (false hits before the verifier).
SWAPS = [
    ("The film was directed by Nolan and produced by Thomas.",
     "The film was produced by Nolan and directed by Thomas."),
    ("She was born in Ohio and raised in Texas.", "She was born in Texas and raised in Ohio."),
    ("What should I feed my dog after surgery?", "What should my dog feed me after surgery?"),
]


@pytest.mark.parametrize(("query", "cached"), SWAPS)
def test_swaps_the_guards_let_through_are_rejected(
    encoder: OnnxEncoder, query: str, cached: str
) -> None:
    (vq, vc), _ = encoder.encode_with_tokens([query, cached])
    guards = MatchRule(MatchSettings(verifier=False))
    assert guards.decide(query, cached, float(vq @ vc)).accept  # the old rule's false hit
    assert verdict(encoder, query, cached) == VERIFIER_REJECT


@pytest.mark.parametrize(
    ("query", "cached"),
    [
        ("What are the health benefits of green tea?",
         "what are the health benefits of green tea"),
        ("What are the health benefits of green tea?",
         "What are the health benifits of green tea?"),
        ("Why is the sky blue? Thanks!", "Why is the sky blue?"),
    ],
)
def test_meaning_keeping_edits_are_accepted(encoder: OnnxEncoder, query: str, cached: str) -> None:
    assert verdict(encoder, query, cached) == ACCEPT


def test_the_candidate_floor_follows_the_threshold(
    encoder: OnnxEncoder,
) -> None:
    rule = MatchRule()
    assert rule.candidate_threshold == pytest.approx(0.95)  # default: no margin, see docs
    wider = MatchRule(MatchSettings(candidate_margin=0.15))
    assert wider.candidate_threshold == pytest.approx(0.80)
    tightened = MatchRule(MatchSettings(threshold=0.9, candidate_margin=0.15))
    assert tightened.candidate_threshold == pytest.approx(0.75)
    (vq,), (tq,) = encoder.encode_with_tokens(["How do I bake bread?"])
    decision = rule.decide("How do I bake bread?", "Best pizza in Naples", 0.5, tq, tq)
    assert decision.reason == BELOW_THRESHOLD and decision.score is None
    assert vq.shape == (384,)


def test_without_token_outputs_the_guards_decide() -> None:
    rule = MatchRule()
    assert rule.decide("Who founded Apple?", "Who founded Microsoft?", 0.99).reason == (
        "entity_mismatch"
    )
    assert rule.decide("How do I reset my password?", "how do i reset my password", 0.90).reason \
        == BELOW_THRESHOLD


def test_first_accepted_uses_each_candidates_tokens(encoder: OnnxEncoder) -> None:
    query = "She was born in Ohio and raised in Texas."
    texts = ["She was born in Texas and raised in Ohio.",
             "she was born in ohio and raised in texas"]
    vectors, tokens = encoder.encode_with_tokens([query, *texts])
    candidates = [Candidate(t, float(vectors[0] @ v), k)
                  for t, v, k in zip(texts, vectors[1:], tokens[1:], strict=True)]
    found = MatchRule().first_accepted(query, candidates, tokens[0])
    assert found is not None and found[0] == 1 and found[1].score is not None


def test_pair_features_are_finite_for_empty_token_lists() -> None:
    empty = np.zeros((0, 384), dtype=np.float32)
    row = pair_features("", "x", 0.0, empty, empty)
    assert row.shape == (len(FEATURE_NAMES),) and np.isfinite(row).all()


def test_a_voice_flip_is_refused_even_when_the_model_would_serve_it(
        encoder: OnnxEncoder) -> None:
    """The encyclopedia set's one false hit (tests/data/encyclopedia_swaps.jsonl): the model
    scored it 0.999, so the verifier vetoes voice flips before asking the model."""
    active = "The company acquired its largest competitor in 2011."
    passive = "The company was acquired by its largest competitor in 2011."
    assert verdict(encoder, passive, active) == "voice_flip"
    assert verdict(encoder, active, passive) == "voice_flip"
    kept = "Its largest competitor was acquired by the company in 2011."
    assert verdict(encoder, kept, active) != "voice_flip"


def test_coordinated_words_traded_are_served(encoder: OnnxEncoder) -> None:
    """The held-out template 'What is the difference between {x} and {y}?' with the names
    traded: the model scored all 30 held-out pairs 0.65-0.71 (its order features see a swap)."""
    a = "What is the difference between Java and PostgreSQL?"
    b = "What is the difference between PostgreSQL and Java?"
    assert verdict(encoder, a, b) == ACCEPT
    assert verdict(encoder, a, "What is the difference between Java and Java?") != ACCEPT

