"""Which (topic, difficulty, sample type) the next batch slot asks for.

Greedy balancing: the next topic is the least used one, ties broken by an order that interleaves
the practice areas (so the first eleven slots cover all eleven areas); its difficulty and sample
type are the least used for that topic, ties broken by the least used overall and then by a
per-topic offset. Any prefix of a batch is therefore spread across areas, difficulties and (for
`balance`) sample types. Counts include slots in flight, and can be seeded from stored samples
so that a resumed batch carries on the same way.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from config.catalog import DIFFICULTIES, SAMPLE_TYPES, TOPICS, Topic


@dataclass(frozen=True)
class Slot:
    topic: Topic
    difficulty: str
    sample_type: str


def interleave_by_area(topics: Iterable[Topic]) -> list[Topic]:
    """Round-robin over practice areas: first topic of each area, then the second of each, ..."""
    by_area: dict[str, list[Topic]] = {}
    for topic in topics:
        by_area.setdefault(topic.practice_area, []).append(topic)
    ordered: list[Topic] = []
    depth = max((len(v) for v in by_area.values()), default=0)
    for i in range(depth):
        ordered.extend(group[i] for group in by_area.values() if i < len(group))
    return ordered


class Rotation:
    def __init__(self, topics: Iterable[Topic] = TOPICS, difficulties: Iterable[str] = DIFFICULTIES,
                 sample_types: Iterable[str] = tuple(SAMPLE_TYPES)):
        self.topics = interleave_by_area(topics)
        self.difficulties = list(difficulties)
        self.sample_types = list(sample_types)
        self._order = {t.label: i for i, t in enumerate(self.topics)}
        self._topic_count: Counter[str] = Counter()
        self._difficulty: Counter[tuple[str, str]] = Counter()
        self._type: Counter[tuple[str, str]] = Counter()
        self._difficulty_total: Counter[str] = Counter()
        self._type_total: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _least(self, options: list[str], per_topic: Counter, total: Counter, label: str) -> str:
        offset = self._order[label]
        return min(options, key=lambda o: (per_topic[(label, o)], total[o],
                                           (options.index(o) - offset) % len(options)))

    def next(self, exclude: set[str] = frozenset()) -> Slot | None:
        """The next slot, counted as taken; None when every topic is excluded."""
        with self._lock:
            candidates = [t for t in self.topics if t.label not in exclude]
            if not candidates:
                return None
            topic = min(candidates, key=lambda t: (self._topic_count[t.label], self._order[t.label]))
            label = topic.label
            difficulty = self._least(self.difficulties, self._difficulty, self._difficulty_total, label)
            sample_type = self._least(self.sample_types, self._type, self._type_total, label)
            slot = Slot(topic, difficulty, sample_type)
            self._count(slot, +1)
            return slot

    def release(self, slot: Slot) -> None:
        """A slot that produced no sample: it no longer counts."""
        with self._lock:
            self._count(slot, -1)

    def seed(self, slots: Iterable[Slot]) -> None:
        """Count slots already done (e.g. samples a resumed batch stored before)."""
        with self._lock:
            for slot in slots:
                if slot.topic.label in self._order:
                    self._count(slot, +1)

    def _count(self, slot: Slot, step: int) -> None:
        label = slot.topic.label
        self._topic_count[label] += step
        self._difficulty[(label, slot.difficulty)] += step
        self._type[(label, slot.sample_type)] += step
        self._difficulty_total[slot.difficulty] += step
        self._type_total[slot.sample_type] += step
