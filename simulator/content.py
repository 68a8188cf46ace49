"""Realistic sample content for the simulated providers.

Reads what the prompt asks for (practice area, topic, difficulty, sample type) and writes a
sample that meets it: the type's answer sections, enough words and steps, real authorities from
`config/authorities.yaml`. Names, facts and figures vary, so samples differ from one another.
"""
from __future__ import annotations

import random
import re
from functools import lru_cache
from pathlib import Path

import yaml

from config.catalog import LEVELS, SAMPLE_TYPES

AUTHORITIES_FILE = Path(__file__).resolve().parent.parent / "config" / "authorities.yaml"

_FIELD = re.compile(r"^(Practice area|Topic|Difficulty|Sample type):\s*(.+?)\s*(?:\(|$)", re.M)

FIRST = ["Amira", "Ben", "Chloe", "Dev", "Eleanor", "Farid", "Grace", "Harry", "Imogen", "Jonah", "Kiran",
         "Lucy", "Mohammed", "Niamh", "Owen", "Priya", "Rhys", "Sofia", "Tom", "Zara"]
LAST = ["Ahmed", "Baker", "Campbell", "Davies", "Evans", "Fraser", "Gill", "Hughes", "Iqbal", "Jones",
        "Khan", "Lewis", "Morgan", "Nolan", "Okafor", "Patel", "Quinn", "Roberts", "Shaw", "Turner"]
PLACES = ["Leeds", "Bristol", "Cardiff", "Norwich", "York", "Manchester", "Exeter", "Nottingham",
          "Brighton", "Sheffield", "Oxford", "Durham", "Swansea", "Leicester", "Bath"]
BUSINESSES = ["a bakery", "a software consultancy", "a haulage firm", "a dental practice", "a boutique hotel",
              "a garden centre", "an architecture studio", "a craft brewery", "a removals company",
              "a veterinary clinic", "a bicycle shop", "a printing business"]
SETTINGS = ["during a busy trading period", "after a dispute that had simmered for months",
            "shortly after a change of ownership", "following a written warning", "on the last day of a notice period",
            "after an exchange of emails", "at a meeting with no minutes taken", "while a sale was being negotiated"]


@lru_cache(maxsize=1)
def authorities() -> dict[str, list[str]]:
    return yaml.safe_load(AUTHORITIES_FILE.read_text(encoding="utf-8"))


def read_spec(prompt: str) -> dict[str, str]:
    """The fields the prompt names, e.g. {'Practice area': 'Tort Law', 'Difficulty': 'basic'}."""
    return {name: value for name, value in _FIELD.findall(prompt)}


def _person(rng: random.Random) -> str:
    return f"{rng.choice(FIRST)} {rng.choice(LAST)}"


def _sentences(rng: random.Random, topic: str, cites: list[str], count: int) -> str:
    stems = [
        f"The starting point in {topic.lower()} is the principle recognised in {{c}}.",
        "The court would look closely at what the parties actually knew at the time, as {c} shows.",
        "Applying {c}, the decisive question is whether the conduct fell below the required standard.",
        "Any remedy depends on causation and on loss that was reasonably foreseeable, following {c}.",
        "The burden of proof rests on the claimant on the balance of probabilities, consistent with {c}.",
        "A tribunal would weigh the documentary evidence more heavily than recollection, as in {c}.",
        "The outcome may turn on the precise wording used, which {c} treats as central.",
        "Policy considerations point the same way, and {c} confirms that approach in England and Wales.",
    ]
    rng.shuffle(stems)
    out = [stems[i % len(stems)].format(c=rng.choice(cites)) for i in range(count)]
    return " ".join(out)


def make_sample(prompt: str, rng: random.Random) -> dict[str, str]:
    """A sample dict (question, answer, reasoning, case_citation) that satisfies the prompt."""
    spec = read_spec(prompt)
    area = spec.get("Practice area", "Contract Law")
    topic = spec.get("Topic", "Formation of Contracts")
    difficulty = spec.get("Difficulty", "intermediate").split()[0]
    sample_type = spec.get("Sample type", "case_analysis").split()[0]
    level = LEVELS.get(difficulty, LEVELS["intermediate"])
    kind = SAMPLE_TYPES.get(sample_type, SAMPLE_TYPES["case_analysis"])
    pool = authorities().get(area) or [a for group in authorities().values() for a in group]
    cites = rng.sample(pool, k=min(len(pool), max(level.min_authorities, 2)))
    client, other = _person(rng), _person(rng)
    business, place, setting = rng.choice(BUSINESSES), rng.choice(PLACES), rng.choice(SETTINGS)
    amount = rng.randrange(2, 400) * 250
    question = (f"{client}, who runs {business} in {place}, fell out with {other} {setting}; "
                f"about £{amount:,} is at stake. How does English law on {topic.lower()} apply, "
                f"and what should {client.split()[0]} expect?")
    per_section = max(2, -(-level.min_answer_words // (len(kind.sections) * 14)) + 1)
    answer = "\n\n".join(f"{section}: {_sentences(rng, topic, cites, per_section)}" for section in kind.sections)
    steps = "\n".join(
        f"Step {n}: {rng.choice(['Identify', 'Apply', 'Test', 'Weigh', 'Confirm'])} "
        f"{rng.choice(['the governing rule', 'the facts against the rule', 'the competing arguments', 'the remedy', 'the likely outcome'])}"
        f" with reference to {rng.choice(cites)}."
        for n in range(1, level.min_steps + 2))
    return {"question": question, "answer": answer, "reasoning": steps, "case_citation": "; ".join(cites)}
