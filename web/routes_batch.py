"""Batch endpoints: start, stop, status, history, the live stream, stuck batches; provider metrics."""
from __future__ import annotations

import json
import queue
from typing import Any, Iterator

from flask import Blueprint, Response, jsonify, request

from batch.manager import BatchConflict, BatchManager, NoProviders
from generation.requests import RequestProblem
from web.prometheus import prometheus_text, provider_stats
from web import openapi
from web.errors import ApiError
from web.services import services
from web.validation import BatchStartBody, BatchStopBody, parse_body

bp = Blueprint("batch", __name__)


def manager() -> BatchManager:
    return services().batches


@bp.post("/api/generate/batch/start")
def start():
    body = parse_body(BatchStartBody)
    try:
        state = manager().start(target_count=body.target_count, provider=body.provider, model=body.model,
                                topic=body.topic, difficulty=body.difficulty,
                                reasoning_instruction=body.reasoning_instruction, sample_type=body.sample_type)
    except RequestProblem as exc:
        raise ApiError(400, str(exc)) from None
    except BatchConflict as exc:
        raise ApiError(409, str(exc), running_batch_id=exc.batch_id) from None
    except NoProviders as exc:
        raise ApiError(503, str(exc)) from None
    return jsonify({"success": True, "message": f"batch started: {state.total} sample(s) to add",
                    "batch_id": state.batch_id, "provider": state.provider or services().default_provider(),
                    "model": state.model, "total": state.total, "target_count": state.target_count})


@bp.post("/api/generate/batch/stop")
def stop():
    body = parse_body(BatchStopBody, required=False)
    try:
        stopped, message = manager().stop(body.batch_id or None)
    except KeyError:
        raise ApiError(404, f"no batch with id {body.batch_id!r}") from None
    out: dict[str, Any] = {"success": True, "message": message}
    if body.batch_id:
        out["batch_id"] = body.batch_id
        out["stopped"] = bool(stopped)
    else:
        out["stopped_batch_ids"] = stopped
    return jsonify(out)


@bp.get("/api/generate/batch/status")
def status():
    batch_id = request.args.get("batch_id")
    if batch_id:
        state = manager().state(batch_id)
        if state is None:
            raise ApiError(404, f"no batch with id {batch_id!r}")
        state["model_states"] = services().engine.model_states()
        return jsonify(state)
    states = manager().states()
    return jsonify({"batches": states, "count": len(states)})


@bp.get("/api/generate/batch/history")
def history():
    records = manager().history()
    return jsonify({"success": True, "batches": records, "count": len(records)})


@bp.get("/api/batch/<batch_id>/attempts")
def attempts(batch_id: str):
    mgr = manager()
    if mgr.history_record(batch_id) is None:
        raise ApiError(404, f"no batch with id {batch_id!r}")
    rows = mgr.repo.attempts(batch_id)
    return jsonify({"success": True, "batch_id": batch_id, "attempts": rows, "count": len(rows)})


def _frame(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, default=str)}\n\n"


@bp.get("/api/generate/batch/stream")
def stream():
    mgr = manager()
    heartbeat = services().config.batch.heartbeat_seconds
    subscription = mgr.subscribe()
    first = _frame({"type": "all_batches", "batches": mgr.states()})

    def frames() -> Iterator[str]:
        try:
            yield first
            while True:
                try:
                    state = subscription.get(timeout=heartbeat)
                except queue.Empty:
                    yield ": heartbeat\n\n"
                    continue
                yield _frame({"type": "batch_update", "batch_id": state["batch_id"], "batch": state})
        finally:
            mgr.unsubscribe(subscription)

    response = Response(frames(), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


@bp.get("/api/batches/stuck")
def stuck():
    found = manager().stuck()
    return jsonify({"success": True, "stuck_batches": found, "count": len(found),
                    "stuck_after_minutes": services().config.batch.stuck_after_minutes})


@bp.get("/api/stats/providers")
def stats_providers():
    return jsonify({"success": True, **provider_stats(services())})


@bp.get("/api/stats/rejected-outputs")
def rejected_outputs():
    """The latest model outputs the parser rejected, raw, for diagnosis."""
    outputs = services().engine.rejected_outputs()
    return jsonify({"success": True, "outputs": outputs, "count": len(outputs)})


@bp.get("/metrics")
def metrics():
    return Response(prometheus_text(services()), mimetype="text/plain; version=0.0.4")


J = openapi.obj
openapi.EXTRA_ENDPOINTS.extend([
    ("post", "/api/generate/batch/start", "Start a batch that grows the dataset to target_count", [],
     BatchStartBody, openapi.ok("batch_id"), (400, 401, 409, 503)),
    ("post", "/api/generate/batch/stop", "Stop one batch ({batch_id}) or all ({})", [], BatchStopBody,
     openapi.ok("message"), (401, 404)),
    ("get", "/api/generate/batch/status", "Batch state(s)", [openapi.q("batch_id", {"type": "string"})], None,
     openapi.OBJ, (404,)),
    ("get", "/api/generate/batch/history", "Batches, newest first", [], None, openapi.ok("batches", "count"), ()),
    ("get", "/api/batches/stuck", "Running batches without a worker or without progress (reads only)", [], None,
     openapi.ok("stuck_batches", "count"), ()),
    ("get", "/api/batch/{batch_id}/attempts", "Every attempt a batch made", [openapi.path("batch_id")], None,
     openapi.ok("attempts"), (404,)),
    ("get", "/api/stats/providers", "Per provider and model: outcomes, latency, tokens, cost, switches", [], None,
     openapi.ok("providers"), ()),
    ("get", "/api/stats/rejected-outputs", "Latest raw model outputs that failed validation", [], None,
     openapi.ok("outputs", "count"), ()),
])
