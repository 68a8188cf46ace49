"""Per-sample quality checks and the assessment that combines them into flags and a score.

`assess(sample, duplicates)` runs every check on one sample dict and returns a `QualityReport`.
What each flag means, how severe it is and what it costs the score is data: `FLAGS`.

=====================  =======  ======  ==========================================================
code                   severity weight  meaning
=====================  =======  ======  ==========================================================
missing_field          reject   1.00    question, answer, reasoning or case_citation is empty
exact_duplicate        reject   1.00    the normalised question is already in the index
refusal                reject   1.00    the model declines or speaks as an AI ("as an AI ...")
us_law                 reject   0.60    US authorities, courts or statutes (410 U.S. 113, U.S.C.)
no_valid_citation      reject   0.60    not one authority in case_citation is valid
impossible_citation    reject   0.50    an authority that could not exist ([2015] UKHL 3), per authority
answer_too_short       reject   0.40    fewer answer words than the difficulty requires
too_few_steps          reject   0.30    fewer "Step n:" than the difficulty requires
near_duplicate         warn     0.25    a question at least `threshold` similar is indexed
too_few_authorities    warn     0.15    fewer valid authorities than the difficulty requires
misquoted_authority    warn     0.15    a curated case cited with a different citation
malformed_citation     warn     0.10    an authority badly formatted or unrecognised, per authority
missing_sections       warn     0.10    the answer lacks sections its sample type requires
boilerplate            warn     0.10    disclaimers: "this is not legal advice", "I'm not a lawyer"
us_terminology         warn     0.10    US words without US authority: "plaintiff", "attorney"
unknown_difficulty     warn     0.10    difficulty is not one of catalog.DIFFICULTIES
=====================  =======  ======  ==========================================================

Valid citations that are merely not in config/authorities.yaml are not penalised; the report
counts them (`authorities.known`). "plaintiff" alone is only a warning: English judgments before
1999 used it, so discussing an old case is not US drift.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from config.catalog import LEVELS
from quality.citations import CitationSummary, impossible_citations, summarise_citations, us_reporter_citations
from quality.duplicates import DuplicateIndex
from generation.parsing import missing_sections, step_numbers

REJECT, WARN = "reject", "warn"
CONTENT_FIELDS = ("question", "answer", "reasoning", "case_citation")


@dataclass(frozen=True)
class FlagSpec:
    severity: str
    weight: float
    meaning: str


FLAGS: dict[str, FlagSpec] = {
    "missing_field": FlagSpec(REJECT, 1.0, "question, answer, reasoning or case_citation is empty"),
    "exact_duplicate": FlagSpec(REJECT, 1.0, "the normalised question is already in the index"),
    "refusal": FlagSpec(REJECT, 1.0, "the model declines or speaks as an AI"),
    "us_law": FlagSpec(REJECT, 0.6, "US authorities, courts or statutes"),
    "no_valid_citation": FlagSpec(REJECT, 0.6, "no authority in case_citation is valid"),
    "impossible_citation": FlagSpec(REJECT, 0.5, "an authority that could not exist"),
    "answer_too_short": FlagSpec(REJECT, 0.4, "fewer answer words than the difficulty requires"),
    "too_few_steps": FlagSpec(REJECT, 0.3, "fewer numbered reasoning steps than the difficulty requires"),
    "near_duplicate": FlagSpec(WARN, 0.25, "a very similar question is already in the index"),
    "too_few_authorities": FlagSpec(WARN, 0.15, "fewer valid authorities than the difficulty requires"),
    "misquoted_authority": FlagSpec(WARN, 0.15, "a well-known case cited with a different citation"),
    "malformed_citation": FlagSpec(WARN, 0.1, "an authority badly formatted or unrecognised"),
    "missing_sections": FlagSpec(WARN, 0.1, "the answer lacks sections its sample type requires"),
    "boilerplate": FlagSpec(WARN, 0.1, "a disclaimer or filler a training sample should not carry"),
    "us_terminology": FlagSpec(WARN, 0.1, "US legal vocabulary without US authority"),
    "unknown_difficulty": FlagSpec(WARN, 0.1, "difficulty is not a known level"),
}


@dataclass(frozen=True)
class Detector:
    """Phrases to find, case-insensitively, behind a cheap test on the lower-cased text.

    Every phrase must contain one of the `triggers` (lower case), where a trigger that starts with a
    letter or digit starts a word (so "ucc" is not found in "succeeds"); most texts contain none, so
    the slower alternation of phrases only runs on the few that might match.
    """

    triggers: tuple[str, ...]
    phrases: re.Pattern[str]
    any_trigger: re.Pattern[str] = field(init=False, repr=False, compare=False)   # one pass over the text

    def __post_init__(self) -> None:
        words = [re.escape(t) for t in self.triggers if t[:1].isalnum()]
        others = [re.escape(t) for t in self.triggers if not t[:1].isalnum()]
        alternatives = ([rf"\b(?:{'|'.join(words)})"] if words else []) + others
        object.__setattr__(self, "any_trigger", re.compile("|".join(alternatives)))

    @classmethod
    def of(cls, triggers: tuple[str, ...], *phrases: str) -> Detector:
        return cls(triggers, re.compile("|".join(rf"(?:{p})" for p in phrases), re.I))

    def find(self, text: str, lowered: str | None = None) -> list[str]:
        """The distinct phrases found, in order of appearance (`lowered`: text.lower(), if at hand)."""
        text = text.replace("’", "'")
        lowered = text.lower() if lowered is None else lowered.replace("’", "'")
        if self.any_trigger.search(lowered) is None:
            return []
        return list(dict.fromkeys(re.sub(r"\s+", " ", m[0].strip()) for m in self.phrases.finditer(text)))


_I_CANNOT = r"I\s?(?:cannot|can't|can not|am unable to|'m unable to|am not able to|won't|will not)"
REFUSAL = Detector.of(
    (" ai", "artificial intelligence", "language model", "chatbot", "legal advice", "help with", "help you with",
     "assist with", "assist you with", "sorry", "decline", "cut-off", "cutoff"),
    r"\bas an? (?:AI|artificial intelligence)\b(?:[ -](?:language )?model|[ -]assistant)?",
    r"\bas an? (?:large )?language model\b",
    r"\bI(?:'m| am) (?:just |only )?an? (?:AI|language model|chatbot)\b",
    rf"\b{_I_CANNOT} (?:provide|give|offer) (?:you )?(?:with )?(?:any )?(?:specific |personal(?:ised|ized)? )?"
    r"legal advice\b",
    rf"\b{_I_CANNOT} (?:help|assist) (?:you )?with (?:this|that|your)\b",
    r"\bI(?:'m| am) sorry,? but I (?:cannot|can't|am unable|won't)\b",
    r"\bI must (?:respectfully )?decline\b",
    r"\bmy (?:knowledge|training)(?:[ -]data)? cut-?off\b",
)
BOILERPLATE = Detector.of(
    ("i'm not a", "i am not a", "legal advice", "purposes only", "consult", "hope this helps"),
    r"\bI(?:'m| am) not a (?:lawyer|solicitor|barrister|legal professional)\b",
    r"\b(?:this|it|the above|the following|this answer|this information) (?:is not|isn't|does not constitute|"
    r"should not be (?:taken|treated|relied upon) as) (?:formal |professional |specific )?legal advice\b",
    r"\bnot (?:intended as|a substitute for) (?:formal |professional )?legal advice\b",
    r"\bfor (?:general )?information(?:al)? purposes only\b",
    r"\bconsult (?:with )?a (?:qualified|licensed) (?:solicitor|lawyer|legal professional|attorney)\b",
    r"\bconsult (?:with )?a legal professional\b",
    r"\bI hope this helps\b",
)
US_LAW = Detector.of(  # US reporter citations are found by quality.citations.us_reporter_citations
    ("u.s", "u. s", "usc", "uniform commercial code", "ucc", "restatement", "amendment", "supreme court",
     "united states", "scotus", "circuit", "federal", "title vii", "chapter 11", "at-will", "at will", "miranda",
     "americans with", "sarbanes", "district attorney", "civil rights act"),
    r"\bU\.\s?S\.\s?C\.?(?:\s?A\.?)?(?=\s|$|§)|\b\d+\s+USC\b",
    r"\bUniform Commercial Code\b|\bUCC\b",
    r"\bRestatement \((?:First|Second|Third)\)",
    r"\b(?:First|Second|Fourth|Fifth|Sixth|Seventh|Eighth|Tenth|Fourteenth) Amendment\b",
    r"\bSupreme Court of the United States\b|\b(?:U\.\s?S\.|United States|US) Supreme Court\b|\bSCOTUS\b",
    r"\b(?:First|Second|Third|Fourth|Fifth|Sixth|Seventh|Eighth|Ninth|Tenth|Eleventh|D\.C\.|Federal"
    r"|1st|2nd|3rd|[4-9]th|1[01]th) Circuit\b|\bCircuit Court of Appeals\b",
    r"\bfederal (?:district |appellate |bankruptcy )?courts?\b|\bfederal law\b",
    r"\b(?:U\.\s?S\.|United States) (?:District Court|Court of Appeals|Bankruptcy Court)\b",
    r"\bTitle VII\b|\bChapter 11 (?:bankruptcy|proceedings|protection)\b|\bat-will employment\b"
    r"|\bemployment at will\b|\bMiranda (?:rights|warnings?)\b|\bAmericans with Disabilities Act\b"
    r"|\bSarbanes[- ]Oxley\b|\bdistrict attorney\b|\bCivil Rights Act of 1964\b",
)
US_TERMS = Detector.of(  # weak alone: English judgments said "plaintiff" until 1999
    ("plaintiff", "attorney", "statute of limitations", "felon", "misdemeanor", "punitive damages", "§"),
    r"\bplaintiffs?\b",
    r"(?<!power of )(?<!powers of )\battorneys?\b(?![- ]general)",
    r"\bstatute of limitations\b", r"\bfelon(?:y|ies)\b", r"\bmisdemeanors?\b", r"\bpunitive damages\b",
    r"§",
)


@dataclass(frozen=True)
class Flag:
    code: str
    severity: str
    detail: str

    @classmethod
    def of(cls, code: str, detail: str) -> Flag:
        return cls(code, FLAGS[code].severity, detail)

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "severity": self.severity, "detail": self.detail}


@dataclass(frozen=True)
class QualityReport:
    """What is wrong with one sample. `score` is 1.0 with no flags, minus each flag's weight, floor 0."""

    flags: list[Flag]
    score: float
    rejected: bool
    duplicate_of: str | None = None  # the id it duplicates (exact) or most resembles (near)
    authorities: CitationSummary | None = field(default=None, repr=False)

    @property
    def codes(self) -> list[str]:
        return [f.code for f in self.flags]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"score": self.score, "rejected": self.rejected, "duplicate_of": self.duplicate_of,
                               "flags": [f.to_dict() for f in self.flags]}
        if self.authorities is not None:
            out["authorities"] = self.authorities.to_dict()
        return out


