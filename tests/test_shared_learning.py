"""What servers on one PostgreSQL database learn together: completion budgets from every server's
answers (`storage.shared_budgets`), and one half-open probe system-wide per unproven model
(`storage.shared_probes`), claimed by one conditional upsert and freed when its claim runs out."""
from __future__ import annotations

import pytest

from fallback.health import BUSY, OWNED, PROVEN, HealthBoard
from storage.coordination import shared_connect
from storage.postgres import PostgresDatabase
from storage.shared_budgets import SharedBudgetSamples
from storage.shared_health import SharedHealthTable
from storage.shared_probes import SharedProbes
from tests.conftest import wait_for
from tests.postgres import postgres_url  # noqa: F401 - fixture
from tests.racing import THREADS, race

pytestmark = pytest.mark.postgres_only

ROUNDS = 5


@pytest.fixture
def connect(postgres_url):
    database = PostgresDatabase(postgres_url)   # every migration, the shared tables included
    yield shared_connect(database)
    database.close()


def test_of_servers_claiming_one_probe_at_once_exactly_one_gets_it(connect):
    """Each racer is a server of its own (its own board and claims) on one database."""
    boards = []
    for n in range(THREADS):
        board = HealthBoard()
        board.share(SharedHealthTable(connect), probes=SharedProbes(connect, f"server-{n}", seconds=60))
        boards.append(board)
    for round_ in range(ROUNDS):
        model = f"m{round_}"
        answers = race(lambda i: boards[i].claim_probe("groq", model))
        assert answers.count(OWNED) == 1 and answers.count(BUSY) == THREADS - 1, answers
        holder = answers.index(OWNED)
        assert all(board.claim_probe("groq", model) == BUSY for board in boards)
        boards[holder].end_probe("groq", model)           # came back (failed): the next one may go
        answers = race(lambda i: boards[i].claim_probe("groq", model))
        assert answers.count(OWNED) == 1, answers
        winner = answers.index(OWNED)
        boards[winner].record_success("groq", model)       # proven here: this server sends freely...
        boards[winner].end_probe("groq", model)
        assert boards[winner].claim_probe("groq", model) == PROVEN
        assert race(lambda i: boards[i].claim_probe("groq", model) if i != winner else None).count(OWNED) == 1
        # ...and the others, still unproven, probe one at a time among themselves


def test_a_probe_whose_holder_died_is_free_once_its_claim_runs_out(connect):
    dead, alive = SharedProbes(connect, "dead", seconds=0.5), SharedProbes(connect, "alive", seconds=0.5)
    owner = dead.claim("cerebras", "c-large")
    assert owner is not None and dead.holder("cerebras", "c-large") == owner
    assert alive.claim("cerebras", "c-large") is None              # held, not yet expired
    # the dead server never releases: the claim runs out on the database's clock
    mine = wait_for(lambda: alive.claim("cerebras", "c-large"), timeout=10)
    assert alive.holder("cerebras", "c-large") == mine
    dead.release("cerebras", "c-large", owner)                      # a late release frees nothing of ours
    assert alive.holder("cerebras", "c-large") == mine
    alive.release("cerebras", "c-large", mine)
    assert alive.holder("cerebras", "c-large") is None


def test_budget_samples_reach_every_other_server_once_and_stay_bounded(connect):
    first, second = SharedBudgetSamples(connect), SharedBudgetSamples(connect)
    horizon, rows = second.since(0)
    assert rows == []
    for tokens in range(100, 110):
        first.append("groq", "g", tokens, tokens == 109)
    second.append("groq", "g", 5, False)                            # its own: never read back
    seen: list = []

    def read_on() -> bool:   # rows come once every transaction older than theirs has ended
        nonlocal horizon
        horizon, rows = second.since(horizon)
        seen.extend(rows)
        return len(seen) >= 10
    wait_for(read_on, timeout=30)
    assert [(r.tokens, r.cut_off) for r in seen] == [(t, t == 109) for t in range(100, 110)]
    assert second.since(horizon)[1] == []                           # each row once
    first.prune("groq", "g", keep=3)
    assert [r.tokens for r in SharedBudgetSamples(connect).since(0)[1]] == [108, 109, 5]


def test_two_apps_on_one_database_learn_one_budget_and_share_the_probe(make_app, tmp_path):
    one, two = make_app(), make_app()          # the same data directory: one PostgreSQL schema
    budgets_one = one.extensions["services"].engine.router.budgets
    budgets_two = two.extensions["services"].engine.router.budgets
    assert budgets_two.budget("groq", "g-large", 256, 8192) == 8192          # nothing learned yet
    for n in range(60):
        budgets_one.observe("groq", "g-large", 900 + n % 7, False, 8192)
    learned = wait_for(lambda: budgets_two.report("groq", "g-large", 256, 8192)["answers"] == 60 and
                       budgets_two.budget("groq", "g-large", 256, 8192), timeout=20)
    assert learned == budgets_one.budget("groq", "g-large", 256, 8192) == 960  # the same answers, one budget

    health_one, health_two = (app.extensions["services"].engine.health for app in (one, two))
    assert health_one.claim_probe("groq", "g-small") == OWNED
    assert health_two.claim_probe("groq", "g-small") == BUSY                 # one probe for both servers
    health_one.end_probe("groq", "g-small")
    assert health_two.claim_probe("groq", "g-small") == OWNED
    health_two.end_probe("groq", "g-small")
