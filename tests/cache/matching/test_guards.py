"""Parsing texts for the match guards (proxy/cache/matching/guards.py): every word gets a
canonical form and a kind, so that variants of one question compare equal and the words that
change an answer (numbers, units, names, negation, roles) are recognised as such."""

from __future__ import annotations

import pytest

from proxy.cache.matching import verifier
from proxy.cache.matching.guards import Parsed, parse, stem


def kinds(text: str) -> list[tuple[str, str]]:
    return [(t.norm, t.kind) for t in parse(text).tokens]


@pytest.mark.parametrize(("word", "stemmed"), [
    ("cities", "city"), ("classes", "class"), ("played", "play"), ("boxes", "box"),
    ("quickly", "quick"), ("bus", "bus"), ("analysis", "analysis"), ("go", "go"),
    ("cat", "cat"), ("42", "42"), ("", ""),
])
def test_stem(word: str, stemmed: str) -> None:
    assert stem(word) == stemmed


@pytest.mark.parametrize(("a", "b"), [
    ("walk", "walks"), ("walk", "walked"), ("walk", "walking"), ("city", "cities"),
    ("install", "installs"), ("class", "classes"),
])
def test_word_forms_share_a_stem(a: str, b: str) -> None:
    assert stem(a) == stem(b)


@pytest.mark.parametrize(("a", "b"), [
    ("twenty five apples", "25 apples"),
    ("one thousand two hundred", "1,200"),
    ("one hundred", "100"),
    ("a dozen eggs", "a 12 eggs"),
    ("5 kilometers", "5 km"),
    ("10 seconds", "10 sec"),
    ("the United States", "the USA"),
    ("the U.K. economy", "the UK economy"),
    ("visual studio code", "VS Code"),
    ("It's HOT", "it is hot"),
    ("Ｈｏｗ ｔｏ ｓｗｉｍ", "how to swim"),
])
def test_variants_of_one_text_parse_the_same(a: str, b: str) -> None:
    assert parse(a).key == parse(b).key


@pytest.mark.parametrize(("text", "expected"), [
    ("I can't swim", [("i", "stop"), ("can", "stop"), ("not", "neg"), ("swim", "content")]),
    ("I won't", [("i", "stop"), ("will", "stop"), ("not", "neg")]),
    ("doesn't work", [("does", "stop"), ("not", "neg"), ("work", "content")]),
    ("from Paris to Rome", [("from", "role"), ("paris", "entity"), ("to", "role"),
                            ("rome", "entity")]),
    ("$5 or 5%", [("usd", "unit"), ("#5", "num"), ("or", "stop"), ("#5", "num"), ("%", "unit")]),
    ("the third one", [("the", "stop"), ("#ord3", "num"), ("#1", "num")]),
    ("3.5 kg", [("#3.5", "num"), ("kg", "unit")]),
])
def test_word_kinds(text: str, expected: list[tuple[str, str]]) -> None:
    assert kinds(text) == expected


def test_capitals_mark_names_except_at_a_sentence_start_or_in_title_case() -> None:
    assert ("zorblat", "entity") in kinds("I met Zorblat yesterday")
    assert ("zorblat", "content") in kinds("Zorblat is here")  # sentence start
    assert ("zorblat", "entity") in kinds("Hello. Then Zorblat came")
    assert ("zorblat", "content") in kinds("How Do I Use The Zorblat")  # Title Case question


def test_model_numbers_are_split_into_name_and_number() -> None:
    assert kinds("gpt4 vs gpt5") == [("gpt", "content"), ("#4", "num"), ("vs", "role"),
                                     ("gpt", "content"), ("#5", "num")]


def test_punctuation_is_kept_as_tokens_but_not_in_the_key() -> None:
    parsed = parse("apples, pears / plums")
    assert [t.kind for t in parsed.tokens].count("punct") == 2
    assert parsed.stems == ("appl", "pear", "plum")
    assert parsed.key == "appl pear plum"


def test_empty_and_symbol_only_text() -> None:
    assert parse("") == Parsed((), "")
    assert parse("?!…").key == ""


def test_cjk_text_is_content() -> None:
    assert all(kind == "content" for _, kind in kinds("東京の天気 今日"))
    assert parse("東京の天気").key != parse("大阪の天気").key


def test_parse_is_cached() -> None:
    assert parse("the same question") is parse("the same question")


def test_the_go_language_is_a_name() -> None:
    assert ("go", "entity") in kinds("install golang on ubuntu")


def test_digit_and_spelled_ordinals_parse_the_same() -> None:
    assert parse("who came 3rd").key == parse("who came third").key


def test_half_is_not_zero() -> None:
    def numbers(text: str) -> list[str]:
        return [t.norm for t in parse(text).tokens if t.kind == "num"]

    assert numbers("half a kilo") != numbers("zero kilo")


def test_golang_is_a_name_and_go_stays_a_verb() -> None:
    assert ("go", "stop") in kinds("how do I go home")
    assert "entity_mismatch" in verifier.differences(
        parse("write hello world in golang"), parse("write hello world in rust"))