def _quoted(phrases: list[str], limit: int = 3) -> str:
    more = f" (+{len(phrases) - limit} more)" if len(phrases) > limit else ""
    return ", ".join(f"'{p}'" for p in phrases[:limit]) + more


def refusal_phrases(text: str, lowered: str | None = None) -> list[str]:
    """Phrases in which the model declines the task or speaks as an AI."""
    return REFUSAL.find(text, lowered)


def boilerplate_phrases(text: str, lowered: str | None = None) -> list[str]:
    """Disclaimers and filler a training sample should not carry."""
    return BOILERPLATE.find(text, lowered)


def us_law_signals(text: str, lowered: str | None = None) -> tuple[list[str], list[str]]:
    """(strong signals of US law: reporters, courts, statutes; weak ones: US vocabulary)."""
    lowered = text.lower() if lowered is None else lowered
    reporters = [m[0].strip() for m in us_reporter_citations(text)]
    return reporters + US_LAW.find(text, lowered), US_TERMS.find(text, lowered)


def _citation_flags(summary: CitationSummary, answer_and_reasoning: str) -> list[Flag]:
    flags = []
    for finding in summary.findings:
        if finding.us_law:
            continue  # reported once, as us_law
        if finding.impossible:
            flags.append(Flag.of("impossible_citation", f"{finding.text}: {finding.reason}"))
        elif not finding.valid:
            flags.append(Flag.of("malformed_citation", f"{finding.text}: {finding.reason}"))
        elif finding.curated:
            flags.append(Flag.of("misquoted_authority", f"{finding.text}: the curated citation is {finding.curated}"))
    cited = {key for f in summary.findings for key in f.keys}
    for finding in impossible_citations(answer_and_reasoning):
        if not cited.intersection(finding.keys):
            cited.update(finding.keys)
            flags.append(Flag.of("impossible_citation", f"{finding.text} (in the text): {finding.reason}"))
    return flags


