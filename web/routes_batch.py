"""Batch endpoints: start, stop, status, history, the live stream, stuck batches; provider metrics."""
from __future__ import annotations

import json
import queue
import time
from typing import Any, Callable, Iterator

from flask import Blueprint, Response, current_app, jsonify, request

from batch.manager import BatchConflict, BatchManager, NoProviders, ShuttingDown
from generation.requests import RequestProblem
from web.prometheus import prometheus_text, provider_stats
from web.errors import ApiError
from web.operation import operation
from web.queries import BatchStatusQuery
from web.schemas import BOOL, INT, NUMBER, OBJ, STRING, arr, listing, nullable, obj, ok, ref
from web.services import services
from web.streams import StreamSlots
from web.validation import BatchStartBody, BatchStopBody

bp = Blueprint("batch", __name__)
STATES = {"type": "object", "additionalProperties": ref("BatchState")}
SSE_EVENT = obj("data", data={"type": "string", "contentMediaType": "application/json", "contentSchema": {"oneOf": [
    obj("type", "batches", type={"const": "all_batches"}, batches=STATES),
    obj("type", "batch_id", "batch", type={"const": "batch_update"}, batch_id=STRING, batch=ref("BatchState"))]}})


# While a stream is idle it looks this often whether its client went away, so a closed tab frees its
# thread and slot within about a second (waitress reports it; see `api_server.main`).
DISCONNECT_POLL_SECONDS = 1.0
STREAM_RETRY_AFTER_SECONDS = 5   # the dashboard reconnects 5 s after an error anyway
RESTART_RETRY_AFTER_SECONDS = 10  # a batch start refused while the server shuts down: try after the restart


def manager() -> BatchManager:
    return services().batches


@bp.post("/api/generate/batch/start")
@operation("Start a batch that grows the dataset to target_count", body=BatchStartBody, errors=(409, 503),
           response=ok("message", "batch_id", "total", "target_count", message=STRING, batch_id=STRING,
                       provider=nullable(STRING), model=nullable(STRING), total=INT, target_count=INT,
                       strategy=STRING, models=nullable(arr(STRING))))
def start(body: BatchStartBody):
    try:
        state = manager().start(target_count=body.target_count, provider=body.provider, model=body.model,
                                topic=body.topic, difficulty=body.difficulty,
                                reasoning_instruction=body.reasoning_instruction, sample_type=body.sample_type,
                                models=body.models, strategy=body.strategy)
    except RequestProblem as exc:
        raise ApiError(400, str(exc)) from None
    except BatchConflict as exc:
        raise ApiError(409, str(exc), running_batch_id=exc.batch_id) from None
    except NoProviders as exc:
        raise ApiError(503, str(exc)) from None
    except ShuttingDown as exc:
        raise ApiError(503, str(exc), {"Retry-After": str(RESTART_RETRY_AFTER_SECONDS)}) from None
    return jsonify({"success": True, "message": f"batch started: {state.total} sample(s) to add",
                    "batch_id": state.batch_id, "provider": state.provider or services().default_provider(),
                    "model": state.model, "total": state.total, "target_count": state.target_count,
                    "strategy": state.strategy, "models": state.requested_models})


@bp.post("/api/generate/batch/stop")
@operation("Stop one batch ({batch_id}) or every running one ({} or no body)", body=BatchStopBody,
           body_required=False, errors=(404,),
           response=ok("message", message=STRING, batch_id=STRING, stopped=BOOL, stopped_batch_ids=arr(STRING)))
def stop(body: BatchStopBody):
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
@operation("With batch_id: that batch's state; without: recent batches keyed by id (no success key)",
           query=BatchStatusQuery, errors=(404,), response={"anyOf": [
               ref("BatchState"), obj("batches", "count", batches=STATES, count=INT)]})
def status(query: BatchStatusQuery):
    batch_id = query.batch_id
    if batch_id:
        state = manager().state(batch_id)
        if state is None:
            raise ApiError(404, f"no batch with id {batch_id!r}")
        state["model_states"] = services().engine.model_states()
        return jsonify(state)
    states = manager().states()
    return jsonify({"batches": states, "count": len(states)})


