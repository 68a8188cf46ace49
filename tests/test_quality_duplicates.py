"""Exact and near-duplicate questions: normalisation, paraphrases, distinct questions, updates, clusters."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from quality.duplicates import DuplicateIndex, normalise_question, question_features

DEPOSIT = "Can a landlord keep a tenant's deposit without giving any reason under English law?"
DEPOSIT_PARAPHRASE = "Under English law, can a landlord keep the deposit of a tenant without giving any reason?"
SALE_OF_GOODS = "What remedies are available for breach of a contract for the sale of goods?"
TRESPASSER = "When does an occupier owe a duty to a trespasser under the Occupiers' Liability Act 1984?"
TEMPLATE = ("{name}, who runs {business} in {town}, fell out with {other} {setting}; about £{amount} is at stake. "
            "How does English law on {topic} apply, and what should {first} expect?")
AMIRA = TEMPLATE.format(name="Amira Khan", first="Amira", business="a bakery", town="Leeds", other="Tom Baker",
                        setting="after a dispute that had simmered for months", amount="5,000", topic="nuisance")
PRIYA = TEMPLATE.format(name="Priya Patel", first="Priya", business="a dental practice", town="York",
                        other="Owen Shaw", setting="following a written warning", amount="12,250",
                        topic="misrepresentation")


@pytest.fixture
def index() -> DuplicateIndex:
    built = DuplicateIndex()
    for sample_id, question in (("deposit", DEPOSIT), ("goods", SALE_OF_GOODS), ("amira", AMIRA)):
        built.add(sample_id, question)
    return built


def test_normalisation_folds_case_whitespace_punctuation_and_thousands() -> None:
    assert normalise_question("  What   is £5,000 —  a 'deposit'?! ") == "what is 5000 a deposit"
    assert normalise_question("  What   is £5,000?! ") == "what is 5000"
    assert normalise_question("Tenant’s DEPOSIT") == normalise_question("tenant's deposit")


def test_exact_duplicates_ignore_case_whitespace_and_punctuation(index: DuplicateIndex) -> None:
    variant = "  CAN a landlord keep a tenant's deposit  without giving any reason, under English law "
    assert index.exact_match(variant) == "deposit"
    assert index.check(variant) == ("deposit", None)
    assert index.exact_match(variant, exclude_id="deposit") is None
    assert index.exact_match(TRESPASSER) is None


def test_a_reordered_paraphrase_is_a_near_duplicate(index: DuplicateIndex) -> None:
    exact, near = index.check(DEPOSIT_PARAPHRASE)
    assert exact is None
    assert near is not None and near[0] == "deposit" and near[1] >= index.threshold
    assert [sample_id for sample_id, _ in index.near_matches(DEPOSIT_PARAPHRASE)] == ["deposit"]


@pytest.mark.parametrize("question", [
    TRESPASSER,
    "What remedies are available for breach of trust by a professional trustee?",
    PRIYA,  # the same template with different names, business, town, amount and topic
])
def test_distinct_questions_are_not_near_duplicates(index: DuplicateIndex, question: str) -> None:
    assert index.check(question) == (None, None)


def test_the_same_template_with_only_the_names_changed_is_below_the_default_threshold() -> None:
    renamed = AMIRA.replace("Amira Khan", "Priya Patel").replace("Amira", "Priya").replace("Tom Baker", "Owen Shaw")
    strict = DuplicateIndex()
    loose = DuplicateIndex(threshold=0.5, bands=32, rows=3)  # a lower threshold wants a lower LSH curve too
    for built in (strict, loose):
        built.add("amira", AMIRA)
    assert strict.check(renamed) == (None, None)
    assert loose.check(renamed)[1][0] == "amira"


def test_near_matches_are_sorted_and_exclude_the_given_id(index: DuplicateIndex) -> None:
    index.add("paraphrase", DEPOSIT_PARAPHRASE)
    index.add("copy", DEPOSIT.lower())
    matches = index.near_matches(DEPOSIT)
    assert [m[0] for m in matches] == ["deposit", "copy", "paraphrase"]
    assert matches[0][1] == matches[1][1] == 1.0 and matches[2][1] < 1.0
    assert [m[0] for m in index.near_matches(DEPOSIT, exclude_id="deposit")] == ["copy", "paraphrase"]
    assert index.check(DEPOSIT, exclude_id="deposit") == ("copy", ("paraphrase", matches[2][1]))


def test_remove_and_update(index: DuplicateIndex) -> None:
    assert len(index) == 3 and "deposit" in index
    assert index.remove("deposit") is True and index.remove("deposit") is False
    assert len(index) == 2 and index.check(DEPOSIT_PARAPHRASE) == (None, None)
    index.add("goods", TRESPASSER)  # an update: the id's old question is forgotten
    assert len(index) == 2
    assert index.exact_match(SALE_OF_GOODS) is None and index.exact_match(TRESPASSER) == "goods"


def test_clusters_group_exact_and_near_duplicates_transitively(index: DuplicateIndex) -> None:
    index.add("paraphrase", DEPOSIT_PARAPHRASE)
    index.add("goods-copy", SALE_OF_GOODS.upper())
    index.add("trespasser", TRESPASSER)
    assert index.clusters() == [["deposit", "paraphrase"], ["goods", "goods-copy"]]
    index.remove("paraphrase")
    assert index.clusters() == [["goods", "goods-copy"]]


def test_questions_without_content_words_only_match_exactly() -> None:
    index = DuplicateIndex()
    index.add("a", "What is it?")
    assert question_features("What is it?") == set()
    assert index.check("what is it") == ("a", None)
    assert index.check("Who are they?") == (None, None)
    assert index.clusters() == []


def test_concurrent_adds_and_checks_are_consistent() -> None:
    index = DuplicateIndex()
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for n in range(50):
                question = f"Question {worker}-{n}: may a tenant number {n} in block {worker} withhold rent?"
                index.add(f"w{worker}-{n}", question)
                assert index.exact_match(question) == f"w{worker}-{n}"
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(index) == 200


def test_threshold_is_validated() -> None:
    with pytest.raises(ValueError):
        DuplicateIndex(threshold=0)


def _datasketch_uses(source: str) -> list[str]:
    """Every datasketch module or name the source imports or reaches by attribute, dotted."""
    import ast

    used: list[str] = []
    aliases: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "datasketch":
                    if alias.name != "datasketch":
                        used.append(alias.name)  # a submodule
                    aliases.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "datasketch":
            used.extend(f"{node.module}.{alias.name}" for alias in node.names)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
            used.append(f"datasketch.{node.attr}")
    return used


def test_the_index_uses_only_datasketchs_public_top_level_names() -> None:
    import datasketch

    import quality

    used = []
    for path in sorted(Path(quality.__file__).parent.glob("*.py")):
        used += _datasketch_uses(path.read_text(encoding="utf-8"))
    assert used, "the index is expected to use datasketch's MinHash"
    private = [name for name in used if name.count(".") != 1 or name.split(".")[1] not in datasketch.__all__]
    assert private == [], f"quality/ reaches into datasketch internals: {private}"


def test_the_import_guard_catches_private_modules() -> None:
    assert _datasketch_uses("from datasketch.storage import OrderedStorage") == ["datasketch.storage.OrderedStorage"]
    assert _datasketch_uses("import datasketch.lsh") == ["datasketch.lsh"]
    assert _datasketch_uses("import datasketch as ds\nds.storage.UnorderedStorage") == ["datasketch.storage"]
    assert _datasketch_uses("import datasketch\ndatasketch.MinHash(num_perm=8)") == ["datasketch.MinHash"]
    assert _datasketch_uses("from datasketch import MinHash, MinHashLSH") == ["datasketch.MinHash", "datasketch.MinHashLSH"]


def test_indexed_questions_leave_nothing_for_the_garbage_collector_to_visit() -> None:
    """A full collection visits every tracked object, with every thread stopped: at 100,000
    questions the index's per-question arrays and entries made it take about 0.3 s. Entries are
    tuples of atoms and buckets bytearrays, which the collector does not track."""
    import gc
    import random

    rng = random.Random(3)
    names = ["Alice Hart", "Ben Cole", "Cara Diaz", "Dev Rao", "Eve Stone", "Finn Ash"]
    questions = [f"Can {rng.choice(names)} recover £{rng.randrange(100, 999) * 25:,} from {rng.choice(names)} "
                 f"for the broken boiler in {rng.choice(['Leeds', 'Bath', 'York'])} under the {n % 7} rule?"
                 for n in range(3000)]
    index = DuplicateIndex()
    for n, question in enumerate(questions):
        index.add(f"s{n}", question)
    buckets = [bucket for table in index._lsh._tables for bucket in table.values() if not isinstance(bucket, int)]
    assert len(buckets) > 100   # many buckets are shared
    gc.collect()   # (a tuple of atoms is untracked at the first collection it survives)
    assert not [entry for entry in index._entries.values() if gc.is_tracked(entry)]
    assert not [bucket for bucket in buckets if gc.is_tracked(bucket)]
