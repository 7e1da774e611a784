"""Text helpers shared by judges, labelers, the CAI loop and the training monitors: word
tokenizers, one suffix stemmer, n-grams and distinct-n, and English function words.

Two tokenizers, because callers count different things:

- :func:`words` — lower-cased ASCII words (``[a-z0-9]`` runs; ``letters_only`` drops digits): what
  the refusal judge and the AI labeler compare between two texts.
- :func:`tokens` — lower-cased words in any script plus each punctuation mark: what sample
  diversity counts, so "Yes." and "yes" share a word but not the bigram "yes .".

The CAI loop's degeneracy check counts whitespace-separated chunks (``str.split``) instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"[a-z0-9]+")
_LETTERS = re.compile(r"[a-z]+")
_TOKEN = re.compile(r"\w+|[^\w\s]")

STEM_SUFFIXES: tuple[str, ...] = ("ing", "ed", "es", "s")
"""The endings :func:`stem` strips by default, tried in this order ("es" before "s")."""


def words(text: str, *, letters_only: bool = False, min_length: int = 1) -> list[str]:
    """Lower-cased ASCII words of ``text``, in order: runs of ``a-z`` and ``0-9`` (``letters_only``:
    runs of ``a-z``, so "mp3" gives "mp"), keeping those at least ``min_length`` characters long."""
    found = (_LETTERS if letters_only else _WORD).findall(text.lower())
    return [w for w in found if len(w) >= min_length] if min_length > 1 else found


def tokens(text: str) -> list[str]:
    """Lower-cased words (``\\w`` runs, any script) and single punctuation marks, in order."""
    return _TOKEN.findall(text.lower())


def stem(word: str, *, min_stem: int = 4, suffixes: Sequence[str] = STEM_SUFFIXES) -> str:
    """A crude suffix stripper so "returns"/"returned"/"return" match; apply it alike to both texts
    being compared. Strips the first of ``suffixes`` that ``word`` ends with and that leaves at
    least ``min_stem`` characters; otherwise returns ``word`` unchanged."""
    for suffix in suffixes:
        if word.endswith(suffix) and len(word) - len(suffix) >= min_stem:
            return word[: -len(suffix)]
    return word


def ngrams(seq: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The ``n``-grams of ``seq`` in order (none when it is shorter than ``n``)."""
    return list(zip(*(seq[i:] for i in range(n)), strict=False))


def distinct_n(token_lists: Iterable[Sequence[str]], n: int, *, empty: float = 0.0) -> float:
    """Unique n-grams over all n-grams, pooled over ``token_lists`` (Li et al. 2016); ``empty``
    when there are no n-grams at all.

    Pass one list to measure one text's repetition, or a batch's lists to measure its diversity
    (1.0: no n-gram repeats anywhere; a collapsed policy that answers every prompt alike drives it
    towards ``1 / len(batch)``). N-grams never span two lists.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    grams = [gram for seq in token_lists for gram in ngrams(seq, n)]
    return len(set(grams)) / len(grams) if grams else empty


# English function words: they say nothing about what a text is about. Judges and labelers add
# their own domain words on top (request verbs, summary boilerplate).
FUNCTION_WORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "may",
        "me",
        "might",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "one",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
    ]
)
