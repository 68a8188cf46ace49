"""Cost of the quality checks: `assess` per sample, and the duplicate index at 100,000 questions.

Run: `.venv/bin/python bench/quality_bench.py` (under a minute on 2 cores).

1. assess: mean and p95 microseconds per sample over a few thousand varied samples (the
   simulator's realistic samples, a quarter of them with injected problems), with no index and
   with a 100,000-question index.
2. DuplicateIndex: time to add 100,000 varied synthetic questions (ten templates; names, places,
   businesses, sums, statutes, topics and wording vary), time per `check` at that size (new
   questions and paraphrases of indexed ones), resident memory the index added, and `clusters()`.
"""
from __future__ import annotations

import gc
import os
import random
import statistics
import time
from typing import Callable


from config.catalog import DIFFICULTIES, SAMPLE_TYPES, TOPICS
from quality import DuplicateIndex, assess
from simulator.content import BUSINESSES, FIRST, LAST, PLACES, SETTINGS, make_sample

INDEX_SIZE = 100_000
ASSESS_SAMPLES = 3_000
CHECKS = 3_000

GOODS = ["a delivery van", "forty laptops", "a commercial oven", "solar panels", "a used tractor", "office chairs",
         "a fishing boat", "industrial freezers", "a vintage car", "printed catalogues", "steel beams", "a racehorse"]
ACTS = ["Sale of Goods Act 1979", "Consumer Rights Act 2015", "Equality Act 2010", "Companies Act 2006",
        "Employment Rights Act 1996", "Occupiers' Liability Act 1984", "Landlord and Tenant Act 1954",
        "Misrepresentation Act 1967", "Fraud Act 2006", "Children Act 1989", "Insolvency Act 1986",
        "Trustee Act 2000", "Human Rights Act 1998", "Land Registration Act 2002"]
ROLES = ["a landlord", "a tenant", "an employer", "an employee", "a director", "a shareholder", "a trustee",
         "a beneficiary", "a consumer", "a supplier", "a local authority", "a solicitor", "a parent"]
ACTIONS = ["withhold payment", "terminate the agreement early", "recover the deposit", "claim damages for distress",
           "refuse access to the premises", "change the terms without consent", "rely on an exclusion clause",
           "bring a claim after six years", "set off a counterclaim", "demand an account of profits"]
PROBLEMS = ["arrived two weeks late", "turned out to be defective", "was never delivered", "was the wrong model",
            "failed its safety inspection", "was damaged in transit"]
AUDIENCES = ["a first-year student", "a trainee solicitor", "a client", "a pupil barrister"]
OPENERS = ["", "Under English law, ", "In England and Wales, ", "As a matter of English law, "]
TEMPLATES: list[Callable[[random.Random], str]] = [
    lambda r: (f"{_person(r)}, who runs {r.choice(BUSINESSES)} in {r.choice(PLACES)}, fell out with {_person(r)} "
               f"{r.choice(SETTINGS)}; about £{r.randrange(2, 400) * 250:,} is at stake. How does English law on "
               f"{_topic(r)} apply?"),
    lambda r: (f"{r.choice(OPENERS)}can {r.choice(ROLES)} {r.choice(ACTIONS)} when {r.choice(ROLES)} has "
               f"{r.choice(['breached', 'ignored', 'misread', 'varied'])} clause {r.randrange(1, 40)} of a "
               f"{r.randrange(2, 25)}-year agreement?"),
    lambda r: (f"{_person(r)} bought {r.choice(GOODS)} from {r.choice(BUSINESSES)} for "
               f"£{r.randrange(5, 900) * 100:,}, but it {r.choice(PROBLEMS)}. What remedies does "
               f"{r.choice(ACTS)} give?"),
    lambda r: (f"How do the courts interpret section {r.randrange(1, 250)} of the {r.choice(ACTS)} where "
               f"{r.choice(ROLES)} and {r.choice(ROLES)} dispute {_topic(r)}?"),
    lambda r: (f"Explain {_topic(r)} for {r.choice(AUDIENCES)}, using the facts of a dispute in "
               f"{r.choice(PLACES)} over £{r.randrange(1, 90) * 1000:,}."),
    lambda r: (f"{_person(r)} was dismissed by {r.choice(BUSINESSES)} after {r.randrange(1, 30)} years "
               f"{r.choice(SETTINGS)}. Does {r.choice(FIRST)} have a claim in {_topic(r)}?"),
    lambda r: (f"What must {r.choice(ROLES)} prove to succeed in {_topic(r)} against {r.choice(ROLES)} when "
               f"{r.choice(GOODS)} {r.choice(PROBLEMS)}?"),
    lambda r: (f"My {r.choice(['landlord', 'employer', 'builder', 'neighbour', 'bank', 'ex-partner'])} in "
               f"{r.choice(PLACES)} {r.choice(['kept', 'refused to return', 'spent', 'froze'])} £"
               f"{r.randrange(3, 300) * 50:,} {r.choice(SETTINGS)}. What can I do about {_topic(r)}?"),
    lambda r: (f"When is {r.choice(ROLES)} liable under the {r.choice(ACTS)} for loss caused to "
               f"{r.choice(ROLES)} by {r.choice(ACTIONS).replace('the ', 'their ')}?"),
    lambda r: (f"Compare {_topic(r)} with {_topic(r)}: which gives {_person(r)} the better claim against "
               f"{r.choice(BUSINESSES)} in {r.choice(PLACES)}?"),
]
FACTS = ["The contract was signed on {d} {m} {y}.", "{p} had warned them twice in writing.",
         "Nothing was said about {x} at the time.", "An invoice for £{n:,} is still unpaid.",
         "The premises are leased for {k} years from {y}.", "{p} says the clause was never explained.",
         "A surveyor's report dated {d} {m} {y} mentioned {x}.", "{p} has since moved to {t}.",
         "Three emails about {x} went unanswered.", "The board met on {d} {m} without {p}.",
         "Insurance covered only £{n:,} of the loss.", "{p} is {k} years old and has no other income."]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
