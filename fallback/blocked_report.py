"""What holds each candidate of a run (`report`), and the one line that names them (`describe`):
what a wait, an error and `/api/health` show. Part of `Router` (fallback.router)."""
from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Sequence, Union

from fallback.health import Blocked
from fallback.limiter import Wait
from fallback.windows import window_label
from fallback.outcomes import Pair
from fallback.run_state import Run

PROBE_WAIT = 0.25   # how long to expect an untried model's first answer before looking again
Hold = Union[Blocked, Wait, None]   # why a candidate waits: health, budget, or (None) its first answer pending


class Reporting:
    """Part of `Router` (it uses the router's `providers`, `limiter`, `clock`, `to_wall`, `blocked`,
    `_prompt` and `completion_budget`)."""

    def _why(self, run: Run, waiting: list[tuple[float, Pair, Hold]]) -> str:
        if run.last_failure is not None and not waiting:
            return f"last failure {run.last_failure.category.value}: {run.last_failure.message}"
        return describe(self.report(run, waiting)) or "nothing left to try"

    def report(self, run: Run, waiting: Sequence[tuple[float, Pair, Hold]] = ()) -> list[dict[str, Any]]:
        """Every configured candidate of the run, in plan order, and what holds it now:
        `{provider, model, why, ...}` where `why` is `cooling` (with category, reason, message,
        scope, until, seconds), `disabled` (category, message), `budget` (window: the limit that
        holds it longest, windows, until, seconds), `probe` (a first request to it is pending),
        `failed` (tried in this run; category, message) or `free` (nothing holds it any more)."""
        held = {pair: hold for _, pair, hold in waiting}
        now = self.clock()
        out: list[dict[str, Any]] = []
        for pair in run.plan:
            name, model_id = pair
            client = self.providers[name]
            model = client.config.model(model_id)
            if not client.configured or model is None:
                continue
            entry: dict[str, Any] = {"provider": name, "model": model_id}
            hold = held.get(pair, False)
            blocked = hold if isinstance(hold, Blocked) else self.blocked(pair)
            if blocked is not None:
                entry.update(why="disabled" if blocked.until is None else "cooling", category=blocked.category,
                             reason=blocked.reason, message=blocked.message, scope=blocked.scope,
                             **self._when(blocked.until, now))
            elif hold is None:
                entry.update(why="probe", **self._when(now + PROBE_WAIT, now))
            elif pair in run.tried or name in run.skip_providers:
                last = next((a for a in reversed(run.attempts) if a.provider == name
                             and (a.model == model_id or pair not in run.tried)), None)
                entry.update(why="failed", category=last.category if last else None,
                             message=last.message if last else None)
            else:
                wait = hold if isinstance(hold, Wait) else self.limiter.wait_time(
                    name, model_id, self._prompt(name, run.prompt_tokens) + self.completion_budget(name, model))
                if wait > 0:
                    entry.update(why="budget", window=wait.windows[0] if wait.windows else None,
                                 windows=list(wait.windows),
                                 **self._when(now + wait if math.isfinite(wait) else None, now))
                else:
                    entry.update(why="free")
            out.append(entry)
        return out

    def _when(self, until: float | None, now: float) -> dict[str, Any]:
        if until is None:
            return {"until": None, "seconds": None}
        return {"until": datetime.fromtimestamp(self.to_wall(until), timezone.utc).isoformat(),
                "seconds": round(max(0.0, until - now), 3)}

    def _earliest_recovery(self, plan: list[Pair]) -> float | None:
        now = self.clock()
        times = [b.until for b in (self.blocked(p) for p in plan if self.providers[p[0]].configured)
                 if b is not None and b.until is not None and not b.permanent]
        return max(0.0, min(times) - now) if times else None


def describe(blocked: list[dict[str, Any]]) -> str:
    """One line naming every candidate and what holds it, soonest back first, e.g.
    "cerebras/c-small out of budget (tokens per minute) for 2.1s, groq/g-large cooling (rate_limit) for 4s"."""
    def soonest(entry: dict[str, Any]) -> float:
        return entry["seconds"] if entry.get("seconds") is not None else math.inf

    parts = []
    for entry in sorted(blocked, key=soonest):
        why = entry.get("why")
        if why == "cooling":
            text = f"cooling ({entry.get('category') or 'unknown'}{', backoff' if entry.get('reason') == 'backoff' else ''})"
        elif why == "budget":
            text = f"out of budget ({window_label(entry['window']) if entry.get('window') else 'rate limit'})"
        elif why == "disabled":
            text = f"disabled ({entry.get('category')}: {entry.get('message')})"
        elif why == "probe":
            text = "waiting for its first answer"
        elif why == "failed":
            text = f"failed in this attempt ({entry.get('category')})"
        else:
            text = "free again"
        if entry.get("seconds") is not None and why != "probe":
            text += f" for {entry['seconds']:.1f}s"
        parts.append(f"{entry['provider']}/{entry['model']} {text}")
    return ", ".join(parts)
