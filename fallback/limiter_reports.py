"""What the rate limiter reports: each model's windows, the windows learned for a provider as a
whole, and every limit learned. Part of `RateLimiter` (fallback.limiter)."""
from __future__ import annotations

from typing import Any

from fallback.limiter_state import ScopeState, model_key, provider_key


class LimiterReports:
    """Part of `RateLimiter` (it uses the limiter's `_clock`, `_store`, `_models`, `_gates`, `_keys`,
    `_unit` and the ceilings)."""

    def snapshot(self, provider: str, model: str) -> dict[str, dict[str, float]]:
        """The model's own windows: the limit in force and what is left of it now."""
        now = self._clock()

        def read(states: dict[str, ScopeState]) -> dict[str, dict[str, float]]:
            out = {}
            for gate in self._gates(provider, model, states):
                if gate.key != model_key(provider, model):
                    continue
                backlog = max(0.0, states[gate.key].tat.get(gate.name, now) - now) / self._unit(gate.name, gate.limit)
                out[gate.name] = {"limit": gate.limit, "remaining": max(0.0, gate.limit - backlog)}
            return out

        return self._store.transact(self._keys(provider, model), read)

    def shared_snapshot(self, provider: str) -> dict[str, dict[str, float]]:
        """The windows learned for the provider as a whole (shared by its models): the limit in
        force and what is left of it now; empty when none was learned."""
        now = self._clock()
        key = provider_key(provider)

        def read(states: dict[str, ScopeState]) -> dict[str, dict[str, float]]:
            state = states[key]
            return {name: {"limit": limit, "remaining": max(
                0.0, limit - max(0.0, state.tat.get(name, now) - now) / self._unit(name, limit))}
                for name, limit in state.learned.items() if limit > 0}

        return self._store.transact([key], read)

    def learned_limits(self, provider: str) -> list[dict[str, Any]]:
        """The limits learned for the provider (scope `provider`: shared by its models) and for
        each of its models (scope `model`), with the ceiling they stay under."""
        now = self._clock()
        states = self._store.read()
        out: list[dict[str, Any]] = []
        scopes = [(provider_key(provider), "provider", None)] + [
            (model_key(provider, m), "model", m) for m in self._models.get(provider, [])]
        ceilings = self._provider_ceiling(provider, states)
        for key, scope, model in scopes:
            state = states.get(key)
            if state is None or not state.learned:
                continue
            for name, limit in sorted(state.learned.items()):
                ceiling = ceilings.get(name) if model is None else self._model_ceiling(key, state).get(name)
                out.append({
                    "scope": scope, "provider": provider, "model": model, "window": name,
                    "limit": round(limit, 2), "ceiling": ceiling,
                    "window_seconds_estimated": None if state.window_seconds is None else round(state.window_seconds, 2),
                    "learned_seconds_ago": None if state.learned_at is None else round(max(0.0, now - state.learned_at), 1),
                    "next_probe_seconds": None if state.probe_at is None else round(max(0.0, state.probe_at - now), 1),
                    "rate_limited": int(state.hits)})
        return out