MATTERS = ["the damp in the basement", "the deposit", "a non-compete clause", "the delivery date", "the CCTV footage",
           "a verbal side agreement", "the asbestos survey", "the pension scheme", "the shared driveway",
           "the software licence", "the overtime rota", "the boundary fence", "the loan guarantee"]
INJECTED = [" As an AI language model, I cannot provide legal advice.", " The plaintiff sued in the Ninth Circuit.",
            " This does not constitute legal advice.", " See also [2015] UKHL 3."]


def _person(r: random.Random) -> str:
    return f"{r.choice(FIRST)} {r.choice(LAST)}"


def _topic(r: random.Random) -> str:
    return r.choice(TOPICS).topic.lower()


def _fact(r: random.Random) -> str:
    return r.choice(FACTS).format(d=r.randrange(1, 29), m=r.choice(MONTHS), y=r.randrange(1995, 2026), p=_person(r),
                                  x=r.choice(MATTERS), n=r.randrange(2, 900) * 100, k=r.randrange(2, 60),
                                  t=r.choice(PLACES))


def synthetic_questions(count: int, seed: int) -> list[str]:
    """Questions from ten templates, most with one or two facts added (as generated scenarios have)."""
    rng = random.Random(seed)
    return [" ".join([*(_fact(rng) for _ in range(rng.choice((0, 1, 1, 2)))), rng.choice(TEMPLATES)(rng)])
            for _ in range(count)]


def paraphrase(question: str, rng: random.Random) -> str:
    """Reorder the question's clauses and vary small words, as a model rewording it would."""
    clauses = [c.strip() for c in question.replace("?", "").split(",") if c.strip()]
    rng.shuffle(clauses)
    text = ", ".join(clauses).replace(" a ", " the ", 1)
    return text[:1].upper() + text[1:] + "?"


def realistic_samples(count: int, seed: int) -> list[dict]:
    """The simulator's samples across topics, levels and types; every fourth has a problem added."""
    rng = random.Random(seed)
    samples = []
    for n in range(count):
        topic, difficulty = rng.choice(TOPICS), rng.choice(DIFFICULTIES)
        sample_type = rng.choice(list(SAMPLE_TYPES))
        prompt = (f"Practice area: {topic.practice_area}\nTopic: {topic.topic}\nDifficulty: {difficulty}\n"
                  f"Sample type: {sample_type}\n")
        sample = make_sample(prompt, rng)
        sample.update(id=f"bench-{n}", topic=topic.label, difficulty=difficulty, sample_type=sample_type)
        if n % 4 == 0:
            sample["answer"] += rng.choice(INJECTED)
        samples.append(sample)
    return samples


def timed_each(items: list, call: Callable[[object], object]) -> list[float]:
    out = []
    for item in items:
        started = time.perf_counter()
        call(item)
        out.append((time.perf_counter() - started) * 1e6)
    return out


def describe(label: str, values: list[float]) -> None:
    p95 = statistics.quantiles(values, n=20)[-1]
    print(f"  {label:<44} mean {statistics.fmean(values):9.1f} us   p95 {p95:9.1f} us")


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> None:
    samples = realistic_samples(ASSESS_SAMPLES, seed=11)
    questions = synthetic_questions(INDEX_SIZE, seed=5)
    print(f"quality bench: {ASSESS_SAMPLES:,} samples for assess, {INDEX_SIZE:,} synthetic questions "
          f"({len(set(questions)):,} distinct)")

    assess(samples[0])  # warm the authorities cache and regexes
    print("assess per sample")
    describe("no index", timed_each(samples, assess))

    gc.collect()
    before = rss_bytes()
    index = DuplicateIndex()
    started = time.perf_counter()
    for n, question in enumerate(questions):
        index.add(f"q{n}", question)
    build_seconds = time.perf_counter() - started
    gc.collect()
    grown = rss_bytes() - before
    describe(f"with a {len(index):,}-question index", timed_each(samples, lambda s: assess(s, index)))

    print(f"DuplicateIndex at {len(index):,} questions")
    print(f"  build: {build_seconds:.1f} s ({build_seconds / INDEX_SIZE * 1e6:.0f} us per add)")
    print(f"  memory: {grown / 2**20:.0f} MiB resident growth ({grown / INDEX_SIZE:.0f} bytes per question)")
    rng = random.Random(3)
    fresh = synthetic_questions(CHECKS, seed=99)
    reworded = [paraphrase(q, rng) for q in rng.sample(questions, CHECKS)]
    describe("check, new question", timed_each(fresh, index.check))
    describe("check, paraphrase of an indexed question", timed_each(reworded, index.check))
    candidates = [len(index._candidates(index._probe(q))) for q in fresh[:500]]  # diagnostics only
    print(f"  LSH candidates per check (new questions): mean {statistics.fmean(candidates):.1f}, "
          f"max {max(candidates)}")
    caught = sum(index.check(q)[1] is not None or index.check(q)[0] is not None for q in reworded[:500])
    print(f"  paraphrases caught: {caught}/500")
    flagged = sum(index.check(q)[1] is not None for q in fresh[:500])
    print(f"  new questions reported as near duplicates: {flagged}/500")
    started = time.perf_counter()
    groups = index.clusters()
    print(f"  clusters(): {time.perf_counter() - started:.1f} s, {len(groups):,} groups covering "
          f"{sum(map(len, groups)):,} questions")


if __name__ == "__main__":
    main()
