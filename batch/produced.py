"""What a batch produced, counted again from its stored rows: the producers (`models_used`,
`providers_used`, the top one as `provider`/`model`) and the cost at configured prices.

Used when a batch resumes, and when writes work again after a write that reported a failure may
have been stored after all (PostgreSQL away mid-commit): the stored rows are the truth."""
from __future__ import annotations

from typing import Any

from config.providers import AppConfig
from state import BatchState
from storage.store import Store

PRODUCED_FIELDS = ("topic", "difficulty", "sample_type", "provider", "model", "prompt_tokens", "completion_tokens")


def recount_produced(state: BatchState, store: Store, config: AppConfig) -> dict[str, list[Any]]:
    """Set the state's producers and cost from the batch's stored rows; returns those rows'
    `PRODUCED_FIELDS` column-wise (a resuming batch seeds its rotation from them)."""
    done = store.columns(PRODUCED_FIELDS, filters={"batch_id": state.batch_id})
    state.set_samples_used(list(zip(done["provider"], done["model"])))   # as stored, whatever was saved
    state.cost_usd = round(sum(config.cost(*usage) for usage in zip(
        done["provider"], done["model"], done["prompt_tokens"], done["completion_tokens"])), 8)
    return done
