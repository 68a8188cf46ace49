"""Dataset statistics with Polars, over a small in-memory frame kept current by store events.

The frame holds one light row per sample (ids, categories, field lengths, token counts, quality),
never the texts, so recomputing statistics at 100,000 samples takes milliseconds; results are also
cached until the store changes. Group-by results come in a stable order and rows with an empty
topic or difficulty never reach the charts.

Token counts: where a provider reported usage, a sample's completion tokens are shared out over
its four written fields in proportion to their length; elsewhere (and for `topic`) tokens are
estimated offline as ceil(characters / 4). `encoding` in the response says which applied.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Mapping

import polars as pl

from config.catalog import DIFFICULTIES, practice_area_of
from config.providers import AppConfig
from storage.store import Change, Store

# Repeated labels are categorical: grouping 100,000 of them is several times faster than strings.
LIGHT_SCHEMA: dict[str, Any] = {
    "id": pl.Utf8, "topic": pl.Categorical, "practice_area": pl.Categorical, "difficulty": pl.Categorical,
    "sample_type": pl.Categorical, "provider": pl.Categorical, "model": pl.Categorical, "batch_id": pl.Utf8,
    "q_len": pl.Int64, "a_len": pl.Int64, "r_len": pl.Int64, "c_len": pl.Int64, "t_len": pl.Int64,
    "prompt_tokens": pl.Int64, "completion_tokens": pl.Int64, "quality_score": pl.Float64,
    "flags": pl.List(pl.Utf8), "simulated": pl.Boolean, "duplicate_of": pl.Utf8,
}
LENGTH_COLUMNS = {"question": "q_len", "answer": "a_len", "reasoning": "r_len", "case_citation": "c_len"}
CHARS_PER_TOKEN = 4
LOAD_FIELDS = ("id", "topic", "difficulty", "sample_type", "provider", "model", "batch_id", "prompt_tokens",
               "completion_tokens", "quality_score", "quality_flags", "simulated", "duplicate_of")
LOAD_LENGTHS = {**{column: field for field, column in LENGTH_COLUMNS.items()}, "t_len": "topic"}
RECORD_COLUMNS = ["id", "question", "answer", "reasoning", "topic", "difficulty", "case_citation", "sample_type",
                  "provider", "model", "batch_id", "created_at", "updated_at", "prompt_tokens",
                  "completion_tokens", "latency", "attempts", "simulated", "quality_score", "quality_flags",
                  "duplicate_of"]


def light_row(record: Mapping[str, Any]) -> dict[str, Any]:
    topic = record.get("topic") or ""
    return {
        "id": record["id"], "topic": topic, "practice_area": practice_area_of(topic) if topic else "",
        "difficulty": record.get("difficulty") or "", "sample_type": record.get("sample_type"),
        "provider": record.get("provider"), "model": record.get("model"), "batch_id": record.get("batch_id"),
        "q_len": len(record.get("question") or ""), "a_len": len(record.get("answer") or ""),
        "r_len": len(record.get("reasoning") or ""), "c_len": len(record.get("case_citation") or ""),
        "t_len": len(topic), "prompt_tokens": record.get("prompt_tokens"),
        "completion_tokens": record.get("completion_tokens"), "quality_score": record.get("quality_score"),
        "flags": list(record.get("quality_flags") or []), "simulated": bool(record.get("simulated")),
        "duplicate_of": record.get("duplicate_of"),
    }


# How each column `Store.column_arrays` gives is decoded (LIGHT_SCHEMA's type, or what it is cast from).
_ARRAY_TYPES: dict[str, Any] = {**{name: pl.Utf8 for name in ("id", "topic", "difficulty", "sample_type", "provider",
                                                               "model", "batch_id", "duplicate_of")},
                                **{name: pl.Int64 for name in ("prompt_tokens", "completion_tokens", "simulated",
                                                               *LOAD_LENGTHS)},
                                "quality_score": pl.Float64, "quality_flags": pl.List(pl.Utf8)}


def _frame_from_arrays(arrays: Mapping[str, str]) -> pl.DataFrame:
    """The light frame from one JSON array per column, decoded by Polars (no Python value per cell;
    the columns side by side on Polars' threads)."""
    texts = pl.DataFrame({name: [text] for name, text in arrays.items()})
    frame = texts.select(pl.col(name).str.json_decode(pl.List(_ARRAY_TYPES[name])) for name in arrays).explode(
        list(arrays))
    if frame["id"].is_null().all():   # no samples: `[]` explodes to one null
        return pl.DataFrame(schema=LIGHT_SCHEMA)
    return _light_frame(frame)


_CSV_SCHEMA = {"seq": pl.Int64, **{name: pl.Utf8 if name == "quality_flags" else _ARRAY_TYPES[name]
                                   for name in (*LOAD_FIELDS, *LOAD_LENGTHS)}}


def _read_csv(data: bytes) -> pl.DataFrame:
    """`Store.column_csv`'s lines, read by Polars' CSV reader (multithreaded, each column typed as
    read; a quoted `""` is an empty text and an empty field a null, as PostgreSQL's COPY writes them)."""
    if not data:
        return pl.DataFrame(schema=_CSV_SCHEMA)
    return pl.read_csv(data, has_header=False, schema=_CSV_SCHEMA, quote_char='"', null_values=None,
                       comment_prefix=None, try_parse_dates=False, raise_if_empty=True)


def _frame_from_csv(read: Any) -> pl.DataFrame:
    """The light frame from `Store.column_csv` of LOAD_FIELDS and LOAD_LENGTHS (a `ColumnCsv`):
    the saved rows but the replaced ids, and the fresh rows, in seq order; the flags' JSON decoded."""
    frame = _read_csv(read.fresh)
    if read.saved:
        saved = _read_csv(read.saved)
        if read.replaced:
            saved = saved.filter(~pl.col("id").is_in(list(read.replaced)))
        frame = pl.concat([saved, frame]).sort("seq") if frame.height else saved
    if frame.height == 0:
        return pl.DataFrame(schema=LIGHT_SCHEMA)
    return _light_frame(frame.drop("seq").with_columns(
        pl.col("quality_flags").str.json_decode(_ARRAY_TYPES["quality_flags"])))


def _light_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """LIGHT_SCHEMA's frame from the decoded columns (`quality_flags` as lists, `simulated` 0/1)."""
    topics = frame["topic"].unique().to_list()
    areas = {topic: practice_area_of(topic) if topic else "" for topic in topics}
    frame = frame.rename({"quality_flags": "flags"}).with_columns(
        pl.col("simulated") == 1, pl.col("topic").replace_strict(areas, return_dtype=pl.Utf8).alias("practice_area"),
        pl.col("topic").fill_null(""), pl.col("difficulty").fill_null(""))
    return frame.select([pl.col(name).cast(kind) for name, kind in LIGHT_SCHEMA.items()])


PENDING_ROWS = 2000   # changed rows kept as dicts before they are folded into the frame


class StatsFrame:
    """The light frame, loaded once from the store, then updated from its change events."""

    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.RLock()
        self._frame: pl.DataFrame | None = None
        self._pending: dict[str, dict[str, Any]] = {}
        self._removed: set[str] = set()
        self._id_set: set[str] | None = set()   # ids in the frame or pending (None: not built yet)
        self._cache: dict[str, tuple[int, Any]] = {}
        store.on_change(self._apply)

    def _apply(self, change: Change) -> None:
        with self._lock:
            if self._frame is None:
                return  # not loaded yet: the load will read the committed row
            ids = self._ids()
            for record in change.records:
                sample_id = record["id"]
                if change.kind == "add" and sample_id in ids:
                    continue  # committed before the load's snapshot, so already in the frame
                if sample_id in ids:  # an update replaces the row the frame has
                    self._removed.add(sample_id)
                ids.add(sample_id)
                self._pending[sample_id] = light_row(record)
            for sample_id in change.ids:
                if sample_id in ids:
                    ids.discard(sample_id)
                    self._removed.add(sample_id)
                    self._pending.pop(sample_id, None)
            if len(self._pending) >= PENDING_ROWS:   # a long import: fold the rows in now, not as dicts
                self.frame()

    def _ids(self) -> set[str]:
        """Under the lock, with the frame loaded: the ids in the frame or pending."""
        if self._id_set is None:
            self._id_set = set(self._frame["id"].to_list())
        return self._id_set

    def _load(self) -> pl.DataFrame:
        read = self.store.column_csv(LOAD_FIELDS, lengths=LOAD_LENGTHS)   # PostgreSQL: snapshot + COPY
        if read is not None:
            return _frame_from_csv(read)
        arrays = self.store.column_arrays(LOAD_FIELDS, lengths=LOAD_LENGTHS)
        if arrays is not None:
            return _frame_from_arrays(arrays)
        data = self.store.columns(LOAD_FIELDS, lengths=LOAD_LENGTHS)   # some row needs repairing on the way
        if not data["id"]:
            return pl.DataFrame(schema=LIGHT_SCHEMA)
        data["practice_area"] = [practice_area_of(topic) if topic else "" for topic in data["topic"]]
        data["flags"] = data.pop("quality_flags")
        return pl.DataFrame({name: data[name] for name in LIGHT_SCHEMA}, schema=LIGHT_SCHEMA)

    def frame(self) -> pl.DataFrame:
        with self._lock:
            if self._frame is None:
                self._frame = self._load()
                self._id_set = None   # built at the first change: the first statistics need not wait for it
                self._pending.clear()
                self._removed.clear()
            elif self._pending or self._removed:
                frame = self._frame
                if self._removed:
                    frame = frame.filter(~pl.col("id").is_in(list(self._removed)))
                if self._pending:
                    frame = pl.concat([frame, pl.DataFrame(list(self._pending.values()), schema=LIGHT_SCHEMA)])
                self._frame = frame
                self._pending.clear()
                self._removed.clear()
            return self._frame

    def cached(self, key: str, compute: Callable[[pl.DataFrame], Any]) -> Any:
        """`compute(frame)`, reused until the store changes; `DatabaseUnreachable` while the
        PostgreSQL server is away (the frame could not follow other servers' writes)."""
        self.store.check_reachable()
        version = self.store.version
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == version:
                return hit[1]
        result = compute(self.frame())
        with self._lock:
            self._cache[key] = (version, result)
        return result


# -- the statistics themselves -------------------------------------------------------------

def _charted(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.filter((pl.col("topic") != "") & (pl.col("difficulty") != ""))


def _difficulty_order() -> pl.Expr:
    order = {d: i for i, d in enumerate(DIFFICULTIES)}
    return pl.col("difficulty").cast(pl.Utf8).replace_strict(order, default=len(order), return_dtype=pl.Int64)


def _counts(frame: pl.DataFrame, column: str, name: str = "len", top: int | None = None) -> list[dict[str, Any]]:
    counted = (frame.group_by(column).agg(pl.len().alias(name)).with_columns(pl.col(column).cast(pl.Utf8))
               .sort([name, column], descending=[True, False]))
    if top is not None:
        counted = counted.head(top)
    return counted.to_dicts()


def basic_stats(frame: pl.DataFrame, file_size_bytes: int) -> dict[str, Any]:
    charted = _charted(frame)
    by_difficulty = (charted.group_by("difficulty").agg(pl.len())
                     .with_columns(_difficulty_order().alias("_order"), pl.col("difficulty").cast(pl.Utf8))
                     .sort(["_order", "difficulty"]).select("difficulty", "len"))
    return {
        "total": frame.height,
        "columns": RECORD_COLUMNS,
        "difficulty_distribution": by_difficulty.to_dicts(),
        "top_topics": _counts(charted, "topic", top=10),
        "file_size_kb": round(file_size_bytes / 1024, 2),
        "total_topics": charted["topic"].n_unique(),
        "total_difficulties": charted["difficulty"].n_unique(),
    }


def detailed_stats(frame: pl.DataFrame) -> dict[str, Any]:
    charted = _charted(frame)
    breakdown = (charted.group_by("difficulty")
                 .agg(pl.len().alias("count"), pl.col("q_len").mean().round(1).alias("avg_question_length"),
                      pl.col("a_len").mean().round(1).alias("avg_answer_length"))
                 .with_columns(_difficulty_order().alias("_order"), pl.col("difficulty").cast(pl.Utf8))
                 .sort(["_order", "difficulty"]).drop("_order"))
    averages = {name: (round(float(frame[col].mean()), 1) if frame.height else 0.0)
                for name, col in LENGTH_COLUMNS.items()}
    return {
        "total_samples": frame.height,
        "difficulty_breakdown": breakdown.to_dicts(),
        "topic_breakdown": _counts(charted, "topic"),
        "practice_areas": _counts(charted.filter(pl.col("practice_area") != ""), "practice_area"),
        "avg_lengths": averages,
        "unique_topics": charted["topic"].n_unique(),
        "unique_practice_areas": charted.filter(pl.col("practice_area") != "")["practice_area"].n_unique(),
    }


def _estimate(col: str) -> pl.Expr:
    return (pl.col(col) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def token_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Per sample token counts by field: reported usage where it exists, the estimate elsewhere."""
    estimates = frame.with_columns(**{f"est_{name}": _estimate(col) for name, col in LENGTH_COLUMNS.items()},
                                   tok_topic=_estimate("t_len"))
    written = sum(pl.col(f"est_{name}") for name in LENGTH_COLUMNS)
    reported = pl.col("completion_tokens").is_not_null() & (written > 0)
    scale = pl.when(reported).then(pl.col("completion_tokens") / written).otherwise(1.0)
    return estimates.with_columns(
        **{f"tok_{name}": (pl.col(f"est_{name}") * scale).round(0).cast(pl.Int64) for name in LENGTH_COLUMNS},
        reported=reported,
    ).with_columns(tokens=sum(pl.col(f"tok_{n}") for n in (*LENGTH_COLUMNS, "topic")))


def token_stats(frame: pl.DataFrame, config: AppConfig) -> dict[str, Any]:
    tokens = token_frame(_charted(frame))
    total = int(tokens["tokens"].sum() or 0)
    count = tokens.height
    by_field = {}
    for name in (*LENGTH_COLUMNS, "topic"):
        field_total = int(tokens[f"tok_{name}"].sum() or 0)
        by_field[name] = {"total": field_total, "avg_per_sample": round(field_total / count, 1) if count else 0.0,
                          "percentage": round(100 * field_total / total, 2) if total else 0.0}
    by_difficulty = {}
    for row in (tokens.group_by("difficulty").agg(pl.col("tokens").sum().alias("total_tokens"),
                                                  pl.len().alias("sample_count"))
                .with_columns(_difficulty_order().alias("_order"), pl.col("difficulty").cast(pl.Utf8))
                .sort(["_order", "difficulty"]).to_dicts()):
        by_difficulty[row["difficulty"]] = {
            "total_tokens": int(row["total_tokens"]), "sample_count": row["sample_count"],
            "avg_tokens": round(row["total_tokens"] / row["sample_count"], 1)}
    by_area = (tokens.filter(pl.col("practice_area") != "").group_by("practice_area")
               .agg(pl.col("tokens").sum().alias("total_tokens"), pl.len().alias("count"))
               .with_columns((pl.col("total_tokens") / pl.col("count")).round(1).alias("avg_tokens"),
                             pl.col("practice_area").cast(pl.Utf8))
               .sort(["total_tokens", "practice_area"], descending=[True, False]).head(10))
    reported = int(tokens["reported"].sum() or 0)
    return {
        "total_tokens": total,
        "total_samples": count,
        "avg_tokens_per_sample": round(total / count, 1) if count else 0.0,
        "tokens_by_field": by_field,
        "tokens_by_difficulty": by_difficulty,
        "tokens_by_practice_area": by_area.select("practice_area", "total_tokens", "avg_tokens", "count").to_dicts(),
        "estimated_costs": estimated_costs(frame, total, config),
        "encoding": (f"provider-reported completion tokens for {reported} of {count} samples, shared over fields "
                     f"by length; ceil(chars/{CHARS_PER_TOKEN}) estimate for the rest and for topic"),
        "reported_usage": {
            "samples_with_usage": reported,
            "prompt_tokens": int(frame["prompt_tokens"].sum() or 0),
            "completion_tokens": int(frame["completion_tokens"].sum() or 0),
        },
    }


def estimated_costs(frame: pl.DataFrame, total_tokens: int, config: AppConfig) -> dict[str, dict[str, Any]]:
    """What the dataset cost as generated (reported usage at configured prices), and what its
    content would cost to generate with each current model (as output tokens)."""
    prices = [(p, m.id, m.display_name, m.price.input, m.price.output, m.legacy)
              for p, pc in config.providers.items() for m in pc.models]
    table = pl.DataFrame([(p, m, i, o) for p, m, _, i, o, _ in prices],
                         schema={"provider": pl.Utf8, "model": pl.Utf8, "in_price": pl.Float64,
                                 "out_price": pl.Float64}, orient="row")
    used = frame.select(pl.col("provider", "model").cast(pl.Utf8), "prompt_tokens", "completion_tokens").join(
        table, on=["provider", "model"], how="left")
    actual = float(used.select(((pl.col("prompt_tokens").fill_null(0) * pl.col("in_price").fill_null(0)
                                 + pl.col("completion_tokens").fill_null(0) * pl.col("out_price").fill_null(0))
                                / 1e6).sum()).item() or 0.0)
    reported = int((frame["prompt_tokens"].fill_null(0) + frame["completion_tokens"].fill_null(0)).sum() or 0)
    costs = {"actual": {"name": "As generated (reported usage at configured prices)",
                        "cost_usd": round(actual, 6),
                        "price_per_1m": round(actual / reported * 1e6, 4) if reported else 0.0}}
    for provider, model, name, _, output, legacy in prices:
        if legacy:
            continue
        costs[f"{provider}/{model}"] = {"name": f"{name} ({config.providers[provider].name or provider})",
                                        "cost_usd": round(total_tokens * output / 1e6, 6),
                                        "price_per_1m": output}
    return costs
