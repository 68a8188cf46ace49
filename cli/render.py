"""Readable views of what the server answers: statistics, one batch, a list of batches."""
from __future__ import annotations

from typing import Any, Iterable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from cli.follow import clock_time, count, duration, elapsed, parse_time, progress_line, rate, where

STATUS_STYLE = {"running": "cyan", "completed": "green", "stopped": "yellow", "failed": "red"}


def when(value: Any, seconds: bool = True) -> str:
    parsed = parse_time(value)
    return parsed.astimezone().strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") if parsed else "-"


def number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.1f}"


def size(kib: Any) -> str:
    if not isinstance(kib, (int, float)):
        return "-"
    return f"{kib / 1024:,.1f} MB" if kib >= 1024 else f"{kib:,.1f} KB"


def dollars(value: Any) -> str:
    """"$0.0123" (4 decimals: a sample costs fractions of a cent), "-" when unknown."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "-"
    return f"${value:,.4f}"


def share(part: Any, whole: Any) -> str:
    return f"{100 * part / whole:.0f}%" if isinstance(part, (int, float)) and whole else "-"


def status_text(status: Any) -> Text:
    return Text(str(status or "-"), style=STATUS_STYLE.get(str(status), ""))


def _table(title: str, *columns: str) -> Table:
    """Columns named with a leading ">" hold numbers and are right-aligned; the first never wraps."""
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold", show_edge=False,
                  pad_edge=False)
    for index, column in enumerate(columns):
        number_column = column.startswith(">")
        table.add_column(column.lstrip(">"), justify="right" if number_column else "left", no_wrap=index == 0)
    return table


def _rows(value: Any) -> list[dict[str, Any]]:
    return [row for row in value if isinstance(row, dict)] if isinstance(value, list) else []


# -- statistics ---------------------------------------------------------------------------------

def stats_view(basic: dict[str, Any], detailed: dict[str, Any], top: int = 10) -> RenderableType:
    total = basic.get("total", detailed.get("total_samples", 0)) or 0
    if not total:
        return Text("The dataset is empty: start a batch with uk-law batch start --target N")
    lengths = detailed.get("avg_lengths") or {}
    parts: list[RenderableType] = [
        Text.assemble(("Dataset: ", "bold"), f"{number(total)} samples · {size(basic.get('file_size_kb'))} on disk · "
                      f"{number(detailed.get('unique_topics', basic.get('total_topics')))} topics in "
                      f"{number(detailed.get('unique_practice_areas'))} practice areas · "
                      f"{number(basic.get('total_difficulties'))} difficulties"),
        Text.assemble(("Average length (characters): ", "bold"), ", ".join(
            f"{name.replace('_', ' ')} {number(lengths.get(name))}"
            for name in ("question", "answer", "reasoning", "case_citation") if name in lengths) or "-"),
        Text(""),
    ]
    difficulty = _table("By difficulty", "difficulty", ">samples", ">share", ">avg question", ">avg answer")
    breakdown = _rows(detailed.get("difficulty_breakdown")) or [
        {"difficulty": r.get("difficulty"), "count": r.get("len")} for r in _rows(basic.get("difficulty_distribution"))]
    for row in breakdown:
        difficulty.add_row(str(row.get("difficulty")), number(row.get("count")), share(row.get("count"), total),
                           number(row.get("avg_question_length")), number(row.get("avg_answer_length")))
    parts += [difficulty, Text("")]
    areas = _table("By practice area", "practice area", ">samples", ">share")
    for row in _rows(detailed.get("practice_areas")):
        areas.add_row(str(row.get("practice_area")), number(row.get("len")), share(row.get("len"), total))
    parts += [areas, Text("")]
    topics_all = _rows(detailed.get("topic_breakdown")) or _rows(basic.get("top_topics"))
    topics = _table(f"Top {min(top, len(topics_all))} of {len(topics_all)} topics", "topic", ">samples", ">share")
    for row in topics_all[:top]:
        topics.add_row(str(row.get("topic")), number(row.get("len")), share(row.get("len"), total))
    parts.append(topics)
    return Group(*parts)


# -- batches ------------------------------------------------------------------------------------

def batch_view(state: dict[str, Any]) -> RenderableType:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    running = bool(state.get("running"))
    grid.add_row("batch", Text.assemble(str(state.get("batch_id")), "  ", status_text(state.get("status"))))
    grid.add_row("progress", progress_line(state) if running else
                 f"{count(state)} samples, {rate(state)}")
    grid.add_row("dataset", f"{number(state.get('start_count'))} → {number(state.get('target_count'))} samples")
    requested = "/".join(p for p in (state.get("provider"), state.get("model")) if p) or "default"
    if state.get("requested_models"):
        requested = ", ".join(str(m) for m in state["requested_models"])
    grid.add_row("model", f"{where(state)} (requested: {requested})")
    if state.get("strategy"):
        grid.add_row("strategy", str(state["strategy"]))
    filters = [f"{label} {state[key]}" for key, label in (
        ("topic_filter", "topic"), ("difficulty_filter", "difficulty"), ("sample_type_filter", "sample type"))
        if state.get(key)]
    grid.add_row("filters", ", ".join(filters) or "none")
    grid.add_row("started", when(state.get("started_at")))
    if state.get("completed_at"):
        grid.add_row("ended", when(state.get("completed_at")))
    grid.add_row("elapsed", elapsed(state))
    grid.add_row("tokens", number(state.get("total_tokens")))
    if isinstance(state.get("cost_usd"), (int, float)):
        grid.add_row("cost", dollars(state["cost_usd"]))
    if running and state.get("waiting_reason"):
        grid.add_row("waiting", f"until {clock_time(state.get('waiting_until'))}: {state.get('waiting_reason')}")
    grid.add_row("switches", f"{number(state.get('model_switches_total') or 0)} model, "
                             f"{number(state.get('provider_switches_total') or 0)} provider")
    errors = _rows(state.get("errors"))
    latest = f" (latest: {errors[-1].get('error')})" if errors else ""
    grid.add_row("errors", f"{number(state.get('errors_total') or 0)}{latest}")
    if state.get("resumed_count"):
        grid.add_row("resumed", f"{state['resumed_count']} time(s) after a restart")
    if state.get("final_error"):
        grid.add_row("final error", Text(str(state["final_error"]), style="red"))
    return grid


def batches_table(states: Iterable[dict[str, Any]], title: str) -> Table:
    table = _table(title, "batch", "status", ">samples", ">rate", ">ETA", "model", "started")
    for state in states:
        running = bool(state.get("running"))
        table.add_row(str(state.get("batch_id")), status_text(state.get("status")), count(state),
                      rate(state) if running else "", duration(state.get("eta_seconds")) if running else "",
                      where(state), when(state.get("started_at"), seconds=False))
    return table


def history_table(records: Iterable[dict[str, Any]], title: str) -> Table:
    table = _table(title, "batch", "status", ">samples", ">tokens", ">cost", "model", "started", "ended", ">errors")
    for record in records:
        model = "/".join(str(p) for p in (record.get("provider"), record.get("model")) if p) or "default"
        table.add_row(str(record.get("id") or record.get("batch_id")), status_text(record.get("status")),
                      f"{record.get('samples_generated', 0)}/{record.get('target', 0)}",
                      number(record.get("tokens_used")), dollars(record.get("cost_usd")), model,
                      when(record.get("started_at"), seconds=False),
                      when(record.get("completed_at"), seconds=False),
                      number(record.get("errors_total", len(_rows(record.get("errors"))))))
    return table
