"""Dataset quality: measurable, enforceable checks for UK-law training samples.

Typical use in the server or a batch job::

    from quality import DuplicateIndex, assess

    index = DuplicateIndex()                    # one per dataset, shared across threads
    report = assess(sample, index)              # reads the index, never changes it
    if not report.rejected:
        index.add(sample["id"], sample["question"])
    record["quality"] = report.to_dict()

- `quality.citations`: parse and validate UK citations (neutral, law reports, legislation).
- `quality.checks`: refusals, boilerplate, US-law drift, length and steps; `assess` and `FLAGS`.
- `quality.duplicates`: exact and MinHash/LSH near-duplicate questions.
"""
from quality.checks import (FLAGS, Flag, FlagSpec, QualityReport, assess, boilerplate_phrases, missing_sections,
                            refusal_phrases, summarise_reports, us_law_signals)
from quality.citations import (CitationFinding, CitationSummary, check_citation, find_citations,
                               impossible_citations, known_authorities, parse_citations, split_authorities,
                               summarise_citations)
from quality.duplicates import DuplicateIndex, normalise_question, question_features

__all__ = [
    "FLAGS", "CitationFinding", "CitationSummary", "DuplicateIndex", "Flag", "FlagSpec", "QualityReport",
    "assess", "boilerplate_phrases", "check_citation", "find_citations", "impossible_citations", "known_authorities",
    "missing_sections", "normalise_question", "parse_citations", "question_features", "refusal_phrases",
    "split_authorities", "summarise_citations", "summarise_reports", "us_law_signals",
]
