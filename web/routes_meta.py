"""Read-only descriptions: topics, sample types, providers, models, health."""
from __future__ import annotations

import time

from flask import Blueprint, jsonify

from config.catalog import BALANCE, DEFAULT_SAMPLE_TYPE, SAMPLE_TYPES, TOPICS
from web.services import services

bp = Blueprint("meta", __name__)


@bp.get("/api/topics")
def topics():
    return jsonify({"topics": [{"practice_area": t.practice_area, "topic": t.topic, "difficulty": t.difficulty}
                               for t in TOPICS]})


@bp.get("/api/sample-types")
def sample_types():
    entries = [{"id": t.id, "name": t.name, "description": t.description, "focus": t.focus,
                "example": t.example, "sections": list(t.sections)} for t in SAMPLE_TYPES.values()]
    entries.append({"id": BALANCE, "name": "Balanced Mix",
                    "description": "Rotates through the four sample types in turn.",
                    "focus": "Coverage across every kind of sample", "example": "case_analysis, educational, ...",
                    "sections": []})
    return jsonify({"success": True, "sample_types": entries, "default": DEFAULT_SAMPLE_TYPE})


@bp.get("/api/providers")
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


@bp.get("/api/models")
def models():
    svc = services()
    out = []
    for name, client in svc.engine.providers.items():
        for model in client.config.models:
            out.append({
                "id": model.id, "name": model.display_name, "provider": name,
                "provider_name": client.display_name, "context_window": model.context_window,
                "owned_by": model.owned_by, "thinking": model.thinking, "legacy": model.legacy,
                "limits": model.limits.model_dump(), "price_per_1m": model.price.model_dump(),
                "max_completion_tokens": client.config.completion_budget(model),
            })
    default_provider = svc.default_provider() or svc.config.engine.default_provider
    default_model = svc.config.providers[default_provider].models[0].id
    return jsonify({"success": True, "models": out, "default_provider": default_provider,
                    "default_model": default_model})


@bp.get("/api/health")
def health():
    svc = services()
    write_problem = svc.store.write_problem()   # a small real write, waiting at most a second for the lock
    writable = write_problem is None
    try:
        total = svc.store.count()
    except Exception:  # the store is unreadable: report, never fail the health check
        total = None
    configured = svc.engine.configured_providers()
    batches = svc.batches
    body = {
        "status": "ok" if writable and configured else "degraded",
        "live": True,
        "ready": bool(writable and configured),
        "dataset_exists": bool(total),
        "total_samples": total,
        "store": {"writable": writable, "path": svc.settings.database_path.name,
                  **({"error": write_problem} if write_problem else {})},
        "groq_configured": "groq" in configured,
        "cerebras_configured": "cerebras" in configured,
        "providers_configured": configured,
        "providers": {name: svc.engine.provider_state(name) for name in svc.engine.providers},
        "batch_generation_running": bool(batches and batches.running_ids()),
        "demo": svc.simulated,
        "uptime_seconds": round(time.time() - svc.started, 1),
    }
    problems = [f"storage: {write_problem}"] if write_problem else []
    if not configured:
        missing = [c.missing_setting for c in svc.engine.providers.values() if c.missing_setting]
        problems.append(f"no provider configured: set {' or '.join(missing)}")
    if problems:
        body["problems"] = problems
    return jsonify(body)
