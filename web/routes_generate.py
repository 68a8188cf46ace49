"""Single-sample generation."""
from __future__ import annotations

import math

from flask import Blueprint, jsonify

from fallback.router import AllCooling, GaveUp, NoRecovery, RoutingError, Stopped
from generation.requests import RequestProblem, build_request, model_names, sample_record
from quality.service import Rejection
from storage.store import DuplicateQuestion, utc_now
from web.errors import ApiError
from web.operation import operation
from web.schemas import BOOL, INT, NUMBER, OBJ, STRING, arr, nullable, obj, ok, ref
from web.services import services
from web.validation import GenerateBody

bp = Blueprint("generate", __name__)
REGENERATE_ON_REJECTION = 2   # a sample the quality checks reject is generated again, at most this often


def routing_error_response(exc: RoutingError) -> ApiError:
    """How a failed run is answered: 503 with Retry-After when waiting may help."""
    extra = {"kind": exc.kind, "attempts": [a.to_dict() for a in exc.attempts]}
    if exc.last_failure is not None:
        extra["category"] = exc.last_failure.category.value
    if isinstance(exc, Stopped):
        return ApiError(500, f"generation stopped: {exc.message}", **extra)
    if isinstance(exc, GaveUp):
        return ApiError(502, f"the providers rejected this request: {exc.message}", **extra)
    headers = {}
    if exc.retry_after is not None and not isinstance(exc, NoRecovery):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        extra["retry_after"] = round(exc.retry_after, 3)
    status = 503 if isinstance(exc, (AllCooling, NoRecovery)) or headers else 502
    return ApiError(status, f"no sample generated: {exc.message}", headers, **extra)


@bp.post("/api/generate")
@operation("Generate one sample (stored unless save is false or the quality checks reject it)", body=GenerateBody,
           errors=(502, 503), response=ok(
               "sample", "saved", "tokens_used", "elapsed", sample=ref("Sample"), saved=BOOL,
               rejected=nullable(obj("codes", "detail", codes=arr(STRING))), tokens_used=INT, elapsed=NUMBER,
               provider=STRING, model=STRING, attempts=arr(OBJ), switches=arr(OBJ)))
def generate(body: GenerateBody):
    svc = services()
    try:
        request = build_request(svc.config, svc.rotation, practice_area=body.practice_area, topic=body.topic,
                                difficulty=body.difficulty, provider=body.provider, model=body.model,
                                sample_type=body.sample_type, instruction=body.reasoning_instruction,
                                models=body.models, strategy=body.strategy)
    except RequestProblem as exc:
        raise ApiError(400, str(exc)) from None
    if not svc.engine.configured_providers():
        missing = [c.missing_setting for c in svc.engine.providers.values() if c.missing_setting]
        raise ApiError(503, f"no provider is configured: set {' or '.join(missing)} (in the environment or .env)")
    rejection = None
    for _ in range(1 + REGENERATE_ON_REJECTION):
        try:
            result = svc.engine.generate(request, max_wait=svc.settings.generate_max_wait)
        except RoutingError as exc:
            raise routing_error_response(exc) from None
        record, rejection = svc.quality.admit(sample_record(result, simulated=svc.simulated), strict=True)
        if rejection is None:
            break
    if rejection is None and body.save:
        try:
            record = svc.store.add(record)
        except Exception as exc:   # not stored: release the reservation
            svc.quality.forget(record["id"])
            if not isinstance(exc, DuplicateQuestion):
                raise
            # stored meanwhile (by another server): reported as the quality gate reports it
            rejection = Rejection(("exact_duplicate",), f"exact_duplicate: same question as {exc.duplicate_of!r}")
            record = {**record, "duplicate_of": exc.duplicate_of}
            record["created_at"] = record["updated_at"] = utc_now()
    else:
        svc.quality.forget(record["id"])
        record["created_at"] = record["updated_at"] = utc_now()
    return jsonify({
        "success": True, "sample": record, "saved": rejection is None and body.save,
        "rejected": {"codes": list(rejection.codes), "detail": rejection.detail} if rejection else None,
        "tokens_used": result.total_tokens, "elapsed": round(result.elapsed, 3), "provider": result.provider,
        "model": result.model, "attempts": [
            {**a.to_dict(), "cost_usd": round(svc.config.cost(a.provider, a.model, a.prompt_tokens,
                                                              a.completion_tokens), 8)} for a in result.attempts],
        "switches": [s.to_dict() for s in result.switches],
        "cost_usd": round(result.cost_usd, 8), "strategy": request.strategy, "models": model_names(request.models),
    })
