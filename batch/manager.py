"""Starting, stopping, resuming and watching batches; one runs at a time.

In PostgreSQL mode (`cluster` given) "one at a time" holds across every server on the database:
a batch starts only with the one batch lease (`storage.coordination.BatchLeases`), is run by the
server holding it, is stopped from any server through the lease's stop flag, and resumes on
another server when its owner stops renewing (`batch.cluster`)."""
from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime, timezone
from typing import Any

from batch.cluster import Cluster
from batch.leasing import LeasedBatches
from batch.produced import recount_produced
from batch.rotation import Rotation, Slot
from batch.worker import BatchRun
from config.catalog import BALANCE, DEFAULT_SAMPLE_TYPE, DIFFICULTIES, SAMPLE_TYPES, TOPICS, find_topic
from generation.engine import GenerationEngine
from generation.requests import (RequestProblem, check_difficulty, check_sample_type, check_strategy,
                                model_names, resolve_models, resolve_provider_model, resolve_topic_label)
from config.providers import AppConfig
from state import COMPLETED, FAILED, RUNNING, STOPPED, BatchState, new_batch_id, utc_now
from storage.batches import BatchRepository
from storage.store import Store

RECENT_IN_STATUS = 10
log = logging.getLogger("batch")


class BatchConflict(Exception):
    def __init__(self, batch_id: str):
        super().__init__(f"batch {batch_id} is already running; stop it first")
        self.batch_id = batch_id


class NoProviders(Exception):
    pass


class ShuttingDown(Exception):
    """The process is shutting down: no batch starts or resumes."""


