"""Exact and near-duplicate questions, indexed incrementally and safely across threads.

Exact duplicates compare the *normalised* question (`storage.question_key`: Unicode-folded, case-folded, punctuation and
thousands separators dropped, whitespace collapsed), so "What is X?" and "what   is x" match.

Near duplicates compare *features* of the question:

- content words: lower case, stop words and filler ("under English law") removed, a light
  suffix-stripping stemmer ("tenant's deposits" -> "tenant deposit");
- unordered pairs of adjacent content words ("landlord keep", "deposit tenant").

Words catch a question whose clauses were reordered; pairs keep questions that merely share
vocabulary apart. MinHash (datasketch, 64 permutations) with an LSH index (16 bands of 4 rows)
proposes candidates; each candidate is confirmed by the exact Jaccard similarity of the stored
feature sets (default threshold 0.6). The LSH finds a pair at Jaccard 0.6 with probability 0.89,
at 0.7 with 0.99, and proposes a pair at 0.3 with 0.12 (the exact check then drops it); pass
more `bands` with a lower `threshold`. Measured on hand-made pairs:

===============================================================================  ==========
pair                                                                             similarity
===============================================================================  ==========
"Can a landlord keep a tenant's deposit ... under English law?" / reordered          0.67
"What is the test for dishonesty ... after Ivey v Genting?" / reordered              0.68
"... remedies ... for breach of contract?" / "... breach of trust?"                  0.56
same scenario template, only the party names changed                                 0.55
same scenario template, different names, business, town, sum and topic               0.13
===============================================================================  ==========

So reordered paraphrases are caught, templated questions with different facts are not, and a
template re-used with only the names changed sits just below the line (raise sensitivity by
lowering ``threshold``). A question identical in every fact but the legal topic scores ~0.85
and *is* reported: the topic is one word among many. Questions that only swap two roles ("is A
liable to B" / "is B liable to A") also look alike: the pairs are unordered.

Large candidate sets are screened before the exact check: each indexed question keeps the low 16
bits of its 64 MinHash values, and when a look-up's buckets propose more than `PREFILTER_FROM`
ids, one vectorised comparison keeps those agreeing in at least (threshold - 0.2) of the values
(the share of equal MinHash values estimates the Jaccard similarity), at most the 16 agreeing
most. Thousands of questions from one template share buckets by chance (0.12 probability at
similarity 0.3), so without the screen a look-up compared each of them exactly; with it, it
compares at most 16, at the price of missing a pair exactly at the threshold with probability
about 0.05%. What still grows with such a template is gathering and screening its buckets
(measured on templated questions: 15 µs a look-up at 10,000, 50 µs at 100,000, 133 at 400,000).

The LSH (`quality.lsh`) is a few lines: each signature (datasketch's public ``MinHash``) is cut
into bands and each band hashed to a bucket of a per-band dict holding one entry's slot number, or
their numbers packed in a bytearray when several share it (a slot is the entry's row of the
signature table; `_owners` maps it back to the id). Entries are tuples of ints and bytes and
buckets bytearrays, none of which the garbage collector tracks: at 100,000 questions a full
collection (every thread stopped) takes 65 ms instead of 0.3 s, and it does not grow with the
index. Nothing of datasketch but its top-level names is used, so its upgrades do not reach in;
an id's buckets are not stored but recomputed from its features when it is removed
(about 1.7 KB per question in all, measured at 100,000, plus 128 bytes of signature).
"""
from __future__ import annotations

import threading
from array import array
from dataclasses import dataclass

import numpy as np

from quality.fingerprints import content_words, feature_hashes, jaccard, minhash, question_features, terms
from quality.lsh import BandIndex
from storage.question_key import fold, key_of_folded, normalise_question

LSH_BANDS, LSH_ROWS = 16, 4  # 64 permutations; P(candidate) 0.89 at Jaccard 0.6, 0.99 at 0.7, 0.12 at 0.3
DEFAULT_THRESHOLD = 0.6
PREFILTER_FROM = 16          # candidates beyond this many are first screened by their signatures
PREFILTER_MARGIN = 0.2       # ... keeping those whose estimated similarity is within this of the threshold
EXACT_LIMIT = 16             # ... and of those, the ones agreeing most, for the exact comparison

# An indexed question: (seq: insertion order, for stable tie-breaking; exact_key: digest of the
# normalised question; hashes: its sorted, distinct 32-bit feature hashes as bytes, which
# `_features` reads; slot: its row in the signature table). A plain tuple of ints and bytes, which
# the garbage collector stops tracking (a named tuple's class would keep it tracked): a full
# collection need not visit one object per question.
_Entry = tuple[int, bytes, bytes, int]
SEQ, HASHES = 0, 2   # (the fields read by position)


def _features(hashes: bytes) -> memoryview:
    """An entry's feature hashes as ints."""
    return memoryview(hashes).cast("I")


@dataclass(frozen=True, slots=True)
class _Probe:
    """A question prepared for lookup; computed outside the lock."""

    exact_key: bytes
    hashes: array
    hash_set: frozenset[int]
    keys: list[int] | None  # its LSH band hashes; None when the question has no content words
    signature: np.ndarray | None  # the low 16 bits of each MinHash value, for the candidate screen


