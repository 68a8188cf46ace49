"""The per-sample assessment: every flag in the table fires on a realistic sample, a clean one passes."""
from __future__ import annotations

from typing import Any, Callable

import pytest

from config.catalog import LEVELS, SAMPLE_TYPES
from quality import FLAGS, DuplicateIndex, assess, boilerplate_phrases, refusal_phrases, us_law_signals
from quality.checks import US_LAW, US_TERMS

QUESTION = ("Priya Shah slipped on an unlit staircase while visiting a friend's flat in a block managed by "
            "Northgate Homes Ltd. Is Northgate liable to her, and on what basis?")
CITATIONS = ("Donoghue v Stevenson [1932] AC 562; Caparo Industries plc v Dickman [1990] 2 AC 605; "
             "Occupiers' Liability Act 1957, s 2")
SECTION_TEXT = {
    "Issue": "The issue is whether Northgate, as the company managing the common parts of the block, owed "
             "Priya the common duty of care as a lawful visitor and whether it breached that duty by leaving "
             "the staircase unlit at night.",
    "Rule": "Under the Occupiers' Liability Act 1957, s 2, an occupier must take such care as is reasonable "
            "to see that a visitor is reasonably safe in using the premises for the purposes for which she "
            "is invited or permitted to be there. Control of the common parts, rather than ownership, makes "
            "the managing company an occupier, and the general principles in Donoghue v Stevenson and Caparo "
            "Industries plc v Dickman confirm that the loss must be foreseeable and the duty fair.",
    "Application": "Northgate controlled the lighting and the repair of the common staircase. A visitor "
                   "using the stairs after dark is entirely foreseeable, and fixing a failed light is cheap "
                   "and simple. A court would probably find that leaving the staircase unlit for several "
                   "days fell below the standard of reasonable care, although any lack of care by Priya "
                   "herself could reduce her damages for contributory negligence.",
    "Conclusion": "Northgate is likely to be liable to Priya under the 1957 Act, subject to a possible "
                  "reduction for contributory negligence if she was careless in the dark.",
}
ANSWER = "\n\n".join(f"{section}: {SECTION_TEXT[section]}" for section in SAMPLE_TYPES["case_analysis"].sections)
REASONING = ("Step 1: Identify Northgate as an occupier of the common parts because it controls them.\n"
             "Step 2: Confirm that Priya was a lawful visitor owed the common duty of care.\n"
             "Step 3: Test the unlit staircase against the standard of reasonable care in s 2.\n"
             "Step 4: Weigh the foreseeability of harm against the low cost of repairing the light.\n"
             "Step 5: Consider contributory negligence and state the likely outcome.")


def clean_sample(**overrides: Any) -> dict[str, Any]:
    sample = {"id": "s-clean", "question": QUESTION, "answer": ANSWER, "reasoning": REASONING,
              "case_citation": CITATIONS, "topic": "Tort Law - Occupiers Liability", "difficulty": "intermediate",
              "sample_type": "case_analysis"}
    sample.update(overrides)
    return sample


def test_the_hand_made_sample_meets_its_level() -> None:
    level = LEVELS["intermediate"]
    assert len(ANSWER.split()) >= level.min_answer_words
    assert REASONING.count("Step ") >= level.min_steps


def test_a_clean_sample_has_no_flags_and_a_full_score() -> None:
    report = assess(clean_sample(), DuplicateIndex())
    assert report.flags == []
    assert (report.score, report.rejected, report.duplicate_of) == (1.0, False, None)
    assert report.to_dict() == {"score": 1.0, "rejected": False, "duplicate_of": None, "flags": [],
                                "authorities": {"total": 3, "valid": 3, "invalid": 0, "known": 3, "problems": []}}


def _with_answer(extra: str) -> Callable[[dict], None]:
    return lambda s: s.update(answer=s["answer"] + " " + extra)


# (what to change in the clean sample, the flag it must raise)
TRIGGERS: list[tuple[str, Callable[[dict], None], str]] = [
    ("empty answer", lambda s: s.update(answer="  "), "missing_field"),
    ("as an AI", _with_answer("As an AI language model, I cannot provide legal advice."), "refusal"),
    ("declines", _with_answer("I'm sorry, but I can't help with that."), "refusal"),
    ("not legal advice", _with_answer("This does not constitute legal advice."), "boilerplate"),
    ("not a lawyer", _with_answer("I'm not a lawyer, so consult a qualified solicitor."), "boilerplate"),
    ("US reporter", _with_answer("Compare Roe v. Wade, 410 U.S. 113 (1973)."), "us_law"),
    ("US court", _with_answer("The Ninth Circuit took the same view."), "us_law"),
    ("US statute", _with_answer("See 42 U.S.C. 1983 and the Uniform Commercial Code."), "us_law"),
    ("US citation listed", lambda s: s.update(case_citation=CITATIONS + "; Roe v. Wade, 410 U.S. 113"), "us_law"),
    ("plaintiff", _with_answer("The plaintiff would need to prove causation."), "us_terminology"),
    ("short answer", lambda s: s.update(answer="Issue: x. Rule: y. Application: z. Conclusion: liable."),
     "answer_too_short"),
    ("few steps", lambda s: s.update(reasoning="Step 1: Identify the occupier.\nStep 2: Decide."), "too_few_steps"),
    ("no sections", lambda s: s.update(answer=" ".join(SECTION_TEXT.values())), "missing_sections"),
    ("malformed", lambda s: s.update(case_citation=CITATIONS + "; Smith v Jones [2019] EWCA 1234"),
     "malformed_citation"),
    ("impossible", lambda s: s.update(case_citation=CITATIONS + "; Smith v Jones [2015] UKHL 3"),
     "impossible_citation"),
    ("impossible in text", _with_answer("See also Brown v Green [2021] EWHC 1 (KB)."), "impossible_citation"),
    ("misquoted", lambda s: s.update(case_citation="Donoghue v Stevenson [1932] AC 563; Occupiers' Liability "
                                                   "Act 1957, s 2"), "misquoted_authority"),
    ("no valid", lambda s: s.update(case_citation="Smith v Jones; Brown v Green"), "no_valid_citation"),
    ("one authority", lambda s: s.update(case_citation="Occupiers' Liability Act 1957, s 2"),
     "too_few_authorities"),
    ("bad difficulty", lambda s: s.update(difficulty="impossible"), "unknown_difficulty"),
]


