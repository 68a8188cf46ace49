"""Prompts for one sample: topic, difficulty, sample type and an optional extra instruction."""
from __future__ import annotations

from dataclasses import dataclass

from config.catalog import LEVELS, SAMPLE_TYPES, Topic

SYSTEM_PROMPT = (
    "You are a senior legal educator who writes training material on the law of England and Wales "
    "(and UK-wide law where it applies). You cite only real authorities: UK cases with neutral "
    "citations or law report references, and UK statutes with section numbers. You never use US "
    "law, US courts or US terminology. You reply with one JSON object and nothing else."
)


@dataclass(frozen=True)
class SampleSpec:
    """What one generated sample must be. `sample_type` is a concrete type, never `balance`."""

    topic: Topic
    difficulty: str
    sample_type: str
    instruction: str | None = None


def build_messages(spec: SampleSpec) -> list[dict[str, str]]:
    """Chat messages asking for one sample as JSON."""
    level = LEVELS[spec.difficulty]
    kind = SAMPLE_TYPES[spec.sample_type]
    headings = ", ".join(f'"{s}:"' for s in kind.sections)
    steps = " ".join(f"Step {n}: ..." for n in range(1, level.min_steps + 1))
    lines = [
        "Write one training sample for a dataset of UK legal questions and answers.",
        "",
        f"Practice area: {spec.topic.practice_area}",
        f"Topic: {spec.topic.topic}",
        f"Difficulty: {spec.difficulty} ({level.description})",
        f"Sample type: {spec.sample_type} ({kind.description} Focus: {kind.focus}.)",
        "",
        "Requirements:",
        '- "question": a realistic, self-contained question on this topic at this difficulty.',
        f'- "answer": at least {level.min_answer_words} words, organised under these headings, '
        f"each starting its own line: {headings}.",
        f'- "reasoning": at least {level.min_steps} numbered steps written as "{steps}", '
        "each step on its own line, showing how the answer follows from the law.",
        f'- "case_citation": at least {level.min_authorities} real UK authorities relied on in the '
        'answer, separated by semicolons, e.g. "Donoghue v Stevenson [1932] AC 562; '
        'Consumer Rights Act 2015, s 9".',
        "- English law terminology (claimant, not plaintiff); no disclaimers about being an AI.",
    ]
    if spec.instruction:
        lines += ["", f"Additional instruction: {spec.instruction.strip()}"]
    lines += [
        "",
        'Reply with only this JSON object: {"question": "...", "answer": "...", '
        '"reasoning": "...", "case_citation": "..."}',
    ]
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]
