"""What the routes work with: built in one step by `Services.build`, started explicitly.

Building has no side effects beyond opening the database: no thread starts, no batch resumes,
logging is untouched. `start()` launches the background work (the statistics frame and duplicate
index warm-up, compressing stored blocks again, resuming unfinished batches); `close()` ends it within SHUTDOWN_SECONDS. Tests and
tools can build an app and never start anything.

In PostgreSQL mode the services also join the cluster of servers on that database
(`batch.cluster`): a registry row and the batch lease, kept by a `LeaseKeeper` thread from
`start()` to `close()`, and the engine's cooldowns and disabled keys shared through the database.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from batch.cluster import Cluster, LeaseKeeper, join
from batch.manager import BatchManager
from config.providers import AppConfig, load_config
from config.settings import Settings
from dataset.import_jobs import ImportJobs
from dataset.recompress import Recompressor
from dataset.stats import StatsFrame
from fallback.limiter_state import ScopeState
from generation.engine import GenerationEngine
from generation.requests import SampleTypeRotation
from quality.service import QualityService
from storage import open_storage
from storage.coordination import shared_connect
from storage.shared_budgets import SharedBudgetSamples
from storage.shared_health import SharedHealthTable
from storage.shared_probes import SharedProbes
from storage.shared_limiter import PostgresLimiterStore
from storage.store import Store

log = logging.getLogger("api")


@dataclass
class Services:
    settings: Settings
    config: AppConfig
    engine: GenerationEngine
    store: Store
    stats: StatsFrame
    quality: QualityService
    batches: BatchManager
    imports: ImportJobs
    recompressor: Recompressor
    rotation: SampleTypeRotation = field(default_factory=SampleTypeRotation)
    demo: Any = None             # simulator.demo.DemoProviders in --demo mode
    started: float = field(default_factory=time.time)
    warm_up: threading.Thread | None = field(default=None, repr=False)
    cluster: Cluster | None = None          # PostgreSQL mode: this server among the others
    keeper: LeaseKeeper | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: Settings, config: AppConfig | None = None, *, demo: Any = None) -> "Services":
        """Everything the app needs, wired together; nothing started."""
        config = config or load_config(settings.provider_config_file, settings.env)
        store = open_storage(settings)
        engine = GenerationEngine(config, settings.env)
        quality = QualityService(store)
        cluster = None
        connect = shared_connect(store.database)
        if connect is not None:   # PostgreSQL: several servers may share this database
            cluster = join(connect, host=settings.host, port=settings.port,
                           lease_seconds=settings.batch_lease_seconds)
            engine.share_state(SharedHealthTable(connect), PostgresLimiterStore(connect, ScopeState.from_dict),
                               probes=SharedProbes(connect, cluster.server_id,
                                                   seconds=config.engine.sample_deadline_seconds),
                               budget_samples=SharedBudgetSamples(connect))
        batches = BatchManager(engine=engine, store=store, config=config, quality=quality,
                               simulated=demo is not None, cluster=cluster)
        imports = ImportJobs(store, quality, chunk_rows=settings.import_chunk_rows)
        recompressor = Recompressor(store, idle_seconds=settings.recompress_idle_seconds,
                                    cpu_share=settings.recompress_cpu_share)
        return cls(settings=settings, config=config, engine=engine, store=store, stats=StatsFrame(store),
                   quality=quality, batches=batches, imports=imports, recompressor=recompressor, demo=demo,
                   cluster=cluster, keeper=LeaseKeeper(cluster, batches) if cluster is not None else None)

    def start(self, *, resume_batches: bool = True) -> None:
        """Background work: warm the statistics frame and the duplicate index; compress `/api/data`'s
        blocks again in idle time (`dataset.recompress`); resume batches."""
        if self.warm_up is None:
            self.warm_up = threading.Thread(target=self._warm_up, name="warm-up", daemon=True)
            self.warm_up.start()   # (it starts the recompression once the statistics frame is ready)
        if resume_batches:
            self.batches.resume_unfinished()
            if self.keeper is not None:
                self.keeper.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop the background work within `timeout` seconds in all (default SHUTDOWN_SECONDS), then
        close the store. Each step gets what is left of the budget and returns by its end; work
        still waiting on a provider is abandoned, not waited for. Running batches stay `running`
        and resume at the next start."""
        deadline = time.monotonic() + (self.settings.shutdown_seconds if timeout is None else timeout)

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        self.recompressor.stop(timeout=left())   # within one piece of input
        if self.keeper is not None:
            self.keeper.stop(timeout=min(1.0, left()))
        self.batches.shutdown(timeout=left())   # in PostgreSQL mode, hands the batch lease over
        if self.cluster is not None:
            try:
                self.cluster.registry.leave()
            except Exception as exc:  # noqa: BLE001 - the row ages out by itself
                log.warning("could not remove this server from the registry (%s); it ages out", exc)
        self.imports.stop(timeout=left())   # a running import stops after its chunk in hand
        self.store.close()

    def _warm_up(self) -> None:
        """The statistics frame first (the dashboard asks for it at once), then the duplicate index
        (generation waits for it; at 100,000 samples it takes seconds), then a look for rows an
        older version stored with values of the wrong type (reported, repaired when read); between them
        the compressed blocks of rows stored before they were kept (`Store.seal_json`). The background
        recompression starts after the frame, whose load it would otherwise slow. One step failing
        is logged and never stops the next: the index above all must be built."""
        for step, work in (("statistics frame", self.stats.frame), ("duplicate index", self.quality.build),
                           ("compressed blocks", lambda: self.store.seal_json(force=True)),
                           ("damaged-row scan", self._report_damaged_rows)):
            started = time.perf_counter()
            try:
                work()
            except Exception:
                log.exception("warm-up: the %s failed; the server goes on without it", step)
            else:
                log.info("warm-up: %s ready in %.2f s", step, time.perf_counter() - started)
            if step == "statistics frame":
                self.recompressor.start()

    def _report_damaged_rows(self) -> None:
        damaged = self.store.damaged_rows(limit=20)
        if damaged["count"]:
            ids = ", ".join(repr(s["id"]) for s in damaged["samples"])
            more = f" and {damaged['count'] - len(damaged['samples'])} more" if damaged["count"] > len(damaged["samples"]) else ""
            log.warning("%d stored sample(s) hold values of the wrong type (fields %s), repaired when read: %s%s; "
                        "GET /api/stats/quality lists them, editing a sample rewrites it",
                        damaged["count"], ", ".join(f"{f}: {n}" for f, n in damaged["fields"].items()), ids, more)

    def secrets(self) -> list[str]:
        """Every secret this server holds (provider keys, the API token, the Hub token), for redaction."""
        keys = [self.settings.env.get(p.api_key_env or "", "") for p in self.config.providers.values()]
        return [s for s in (*keys, self.settings.api_token or "", self.settings.env.get("HF_TOKEN", "")) if s]

    @property
    def simulated(self) -> bool:
        return self.demo is not None

    def default_provider(self) -> str | None:
        """The configured default provider if it has a key, else the first one that does."""
        configured = self.engine.configured_providers()
        preferred = self.config.engine.default_provider
        if preferred in configured:
            return preferred
        return configured[0] if configured else None


def services() -> Services:
    return current_app.extensions["services"]
