"""The PostgreSQL-mode half of the batch manager: what it does with the one batch lease.

A mixin of `batch.manager.BatchManager` (it uses the manager's runs, lock, repository and
publishing): at start-up adopt a batch left without a lease or take over an expired one
(`_resume_leased`); each keeper round renew, stop or abandon the batch running here, or take over
(`keep_leases`, `lease_unreachable`); stop a batch another server runs (`_stop_remote`); publish
another server's progress to the event streams here (`_publish_remote`).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from batch.cluster import Cluster
from batch.worker import BatchRun
from state import RUNNING, STOPPED, BatchState, utc_now
from storage.batches import BatchRepository

log = logging.getLogger("batch")


class LeasedBatches:
    cluster: Cluster | None
    repo: BatchRepository
    _runs: dict[str, BatchRun]
    _lock: threading.RLock
    _closed: bool
    _renewed: dict[str, float]
    _remote_seen: dict[str, Any] | None
    _subscribers: set[queue.Queue]
    _sub_lock: threading.Lock

    def _resume(self, state: BatchState) -> None:
        raise NotImplementedError

    def _mark_stopped(self, state: BatchState) -> None:
        raise NotImplementedError

    def _publish(self, state: BatchState) -> None:
        raise NotImplementedError

    def _resume_leased(self) -> list[str]:
        """At start-up: adopt a batch left running without a lease (the lease row is missing),
        then take over an expired lease."""
        assert self.cluster is not None
        leases = self.cluster.leases
        with self._lock:
            if self._closed:
                return []
            if leases.holder() is None:
                unfinished = self.repo.with_status(RUNNING)
                if unfinished and leases.adopt(unfinished[-1].batch_id):
                    for older in unfinished[:-1]:
                        older.status, older.running, older.completed_at = STOPPED, False, utc_now()
                        older.final_error = "interrupted by a restart while a newer batch was running"
                        self.repo.save(older)
                    self._resume(unfinished[-1])
                    return [unfinished[-1].batch_id]
        taken = self._take_over()
        return [taken] if taken else []

    def keep_leases(self) -> None:
        """One round of the lease keeper: renew the lease of the batch running here (stop it if
        another server asked; abandon it if the lease moved); if nothing runs here, take over an
        expired lease; publish another server's progress to the event streams here."""
        assert self.cluster is not None
        with self._lock:
            runs = [(bid, run) for bid, run in self._runs.items()
                    if run.state.running and not run.stop_event.is_set()]
        for batch_id, run in runs:
            outcome = self.cluster.leases.renew(batch_id)
            if outcome == "held":
                self._renewed[batch_id] = time.monotonic()
            elif outcome == "stop":
                log.info("batch %s: stopped from another server", batch_id)
                run.stop()
            else:
                self._abandon(batch_id, run, "its lease expired and another server took it over")
        if not runs:
            self._take_over()
            self._publish_remote()

    def lease_unreachable(self, now: float) -> None:
        """The database did not answer the keeper: a batch whose lease has not been renewed for a
        whole lease time is abandoned here (another server may own it by now)."""
        assert self.cluster is not None
        with self._lock:
            runs = [(bid, run) for bid, run in self._runs.items() if run.state.running]
        for batch_id, run in runs:
            if now - self._renewed.get(batch_id, now) > self.cluster.lease_seconds:
                self._abandon(batch_id, run, "its lease could not be renewed for a whole lease time")

    def _abandon(self, batch_id: str, run: BatchRun, why: str) -> None:
        log.warning("batch %s: no longer run here: %s", batch_id, why)
        run.abandon()
        with self._lock:
            if self._runs.get(batch_id) is run:
                del self._runs[batch_id]
            self._renewed.pop(batch_id, None)

    def _take_over(self) -> str | None:
        """Take an expired lease over and carry its batch on here; the batch id, or None."""
        assert self.cluster is not None
        leases = self.cluster.leases
        with self._lock:
            if self._closed:
                return None
            lease = leases.take_over()
            if lease is None:
                return None
            state = self.repo.get(lease.batch_id)
            if state is None or state.status != RUNNING:   # it ended, its lease was never freed
                leases.release(lease.batch_id)
                return None
            if lease.stop_requested:
                self._mark_stopped(state)
                leases.release(lease.batch_id)
                return None
            log.warning("batch %s: taken over from %s, whose lease expired", lease.batch_id,
                        lease.previous_owner or "a server")
            state.add_error({"error": f"resumed on server {self.cluster.server_id}: the lease of "
                                      f"{lease.previous_owner or 'its server'} expired", "kind": "takeover"})
            self._resume(state)
            return lease.batch_id

    def _publish_remote(self) -> None:
        """Event-stream clients of this server see the batch another server runs: its saved state
        is published here whenever it changes, its final state included (saved before the lease
        is freed, so it is read once more after the lease is gone)."""
        assert self.cluster is not None
        with self._sub_lock:
            if not self._subscribers:
                return
        lease = self.cluster.leases.holder()
        seen = self._remote_seen
        if lease is not None:
            batch_id = lease.batch_id
        elif seen is not None and seen.get("running"):
            batch_id = seen["batch_id"]   # the lease is gone: its final state is saved
        else:
            return
        state = self.repo.get(batch_id)
        if state is None:
            return
        snapshot = state.to_dict()
        if snapshot != self._remote_seen:
            self._remote_seen = snapshot
            self._publish(state)

    def _stop_remote(self, batch_id: str | None) -> list[str]:
        """Ask the server running the leased batch (that one, if named) to stop it, and wait, at
        most a lease time and a bit, until it has; if that server is gone, stop it from here."""
        assert self.cluster is not None
        leases = self.cluster.leases
        lease = leases.request_stop(batch_id)
        if lease is None:
            return []
        deadline = time.monotonic() + self.cluster.lease_seconds + 3 * self.cluster.tick
        while time.monotonic() < deadline:
            state = self.repo.get(lease.batch_id)
            if state is None or state.status != RUNNING:
                return [lease.batch_id]
            current = leases.holder()
            if current is None or current.batch_id != lease.batch_id:
                return [lease.batch_id]
            if current.seconds_left < 0:      # its server is gone: stop it here
                self._take_over()             # takes the lease, sees the stop flag, records the stop
                continue
            time.sleep(self.cluster.tick / 2)
        return [lease.batch_id]

    # -- stopping --------------------------------------------------------------------------

    def _leased_elsewhere(self) -> str | None:
        """PostgreSQL mode: the batch whose lease is alive and held by another server."""
        if self.cluster is None:
            return None
        lease = self.cluster.leases.holder()
        if lease is None or lease.seconds_left < 0 or lease.owner == self.cluster.server_id:
            return None
        return lease.batch_id
