"""Read-only descriptions: topics, sample types, providers, models, health."""
from __future__ import annotations

import time

from flask import Blueprint, jsonify

from config.catalog import BALANCE, DEFAULT_SAMPLE_TYPE, SAMPLE_TYPES, TOPICS
from config.providers import STRATEGY_NAMES
from storage.errors import StoreError
from web.operation import operation
from web.schemas import BOOL, INT, NUMBER, OBJ, STRING, arr, nullable, obj, ok
from web.services import Services, services

bp = Blueprint("meta", __name__)


TOPIC = obj("practice_area", "topic", "difficulty", practice_area=STRING, topic=STRING, difficulty=STRING)


@bp.get("/api/topics")
@operation("The topics, by practice area (no success key)", response=obj("topics", topics=arr(TOPIC)))
def topics():
    return jsonify({"topics": [{"practice_area": t.practice_area, "topic": t.topic, "difficulty": t.difficulty}
                               for t in TOPICS]})


SAMPLE_TYPE = obj("id", "name", id=STRING, name=STRING, description=STRING, focus=STRING, example=STRING,
                  sections=arr(STRING))


@bp.get("/api/sample-types")
@operation("Sample types and the balanced mix",
           response=ok("sample_types", "default", sample_types=arr(SAMPLE_TYPE), default=STRING))
def sample_types():
    entries = [{"id": t.id, "name": t.name, "description": t.description, "focus": t.focus,
                "example": t.example, "sections": list(t.sections)} for t in SAMPLE_TYPES.values()]
    entries.append({"id": BALANCE, "name": "Balanced Mix",
                    "description": "Rotates through the four sample types in turn.",
                    "focus": "Coverage across every kind of sample", "example": "case_analysis, educational, ...",
                    "sections": []})
    return jsonify({"success": True, "sample_types": entries, "default": DEFAULT_SAMPLE_TYPE})


PROVIDER = obj("id", "name", "enabled", id=STRING, name=STRING, enabled=BOOL, kind=STRING, default_model=STRING,
               requests_per_minute=nullable(INT), tokens_per_minute=nullable(INT), models=arr(STRING),
               missing_setting=nullable(STRING), state=STRING)


@bp.get("/api/providers")
@operation("Providers and their state",
           response=ok("providers", "default_provider", providers=arr(PROVIDER), default_provider=nullable(STRING)))
def providers():
    svc = services()
    out = []
    for name, client in svc.engine.providers.items():
        config = client.config
        first = config.models[0]
        out.append({
            "id": name, "name": client.display_name, "enabled": client.configured, "kind": config.kind,
            "default_model": first.id, "requests_per_minute": first.limits.rpm,
            "tokens_per_minute": first.limits.tpm, "models": [m.id for m in config.models],
            "missing_setting": client.missing_setting, "state": svc.engine.provider_state(name)["state"],
        })
    return jsonify({"success": True, "providers": out, "default_provider": svc.default_provider()})


MODEL = obj("id", "provider", id=STRING, key=STRING, name=STRING, provider=STRING, provider_name=STRING,
            context_window=nullable(INT), owned_by=nullable(STRING), thinking=BOOL, legacy=BOOL, limits=OBJ,
            price_per_1m=OBJ, max_completion_tokens=nullable(INT))


@bp.get("/api/models")
@operation("Models from configuration (no network); `key` is the entry a `models` order takes", response=ok(
    "models", "default_provider", "default_model", models=arr(MODEL), default_provider=STRING, default_model=STRING,
    strategies=arr(STRING), default_strategy=STRING))
def models():
    svc = services()
    out = []
    for name, client in svc.engine.providers.items():
        for model in client.config.models:
            out.append({
                "id": model.id, "key": f"{name}/{model.id}", "name": model.display_name, "provider": name,
                "provider_name": client.display_name, "context_window": model.context_window,
                "owned_by": model.owned_by, "thinking": model.thinking, "legacy": model.legacy,
                "limits": model.limits.model_dump(), "price_per_1m": model.price.model_dump(),
                "max_completion_tokens": client.config.completion_budget(model),
            })
    default_provider = svc.default_provider() or svc.config.engine.default_provider
    default_model = svc.config.providers[default_provider].models[0].id
    return jsonify({"success": True, "models": out, "default_provider": default_provider,
                    "default_model": default_model, "strategies": list(STRATEGY_NAMES),
                    "default_strategy": svc.config.engine.strategy})


