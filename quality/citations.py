"""UK legal citations: split a `case_citation` string into authorities, classify and validate each.

Three forms are recognised (UK conventions):

- neutral citations, ``[2019] UKSC 12``, ``[2019] EWCA Civ 1234``, ``[2009] EWHC 995 (Admin)``:
  the court code, its divisions and the years each existed come from `COURTS`;
- law reports, ``[1932] AC 562`` (square brackets: the year identifies the volume) or
  ``(1854) 9 Exch 341`` (round brackets: the volume number does); series from `REPORT_SERIES`;
- legislation, ``Companies Act 2006, s 172``, ``... Regulations 2006, reg 4``, and a few named
  instruments without a year (CPR, ECHR).

A finding that is not valid is either *malformed* (wrong brackets, unknown division, missing
citation: a formatting problem) or *impossible* (the authority could not exist: UKHL in 2015,
(KB) in 2021, a future year). US reporter citations are unrecognised and marked ``us_law``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import yaml

from quality.citation_tables import COURTS, LEGACY_DIVISION_FIRST, NEUTRAL_CITATIONS_BEGAN, REPORT_SERIES

AUTHORITIES_FILE = Path(__file__).resolve().parent.parent / "config" / "authorities.yaml"
def current_year() -> int:
    return date.today().year


_SERIES_BY_SQUASHED = {re.sub(r"[\s'’]", "", name): name for name in REPORT_SERIES}
_SERIES_ALT = "|".join(r"\s*".join(re.escape(part).replace("'", "['’]?") for part in name.split(" "))
                       for name in sorted(REPORT_SERIES, key=len, reverse=True))  # longest first: "All ER Rep"
_YEAR = r"(?P<open>[\[(])(?P<year>\d{4})(?P<close>[\])])"
REPORT_RE = re.compile(_YEAR + rf"\s*(?:(?P<volume>\d{{1,4}})\s+)?(?P<series>{_SERIES_ALT})\s+(?P<page>\d{{1,5}})\b")
# Patterns below start with a literal or a character class, not \b, so the regex engine can skip
# ahead quickly; `_starts_word` checks the boundary afterwards.
SCOTTISH_REPORT_RE = re.compile(r"(?P<year>(?:1[6-9]|20)\d\d)\s+(?P<series>SC|SLT|SCLR|JC|SCCR)"
                                r"(?:\s*\((?:HL|PC|J)\))?\s+(?P<page>\d{1,5})\b")
NEUTRAL_RE = re.compile(_YEAR + r"\s*(?P<court>[A-Z][A-Za-z]{1,7})(?:\s+\(?(?P<pre>[A-Z][a-z]{1,5})\)?)?"
                        r"\s+(?P<number>[A-Z]?\d{1,5}(?:_\d+)*[A-Z]?)\b(?:\s*\((?P<post>[A-Z][A-Za-z]{1,11})\))?")
_LR_VOLUME = re.compile(r"\bLR\s+(\d{1,3})\s+")
_TITLE_WORD = r"(?:\(?[A-Z][\w'’.-]*\)?|of|and|the|for|on|in|to|with|by|at|from|etc|&)"
_PROVISION = (r"(?i:(?:,?\s*(?:ss?\.?|sections?|sch(?:edule)?s?\.?|part|pt|regs?\.?|regulations?|rules?|r\.?"
              r"|arts?\.?|articles?|paras?\.?)\s*\d+[A-Z]?(?:\(\w{1,4}\))*"
              r"(?:\s*(?:-|–|to|and)\s*\d+[A-Z]?(?:\(\w{1,4}\))*)?)*)")
_SCOTTISH_HINTS = (" SC ", " SC (", " SLT ", " SCLR ", " JC ", " SCCR ")
INSTRUMENT_YEAR_RE = re.compile(r"(?P<instrument>Act|Regulations|Order|Rules|Measure)\s+(?P<year>\d{4})\b")
TITLE_BEFORE_RE = re.compile(rf"[A-Z][\w'’-]*(?:\s+{_TITLE_WORD}){{0,14}}\s+$")  # the title ending at an Act
PROVISION_RE = re.compile(_PROVISION)
NAMED_INSTRUMENT_RE = re.compile(r"(?:Civil Procedure Rules|Criminal Procedure Rules|Family Procedure Rules"
                                 r"|CPR|European Convention on Human Rights|ECHR|Magna Carta|Statute of Frauds)\b")
ACT_WITHOUT_YEAR_RE = re.compile(r"\b[A-Z][\w'’]*(?:\s+(?:[A-Z][\w'’]*|of|and|the|for)){0,12}\s+Act\b(?!\s+\d{4})")
US_REPORTER_RE = re.compile(
    r"\d{1,4}\s+(?:U\.\s?S\.|S\.\s?Ct\.|L\.\s?Ed\.(?:\s?2d)?|F\.\s?(?:2d|3d|4th)|F\.\s?Supp\.(?:\s?[23]d)?"
    r"|F\.\s?App['’]x|Cal\.\s?(?:App\.\s?)?(?:[2-5](?:d|th))?|Cal\.\s?Rptr\.(?:\s?[23]d)?|N\.Y\.(?:\s?[23]d)?"
    r"|N\.Y\.S\.(?:\s?[23]d)?|N\.E\.(?:\s?[23]d)?|N\.W\.(?:\s?2d)?|S\.W\.(?:\s?[23]d)?|S\.E\.(?:\s?2d)?"
    r"|So\.\s?(?:[23]d)?|A\.\s?[23]d|P\.\s?[23]d)\s*\d{1,5}\b|\d+\s+U\.\s?S\.\s?C\.?\s*§*\s*\d+")
_US_REPORTER_HINT = re.compile(r"\d\s+[A-Z][a-z]{0,3}\.")  # every US reporter citation has one
_CASE_NAME = re.compile(r"\bv\.?\s|^\s*(?:Re|In re|Ex p(?:arte)?)\b", re.I)
_COMMA_BEFORE_AUTHORITY = re.compile(r",\s+(?=(?:the\s+)?[A-Z][^,\[\]();]{0,80}?\s(?:v\.?\s|Act\s+\d{4}\b))")
_BULLET = re.compile(r"^\s*(?:[-*•]+|\d{1,2}[.)])\s+")


@dataclass(frozen=True)
class CitationFinding:
    """One authority (or one citation found in free text) and what is wrong with it, if anything."""

    text: str
    kind: str  # "neutral" | "law_report" | "statute" | "unrecognised"
    valid: bool
    reason: str | None = None
    known: bool = False  # matches config/authorities.yaml
    impossible: bool = False  # could not exist (year outside the court's or series' life, future)
    us_law: bool = False
    curated: str | None = None  # the curated entry for this case name when the citation differs
    keys: tuple[str, ...] = field(default=(), repr=False)  # normalised citations it contains

    @property
    def problem(self) -> str | None:
        """"impossible", "malformed" or None."""
        return None if self.valid else "impossible" if self.impossible else "malformed"


@dataclass(frozen=True)
class _Cite:
    kind: str
    key: str
    year: int | None
    source: str = ""  # the report series or court code
    problem: str | None = None
    impossible: bool = False


_NORM_TABLE = str.maketrans({".": " ", ",": " ", "’": "'"})


def _norm(text: str) -> str:
    """Comparison form: case-folded, no full stops or commas ("v." = "v"), single spaces."""
    return " ".join(text.casefold().translate(_NORM_TABLE).split()).strip(" ;:-")


def _starts_word(text: str, start: int) -> bool:
    return start == 0 or not text[start - 1].isalnum()


def us_reporter_citations(text: str) -> list[re.Match[str]]:
    """US reporter citations ("410 U.S. 113", "123 F.3d 456", "42 U.S.C. § 1983") in the text."""
    if not _US_REPORTER_HINT.search(text):
        return []
    return [m for m in US_REPORTER_RE.finditer(text) if _starts_word(text, m.start())]


def _year_problem(year: int, now: int) -> str | None:
    return f"{year} is in the future" if year > now else None


def _check_report(open_: str, close: str, year: int, series: str, volume: str | None,
                  page: str, now: int) -> tuple[str | None, bool]:
    spec = REPORT_SERIES[series]
    cited = f"{volume + ' ' if volume else ''}{series} {page}"
    if (future := _year_problem(year, now)) is not None:
        return future, True
    old_numbered = open_ == "(" and volume and spec.covers(year, spec.round_periods) and spec.round_periods
    if not spec.covers(year) and not old_numbered:
        periods = spec.periods
        span = (f"began in {periods[0][0]}" if len(periods) == 1 and periods[0][1] is None
                else "ran " + " and ".join(f"from {a}" if b is None else f"{a}–{b}" for a, b in periods))
        return f"{series} reports {span}" + (f" ({spec.note})" if spec.note else ""), True
    if (open_ == "[") != (close == "]"):
        return "mismatched brackets around the year", False
    if spec.brackets == "square" and open_ == "(" and not old_numbered:
        return f"{series} is cited by year, so the year takes square brackets: [{year}] {cited}", False
    if spec.brackets == "round" and open_ == "[":
        return f"{series} is cited by volume number, so the year takes round brackets: ({year}) {cited}", False
    if spec.brackets == "round" and not volume:
        return f"{series} needs a volume number: ({year}) <volume> {series} <page>", False
    return None, False


def _check_neutral(m: re.Match[str], now: int) -> tuple[str | None, bool]:
    code, year = m["court"], int(m["year"])
    pre, post = m["pre"], m["post"]
    court = COURTS.get(code)
    if court is None:
        return f"unknown court code {code}", False
    if (future := _year_problem(year, now)) is not None:
        return future, True
    if year < NEUTRAL_CITATIONS_BEGAN:
        return f"neutral citations began in {NEUTRAL_CITATIONS_BEGAN}", True
    legacy = LEGACY_DIVISION_FIRST.get((code, pre or post or ""))
    if legacy and legacy[0] <= year <= (legacy[1] or year):
        old_form = f"in {year} the form was [{year}] {code} {post} <number>"
        return (None, False) if pre and not post else (old_form, False)
    if year < court.first:
        return (f"{code} sat from {court.first}" if court.created
                else f"{code} neutral citations began in {court.first}"), True
    if court.last is not None and year > court.last:
        return f"{code} sat until {court.last}", True
    if m["open"] != "[" or m["close"] != "]":
        return f"neutral citations take square brackets: [{year}] {code} ...", False
    if court.divisions is None:
        return (f"{code} takes no division", False) if pre or post else (None, False)
    names = " or ".join(court.divisions)
    division = pre if court.division_first else post
    misplaced = post if court.division_first else pre
    if division is None:
        if misplaced in court.divisions:
            where = "before the number" if court.division_first else "in brackets after the number"
            return f"the {code} division goes {where}", False
        return (f"{code} needs {names}" if court.division_first
                else f"{code} needs a division in brackets, e.g. ({next(iter(court.divisions))})"), False
    if division not in court.divisions:
        return f"unknown {code} division ({division})", False
    first, last = court.divisions[division]
    if year < first:
        return f"({division}) exists only from {first}", True
    if last is not None and year > last:
        return f"({division}) exists only until {last}", True
    return None, False


def _scan(text: str, impossible_only: bool = False) -> list[tuple[int, int, _Cite]]:
    """Every citation in `text` with its span, in order; law reports win over neutral look-alikes.

    `impossible_only` keeps just the citations that could not exist, skipping the costlier work
    (normalised keys, statute titles) for the rest: the fast path for long free text.
    """
    text, now = _LR_VOLUME.sub(r"\1 LR ", text) if "LR" in text else text, current_year()
    found: list[tuple[int, int, _Cite]] = []
    taken: set[int] = set()  # where law reports start: a neutral look-alike there is the same text
    for m in REPORT_RE.finditer(text):
        series = _SERIES_BY_SQUASHED[re.sub(r"[\s'’]", "", m["series"])]
        problem, impossible = _check_report(m["open"], m["close"], int(m["year"]), series, m["volume"],
                                             m["page"], now)
        taken.add(m.start())
        if impossible or not impossible_only:
            key = _norm(f"[{m['year']}] {m['volume'] or ''} {series} {m['page']}")
            found.append((*m.span(), _Cite("law_report", key, int(m["year"]), series, problem, impossible)))
    for m in SCOTTISH_REPORT_RE.finditer(text) if any(s in text for s in _SCOTTISH_HINTS) else ():
        if not _starts_word(text, m.start()) or text[m.start() - 1:m.start()] in ("[", "("):
            continue
        problem = _year_problem(int(m["year"]), now)
        if problem or not impossible_only:
            found.append((*m.span(), _Cite("law_report", _norm(m[0]), int(m["year"]), m["series"], problem,
                                           bool(problem))))
    for m in NEUTRAL_RE.finditer(text):
        if m.start() in taken or m["court"] in _SERIES_BY_SQUASHED:
            continue
        problem, impossible = _check_neutral(m, now)
        if impossible or not impossible_only:
            key = _norm(f"[{m['year']}] {m['court']} {m['pre'] or ''} {m['number']} {m['post'] or ''}")
            found.append((*m.span(), _Cite("neutral", key, int(m["year"]), m["court"], problem, impossible)))
    for m in INSTRUMENT_YEAR_RE.finditer(text):
        year = int(m["year"])
        problem = _year_problem(year, now) or (f"no {m['instrument']} dates from {year}" if year < 1200 else None)
        if impossible_only and not problem or not _starts_word(text, m.start()):
            continue
        title = TITLE_BEFORE_RE.search(text, max(0, m.start() - 240), m.start())
        if title is None:
            continue
        name = re.sub(r"^(?:the|under|see|and|in|per)\s+", "", title[0].strip(), flags=re.I)
        key = _norm(f"{name} {m['instrument']} {year}")
        end = PROVISION_RE.match(text, m.end()).end()  # type: ignore[union-attr]  # always matches
        found.append((title.start(), end, _Cite("statute", key, year, "", problem, bool(problem))))
    for m in () if impossible_only else NAMED_INSTRUMENT_RE.finditer(text):
        if _starts_word(text, m.start()) and not any(a <= m.start() < b for a, b, _ in found):
            found.append((*m.span(), _Cite("statute", _norm(m[0]), None)))
    return sorted(found, key=lambda item: item[0])


@dataclass(frozen=True)
class KnownAuthorities:
    """The curated authorities, indexed for normalised comparison."""

    entries: frozenset[str]
    names_by_key: dict[str, frozenset[str]]
    by_name: dict[str, tuple[str, _Cite]]  # case name -> (curated entry, its first citation)


def _case_name(text: str, first_citation_at: int) -> str:
    return _norm(_BULLET.sub("", text[:first_citation_at]))


@lru_cache(maxsize=4)
def known_authorities(path: str | None = None) -> KnownAuthorities:
    """The authorities in config/authorities.yaml (or `path`), read once."""
    groups = yaml.safe_load(Path(path or AUTHORITIES_FILE).read_text(encoding="utf-8")) or {}
    entries, names_by_key, by_name = set(), {}, {}
    for entry in (str(e) for group in groups.values() for e in group or ()):
        entries.add(_norm(entry))
        cites = _scan(entry)
        name = _case_name(entry, cites[0][0]) if cites else ""
        for _, _, cite in cites:
            names_by_key.setdefault(cite.key, set()).add(name)
        if cites and name and cites[0][2].kind != "statute":
            by_name.setdefault(name, (entry, cites[0][2]))
    return KnownAuthorities(frozenset(entries), {k: frozenset(v) for k, v in names_by_key.items()}, by_name)


def _is_known(text: str, name: str, cites: list[_Cite], known: KnownAuthorities) -> bool:
    if _norm(text) in known.entries:
        return True
    first_word = name.split(" ", 1)[0]
    return any(names and (cite.kind == "statute" or not name or name in names
                          or first_word in {n.split(" ", 1)[0] for n in names})
               for cite in cites for names in [known.names_by_key.get(cite.key)])


def _misquoted(name: str, cites: list[_Cite], known: KnownAuthorities) -> str | None:
    """The curated entry when a curated case name is cited with a different, clashing citation."""
    curated = known.by_name.get(name)
    if curated is None or not cites:
        return None
    entry, expected = curated
    clash = any((c.kind, c.source) == (expected.kind, expected.source)
                or (c.kind != "statute" and c.year and expected.year and abs(c.year - expected.year) > 1)
                for c in cites)
    return entry if clash and all(c.key != expected.key for c in cites) else None


def _us_reason(match: re.Match[str]) -> str:
    return f"US reporter citation ({match[0].strip()}): US law, not UK"


def _unrecognised_reason(text: str) -> str:
    if re.search(r"[\[(]\d{4}[\])]", text):
        return "a year in brackets but no recognisable court code or report series"
    if ACT_WITHOUT_YEAR_RE.search(text):
        return "an Act cited without its year"
    if _CASE_NAME.search(text):
        return "a case name without a citation"
    return "not a recognisable case citation or legislation"


@lru_cache(maxsize=8192)
def _scan_piece(text: str) -> tuple[tuple[int, int, _Cite], ...]:
    """`_scan` for one authority; authorities recur across a dataset, so results are cached."""
    return tuple(_scan(text))


@lru_cache(maxsize=8192)
def check_citation(text: str) -> CitationFinding:
    """Classify and validate one authority, e.g. "Donoghue v Stevenson [1932] AC 562" (cached)."""
    text, known = _BULLET.sub("", text.strip()).strip(), known_authorities()
    if us := us_reporter_citations(text):
        return CitationFinding(text, "unrecognised", False, _us_reason(us[0]), us_law=True)
    scanned = _scan_piece(text)
    if not scanned:
        return CitationFinding(text, "unrecognised", False, _unrecognised_reason(text))
    cites = [cite for _, _, cite in scanned]
    name = _case_name(text, scanned[0][0])
    bad = next((c for c in cites if c.problem and c.impossible), None) or next((c for c in cites if c.problem), None)
    is_known = _is_known(text, name, cites, known)
    return CitationFinding(
        text, cites[0].kind, bad is None, bad.problem if bad else None, is_known,
        impossible=bool(bad and bad.impossible),
        curated=None if is_known else _misquoted(name, cites, known),
        keys=tuple(c.key for c in cites))


def split_authorities(case_citation: str) -> list[str]:
    """The authorities in a `case_citation` string.

    Splits on ';' and newlines, and on commas that introduce another case or Act. Case names
    without a citation of their own are joined to the next cited piece on the same line, so a
    conjoined appeal ("Miller v Miller; McFarlane v McFarlane [2006] UKHL 24") stays one authority.
    """
    out: list[str] = []
    for line in case_citation.splitlines():
        pieces = [_BULLET.sub("", sub).strip() for part in line.split(";")
                  for sub in _COMMA_BEFORE_AUTHORITY.split(part)]
        names: list[str] = []  # uncited case names waiting for the next citation on the line
        for text in filter(None, pieces):
            if not _scan_piece(text) and not us_reporter_citations(text) and _CASE_NAME.search(text):
                names.append(text)
            else:
                out.append("; ".join([*names, text]))
                names = []
        out.extend(names)
    return out


def parse_citations(case_citation: str) -> list[CitationFinding]:
    """One finding per authority in a `case_citation` string."""
    return [check_citation(piece) for piece in split_authorities(case_citation or "")]


def find_citations(text: str) -> list[CitationFinding]:
    """Citations mentioned in free text (an answer, the reasoning): one finding per citation."""
    known, text = known_authorities(), text or ""
    findings = [CitationFinding(m[0].strip(), "unrecognised", False, _us_reason(m), us_law=True)
                for m in us_reporter_citations(text)]
    return findings + [CitationFinding(text[a:b].strip(), c.kind, c.problem is None, c.problem,
                                       bool(known.names_by_key.get(c.key)), c.impossible, keys=(c.key,))
                       for a, b, c in _scan(text)]


def impossible_citations(text: str) -> list[CitationFinding]:
    """The citations in free text that could not exist; much cheaper than `find_citations`."""
    return [CitationFinding(text[a:b].strip(), c.kind, False, c.problem, impossible=True, keys=(c.key,))
            for a, b, c in _scan(text or "", impossible_only=True)]


@dataclass(frozen=True)
class CitationSummary:
    """Counts and problems for a sample's authorities."""

    findings: tuple[CitationFinding, ...]
    total: int
    valid: int
    known: int
    problems: tuple[str, ...]

    @property
    def invalid(self) -> int:
        return self.total - self.valid

    def to_dict(self) -> dict[str, object]:
        return {"total": self.total, "valid": self.valid, "invalid": self.invalid, "known": self.known,
                "problems": list(self.problems)}


def summarise_citations(case_citation: str | Iterable[CitationFinding] | None) -> CitationSummary:
    """Counts of valid/invalid/known authorities and the problems, for a string or parsed findings."""
    parsed = case_citation is None or isinstance(case_citation, str)
    findings = tuple(parse_citations(case_citation or "") if parsed else case_citation)  # type: ignore[arg-type]
    return CitationSummary(findings, len(findings), sum(f.valid for f in findings), sum(f.known for f in findings),
                           tuple(f"{f.text}: {f.reason}" for f in findings if not f.valid))
