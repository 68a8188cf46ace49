"""Prompts and parsing: what models really send, and what a valid sample must contain."""
from __future__ import annotations

import json
import random

import pytest

from config.catalog import DIFFICULTIES, LEVELS, SAMPLE_TYPES, TOPICS, find_topic
from errors import InvalidOutput
from generation.prompts import SampleSpec, build_messages
from generation.parsing import extract_json_object, parse_sample, strip_thinking
from simulator.content import make_sample

SPEC = SampleSpec(find_topic("Contract Law - Misrepresentation"), "intermediate", "case_analysis")


def good_sample(spec: SampleSpec = SPEC) -> dict:
    return make_sample(build_messages(spec)[1]["content"], random.Random(5))


def test_prompts_cover_every_topic_difficulty_and_type():
    assert len(TOPICS) == 42 and len({t.practice_area for t in TOPICS}) == 11
    for topic in TOPICS:
        for difficulty in DIFFICULTIES:
            for sample_type, kind in SAMPLE_TYPES.items():
                text = build_messages(SampleSpec(topic, difficulty, sample_type, "Focus on remedies."))[1]["content"]
                assert f"Topic: {topic.topic}" in text and f"Practice area: {topic.practice_area}" in text
                assert f"Step {LEVELS[difficulty].min_steps}:" in text
                assert all(f'"{section}:"' in text for section in kind.sections)
                assert "Additional instruction: Focus on remedies." in text


def test_harder_levels_ask_for_more():
    ordered = [LEVELS[d] for d in DIFFICULTIES]
    assert [l.min_steps for l in ordered] == sorted(l.min_steps for l in ordered)
    assert ordered[-1].min_steps > ordered[0].min_steps
    assert ordered[-1].min_authorities > ordered[0].min_authorities


@pytest.mark.parametrize("wrap", [
    lambda j: j,
    lambda j: f"<think>\nThe user wants JSON {{\"question\": \"no\"}}.\n</think>\n{j}",
    lambda j: f"<thinking>plan the answer</thinking>```json\n{j}\n```",
    lambda j: f"Here is the sample you asked for:\n\n{j}\n\nI hope this helps!",
    lambda j: f"reasoning that lost its opening tag</think>{j}",
    lambda j: f"```\n{j}\n```",
])
def test_parses_wrapped_json(wrap):
    sample = good_sample()
    content = parse_sample(wrap(json.dumps(sample)), SPEC)
    assert content.question == sample["question"]


def test_lists_become_strings_and_aliases_are_understood():
    sample = good_sample()
    steps = [line.split(": ", 1)[1] for line in sample["reasoning"].splitlines()]
    raw = {"Question": sample["question"], "answer": sample["answer"], "steps": steps,
           "citations": sample["case_citation"].split("; "), "topic": "Made up by the model"}
    content = parse_sample(json.dumps(raw), SPEC)
    assert content.reasoning.startswith("Step 1: ") and "Step 4: " in content.reasoning
    assert "; " in content.case_citation
    assert not hasattr(content, "topic")  # topic comes from the request, never from the model


@pytest.mark.parametrize("mutate, message", [
    (lambda s: s.pop("answer"), "answer"),
    (lambda s: s.update(reasoning="Step 1: one.\nStep 2: two."), "Step 4"),
    (lambda s: s.update(answer=s["answer"].replace("Application:", "Analysis:")), "Application"),
    (lambda s: s.update(answer="Issue: x\nRule: y\nApplication: z\nConclusion: done."), "words"),
    (lambda s: s.update(case_citation=" ; "), "authority"),
    (lambda s: s.update(question="Why?"), "question"),
])
def test_invalid_samples_are_rejected_with_the_reason_and_raw_text(mutate, message):
    sample = good_sample()
    mutate(sample)
    text = json.dumps(sample)
    with pytest.raises(InvalidOutput) as caught:
        parse_sample(text, SPEC)
    assert message in str(caught.value)
    assert caught.value.raw_output == text


def test_non_json_output_is_invalid():
    with pytest.raises(InvalidOutput, match="no JSON object"):
        extract_json_object("I'm sorry, I can only answer in prose.")
    with pytest.raises(InvalidOutput):
        parse_sample('{"question": "unterminated', SPEC)


def test_thinking_only_output_is_invalid():
    with pytest.raises(InvalidOutput):
        parse_sample("<think>" + json.dumps(good_sample()) + "</think>", SPEC)
    assert strip_thinking("<think>a</think> b <thinking>c</thinking> d") == "b  d"


def test_each_sample_type_needs_its_own_sections():
    for sample_type in SAMPLE_TYPES:
        spec = SampleSpec(SPEC.topic, "basic", sample_type)
        parse_sample(json.dumps(good_sample(spec)), spec)
        other = next(t for t in SAMPLE_TYPES if t != sample_type)
        with pytest.raises(InvalidOutput, match="sections"):
            parse_sample(json.dumps(good_sample(SampleSpec(SPEC.topic, "basic", other))), spec)