def _database(svc: Services) -> dict:
    """The backend and, in PostgreSQL mode, the database URL without its password. (The place for
    what several servers share: this server's id, the lease holder, the live servers.)"""
    about = svc.store.describe()
    if about.get("backend") == "postgresql":
        return {"backend": "postgresql", "database_url": about["database_url"], "schema_version": about["schema_version"]}
    return {"backend": "sqlite", "schema_version": about["schema_version"]}


def _batch_running(svc: Services) -> bool:
    """A batch runs here or, in PostgreSQL mode, on another server (this server's own only while
    the database is away)."""
    try:
        return bool(svc.batches.running_ids())
    except StoreError:
        return bool(svc.batches.running_ids(local=True))


@bp.get("/api/health")
@operation("Liveness and readiness (no success key)", response=obj(
    "status", "live", "ready", "dataset_exists", "groq_configured", "batch_generation_running",
    status={"type": "string", "enum": ["ok", "degraded"]}, live=BOOL, ready=BOOL, dataset_exists=BOOL,
    total_samples=nullable(INT), store=OBJ, groq_configured=BOOL, cerebras_configured=BOOL,
    providers_configured=arr(STRING), providers=OBJ, batch_generation_running=BOOL, demo=BOOL,
    uptime_seconds=NUMBER, damaged_rows=nullable(INT), problems=arr(STRING), cluster=OBJ), description=(
        "`providers` maps each provider to its state: `ok`; `cooling` with `until` (when it or, if every one "
        "of its models is cooling or out of budget, the first of them comes back; `models` then says what "
        "holds each one); `disabled` with `reason` (its key was rejected; back when the key changes); "
        "`not_configured` with `missing`. In PostgreSQL mode `cluster` says which server this is "
        "(`server_id`), who holds the batch lease (`lease`: `batch_id`, `holder`, `seconds_left`) and "
        "which other servers are alive (`servers`)."))
def health():
    svc = services()
    write_problem = svc.store.write_problem()   # a small real write, waiting at most a second for the lock
    writable = write_problem is None
    try:
        total = svc.store.count()
        damaged = svc.store.damaged_count()   # found by the start-up scan; None until it ran
    except Exception:  # the store is unreadable: report, never fail the health check
        total = damaged = None
    configured = svc.engine.configured_providers()
    try:
        providers = {name: svc.engine.provider_state(name) for name in svc.engine.providers}
    except StoreError as exc:  # the shared limiter state is away (PostgreSQL): report, never fail the check
        providers = {name: {"state": "unknown", "error": f"storage: {exc}"} for name in svc.engine.providers}
    usable = [name for name in configured if providers[name].get("state") != "disabled"]
    body = {
        "status": "ok" if writable and usable else "degraded",
        "live": True,
        "ready": bool(writable and usable),
        "dataset_exists": bool(total),
        "total_samples": total,
        "store": {"writable": writable, "path": svc.settings.database_path.name, **_database(svc),
                  **({"error": write_problem} if write_problem else {})},
        "groq_configured": "groq" in configured,
        "cerebras_configured": "cerebras" in configured,
        "providers_configured": configured,
        "providers": providers,
        "batch_generation_running": _batch_running(svc),
        "demo": svc.simulated,
        "uptime_seconds": round(time.time() - svc.started, 1),
        "damaged_rows": damaged,
    }
    problems = [f"storage: {write_problem}"] if write_problem else []
    if svc.cluster is not None:
        try:
            body["cluster"] = svc.cluster.describe()
        except Exception as exc:  # noqa: BLE001 - the database is down: say so, never fail the check
            body["cluster"] = {"server_id": svc.cluster.server_id, "error": f"cannot read the cluster state: {exc}"}
            problems.append(f"cluster: {exc}")
    if damaged:
        problems.append(f"data: {damaged} stored sample(s) hold values of the wrong type (repaired when read); "
                        "GET /api/stats/quality lists them")
    if not configured:
        missing = [c.missing_setting for c in svc.engine.providers.values() if c.missing_setting]
        problems.append(f"no provider configured: set {' or '.join(missing)}")
    elif not usable:
        problems += [f"{name}: {providers[name].get('reason', 'disabled')}" for name in configured]
    if problems:
        body["problems"] = problems
    return jsonify(body)
