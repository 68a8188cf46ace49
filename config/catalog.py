"""The fixed vocabulary of the dataset: practice areas, topics, difficulties, sample types.

Mirrors `../shared/api-contract.md`; everything that validates a request or builds a prompt reads
it from here.
"""
from __future__ import annotations

from dataclasses import dataclass

DIFFICULTIES: tuple[str, ...] = ("foundational", "basic", "intermediate", "advanced", "expert")

_LEVEL = {"B": "basic", "I": "intermediate", "A": "advanced", "E": "expert"}

_TOPICS_BY_AREA: dict[str, list[tuple[str, str]]] = {
    "Contract Law": [("Formation of Contracts", "I"), ("Breach of Contract", "I"),
                     ("Remedies for Breach", "A"), ("Terms and Conditions", "B"),
                     ("Misrepresentation", "A")],
    "Tort Law": [("Professional Negligence", "A"), ("Occupiers Liability", "I"),
                 ("Vicarious Liability", "I"), ("Defamation", "A"), ("Nuisance", "I")],
    "Company Law": [("Directors Duties", "A"), ("Shareholder Rights", "I"),
                    ("Corporate Governance", "A"), ("Insolvency", "E"), ("Company Formation", "B")],
    "Employment Law": [("Discrimination", "I"), ("Wrongful Dismissal", "A"),
                       ("Employment Contracts", "B"), ("TUPE", "A"), ("Redundancy", "I")],
    "Property Law": [("Leasehold vs Freehold", "B"), ("Land Registration", "I"),
                     ("Easements and Covenants", "A"), ("Mortgages", "I")],
    "Criminal Law": [("Actus Reus and Mens Rea", "B"), ("Murder and Manslaughter", "I"),
                     ("Criminal Defenses", "A"), ("Fraud", "A")],
    "Trusts Law": [("Constructive Trusts", "A"), ("Charitable Trusts", "I"),
                   ("Breach of Trust", "A")],
    "Family Law": [("Divorce Proceedings", "I"), ("Child Custody", "I"),
                   ("Financial Settlements", "A")],
    "Tax Law": [("Capital Gains Tax", "A"), ("VAT", "I"), ("Income Tax", "I")],
    "Administrative Law": [("Judicial Review", "A"), ("Public Law Remedies", "E")],
    "Legal Ethics": [("Conflicts of Interest", "I"), ("Client Confidentiality", "B"),
                     ("Money Laundering", "A")],
}


@dataclass(frozen=True)
class Topic:
    practice_area: str
    topic: str
    difficulty: str  # the topic's default difficulty

    @property
    def label(self) -> str:
        """The dataset's `topic` column: "<Practice Area> - <Topic>"."""
        return f"{self.practice_area} - {self.topic}"


TOPICS: tuple[Topic, ...] = tuple(
    Topic(area, name, _LEVEL[level])
    for area, entries in _TOPICS_BY_AREA.items()
    for name, level in entries
)
PRACTICE_AREAS: tuple[str, ...] = tuple(_TOPICS_BY_AREA)
_BY_LABEL = {t.label.casefold(): t for t in TOPICS}


@dataclass(frozen=True)
class LevelProfile:
    """What a difficulty level asks of a sample."""

    min_steps: int
    min_authorities: int
    min_answer_words: int
    description: str


LEVELS: dict[str, LevelProfile] = {
    "foundational": LevelProfile(3, 1, 80, "an introduction for a first-year law student"),
    "basic": LevelProfile(3, 1, 110, "core principles applied to a simple set of facts"),
    "intermediate": LevelProfile(4, 2, 150, "several rules interacting on realistic facts"),
    "advanced": LevelProfile(5, 3, 200, "contested points, competing authorities and nuance"),
    "expert": LevelProfile(6, 4, 260, "appellate-level analysis with policy and open questions"),
}


@dataclass(frozen=True)
class SampleType:
    id: str
    name: str
    description: str
    focus: str
    sections: tuple[str, ...]
    example: str


SAMPLE_TYPES: dict[str, SampleType] = {
    t.id: t
    for t in (
        SampleType("case_analysis", "Case Analysis",
                   "Analyse a fact pattern the way a court or examiner would.",
                   "Issue spotting and applying authority to facts",
                   ("Issue", "Rule", "Application", "Conclusion"),
                   "A buyer accepts an offer by post; the letter is lost. Is there a contract?"),
        SampleType("educational", "Educational",
                   "Explain a doctrine clearly, with its sources and limits.",
                   "Teaching a concept from first principles",
                   ("Definition", "Legal Basis", "Key Elements", "Examples", "Distinctions"),
                   "What is the postal acceptance rule and when does it not apply?"),
        SampleType("client_interaction", "Client Interaction",
                   "Advise a lay client in plain English about their situation.",
                   "Practical advice, options and next steps",
                   ("Understanding", "Legal Position", "Options", "Recommendation", "Next Steps"),
                   "My landlord kept my deposit without explanation. What can I do?"),
        SampleType("statutory_interpretation", "Statutory Interpretation",
                   "Interpret a statutory provision and apply it.",
                   "Text, purpose and judicial reading of legislation",
                   ("Statutory Text", "Purpose", "Interpretation", "Case Law", "Application"),
                   "How do the courts read 'satisfactory quality' in s 14(2) Sale of Goods Act 1979?"),
    )
}
BALANCE = "balance"
DEFAULT_SAMPLE_TYPE = "case_analysis"


def find_topic(label: str) -> Topic | None:
    """The topic for an "Area - Topic" label, case-insensitively; None when unknown."""
    return _BY_LABEL.get(label.strip().casefold())


def resolve_topic(practice_area: str, topic: str) -> Topic | None:
    """The topic named by a practice area and a topic (which may already carry the area)."""
    found = find_topic(topic)
    if found and (not practice_area or found.practice_area.casefold() == practice_area.strip().casefold()):
        return found
    return find_topic(f"{practice_area} - {topic}")


def practice_area_of(label: str) -> str:
    """The text before the first " - " of a topic label."""
    return label.split(" - ", 1)[0]
