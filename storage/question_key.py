"""The one normalisation of a question for exact-duplicate detection, and its stored key.

Exact duplicates compare the *normalised* question: Unicode-folded (NFKC), case-folded, thousands
separators and punctuation dropped, whitespace collapsed, so "What is X?" and "what   is x" match.
`question_key` is its 16-byte BLAKE2b digest: the value of the `question_key` column, whose unique
index makes storing an exact duplicate twice impossible (even from two servers at once), and the
key the in-memory duplicate index (`quality.duplicates`) compares. One definition, here, below
both, so the database and the index can never disagree.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata

_THOUSANDS = re.compile(r"(?<=\d)[,.](?=\d{3}\b)")
_NON_WORD = re.compile(r"[^\w\s]+")


def fold(question: str) -> str:
    """NFKC, case-folded, thousands separators dropped (the first step of every comparison)."""
    return _THOUSANDS.sub("", unicodedata.normalize("NFKC", question).casefold())


def normalise_folded(folded: str) -> str:
    """A `fold`ed question without punctuation, in single spaces."""
    return " ".join(_NON_WORD.sub(" ", folded.replace("_", " ")).split())


def normalise_question(question: str) -> str:
    """The comparison form for exact duplicates: folded, no punctuation, single spaces."""
    return normalise_folded(fold(question))


def key_of_folded(folded: str) -> bytes:
    """The exact-duplicate key of a `fold`ed question (16 bytes)."""
    return hashlib.blake2b(normalise_folded(folded).encode(), digest_size=16).digest()


def question_key(question: object) -> bytes | None:
    """The stored key of a question; None when it has no words (punctuation only, or not text):
    such questions are not held to the unique constraint."""
    if not isinstance(question, str):
        return None
    try:
        folded = fold(question)
    except (TypeError, ValueError):
        return None
    if not normalise_folded(folded):
        return None
    try:
        return key_of_folded(folded)
    except UnicodeEncodeError:   # a lone surrogate an older version stored
        return None