@pytest.mark.parametrize("change, code", [(t[1], t[2]) for t in TRIGGERS], ids=[t[0] for t in TRIGGERS])
def test_each_flag_fires(change: Callable[[dict], None], code: str) -> None:
    sample = clean_sample()
    change(sample)
    report = assess(sample)
    assert code in report.codes
    flag = next(f for f in report.flags if f.code == code)
    assert flag.severity == FLAGS[code].severity and flag.detail
    assert report.rejected == any(f.severity == "reject" for f in report.flags)
    assert report.score == max(0.0, round(1 - sum(FLAGS[f.code].weight for f in report.flags), 3))


def test_duplicate_flags_name_the_other_sample() -> None:
    index = DuplicateIndex()
    index.add("s-old", QUESTION.upper().replace(",", "").replace(" ", "  "))
    exact = assess(clean_sample(), index)
    assert exact.codes == ["exact_duplicate"] and exact.rejected and exact.duplicate_of == "s-old"

    index = DuplicateIndex()
    index.add("s-old", "Can a landlord keep a tenant's deposit without giving any reason under English law?")
    near = assess(clean_sample(question="Under English law, can a landlord keep the deposit of a tenant without "
                                         "giving any reason?"), index)
    assert near.codes == ["near_duplicate"] and not near.rejected and near.duplicate_of == "s-old"
    assert "s-old" in near.flags[0].detail and near.score == 1 - FLAGS["near_duplicate"].weight


def test_every_flag_in_the_table_is_exercised() -> None:
    assert {code for _, _, code in TRIGGERS} | {"exact_duplicate", "near_duplicate"} == set(FLAGS)


def test_assess_reads_the_index_without_changing_it() -> None:
    index = DuplicateIndex()
    index.add("s-clean", QUESTION)
    report = assess(clean_sample(), index)  # the sample itself is indexed: not its own duplicate
    assert report.flags == [] and len(index) == 1
    assess(clean_sample(id="s-new"), index)
    assert len(index) == 1 and "s-new" not in index


def test_flags_accumulate_and_the_score_floors_at_zero() -> None:
    report = assess(clean_sample(answer="As an AI I cannot help with this. The plaintiff loses.",
                                 reasoning="Step 1: none.", case_citation="Roe v. Wade, 410 U.S. 113"))
    assert {"refusal", "us_law", "answer_too_short", "too_few_steps", "no_valid_citation"} <= set(report.codes)
    assert report.rejected and report.score == 0.0


@pytest.mark.parametrize("text", [
    "The Supreme Court held in Montgomery that consent must be informed.",
    "The contract was governed by the law of the Federal Republic of Germany.",
    "She granted her daughter a lasting power of attorney; the Attorney General intervened.",
    "The claimant should instruct a solicitor before the limitation period expires.",
    "The court may consider what a reasonable AI system designer would have foreseen.",
])
def test_ordinary_uk_prose_is_not_flagged(text: str) -> None:
    assert refusal_phrases(text) == [] and boilerplate_phrases(text) == [] and us_law_signals(text) == ([], [])


def test_phrase_detection_ignores_case_and_respects_word_boundaries() -> None:
    assert refusal_phrases("AS AN AI LANGUAGE MODEL I must decline.") == ["AS AN AI LANGUAGE MODEL",
                                                                           "I must decline"]
    assert us_law_signals("The PLAINTIFFS sued.")[1] == ["PLAINTIFFS"]
    assert us_law_signals("Plaintiffsville is a town; the federally funded scheme ended.") == ([], [])


def test_a_trigger_inside_a_word_does_not_start_the_phrase_search():
    """Triggers that start with a letter match at a word's start only: "ucc" (for UCC) is not in
    "succeeds", so the slow phrase search is skipped; the phrases are still found where they are."""
    assert US_LAW.any_trigger.search("the claimant succeeds; success is likely") is None
    assert US_LAW.find("Under the UCC, and 42 U.S.C. § 1983, the claim succeeds.") == ["UCC", "U.S.C."]
    assert US_TERMS.find("See § 1983.") == ["§"]
