"""Turning a model's text into a validated sample.

`parse_sample` copes with what models really send: `<think>`/`<thinking>` blocks, code fences,
prose around the object, lists where strings were asked for. It then validates the content
against what the difficulty and sample type require and raises `InvalidOutput` (with the raw text)
when the sample is not good enough.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from config.catalog import LEVELS, SAMPLE_TYPES
from errors import InvalidOutput
from generation.prompts import SampleSpec

CONTENT_FIELDS = ("question", "answer", "reasoning", "case_citation")
_ALIASES = {
    "case_citations": "case_citation", "citations": "case_citation", "citation": "case_citation",
    "authorities": "case_citation", "cases": "case_citation",
    "steps": "reasoning", "reasoning_steps": "reasoning", "step_by_step_reasoning": "reasoning",
}
_THINK_BLOCK = re.compile(r"<(think|thinking)>.*?</\1>", re.S | re.I)
_THINK_CLOSE = re.compile(r"</(?:think|thinking)>", re.I)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_STEP = re.compile(r"(?i)\bstep\s+(\d+)\s*[:.)\-–]")
_DECODER = json.JSONDecoder(strict=False)


def strip_thinking(text: str) -> str:
    """The text outside think blocks (a lone closing tag ends a block whose opening was cut)."""
    text = _THINK_BLOCK.sub("", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end():]
    return text.strip()


def extract_json_object(text: str) -> dict[str, Any]:
    """The first JSON object in the text that looks like a sample; raises InvalidOutput."""
    body = strip_thinking(text)
    candidates = [m.group(1) for m in _FENCE.finditer(body)] + [body]
    first_object: dict[str, Any] | None = None
    for candidate in candidates:
        for start in (i for i, ch in enumerate(candidate) if ch == "{"):
            try:
                value, _ = _DECODER.raw_decode(candidate, start)
            except ValueError:
                continue
            if isinstance(value, dict):
                if any(_canonical(k) in CONTENT_FIELDS for k in value):
                    return value
                first_object = first_object or value
    if first_object is not None:
        return first_object
    raise InvalidOutput("no JSON object in the model output", raw_output=text)


def _canonical(key: Any) -> str:
    name = str(key).strip().lower().replace(" ", "_").replace("-", "_")
    return _ALIASES.get(name, name)


def _as_text(field: str, value: Any) -> Any:
    if isinstance(value, list):
        items = [str(v).strip() for v in value if str(v).strip()]
        if field == "reasoning":
            return "\n".join(i if _STEP.match(i) else f"Step {n}: {i}" for n, i in enumerate(items, 1))
        return "; ".join(items) if field == "case_citation" else "\n".join(items)
    if isinstance(value, dict) and field == "answer":
        return "\n\n".join(f"{k}: {v}" for k, v in value.items())
    return value


class SampleContent(BaseModel):
    """The four fields a model writes; everything else is set from the request."""

    model_config = ConfigDict(str_strip_whitespace=True)

    question: str
    answer: str
    reasoning: str
    case_citation: str

    @field_validator("question")
    @classmethod
    def _question_is_real(cls, value: str) -> str:
        if len(value.split()) < 6:
            raise ValueError("question is too short to be a real question")
        return value

    @field_validator("case_citation")
    @classmethod
    def _has_authority(cls, value: str) -> str:
        if not [a for a in re.split(r"[;\n]", value) if len(a.strip()) >= 4]:
            raise ValueError("no authority cited")
        return value


def step_numbers(reasoning: str) -> set[int]:
    return {int(n) for n in _STEP.findall(reasoning)}


_BEFORE_HEADING = re.compile(r"[\s#*>\d.\-]*\Z")  # what may precede a section heading on its line
_LABEL_COLON = re.compile(r"\s*[*_]*\s*:")  # "Rule:" or "**Rule**:"


@lru_cache(maxsize=64)
def _section_words(section: str) -> re.Pattern[str]:
    return re.compile(r"\s+".join(re.escape(w) for w in section.lower().split()))


def missing_sections(answer: str, sample_type: str) -> list[str]:
    """The sections of `sample_type` the answer has no heading or "Section:" label for."""
    kind, lowered = SAMPLE_TYPES.get(sample_type), answer.lower()
    return [section for section in (kind.sections if kind else ()) if not _has_section(lowered, section)]


def _has_section(lowered: str, section: str) -> bool:
    for m in _section_words(section).finditer(lowered):
        start, end = m.span()
        if (start and lowered[start - 1].isalnum()) or (end < len(lowered) and lowered[end].isalnum()):
            continue
        if _BEFORE_HEADING.match(lowered, lowered.rfind("\n", 0, start) + 1, start) or _LABEL_COLON.match(lowered, end):
            return True
    return False


def content_problems(content: SampleContent, difficulty: str, sample_type: str) -> list[str]:
    """What keeps valid-shaped content from meeting its difficulty and type; empty when fine."""
    level = LEVELS[difficulty]
    problems = []
    steps = step_numbers(content.reasoning)
    if not set(range(1, level.min_steps + 1)) <= steps:
        problems.append(f"reasoning needs 'Step 1:' to 'Step {level.min_steps}:' "
                        f"for {difficulty} (found {len(steps)} numbered steps)")
    words = len(content.answer.split())
    if words < level.min_answer_words:
        problems.append(f"answer has {words} words; {difficulty} needs at least {level.min_answer_words}")
    absent = missing_sections(content.answer, sample_type)
    if absent:
        problems.append(f"answer lacks the {sample_type} sections: {', '.join(absent)}")
    return problems


def parse_sample(text: str, spec: SampleSpec) -> SampleContent:
    """A validated sample from raw model output; raises InvalidOutput explaining what is wrong."""
    raw = extract_json_object(text)
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        name = _canonical(key)
        if name in CONTENT_FIELDS and name not in fields:
            fields[name] = _as_text(name, value)
    try:
        content = SampleContent.model_validate(fields)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'sample'}: {e['msg']}" for e in exc.errors())
        raise InvalidOutput(f"sample fails the schema: {detail}", raw_output=text) from None
    problems = content_problems(content, spec.difficulty, spec.sample_type)
    if problems:
        raise InvalidOutput("; ".join(problems), raw_output=text)
    return content