def assess(sample: Mapping[str, Any], duplicates: DuplicateIndex | None = None, *,
           fingerprint: Any = None) -> QualityReport:
    """Every check on one sample; `duplicates` is only read (adding to it is the caller's step).
    `fingerprint`: the question's `duplicates.prepare(question)`, when the caller has it already."""
    text = {name: str(sample.get(name) or "") for name in CONTENT_FIELDS}
    question, answer, reasoning, citations = (text[name] for name in CONTENT_FIELDS)
    flags: list[Flag] = []
    empty = [name for name in CONTENT_FIELDS if not text[name].strip()]
    if empty:
        flags.append(Flag.of("missing_field", f"empty: {', '.join(empty)}"))

    duplicate_of = None
    if duplicates is not None and question.strip():
        if fingerprint is None:
            fingerprint = duplicates.prepare(question)
        exact, near = duplicates.check_prepared(fingerprint, exclude_id=sample.get("id"))
        if exact is not None:
            duplicate_of = exact
            flags.append(Flag.of("exact_duplicate", f"same question as {exact}"))
        elif near is not None:
            duplicate_of = near[0]
            flags.append(Flag.of("near_duplicate", f"resembles {near[0]} (similarity {near[1]:.2f})"))

    body = f"{answer}\n{reasoning}"
    everything = f"{body}\n{question}\n{citations}"
    lowered, body_lowered = everything.lower(), body.lower()
    if refused := refusal_phrases(body, body_lowered):
        flags.append(Flag.of("refusal", _quoted(refused)))
    if boilerplate := boilerplate_phrases(body, body_lowered):
        flags.append(Flag.of("boilerplate", _quoted(boilerplate)))
    strong, weak = us_law_signals(everything, lowered)
    if strong:
        flags.append(Flag.of("us_law", _quoted(strong)))
    elif weak:
        flags.append(Flag.of("us_terminology", _quoted(weak)))

    summary = summarise_citations(citations)
    flags.extend(_citation_flags(summary, body))
    level = LEVELS.get(str(sample.get("difficulty") or "").strip().lower())
    if level is None:
        flags.append(Flag.of("unknown_difficulty", f"difficulty {sample.get('difficulty')!r}"))
    if citations.strip() and summary.valid == 0:
        flags.append(Flag.of("no_valid_citation", f"{summary.total} authorities cited, none valid"))
    elif level is not None and 0 < summary.valid < level.min_authorities:
        flags.append(Flag.of("too_few_authorities", f"{summary.valid} valid; {sample.get('difficulty')} needs "
                                                     f"{level.min_authorities}"))
    if level is not None and answer.strip():
        words = len(answer.split())
        if words < level.min_answer_words:
            flags.append(Flag.of("answer_too_short", f"{words} words; {sample.get('difficulty')} needs "
                                                      f"{level.min_answer_words}"))
    if level is not None and reasoning.strip():
        steps = len(step_numbers(reasoning))
        if steps < level.min_steps:
            flags.append(Flag.of("too_few_steps", f"{steps} numbered steps; {sample.get('difficulty')} needs "
                                                   f"{level.min_steps}"))
    if answer.strip() and (absent := missing_sections(answer, str(sample.get("sample_type") or ""))):
        flags.append(Flag.of("missing_sections", ", ".join(absent)))

    score = max(0.0, round(1.0 - sum(FLAGS[f.code].weight for f in flags), 3))
    return QualityReport(flags, score, any(f.severity == REJECT for f in flags), duplicate_of, summary)


def summarise_reports(reports: Iterable[QualityReport]) -> dict[str, Any]:
    """Dataset-level figures: sample count, rejection rate, mean score, how often each flag fired."""
    reports = list(reports)
    counts = Counter(code for r in reports for code in set(r.codes))
    total = len(reports)
    return {"samples": total,
            "rejected": sum(r.rejected for r in reports),
            "rejection_rate": round(sum(r.rejected for r in reports) / total, 4) if total else 0.0,
            "mean_score": round(sum(r.score for r in reports) / total, 4) if total else 0.0,
            "flags": dict(counts.most_common())}
