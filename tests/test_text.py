"""Shared text helpers by hand: the two tokenizers, the stemmer's two settings, n-grams, distinct-n."""

from __future__ import annotations

import pytest

from tether.text import STEM_SUFFIXES, distinct_n, ngrams, stem, tokens, words


def test_words_are_lowercased_ascii_runs():
    assert words("The MP3 player's café, 2nd_floor!") == ["the", "mp3", "player", "s", "caf", "2nd", "floor"]
    # Letters only, three or more: digits split a word, short fragments go.
    assert words("The MP3 player's café, 2nd_floor!", letters_only=True, min_length=3) == [
        "the",
        "player",
        "caf",
        "floor",
    ]


def test_tokens_keep_punctuation_and_any_script():
    assert tokens("Yes. Café, 2nd_floor!") == ["yes", ".", "café", ",", "2nd_floor", "!"]


@pytest.mark.parametrize(
    ("word", "default", "loose"),
    [
        ("flooded", "flood", "flood"),
        ("farmers", "farmer", "farmer"),
        ("running", "runn", "runn"),
        ("asked", "asked", "ask"),  # 3 letters left: too short by default
        ("uses", "uses", "use"),
        ("goes", "goes", "goe"),  # "es" leaves 2, then "s" leaves 3
        ("safely", "safely", "safe"),  # "-ly" only where asked for
        ("is", "is", "is"),
    ],
)
def test_stem_settings(word, default, loose):
    assert stem(word) == default
    assert stem(word, min_stem=3, suffixes=(*STEM_SUFFIXES, "ly")) == loose


def test_ngrams():
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a", "b", "c"], 1) == [("a",), ("b",), ("c",)]
    assert ngrams(["a"], 2) == []


def test_distinct_n_by_hand():
    # "a b a b a b": bigrams ab, ba, ab, ba, ab -> 2 distinct of 5.
    assert distinct_n([["a", "b", "a", "b", "a", "b"]], 2) == pytest.approx(2 / 5)
    # Pooled: (x y) in both lists counts once; no bigram spans the two lists.
    assert distinct_n([["x", "y"], ["x", "y", "z"]], 2) == pytest.approx(2 / 3)
    assert distinct_n([["x", "y"], ["x", "y", "z"]], 3) == 1.0
    assert distinct_n([["hi"], []], 2) == 0.0  # no bigrams: the default
    assert distinct_n([["hi"]], 2, empty=1.0) == 1.0  # "nothing repeats" for a per-text measure
    assert distinct_n(iter([["a", "a"]]), 1) == pytest.approx(1 / 2)  # any iterable of lists
    with pytest.raises(ValueError):
        distinct_n([["a"]], 0)