_exact_key = key_of_folded   # the same key the store's unique index holds


class DuplicateIndex:
    """Questions by sample id, for exact and near-duplicate look-ups; safe to share across threads.

    `add` on an id already present replaces its question (an update). Look-ups never change the
    index: adding a sample is the caller's explicit step. `bands` x `rows` MinHash permutations
    are used; more bands find borderline pairs more reliably at more memory per question.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, *, bands: int = LSH_BANDS, rows: int = LSH_ROWS) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError("threshold must be in (0, 1]")
        self.threshold = threshold
        self._num_perm = bands * rows
        self._lock = threading.RLock()
        self._seq = 0
        self._entries: dict[str, _Entry] = {}
        self._exact: dict[bytes, tuple[str, ...]] = {}
        self._lsh = BandIndex(bands, rows)
        # Each entry's signature (low 16 bits of its MinHash values), one row per slot, to screen
        # large candidate sets at once: the share of equal values estimates the Jaccard similarity.
        self._signatures = np.zeros((1024, self._num_perm), dtype=np.uint16)
        self._owners: list[str | None] = []   # slot -> id (the LSH buckets hold slots)
        self._free: list[int] = []

    def _band_keys(self, hashes: array | memoryview) -> list[int] | None:
        return self._lsh.keys(minhash(hashes, self._num_perm)) if hashes else None

    def _probe(self, question: str) -> _Probe:
        folded = fold(question)
        hashes = feature_hashes(terms(folded))
        if not hashes:
            return _Probe(_exact_key(folded), hashes, frozenset(), None, None)
        values = minhash(hashes, self._num_perm)
        signature = values.astype(np.uint16)   # the low 16 bits
        return _Probe(_exact_key(folded), hashes, frozenset(hashes), self._lsh.keys(values), signature)

    def _slot(self, sample_id: str, signature: np.ndarray | None) -> int:
        """Under the lock: a free slot, now `sample_id`'s, its row of the signature table holding `signature`."""
        if self._free:
            slot = self._free.pop()
            self._owners[slot] = sample_id
        else:
            slot = len(self._owners)
            self._owners.append(sample_id)
            if slot >= len(self._signatures):
                grown = np.zeros((2 * len(self._signatures), self._num_perm), dtype=np.uint16)
                grown[:slot] = self._signatures[:slot]
                self._signatures = grown
        self._signatures[slot] = 0 if signature is None else signature
        return slot

    def _candidates(self, probe: _Probe) -> set[str]:
        """Ids the LSH proposes for a probe, before the exact check (for diagnostics)."""
        if probe.keys is None:
            return set()
        with self._lock:
            return {self._owners[slot] for slot in self._lsh.candidates(probe.keys)}  # type: ignore[misc]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, sample_id: object) -> bool:
        with self._lock:
            return sample_id in self._entries

    def prepare(self, question: str) -> _Probe:
        """The question's fingerprint (normalised form, feature hashes, MinHash bands), for
        `check_prepared` and `add_prepared`: a caller that checks a question and then indexes it
        computes it once."""
        return self._probe(question)

    def add(self, sample_id: str, question: str) -> None:
        """Index a question under `sample_id`, replacing any question it had."""
        self.add_prepared(sample_id, self._probe(question))

    def add_prepared(self, sample_id: str, probe: _Probe) -> None:
        """`add` with the fingerprint `prepare` made."""
        with self._lock:
            self._remove_locked(sample_id)
            self._seq += 1
            slot = self._slot(sample_id, probe.signature)
            self._entries[sample_id] = (self._seq, probe.exact_key, probe.hashes.tobytes(), slot)
            self._exact[probe.exact_key] = self._exact.get(probe.exact_key, ()) + (sample_id,)
            if probe.keys is not None:
                self._lsh.insert(slot, probe.keys)

    def remove(self, sample_id: str) -> bool:
        """Forget a sample; False when it was not indexed."""
        with self._lock:
            return self._remove_locked(sample_id)

    def _remove_locked(self, sample_id: str) -> bool:
        entry = self._entries.pop(sample_id, None)
        if entry is None:
            return False
        _, exact_key, hashes, slot = entry
        ids = tuple(i for i in self._exact[exact_key] if i != sample_id)
        if ids:
            self._exact[exact_key] = ids
        else:
            del self._exact[exact_key]
        keys = self._band_keys(_features(hashes))  # the same features give the same buckets
        if keys is not None:
            self._lsh.remove(slot, keys)
        self._owners[slot] = None
        self._free.append(slot)
        return True

    def _exact_locked(self, key: bytes, exclude_id: str | None) -> str | None:
        return next((i for i in self._exact.get(key, ()) if i != exclude_id), None)

    def exact_match(self, question: str, exclude_id: str | None = None) -> str | None:
        """The first-added id whose normalised question equals this one."""
        key = _exact_key(fold(question))
        with self._lock:
            return self._exact_locked(key, exclude_id)

    def near_matches(self, question: str, exclude_id: str | None = None) -> list[tuple[str, float]]:
        """Ids whose question is at least `threshold` similar (exact Jaccard), most similar first."""
        probe = self._probe(question)
        with self._lock:
            return self._near_locked(probe, exclude_id)

    def _near_locked(self, probe: _Probe, exclude_id: str | None) -> list[tuple[str, float]]:
        if probe.keys is None:
            return []
        found = []
        gathered = self._lsh.candidate_slots(probe.keys)
        if len(gathered) > PREFILTER_FROM and probe.signature is not None:
            gathered = self._screen(gathered, probe.signature)
        owners, entries, threshold = self._owners, self._entries, self.threshold
        features, size = probe.hash_set, len(probe.hash_set)   # (not empty: it has band keys)
        for slot in set(gathered.tolist()):
            candidate = owners[slot]
            if candidate == exclude_id or candidate is None:
                continue
            seq, _, hashes, _ = entries[candidate]
            other = len(hashes) >> 2   # (4 bytes a feature)
            if (other if other < size else size) < threshold * (size if other < size else other):
                continue  # Jaccard cannot reach the threshold (nor can an empty one)
            shared = len(features.intersection(_features(hashes)))   # `jaccard`, inline: this loop is hot
            similarity = shared / (size + other - shared)
            if similarity >= threshold:
                found.append((-similarity, seq, candidate))
        return [(candidate, round(-negative, 4)) for negative, _, candidate in sorted(found)]

    def _screen(self, slots: np.ndarray, signature: np.ndarray) -> np.ndarray:
        """The candidates whose signatures agree with this one in at least (threshold - margin) of
        their values, at most `EXACT_LIMIT` of them (those agreeing most): one vectorised
        comparison instead of an exact similarity per candidate, so a question's cost stays nearly
        flat as thousands of similar templated questions pile up in its buckets. A pair at the
        threshold is dropped here with probability about 0.05% (64 values)."""
        equal = self._signatures.take(slots, axis=0) == signature
        agree = np.add.reduce(equal.view(np.uint8), axis=1, dtype=np.intp)   # (bools as bytes: a faster count)
        keep = agree >= (self.threshold - PREFILTER_MARGIN) * self._num_perm
        slots, agree = slots[keep], agree[keep]
        if len(slots) > EXACT_LIMIT:
            slots, first = np.unique(slots, return_index=True)
            agree = agree[first]
            if len(slots) > EXACT_LIMIT:   # compare exactly only those agreeing most
                slots = slots[np.argpartition(-agree, EXACT_LIMIT)[:EXACT_LIMIT]]
        return slots

    def check(self, question: str, exclude_id: str | None = None
              ) -> tuple[str | None, tuple[str, float] | None]:
        """(exact duplicate id, best near match other than that id) for a question; either may be None."""
        return self.check_prepared(self._probe(question), exclude_id)

    def check_prepared(self, probe: _Probe, exclude_id: str | None = None
                       ) -> tuple[str | None, tuple[str, float] | None]:
        """`check` with the fingerprint `prepare` made."""
        with self._lock:
            exact = self._exact_locked(probe.exact_key, exclude_id)
            near = [pair for pair in self._near_locked(probe, exclude_id) if pair[0] != exact]
        return exact, (near[0] if near else None)

    def clusters(self) -> list[list[str]]:
        """Groups of two or more ids that are exact or near duplicates (transitively), in insertion order.

        Union-find over the pairs that share an LSH bucket and pass the Jaccard threshold; pairs
        already in one group are not compared again. The lock is held only to snapshot the index.
        """
        with self._lock:
            entries = dict(self._entries)
            exact_groups = [ids for ids in self._exact.values() if len(ids) > 1]
            owners = self._owners
            buckets = [[owners[slot] for slot in bucket] for bucket in self._lsh.shared()]
        parent = {key: key for key in entries}

        def root(key: str) -> str:
            while parent[key] != key:
                parent[key] = parent[parent[key]]
                key = parent[key]
            return key

        def join(a: str, b: str) -> None:
            ra, rb = root(a), root(b)
            if ra != rb:
                first, second = (ra, rb) if entries[ra][SEQ] < entries[rb][SEQ] else (rb, ra)
                parent[second] = first

        for ids in exact_groups:
            for other in ids[1:]:
                join(ids[0], other)
        for ids in buckets:
            for n, a in enumerate(ids):
                features = set(_features(entries[a][HASHES]))
                for b in ids[n + 1:]:
                    if root(a) != root(b) and self._similar_enough(features, _features(entries[b][HASHES])):
                        join(a, b)
        groups: dict[str, list[str]] = {}
        for key in sorted(entries, key=lambda k: entries[k][SEQ]):
            groups.setdefault(root(key), []).append(key)
        return [ids for ids in groups.values() if len(ids) > 1]

    def _similar_enough(self, features: set[int] | frozenset[int], other: array | memoryview) -> bool:
        small, large = sorted((len(features), len(other)))
        return small >= self.threshold * large and jaccard(features, other) >= self.threshold


__all__ = ["DEFAULT_THRESHOLD", "DuplicateIndex", "content_words", "jaccard", "normalise_question",
           "question_features"]
