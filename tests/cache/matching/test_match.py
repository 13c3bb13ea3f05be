from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.cache.matching.match import (
    ACCEPT,
    BELOW_THRESHOLD,
    REASONS,
    Candidate,
    MatchDecision,
    MatchRule,
    MatchSettings,
)

# Near-duplicates that must never share an answer, however similar their embeddings are.
# (Mostly from the research appendix in shared/research/cache-verifier.md.)
NEGATIVES = [
    ("Flights from New York to Florida", "Flights from Florida to New York", "role_swap"),
    ("Convert 100 USD to EUR", "Convert 100 EUR to USD", "order_swap"),
    ("Did Germany beat Brazil 7-1 in 2014?", "Did Brazil beat Germany 7-1 in 2014?", "order_swap"),
    (
        "How do I migrate from MySQL to PostgreSQL?",
        "How do I migrate from PostgreSQL to MySQL?",
        None,
    ),
    ("Is a dolphin faster than a shark?", "Is a shark faster than a dolphin?", "order_swap"),
    (
        "Write a letter from a landlord to a tenant",
        "Write a letter from a tenant to a landlord",
        None,
    ),
    (
        "Is 2 GB of RAM enough for Windows 10?",
        "Is 20 GB of RAM enough for Windows 10?",
        "number_mismatch",
    ),
    (
        "How many calories are in 100 grams of rice?",
        "How many calories are in 100 ounces of rice?",
        "unit_mismatch",
    ),
    ("Set a timer for 10 minutes", "Set a timer for 10 hours", "unit_mismatch"),
    (
        "Who was the first president of the US?",
        "Who was the second president of the US?",
        "number_mismatch",
    ),
    ("What is the capital of Austria?", "What is the capital of Australia?", "entity_mismatch"),
    ("Who founded Microsoft?", "Who founded Apple?", "entity_mismatch"),
    ("How do I install Python on Windows?", "How do I install Python on macOS?", "entity_mismatch"),
    (
        "What are the side effects of ibuprofen?",
        "What are the side effects of acetaminophen?",
        None,
    ),
    ("Translate 'good morning' to French", "Translate 'good morning' to German", "entity_mismatch"),
    (
        "Explain recursion in simple terms",
        "Explain recursion in simple terms, in Spanish",
        "entity_mismatch",
    ),
    ("Sort this list in ascending order", "Sort this list in descending order", "antonym"),
    (
        "Which foods are safe for dogs to eat?",
        "Which foods are not safe for dogs to eat?",
        "negation_mismatch",
    ),
    ("How to lose weight with exercise", "How to lose weight without exercise", None),
    ("Why is my code working?", "Why is my code not working?", "negation_mismatch"),
    ("Can cats eat chocolate?", "Can dogs eat chocolate?", None),
    ("Write a haiku about winter", "Write a limerick about winter", None),
    ("How to increase the font size", "How to decrease the font size", "antonym"),
    ("Why do cats chase mice?", "Why do mice chase cats?", "order_swap"),
    (
        "Recipe for chicken soup with 3 eggs",
        "Recipe for chicken soup with 6 eggs",
        "number_mismatch",
    ),
]

# True paraphrases whose differences are only form, order or filler: must hit.
POSITIVES = [
    ("Flights from New York to Florida", "Flights to Florida from New York"),
    (
        "What are the differences between Aikido and Judo?",
        "What are the differences between Judo and Aikido?",
    ),
    ("Is a dolphin faster than a shark?", "Is a shark slower than a dolphin?"),
    ("Did Germany beat Brazil 7-1 in 2014?", "Did Brazil lose 7-1 to Germany in 2014?"),
    ("What is 15% of 80?", "What is fifteen percent of 80?"),
    ("Why is my code not working?", "Why doesn't my code work?"),
    ("Which foods are not safe for dogs?", "Which foods are unsafe for dogs?"),
    ("Which foods are not safe for dogs?", "Which foods are toxic for dogs?"),
    ("How do I reset my password?", "How can I reset my password?"),
    (
        "Write a Python function that reverses a string",
        "Write a function in Python to reverse a string",
    ),
    ("Who was the first president of the United States?", "Who was America's first president?"),
    ("Is 2 GB of RAM enough for Windows 10?", "Is 2GB RAM enough for Windows 10"),
]


@pytest.mark.parametrize(("query", "cached", "reason"), NEGATIVES)
def test_near_duplicates_are_vetoed_even_at_high_similarity(
    query: str, cached: str, reason: str | None
) -> None:
    rule = MatchRule()
    for q, c in ((query, cached), (cached, query)):
        decision = rule.decide(q, c, 0.995)
        assert not decision.accept
        assert decision.reason in REASONS and decision.reason != ACCEPT
        if reason is not None:
            assert decision.reason == reason


@pytest.mark.parametrize(("query", "cached"), POSITIVES)
def test_paraphrases_hit(query: str, cached: str) -> None:
    rule = MatchRule()
    assert rule.decide(query, cached, 0.96) == MatchDecision(True, ACCEPT, 0.96)
    assert rule.decide(cached, query, 0.96).accept


def test_below_threshold_is_rejected_before_guards() -> None:
    rule = MatchRule(MatchSettings(threshold=0.9))
    decision = rule.decide("same text", "same text", 0.89)
    assert decision == MatchDecision(False, BELOW_THRESHOLD, 0.89)
    assert rule.decide("same text", "same text", 0.9).accept


def test_guards_off_is_plain_cosine() -> None:
    rule = MatchRule(MatchSettings(guards=False))
    assert rule.decide("Who founded Microsoft?", "Who founded Apple?", 0.96).accept


def test_ordinary_word_changes_need_more_similarity() -> None:
    rule = MatchRule()
    query, cached = (
        "How can I get rid of fruit flies?",
        "How can I get rid of fruit flies in my kitchen?",
    )
    assert rule.differences(query, cached) == ("content_insertion",)
    assert not rule.decide(query, cached, 0.955).accept
    assert rule.decide(query, cached, rule.settings.insertion_threshold).accept


def test_long_texts_only_match_exactly() -> None:
    rule = MatchRule(MatchSettings(max_chars=50))
    long_a = "Please summarise the following report about quarterly revenue " * 2
    assert rule.decide(long_a, long_a + " ", 0.999).accept
    assert rule.decide(long_a, long_a + " and costs", 0.999).reason == "text_too_long"


def test_first_accepted_prefers_best_acceptable_candidate() -> None:
    rule = MatchRule()
    candidates = [
        Candidate("How can I reset my password?", 0.96),
        Candidate("How do I reset my PIN?", 0.99),
        Candidate("How do I reset my password", 0.98),
    ]
    index, decision = rule.first_accepted("How do I reset my password?", candidates) or (-1, None)
    assert index == 2 and decision is not None and decision.similarity == 0.98
    other = [Candidate("Who founded Microsoft?", 0.99)]
    assert rule.first_accepted("Who founded Apple?", other) is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("threshold", 1.5), ("insertion_threshold", 0.9), ("bogus", 1)],
)
def test_settings_reject_bad_values(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        MatchSettings(**{field: value})
