"""Citation parsing and validation: UK neutral citations, law reports, legislation, US drift."""
from __future__ import annotations

import pytest
import yaml

from quality.citations import (AUTHORITIES_FILE, check_citation, current_year, find_citations, parse_citations,
                               split_authorities, summarise_citations)

VALID = [
    ("[2008] UKHL 48", "neutral"), ("[2019] UKSC 12", "neutral"), ("[2019] EWCA Civ 1234", "neutral"),
    ("[2020] EWCA Crim 575", "neutral"), ("[2009] EWHC 995 (Admin)", "neutral"), ("[2013] UKPC 2", "neutral"),
    ("[2015] UKUT 123 (TCC)", "neutral"), ("[2016] UKFTT 45 (TC)", "neutral"), ("[2014] EWFC 3", "neutral"),
    ("[2014] EWCOP 4", "neutral"), ("[2019] UKEAT 123", "neutral"), ("[2019] UKEAT 0123_18_0101", "neutral"),
    ("[2019] EWHC 1 (QB)", "neutral"), ("[2022] EWHC 1 (QB)", "neutral"), ("[2022] EWHC 1 (KB)", "neutral"),
    ("[2024] EWHC 7 (KB)", "neutral"), ("[2001] EWHC Admin 123", "neutral"),
    ("[1893] 1 QB 256", "law_report"), ("[1932] AC 562", "law_report"), ("[1990] 2 AC 605", "law_report"),
    ("[1957] 1 WLR 582", "law_report"), ("[1980] ICR 303", "law_report"), ("[1956] Ch 131", "law_report"),
    ("[1948] 1 KB 223", "law_report"), ("[1990] 1 Lloyd's Rep 1", "law_report"),
    ("(1854) 9 Exch 341", "law_report"), ("(1843) 2 Hare 461", "law_report"), ("(1848) 2 Ph 774", "law_report"),
    ("(1840) 3 Beav 148", "law_report"), ("(1986) 83 Cr App R 1", "law_report"),
    ("(1990) 60 P & CR 1", "law_report"), ("(1880) 5 App Cas 1", "law_report"),
    ("Rylands v Fletcher (1868) LR 3 HL 330", "law_report"), ("Donoghue v Stevenson 1932 SC (HL) 31", "law_report"),
    ("Companies Act 2006, s 172", "statute"), ("Sale of Goods Act 1979, s 14(2)", "statute"),
    ("Insolvency Act 1986, ss 1-3", "statute"), ("Human Rights Act 1998, Sch 1, art 8", "statute"),
    ("Land Registration Act 2002, Part 2", "statute"), ("section 14 of the Sale of Goods Act 1979", "statute"),
    ("Transfer of Undertakings (Protection of Employment) Regulations 2006, reg 4", "statute"),
    ("Income Tax (Earnings and Pensions) Act 2003, s 62", "statute"), ("CPR 31.6", "statute"),
]


@pytest.mark.parametrize("text, kind", VALID)
def test_valid_citation_forms(text: str, kind: str) -> None:
    finding = check_citation(text)
    assert (finding.kind, finding.valid, finding.reason) == (kind, True, None)


MALFORMED = [
    ("[2019] EWCA 1234", "EWCA needs Civ or Crim"),
    ("[2009] EWHC 995 (Adm)", "unknown EWHC division (Adm)"),
    ("[2009] EWHC 995", "EWHC needs a division"),
    ("[2003] EWHC Admin 123", "division goes in brackets after the number"),
    ("[2001] EWHC 123 (Admin)", "in 2001 the form was [2001] EWHC Admin"),
    ("[2019] XYZ 12", "unknown court code XYZ"),
    ("(1932) AC 562", "square brackets: [1932] AC 562"),
    ("[1854] 9 Exch 341", "round brackets: (1854) 9 Exch 341"),
    ("[1986] 83 Cr App R 1", "round brackets"),
    ("(2019) UKSC 12", "neutral citations take square brackets"),
    ("Smith v Jones", "case name without a citation"),
    ("Smith v Jones [2019]", "no recognisable court code"),
    ("Companies Act, s 172", "Act cited without its year"),
]


@pytest.mark.parametrize("text, reason", MALFORMED)
def test_malformed_citations_say_why(text: str, reason: str) -> None:
    finding = check_citation(text)
    assert not finding.valid and not finding.impossible and finding.problem == "malformed"
    assert reason in finding.reason


IMPOSSIBLE = [
    ("[2015] UKHL 3", "UKHL sat until 2009"),
    ("[2005] UKSC 1", "UKSC sat from 2009"),
    ("[1998] EWCA Civ 12", "neutral citations began in 2001"),
    ("[2023] EWHC 1 (QB)", "(QB) exists only until 2022"),
    ("[2021] EWHC 1 (KB)", "(KB) exists only from 2022"),
    ("[2010] EWFC 3", "EWFC sat from 2014"),  # the Family Court was created in 2014
    ("[1950] 1 QB 1", "QB reports ran 1891–1901 and 1952–2022"),
    ("[1990] KB 1", "KB reports ran 1901–1952 and from 2023"),
    ("[1880] AC 1", "AC reports began in 1891"),
    ("(1932) 9 Exch 341", "Exch reports ran 1847–1856"),
    (f"[{current_year() + 1}] UKSC 1", "is in the future"),
    (f"Companies Act {current_year() + 3}, s 1", "is in the future"),
    ("Theft Act 1068", "no Act dates from 1068"),
]