@bp.get("/api/generate/batch/history")
@operation("Batches, newest first", response=listing("batches", ref("HistoryRecord")))
def history():
    records = manager().history()
    return jsonify({"success": True, "batches": records, "count": len(records)})


@bp.get("/api/batch/<batch_id>/attempts")
@operation("Every attempt a batch made, each with its cost_usd at configured prices", errors=(404,),
           response=listing("attempts", OBJ, "batch_id", batch_id=STRING))
def attempts(batch_id: str):
    mgr = manager()
    if mgr.history_record(batch_id) is None:
        raise ApiError(404, f"no batch with id {batch_id!r}")
    rows = mgr.attempts(batch_id)
    return jsonify({"success": True, "batch_id": batch_id, "attempts": rows, "count": len(rows)})


def _frame(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, default=str)}\n\n"


@bp.get("/api/generate/batch/stream")
@operation("Server-Sent Events: an all_batches frame, then a batch_update frame on every change", response=SSE_EVENT,
           media="text/event-stream", errors=(503,), description=(
               'Frames are `data: <json>` lines: first `{"type": "all_batches", "batches": {<id>: <state>}}`, '
               'then `{"type": "batch_update", "batch_id": ..., "batch": <state>}`; a `: heartbeat` comment '
               "during silence. The stream does not end. Each open stream holds a server thread, so only "
               "SSE_MAX_STREAMS may be open at once: one more is a 503 with Retry-After."))
def stream():
    slots: StreamSlots = current_app.extensions["event_streams"]
    release = slots.acquire()
    if release is None:
        raise ApiError(503, f"too many open event streams (at most {slots.limit}); close one or retry later",
                       {"Retry-After": str(STREAM_RETRY_AFTER_SECONDS)})
    try:
        mgr = manager()
        heartbeat = services().config.batch.heartbeat_seconds
        subscription = mgr.subscribe()
    except BaseException:
        release()
        raise
    first = _frame({"type": "all_batches", "batches": mgr.states()})
    gone: Callable[[], bool] = request.environ.get("waitress.client_disconnected") or (lambda: False)

    def frames() -> Iterator[str]:
        yield first
        last_sent = time.monotonic()
        while not gone():
            try:
                state = subscription.get(timeout=min(DISCONNECT_POLL_SECONDS, heartbeat))
            except queue.Empty:
                if time.monotonic() - last_sent >= heartbeat:
                    yield ": heartbeat\n\n"
                    last_sent = time.monotonic()
                continue
            yield _frame({"type": "batch_update", "batch_id": state["batch_id"], "batch": state})
            last_sent = time.monotonic()

    def close() -> None:   # runs when the server closes the response, even if it was never iterated
        mgr.unsubscribe(subscription)
        release()

    response = Response(frames(), mimetype="text/event-stream")
    response.call_on_close(close)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    return response


@bp.get("/api/batches/stuck")
@operation("Running batches without a worker or without progress (reads only)", response=listing(
    "stuck_batches", obj("batch_id", "model", "elapsed_minutes", "samples_generated", "target"),
    "stuck_after_minutes", stuck_after_minutes=NUMBER))
def stuck():
    found = manager().stuck()
    return jsonify({"success": True, "stuck_batches": found, "count": len(found),
                    "stuck_after_minutes": services().config.batch.stuck_after_minutes})


@bp.get("/api/stats/providers")
@operation("Per provider and model: outcomes, latency, tokens, cost, switches", response=ok(
    "providers", "switches_total", "recent_switches", "strategies", providers=OBJ, switches_total=INT,
    recent_switches=arr(OBJ), strategies=OBJ))
def stats_providers():
    return jsonify({"success": True, **provider_stats(services())})


@bp.get("/api/stats/rejected-outputs")
@operation("Latest raw model outputs that failed validation", response=listing("outputs", OBJ))
def rejected_outputs():
    """The latest model outputs the parser rejected, raw, for diagnosis."""
    outputs = services().engine.rejected_outputs()
    return jsonify({"success": True, "outputs": outputs, "count": len(outputs)})


@bp.get("/metrics")
@operation("Prometheus metrics", response=STRING, media="text/plain")
def metrics():
    return Response(prometheus_text(services()), mimetype="text/plain; version=0.0.4")

