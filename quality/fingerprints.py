"""A question's fingerprint for the near-duplicate index (`quality.duplicates`): its content
words and adjacent pairs as 32-bit feature hashes, and their MinHash values (datasketch's public
`MinHash`), plus the exact Jaccard similarity of two feature sets."""
from __future__ import annotations

import re
import threading
import zlib
from array import array
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
from datasketch import MinHash

from storage.question_key import fold

STOP_WORDS = frozenset("""
a an the of to in on for by with at from into onto upon under over about as and or but if then
than so that this these those there their they them it its is are was were be been being am do
does did done doing have has had having can could may might must shall should will would what
which who whom whose when where why how whether any some such very just also only own same other
more most i me my we our you your he him his she her us s english england wales welsh uk british
""".split())

_APOSTROPHE_S = re.compile(r"['’]s\b")
_TOKEN = re.compile(r"[a-z0-9]+")
_SUFFIXES = (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""))


@lru_cache(maxsize=1 << 16)
def _term(word: str) -> tuple[str, int] | None:
    """(stem, its 32-bit hash) for a content word; None for a stop word. Cached: vocabularies are small."""
    if word in STOP_WORDS:
        return None
    if len(word) > 4 and not word.endswith("ss"):
        for suffix, replacement in _SUFFIXES:
            if word.endswith(suffix):
                word = word[: -len(suffix)] + replacement
                break
    return word, zlib.crc32(word.encode())


def terms(folded: str) -> list[tuple[str, int]]:
    """(stem, hash) of each content word of a folded question (`storage.question_key.fold`), in order."""
    return [t for t in map(_term, _TOKEN.findall(_APOSTROPHE_S.sub("", folded))) if t is not None]


def content_words(question: str) -> list[str]:
    """The question's stemmed content words, in order."""
    return [word for word, _ in terms(fold(question))]


def question_features(question: str) -> set[str]:
    """Content words plus unordered pairs of adjacent content words (what the index compares)."""
    words = content_words(question)
    features = set(words)
    features.update(f"{a} {b}" if a <= b else f"{b} {a}" for a, b in zip(words, words[1:]))
    return features


def feature_hashes(terms: list[tuple[str, int]]) -> array:
    """`question_features` as sorted distinct 32-bit hashes; a pair's hash mixes its words' hashes."""
    hashes = {h for _, h in terms}
    for (_, first), (_, second) in zip(terms, terms[1:]):
        low, high = (first, second) if first <= second else (second, first)
        hashes.add((low * 0x9E3779B1 + high * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF)
    return array("I", sorted(hashes))


@lru_cache(maxsize=8)
def _permutations(num_perm: int):  # noqa: ANN202 - datasketch's array type
    return MinHash(num_perm=num_perm, seed=1).permutations


_sketches = threading.local()   # one MinHash per thread and size, cleared for each question


def minhash(hashes: array, num_perm: int) -> np.ndarray:
    """The MinHash values of these feature hashes. A sketch is reused (`clear`), not built: building
    one costs more than hashing a question's features into it."""
    by_size = _sketches.__dict__.setdefault("by_size", {})
    sketch = by_size.get(num_perm)
    if sketch is None:
        sketch = by_size[num_perm] = MinHash(num_perm=num_perm, hashfunc=int, permutations=_permutations(num_perm),
                                             scheme="affine32")
    else:
        sketch.clear()
    sketch.update_batch(hashes)
    return sketch.hashvalues   # a new array each time: `clear` and `update_batch` replace it, never change it


def jaccard(a: Iterable[int], b: array | memoryview) -> float:
    """Exact Jaccard similarity of two feature-hash collections."""
    first = a if isinstance(a, (set, frozenset)) else set(a)
    if not first or not b:
        return 0.0
    shared = len(first.intersection(b))
    return shared / (len(first) + len(b) - shared)
