"""The tables behind citation checks: court codes with their years and divisions (neutral
citations) and law report series with their brackets and years."""
from __future__ import annotations

import re
from dataclasses import dataclass

NEUTRAL_CITATIONS_BEGAN = 2001
OPEN = None  # an open-ended period
Period = tuple[int, "int | None"]


@dataclass(frozen=True)
class Court:
    """A court or tribunal code used in neutral citations."""

    first: int
    last: int | None = None
    divisions: dict[str, Period] | None = None  # None: the court takes no division
    division_first: bool = False  # EWCA Civ 12 (True) or EWHC 12 (Ch) (False)
    created: bool = False  # the court itself began in `first` (else only its neutral citations)


def _any(*names: str) -> dict[str, Period]:
    return {name: (NEUTRAL_CITATIONS_BEGAN, OPEN) for name in names}


COURTS: dict[str, Court] = {
    "UKSC": Court(2009, created=True),
    "UKHL": Court(2001, 2009),
    "UKPC": Court(2001),
    "EWCA": Court(2001, divisions=_any("Civ", "Crim"), division_first=True),
    "EWHC": Court(2002, divisions={
        **_any("Admin", "Ch", "Fam", "Comm", "TCC", "Pat", "Admlty", "Costs", "SCCO", "Mercantile"),
        "QB": (2002, 2022), "KB": (2022, OPEN), "IPEC": (2013, OPEN), "PCC": (2002, 2013),
        "COP": (2007, 2014)}),
    "EWFC": Court(2014, created=True),
    "EWCOP": Court(2014),
    "UKUT": Court(2008, divisions=_any("AAC", "IAC", "LC", "TCC"), created=True),
    "UKFTT": Court(2008, divisions=_any("TC", "GRC", "PC", "HESC", "SEC", "WPAFC", "IAC"), created=True),
    "UKEAT": Court(2001),  # BAILII numbering, e.g. [2019] UKEAT 0123_18_0101
    "EAT": Court(2022),
    "UKAIT": Court(2005, 2010, created=True),
    "UKIPTrib": Court(2001),
    "CAT": Court(2001),
    "CSIH": Court(2005), "CSOH": Court(2005), "HCJAC": Court(2005), "HCJ": Court(2005),
    "SAC": Court(2016, divisions=_any("Civ", "Crim"), division_first=True, created=True),
    "NICA": Court(2001), "NIQB": Court(2001, 2022), "NIKB": Court(2022), "NICh": Court(2001),
    "NIFam": Court(2001), "NICC": Court(2001), "NIMaster": Court(2001),
}
# Old forms accepted only in the years given: [2001] EWHC Admin 123 preceded "(Admin)".
LEGACY_DIVISION_FIRST: dict[tuple[str, str], Period] = {("EWHC", "Admin"): (2001, 2001)}


@dataclass(frozen=True)
class Series:
    """A law report series: how its year is bracketed and when it ran (no periods: not checked)."""

    brackets: str  # "square" (year-volume), "round" (numbered volumes) or "either"
    periods: tuple[Period, ...] = ()
    note: str = ""
    slack: int = 0  # years of tolerance on the periods (nominate reports came out late)
    round_periods: tuple[Period, ...] = ()  # years the same abbreviation was a numbered series

    def covers(self, year: int, periods: tuple[Period, ...] | None = None) -> bool:
        spans = self.periods if periods is None else periods
        return not spans or any(first - self.slack <= year <= (last or 9999) + self.slack
                                for first, last in spans)


def _sq(*periods: Period, note: str = "", round_periods: tuple[Period, ...] = ()) -> Series:
    return Series("square", periods, note, round_periods=round_periods)


def _rd(*periods: Period) -> Series:
    return Series("round", periods)