class BatchManager(LeasedBatches):
    def __init__(self, *, engine: GenerationEngine, store: Store, config: AppConfig, quality: Any = None,
                 simulated: bool = False, cluster: Cluster | None = None):
        self.engine = engine
        self.store = store
        self.config = config
        self.settings = config.batch
        self.quality = quality
        self.simulated = simulated
        self.repo = BatchRepository(store)
        self._runs: dict[str, BatchRun] = {}
        self._lock = threading.RLock()
        self._subscribers: set[queue.Queue] = set()
        self._sub_lock = threading.Lock()
        self._closed = False     # set by `shutdown`: nothing starts any more
        self.cluster = cluster
        self._renewed: dict[str, float] = {}   # batch id -> when its lease was last renewed (monotonic)
        self._remote_seen: dict[str, Any] | None = None   # the other server's state last published here

    # -- starting --------------------------------------------------------------------------

    def start(self, *, target_count: int, provider: str | None = None, model: str | None = None,
              topic: str | None = None, difficulty: str | None = None, reasoning_instruction: str | None = None,
              sample_type: str | None = None, models: list[str] | None = None,
              strategy: str | None = None) -> BatchState:
        """Validate everything, then start; RequestProblem (400), BatchConflict (409), NoProviders or
        ShuttingDown (503). `models` (exactly these, in order) and `strategy` (default: the
        configured one) are saved with the batch and used again when it resumes."""
        provider, model = resolve_provider_model(self.config, provider, model)
        order = model_names(resolve_models(self.config, models, provider, model))
        strategy = check_strategy(self.config, strategy)
        topic_label = resolve_topic_label(None, topic).label if topic else None
        difficulty = check_difficulty(difficulty)
        sample_type = check_sample_type(sample_type)
        if not self.engine.configured_providers():
            missing = [c.missing_setting for c in self.engine.providers.values() if c.missing_setting]
            raise NoProviders(f"no provider is configured: set {' or '.join(missing)}")
        with self._lock:
            if self._closed:
                raise ShuttingDown("the server is shutting down; start the batch again once it is back")
            running = self.running_ids(local=True)
            if running:
                raise BatchConflict(running[0])
            batch_id = new_batch_id()
            self._lease(batch_id)
            try:
                current = self.store.count()   # counted under the lease: no other batch is adding rows
                if target_count <= current:
                    raise RequestProblem(f"target_count {target_count} must be larger than the current dataset "
                                         f"size ({current}); it is the total size to grow to")
            except BaseException:
                self._release_lease(batch_id)
                raise
            state = BatchState(batch_id=batch_id, target_count=target_count, start_count=current,
                               total=target_count - current, provider=provider, model=model,
                               requested_provider=provider, requested_model=model,
                               requested_models=order, strategy=strategy, topic_filter=topic_label,
                               difficulty_filter=difficulty,
                               reasoning_instruction=reasoning_instruction or None,
                               sample_type_filter=sample_type)
            try:
                self.repo.save(state)
            except BaseException:
                self._release_lease(batch_id)
                raise
            self._renewed[batch_id] = time.monotonic()
            run = self._run_for(state, stored=0)
            self._runs[state.batch_id] = run
            run.start()
        self._publish(run.state)
        return run.state

    def _rotation(self, state: BatchState) -> Rotation:
        topic = find_topic(state.topic_filter) if state.topic_filter else None
        types = list(SAMPLE_TYPES) if state.sample_type_filter == BALANCE else \
            [state.sample_type_filter or DEFAULT_SAMPLE_TYPE]
        return Rotation(topics=[topic] if topic else TOPICS,
                        difficulties=[state.difficulty_filter] if state.difficulty_filter else DIFFICULTIES,
                        sample_types=types)

    def _run_for(self, state: BatchState, stored: int) -> BatchRun:
        rotation = self._rotation(state)
        if stored:
            done = recount_produced(state, self.store, self.config)
            rows = zip(done["topic"], done["difficulty"], done["sample_type"])
            rotation.seed(Slot(t, difficulty, sample_type or DEFAULT_SAMPLE_TYPE)
                          for topic, difficulty, sample_type in rows if (t := find_topic(topic)) is not None)
        return BatchRun(state, engine=self.engine, store=self.store, repo=self.repo, rotation=rotation,
                        settings=self.settings, publish=self._publish, quality=self.quality,
                        simulated=self.simulated, stored=stored)

    def _lease(self, batch_id: str) -> None:
        """Take the one batch lease for a new batch (PostgreSQL mode), or raise BatchConflict."""
        if self.cluster is not None:
            holder = self.cluster.leases.acquire(batch_id)
            if holder is not None:
                raise BatchConflict(holder)

    def _release_lease(self, batch_id: str) -> None:
        if self.cluster is not None:
            self._renewed.pop(batch_id, None)
            self.cluster.leases.release(batch_id)

    def resume_unfinished(self) -> list[str]:
        """Resume, under the same id, the batch that was running when the process died. In
        PostgreSQL mode: the batch whose lease has expired, or one running without any lease."""
        if self.cluster is not None:
            return self._resume_leased()
        unfinished = self.repo.with_status(RUNNING)
        resumed: list[str] = []
        with self._lock:
            if self._closed:
                return resumed
            for older in unfinished[:-1]:   # one batch at a time: the newest carries on
                older.status, older.running, older.completed_at = STOPPED, False, utc_now()
                older.final_error = "interrupted by a restart while a newer batch was running"
                self.repo.save(older)
            for state in unfinished[-1:]:
                if state.batch_id in self._runs and self._runs[state.batch_id].alive():
                    continue
                if self._resume(state):
                    resumed.append(state.batch_id)
        return resumed

    def _resume(self, state: BatchState) -> bool:
        """Under the lock: carry a running batch on here, its progress counted from its stored rows;
        False (the batch ends `failed`, saying why) when its saved routing no longer fits the
        configuration: it is not run on guesses."""
        problem = self._routing_problem(state)
        if problem is not None:
            state.status, state.running, state.completed_at = FAILED, False, utc_now()
            state.final_error = f"cannot resume: {problem} (the configuration changed since it started)"
            state.add_error({"error": state.final_error, "fatal": True})
            self.repo.save(state)
            self._release_lease(state.batch_id)
            return False
        stored = self.repo.stored_samples(state.batch_id)
        state.samples_generated = stored
        state.progress = int(100 * stored / state.total) if state.total else 100
        state.resumed_count += 1
        state.running, state.in_flight = True, 0
        run = self._run_for(state, stored)
        self._runs[state.batch_id] = run
        self._renewed[state.batch_id] = time.monotonic()
        self.repo.save(state)
        run.start()
        return True

    def _routing_problem(self, state: BatchState) -> str | None:
        """Why the batch's saved models/strategy no longer fit the configuration, or None."""
        try:
            resolve_models(self.config, state.requested_models)
            check_strategy(self.config, state.strategy)
        except RequestProblem as exc:
            return str(exc)
        return None

    # -- stopping --------------------------------------------------------------------------

    def stop(self, batch_id: str | None = None) -> tuple[list[str], str]:
        """Stop one batch, or all; returns (stopped ids, message). KeyError for an unknown id."""
        with self._lock:
            if batch_id is not None:
                run = self._runs.get(batch_id)
                state = run.state if run else self.repo.get(batch_id)
                if state is None:
                    raise KeyError(batch_id)
                if run is not None and run.stop():
                    return [batch_id], f"batch {batch_id} stopped"
                remote = run is None and state.status == RUNNING and self.cluster is not None
                if run is None and state.status == RUNNING and not remote:   # no worker behind it
                    self._mark_stopped(state)
                    return [batch_id], f"batch {batch_id} stopped"
                if not remote:
                    return [], f"batch {batch_id} already ended ({state.status})"
            else:
                stopped = [bid for bid, run in self._runs.items() if run.stop()]
        if batch_id is not None:   # running on another server
            if self._stop_remote(batch_id):
                return [batch_id], f"batch {batch_id} stopped"
            with self._lock:
                state = self.repo.get(batch_id)
                if state is not None and state.status == RUNNING:   # no lease behind it: record the stop
                    self._mark_stopped(state)
                    return [batch_id], f"batch {batch_id} stopped"
            return [], f"batch {batch_id} already ended ({state.status if state else 'unknown'})"
        if self.cluster is not None:
            stopped += [bid for bid in self._stop_remote(None) if bid not in stopped]
        leased = self._leased_elsewhere()
        with self._lock:
            for state in self.repo.with_status(RUNNING):
                if state.batch_id not in self._runs and state.batch_id not in stopped and state.batch_id != leased:
                    self._mark_stopped(state)
                    stopped.append(state.batch_id)
        message = f"stopped {len(stopped)} batch(es)" if stopped else "no batch was running"
        return stopped, message

    def _mark_stopped(self, state: BatchState) -> None:
        state.status, state.running, state.completed_at = STOPPED, False, utc_now()
        self.repo.save(state)
        self._publish(state)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Process exit, within `timeout` seconds in all: no batch starts any more, every worker is
        told to stop at once, then those working with the database are waited for while the time
        lasts. Workers waiting on a provider are not: they are abandoned (daemon threads whose
        answers are dropped). Running batches stay `running` and resume at the next start."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed = True
            runs = list(self._runs.values())
        for run in runs:
            run.shutdown()
        for run in runs:
            left = run.settle(max(0.0, deadline - time.monotonic()))
            if left:
                log.info("batch %s: %d worker(s) left behind, waiting on a provider or past the shutdown "
                         "budget; their answers are dropped and the batch resumes at the next start",
                         run.state.batch_id, left)
        if self.cluster is not None:   # another live server carries on at once, not after the lease time
            for run in runs:
                if run.state.running:
                    try:
                        self.cluster.leases.hand_over(run.state.batch_id)
                    except Exception as exc:  # noqa: BLE001 - the lease then simply runs out
                        log.warning("batch %s: could not hand the lease over (%s); it expires in %gs",
                                    run.state.batch_id, exc, self.cluster.lease_seconds)

    # -- reading ---------------------------------------------------------------------------

    def running_ids(self, *, local: bool = False) -> list[str]:
        """The batches running here; in PostgreSQL mode (unless `local`) also the one another
        server holds the lease of."""
        with self._lock:
            ids = [bid for bid, run in self._runs.items() if run.state.running]
        if self.cluster is not None and not local and not ids:
            lease = self.cluster.leases.holder()
            if lease is not None:
                state = self.repo.get(lease.batch_id)
                if state is not None and state.status == RUNNING:
                    ids.append(lease.batch_id)
        return ids

    def state(self, batch_id: str) -> dict[str, Any] | None:
        with self._lock:
            run = self._runs.get(batch_id)
            if run is not None:
                return run.snapshot()
        state = self.repo.get(batch_id)
        return state.to_dict() if state else None

    def states(self) -> dict[str, dict[str, Any]]:
        """Running batches and the most recent others, keyed by id."""
        out = {s.batch_id: s.to_dict() for s in self.repo.history(RECENT_IN_STATUS)}
        with self._lock:
            for bid, run in self._runs.items():
                if run.state.running or bid in out:
                    out[bid] = run.snapshot()
        return out

    def history(self, limit: int = 200) -> list[dict[str, Any]]:
        records = []
        for state in self.repo.history(limit):
            live = self._runs.get(state.batch_id)
            records.append(live.history_record() if live else state.history_record())
        return records

    def history_record(self, batch_id: str) -> dict[str, Any] | None:
        live = self._runs.get(batch_id)
        if live is not None:
            return live.history_record()
        state = self.repo.get(batch_id)
        return state.history_record() if state else None

    def attempts(self, batch_id: str) -> list[dict[str, Any]]:
        """The batch's attempt log, each attempt with `cost_usd`: its tokens at configured prices."""
        return [{**row, "cost_usd": round(self.config.cost(row.get("provider"), row.get("model"),
                                                           row.get("prompt_tokens"), row.get("completion_tokens")), 8)}
                for row in self.repo.attempts(batch_id)]

    def stuck(self) -> list[dict[str, Any]]:
        """Running batches with no worker behind them (zombies) or no progress for too long.
        Reads only: nothing is changed."""
        now = datetime.now(timezone.utc)
        out = []
        leased = self._leased_elsewhere()
        for state in self.repo.with_status(RUNNING):
            with self._lock:
                run = self._runs.get(state.batch_id)
                live = run.state if run else state
                is_zombie = not run.alive() if run else state.batch_id != leased
            last = _parse(live.last_progress_at) or _parse(live.started_at) or now
            idle_minutes = (now - last).total_seconds() / 60
            waiting = _parse(live.waiting_until)
            legitimately_waiting = waiting is not None and waiting > now
            if not is_zombie and (idle_minutes < self.settings.stuck_after_minutes or legitimately_waiting):
                continue
            started = _parse(live.started_at) or now
            out.append({"batch_id": live.batch_id, "model": live.current_model or live.model,
                        "provider": live.current_provider or live.provider,
                        "elapsed_minutes": round((now - started).total_seconds() / 60, 1),
                        "idle_minutes": round(idle_minutes, 1), "samples_generated": live.samples_generated,
                        "target": live.total, "started_at": live.started_at, "is_zombie": is_zombie,
                        "waiting_until": live.waiting_until})
        return out

    # -- live updates ----------------------------------------------------------------------

    def subscribe(self) -> queue.Queue:
        q: queue.Queue = queue.Queue(maxsize=1000)
        with self._sub_lock:
            self._subscribers.add(q)
        return q

    def unsubscribe(self, q: queue.Queue) -> None:
        with self._sub_lock:
            self._subscribers.discard(q)

    def _publish(self, state: BatchState) -> None:
        if (self.cluster is not None and not state.running and state.status in (COMPLETED, STOPPED, FAILED)
                and state.batch_id in self._runs):
            try:
                self._release_lease(state.batch_id)   # saved final first, then the lease is freed
            except Exception as exc:  # noqa: BLE001 - a stale lease is freed by whoever takes it over
                log.warning("batch %s: could not release its lease (%s); it expires by itself", state.batch_id, exc)
        snapshot = state.to_dict()
        with self._sub_lock:
            subscribers = list(self._subscribers)
        for q in subscribers:
            try:
                q.put_nowait(snapshot)
            except queue.Full:
                pass  # a stalled client misses intermediate frames, never blocks the batch


def _parse(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