@pytest.mark.parametrize("text, reason", IMPOSSIBLE)
def test_impossible_citations_say_why(text: str, reason: str) -> None:
    finding = check_citation(text)
    assert not finding.valid and finding.impossible and finding.problem == "impossible"
    assert reason in finding.reason


@pytest.mark.parametrize("text", ["Roe v. Wade, 410 U.S. 113 (1973)", "410 U.S. 113 (1973)",
                                  "Brown v Board, 347 U.S. 483", "Smith v Jones, 123 F.3d 456 (9th Cir. 1997)",
                                  "42 U.S.C. § 1983"])
def test_us_citations_are_unrecognised_us_law(text: str) -> None:
    finding = check_citation(text)
    assert (finding.kind, finding.valid, finding.us_law) == ("unrecognised", False, True)
    assert "US law" in finding.reason


def test_every_curated_authority_is_valid_and_known() -> None:
    curated = yaml.safe_load(AUTHORITIES_FILE.read_text(encoding="utf-8"))
    entries = [entry for group in curated.values() for entry in group]
    findings = [check_citation(entry) for entry in entries]
    assert [(f.text, f.reason) for f in findings if not (f.valid and f.known)] == []
    assert len(parse_citations("; ".join(entries))) == len(entries)


def test_known_uses_normalised_comparison() -> None:
    assert check_citation("  donoghue v. stevenson [1932]  AC 562 ").known
    assert check_citation("Carlill v Carbolic Smoke Ball Company [1893] 1 QB 256").known  # same citation
    assert check_citation("Companies Act 2006, s 994").known
    assert not check_citation("Smith v Jones [2019] EWCA Civ 1234").known
    assert not check_citation("Smith v Jones [1932] AC 562").known  # a real citation with an invented name


def test_a_curated_case_with_a_clashing_citation_points_at_the_curated_entry() -> None:
    assert check_citation("Donoghue v Stevenson [1932] AC 563").curated == "Donoghue v Stevenson [1932] AC 562"
    assert check_citation("Donoghue v Stevenson [2015] UKSC 1").curated == "Donoghue v Stevenson [1932] AC 562"
    assert check_citation("Donoghue v Stevenson 1932 SC (HL) 31").curated is None  # a parallel report
    assert check_citation("R v G [2004] 1 AC 1034").curated is None  # reported a year after judgment


def test_splitting_keeps_conjoined_appeals_and_parallel_citations_together() -> None:
    text = ("Miller v Miller; McFarlane v McFarlane [2006] UKHL 24; Companies Act 2006, s 172\n"
            "Tomlinson v Congleton BC [2003] UKHL 47, [2004] 1 AC 46, Occupiers' Liability Act 1957, s 2\n"
            "1. Smith v Jones\n- A v B; C v D")
    assert split_authorities(text) == [
        "Miller v Miller; McFarlane v McFarlane [2006] UKHL 24", "Companies Act 2006, s 172",
        "Tomlinson v Congleton BC [2003] UKHL 47, [2004] 1 AC 46", "Occupiers' Liability Act 1957, s 2",
        "Smith v Jones", "A v B", "C v D"]
    miller = parse_citations("Miller v Miller; McFarlane v McFarlane [2006] UKHL 24")
    assert [(f.valid, f.known, f.reason) for f in miller] == [(True, True, None)]


def test_summary_counts_and_problems() -> None:
    summary = summarise_citations("Donoghue v Stevenson [1932] AC 562; Smith v Jones [2019] EWCA Civ 1234; "
                                  "[2015] UKHL 3; Smith v Jones")
    assert (summary.total, summary.valid, summary.invalid, summary.known) == (4, 2, 2, 1)
    assert summary.problems == ("[2015] UKHL 3: UKHL sat until 2009", "Smith v Jones: a case name without a citation")
    assert summary.to_dict()["invalid"] == 2
    assert summarise_citations("").total == 0


def test_find_citations_in_free_text() -> None:
    text = ("Following Tomlinson v Congleton BC [2003] UKHL 47 and the reasoning in [2015] UKHL 3, the "
            "Occupiers' Liability Act 1984 applies; compare Roe v. Wade, 410 U.S. 113.")
    found = {f.text: f for f in find_citations(text)}
    assert found["[2003] UKHL 47"].valid and found["[2003] UKHL 47"].known
    assert found["[2015] UKHL 3"].impossible
    assert found["410 U.S. 113"].us_law
    assert any(f.kind == "statute" and f.valid for f in found.values())
    assert find_citations("No authorities here at all.") == []