REPORT_SERIES: dict[str, Series] = {
    # The Law Reports: cited by year from 1891, by volume before (App Cas, QBD, LR HL ...).
    "AC": _sq((1891, OPEN), note="earlier appeals are App Cas"),
    "QB": _sq((1891, 1901), (1952, 2022), round_periods=((1841, 1856),)),  # (1849) 13 QB: Adolphus & Ellis
    "KB": _sq((1901, 1952), (2023, OPEN)), "Ch": _sq((1891, OPEN), note="earlier volumes are Ch D"),
    "P": _sq((1891, 1971)), "Fam": _sq((1972, OPEN)),
    "App Cas": _rd((1875, 1890)), "QBD": _rd((1875, 1890)), "Ch D": _rd((1875, 1890)),
    "PD": _rd((1875, 1890)), "Ex D": _rd((1875, 1880)), "CPD": _rd((1875, 1880)),
    **{f"LR {s}": _rd((1865, 1875)) for s in ("HL", "QB", "CP", "Ex", "Eq", "Ch App", "PC", "CCR",
                                               "P & D", "Sc & Div", "A & E")},
    # Other series cited by year; years are checked only where the start is well established.
    "WLR": _sq((1953, OPEN)), "All ER": _sq((1936, OPEN)), "All ER Rep": _sq((1558, 1935)),
    "All ER (Comm)": _sq((1999, OPEN)), "ICR": _sq((1972, OPEN)), "IRLR": _sq((1972, OPEN)),
    "Lloyd's Rep": _sq((1951, OPEN)), "FLR": _sq((1980, OPEN)), "STC": _sq((1971, OPEN)),
    "Crim LR": _sq((1954, OPEN)), "CMLR": _sq((1962, OPEN)),
    **dict.fromkeys(("All ER (D)", "Lloyd's Rep IR", "Lloyd's Rep PN", "Lloyd's Rep Med", "BCLC", "BCC",
                     "FCR", "ECR", "EGLR", "EMLR", "PNLR", "WTLR", "BPIR", "HRLR", "UKHRR", "Env LR",
                     "Bus LR", "CLC", "Fam Law", "JPL", "L & TR", "Costs LR", "Med LR", "FSR", "Pens LR"), _sq()),
    "EG": Series("either"), "RPC": Series("either"),
    # Series cited by volume number.
    "Cr App R": _rd((1908, OPEN)), "Cr App R (S)": _rd((1979, OPEN)), "P & CR": _rd((1949, OPEN)),
    "EHRR": _rd((1979, OPEN)), "Ll L Rep": _rd((1919, 1950)), "ER": Series("round", ((1220, 1867),), slack=3),
    **dict.fromkeys(("HLR", "TC", "TLR", "LT", "JP", "SJ", "Sol Jo", "Cox CC", "ITR", "BLR", "Con LR", "LGR",
                     "BMLR"), _rd()),
}
# Nominate reports: round brackets, numbered volumes, the years the reporter covered (+/- 3).
_NOMINATE = """Exch 1847-1856; Hare 1841-1853; Beav 1838-1866; Ph 1841-1849; Bing 1822-1834;
Bing NC 1834-1840; B & Ad 1830-1833; B & C 1822-1830; M & W 1836-1847; De G M & G 1851-1857;
De G & J 1857-1859; De G F & J 1859-1862; H & N 1856-1862; H & C 1862-1866; E & B 1852-1858;
B & S 1861-1865; CB 1845-1856; CB NS 1856-1865; Ves 1789-1817; Ves Sen 1747-1756; Atk 1736-1754;
Vern 1680-1719; Mer 1815-1817; My & Cr 1835-1841; My & K 1831-1835; Russ 1823-1829; Sim 1826-1852;
Mac & G 1849-1852; Taunt 1807-1819; East 1800-1812; TR 1785-1800; Burr 1756-1772; Camp 1807-1816;
C & P 1823-1841; F & F 1856-1867; HL Cas 1846-1866; Cl & F 1831-1846; Moo PC 1836-1862;
A & E 1834-1840; Ad & El 1834-1840"""
REPORT_SERIES.update({name: Series("round", ((int(a), int(b)),), slack=3)
                      for name, a, b in re.findall(r"\s*([^;]+?) (\d{4})-(\d{4})", _NOMINATE)})
