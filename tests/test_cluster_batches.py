"""Two batch managers ("servers") on one dataset and one PostgreSQL lease: one batch system-wide,
stop from either, takeover by the survivor at the exact target. In-process; the process tests
(tests/test_cluster_process.py) do the same with real servers."""
from __future__ import annotations

from typing import Iterator

import pytest

from batch.cluster import Cluster, LeaseKeeper
from batch.manager import BatchConflict, BatchManager
from quality.service import QualityService
from state import COMPLETED, STOPPED
from storage.coordination import BatchLeases, ServerRegistry
from storage.coordination import shared_connect
from storage.postgres import PostgresDatabase
from storage.store import Store
from tests.conftest import wait_for
from tests.postgres import postgres_url  # noqa: F401 - fixture

pytestmark = pytest.mark.postgres_only

LEASE = 1.0


class Server:
    def __init__(self, name: str, store: Store, engine, config):
        connect = shared_connect(store.database)
        self.cluster = Cluster(name, ServerRegistry(connect, name, live_seconds=LEASE),
                               BatchLeases(connect, name, lease_seconds=LEASE), LEASE)
        quality = QualityService(store)
        quality.build()
        self.manager = BatchManager(engine=engine, store=store, config=config, quality=quality,
                                    cluster=self.cluster)
        self.keeper = LeaseKeeper(self.cluster, self.manager)

    def start(self) -> "Server":
        self.manager.resume_unfinished()
        self.keeper.start()
        return self

    def die(self) -> None:
        """Like SIGKILL: no more renewals, no more writes."""
        self.keeper.stop()
        for run in list(self.manager._runs.values()):
            run.abandon()

    def close(self) -> None:
        self.keeper.stop()
        self.manager.shutdown(timeout=2)


@pytest.fixture
def servers(postgres_url, make_engine, make_config, fake) -> Iterator[list[Server]]:
    fake.latency = 0.05
    made: list[Server] = []
    stores: list[Store] = []

    def build(name: str) -> Server:
        store = Store(PostgresDatabase(postgres_url, server=name))   # one dataset; rows fenced by lease
        stores.append(store)
        config = make_config({"batch": {"max_in_flight": 2}})
        server = Server(name, store, make_engine({"batch": {"max_in_flight": 2}}), config)
        made.append(server)
        return server

    yield build
    for server in made:
        server.close()
    for store in stores:
        store.close()


def test_one_batch_across_servers_and_stop_from_the_other(servers):
    a, b = servers("a").start(), servers("b").start()
    state = a.manager.start(target_count=400)
    with pytest.raises(BatchConflict) as conflict:
        b.manager.start(target_count=500)
    assert conflict.value.batch_id == state.batch_id
    assert b.manager.running_ids() == [state.batch_id]
    stopped, _ = b.manager.stop()                       # from the server that does not run it
    assert stopped == [state.batch_id]
    assert a.manager.repo.get(state.batch_id).status == STOPPED
    assert not a.manager.running_ids() and not b.manager.running_ids()
    assert b.cluster.leases.holder() is None
    second = b.manager.start(target_count=500)          # the lease is free again
    assert a.manager.running_ids() == [second.batch_id]


def test_survivor_takes_over_at_the_exact_target(servers, fake):
    a, b = servers("a").start(), servers("b").start()
    state = a.manager.start(target_count=30)
    wait_for(lambda: a.manager.repo.stored_samples(state.batch_id) >= 5, timeout=30)
    a.die()
    wait_for(lambda: b.manager.running_ids(local=True) == [state.batch_id], timeout=10)
    wait_for(lambda: b.manager.repo.get(state.batch_id).status == COMPLETED, timeout=60)
    store = b.manager.store
    assert store.count() == 30
    questions = store.columns(("question",))["question"]
    assert len(set(questions)) == 30
    final = b.manager.repo.get(state.batch_id)
    assert final.samples_generated == 30 - state.start_count
    assert final.resumed_count == 1
    wait_for(lambda: b.cluster.leases.holder() is None, timeout=5)   # released after the final save


def test_a_server_that_lost_its_lease_cannot_add_a_row(servers):
    """The holder stops renewing but its workers go on (a long pause, a cut network): once another
    server has taken the batch over, the database refuses the old holder's rows, so the batch
    still ends exactly at its target and the old holder stops by itself."""
    a, b = servers("a").start(), servers("b").start()
    state = a.manager.start(target_count=150)            # more than a makes in one lease time
    wait_for(lambda: a.manager.repo.stored_samples(state.batch_id) >= 3, timeout=30)
    a.keeper.stop()                                     # no renewals; a's workers carry on
    run = a.manager._runs[state.batch_id]
    wait_for(lambda: b.manager.running_ids(local=True) == [state.batch_id], timeout=10)
    wait_for(lambda: b.manager.repo.get(state.batch_id).status == COMPLETED, timeout=120)
    wait_for(run.stop_event.is_set, timeout=10)         # refused by the fence, a gave up the batch
    assert b.manager.store.count() == 150
    assert len(set(b.manager.store.columns(("question",))["question"])) == 150


def test_event_streams_on_another_server_follow_the_batch(servers):
    a, b = servers("a").start(), servers("b").start()
    updates = b.manager.subscribe()                     # a stream client of the server not running it
    state = a.manager.start(target_count=20)
    first = updates.get(timeout=10)
    assert first["batch_id"] == state.batch_id
    wait_for(lambda: a.manager.repo.get(state.batch_id).status == COMPLETED, timeout=60)
    last = first
    while last["status"] != COMPLETED:
        last = updates.get(timeout=10)
    assert last["batch_id"] == state.batch_id and last["samples_generated"] == 20 - state.start_count
