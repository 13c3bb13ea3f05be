"""The match guards' word lists (proxy/cache/matching/lexicon.py) are data, so these tests check
that the data can work: guards.parse lower-cases every word before a lookup and classifies in a
fixed order (number, unit, negation, role, stop word, then name/content), so an entry that is
upper-case, or shadowed by an earlier list, is silently dead."""

from __future__ import annotations

import pytest

from proxy.cache.matching import lexicon as lx

WORD_SETS = {
    "STOPWORDS": lx.STOPWORDS, "FILLER": lx.FILLER, "NEGATORS": lx.NEGATORS,
    "IMPLICIT_NEGATIVE": lx.IMPLICIT_NEGATIVE, "CONVERSE_WORDS": lx.CONVERSE_WORDS,
    "ROLE_MARKERS": lx.ROLE_MARKERS, "SYMMETRIC_CONNECTORS": lx.SYMMETRIC_CONNECTORS,
    "UNITS": lx.UNITS, "KNOWN_ENTITIES": lx.KNOWN_ENTITIES,
}


@pytest.mark.parametrize("name", sorted(WORD_SETS))
def test_word_lists_are_lower_case_and_not_empty(name: str) -> None:
    words = WORD_SETS[name]
    assert words
    assert all(w == w.lower() and w.strip() == w and w for w in words)


def test_lookup_tables_are_lower_case() -> None:
    for table in (lx.SYNONYMS, lx.NUMBER_WORDS, lx.ORDINAL_WORDS):
        assert all(k == k.lower() for k in table)
    assert all(v == v.lower() for v in lx.SYNONYMS.values())


def test_antonyms_are_pairs_of_two_different_words() -> None:
    assert lx.ANTONYMS
    assert all(len(pair) == 2 for pair in lx.ANTONYMS)
    assert frozenset({"ascending", "descending"}) in lx.ANTONYMS


def test_converse_words_are_antonyms() -> None:
    in_pairs = {w for pair in lx.ANTONYMS for w in pair}
    assert lx.CONVERSE_WORDS <= in_pairs


def test_synonyms_normalise_in_one_step() -> None:
    """parse applies SYNONYMS once: a canonical form that is itself mapped would leave two
    spellings of one word unequal."""
    chained = {k: v for k, v in lx.SYNONYMS.items() if lx.SYNONYMS.get(v, v) != v}
    assert chained == {}


@pytest.mark.parametrize(("earlier", "later"), [
    ("NEGATORS", "STOPWORDS"), ("ROLE_MARKERS", "STOPWORDS"), ("NEGATORS", "ROLE_MARKERS"),
    ("UNITS", "NEGATORS"), ("UNITS", "ROLE_MARKERS"),
])
def test_classification_lists_do_not_overlap(earlier: str, later: str) -> None:
    assert WORD_SETS[earlier] & WORD_SETS[later] == frozenset()


def test_known_entities_are_not_stop_words() -> None:
    assert lx.KNOWN_ENTITIES & lx.STOPWORDS == frozenset()


def test_number_words() -> None:
    assert lx.NUMBER_WORDS["twenty"] == 20 and lx.NUMBER_WORDS["million"] == 10**6
    assert lx.ORDINAL_WORDS["third"] == 3
    spelled = {w: n for w, n in lx.NUMBER_WORDS.items() if w not in {"half", "dozen"}}
    assert len(set(spelled.values())) == len(spelled)  # one word per number
