"""The `uk-law` command: batches (start, follow, stop, status, history), statistics and export.

Exit codes: 0 success (a followed batch completed); 1 an error (one line on stderr: the server is
unreachable, or it refused the request and said why); 2 a usage error; 3 a followed batch failed;
4 a followed batch was stopped; 130 Ctrl-C while following (the batch keeps running).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from cli import follow as following
from cli.client import DEFAULT_SERVER, ApiClient, CliError, dumps
from cli.render import batch_view, batches_table, history_table, size, stats_view

FORMATS = ("jsonl", "csv", "parquet")
PIPE_WIDTH = 120


class Settings:
    """What the top-level options say; the client is made when a command first needs it."""

    def __init__(self, server: str, timeout: float):
        self.server = server
        self.timeout = timeout
        self._client: ApiClient | None = None

    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(self.server, token=os.environ.get("API_TOKEN"), timeout=self.timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def console() -> Console:
    """Standard output. Off a terminal (a pipe, a file, a log) lines are not cut at 80 columns."""
    out = Console(highlight=False)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out = Console(highlight=False, width=PIPE_WIDTH)
    return out


def finish(code: int) -> None:
    """End the command with this exit code (through click, so tests and `main` see it alike)."""
    if code:
        click.get_current_context().exit(code)


def echo_json(value: Any) -> None:
    click.echo(dumps(value))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="uk-law-dataset", prog_name="uk-law")
@click.option("--server", envvar="UK_LAW_SERVER", default=DEFAULT_SERVER, show_default=True, metavar="URL",
              help="The server's address (environment: UK_LAW_SERVER).")
@click.option("--timeout", type=click.FloatRange(0.1, 3600), default=30.0, show_default=True, metavar="SECONDS",
              help="How long to wait for an answer to one request.")
@click.pass_context
def cli(ctx: click.Context, server: str, timeout: float) -> None:
    """Drive the UK-law dataset server from a terminal.

    Writes (start, stop) send API_TOKEN from the environment as a bearer token when it is set.
    """
    settings = Settings(server, timeout)
    ctx.obj = settings
    ctx.call_on_close(settings.close)


# -- batches ------------------------------------------------------------------------------------

@cli.group()
def batch() -> None:
    """Start, follow, stop and list batches."""


def follow_options(func: Any) -> Any:
    func = click.option("--stop-on-interrupt", is_flag=True,
                        help="Ctrl-C stops the batch too (by default it only detaches).")(func)
    func = click.option("--plain", is_flag=True, default=None,
                        help="Progress as lines instead of a bar (the default when output is not a terminal).")(func)
    func = click.option("--give-up-after", type=click.FloatRange(1, 86400), default=600.0, show_default=True,
                        metavar="SECONDS", help="Stop reconnecting after this long without the event stream.")(func)
    return func


@batch.command("start")
@click.option("--target", "target", type=click.IntRange(1, 1_000_000), required=True,
              help="The dataset size to grow to (not the number to add).")
@click.option("--provider", help="Provider to start with (default: the server's).")
@click.option("--model", help="Model to start with (default: the provider's first).")
@click.option("--topic", help='Only this topic, as "Practice Area - Topic".')
@click.option("--difficulty", help="Only this difficulty (foundational, basic, intermediate, advanced, expert).")
@click.option("--sample-type", help="case_analysis, educational, client_interaction, statutory_interpretation "
                                    "or balance (a rotating mix).")
@click.option("--reasoning-instruction", help="Extra instruction for the reasoning steps.")
@click.option("--models", "models", metavar="P/M,...",
              help='Exactly these models, in this order, e.g. "groq/llama-3.3-70b-versatile,cerebras/llama-3.3-70b" '
                   "(instead of --provider/--model).")
@click.option("--strategy", help="How models are ordered: order, cheapest, fastest or spread (default: the server's).")
@click.option("--follow", "follow_it", is_flag=True, help="Follow the batch until it ends (see: batch follow).")
@follow_options
@click.pass_obj
def batch_start(settings: Settings, target: int, provider: str | None, model: str | None, topic: str | None,
                difficulty: str | None, sample_type: str | None, reasoning_instruction: str | None,
                models: str | None, strategy: str | None,
                follow_it: bool, stop_on_interrupt: bool, plain: bool | None, give_up_after: float) -> None:
    """Start a batch that grows the dataset to --target samples."""
    body = {"target_count": target, "provider": provider, "model": model, "topic": topic,
            "difficulty": difficulty, "sample_type": sample_type, "reasoning_instruction": reasoning_instruction,
            "models": [m.strip() for m in models.split(",")] if models is not None else None, "strategy": strategy}
    client = settings.client()
    answer = client.post("/api/generate/batch/start", {k: v for k, v in body.items() if v is not None})
    batch_id = answer.get("batch_id")
    out = console()
    model_text = f"{answer.get('provider') or 'the default provider'}" + \
        (f"/{answer['model']}" if answer.get("model") else " (its first model)")
    if answer.get("models"):
        model_text = ", then ".join(answer["models"])
    if answer.get("strategy") and answer["strategy"] != "order":
        model_text += f" (strategy: {answer['strategy']})"
    out.print(f"started batch {batch_id}: adding {answer.get('total', '?')} sample(s) to reach "
              f"{answer.get('target_count', target)}, on {model_text}", soft_wrap=True, markup=False)
    if not follow_it:
        out.print(f"follow it with: uk-law batch follow {batch_id}", soft_wrap=True, markup=False)
        return
    finish(following.follow(client, batch_id, out, plain=plain, stop_on_interrupt=stop_on_interrupt,
                            give_up_after=give_up_after))


@batch.command("follow")
@click.argument("batch_id", required=False)
@follow_options
@click.pass_obj
def batch_follow(settings: Settings, batch_id: str | None, stop_on_interrupt: bool, plain: bool | None,
                 give_up_after: float) -> None:
    """Watch a batch until it ends: count/target, rate, ETA, the provider/model at work, and waits and
    switches as they happen. Without BATCH_ID: the running batch (else the latest).

    Exits 0 when the batch completes, 3 when it fails, 4 when it is stopped. Ctrl-C detaches (exit
    130) and leaves the batch running, unless --stop-on-interrupt.
    """
    client = settings.client()
    batch_id, note = following.pick_batch(client, batch_id)
    out = console()
    if note:
        out.print(note, soft_wrap=True, markup=False)
    finish(following.follow(client, batch_id, out, plain=plain, stop_on_interrupt=stop_on_interrupt,
                            give_up_after=give_up_after))


@batch.command("stop")
@click.argument("batch_id", required=False)
@click.pass_obj
def batch_stop(settings: Settings, batch_id: str | None) -> None:
    """Stop a batch (without BATCH_ID: every running batch)."""
    answer = settings.client().post("/api/generate/batch/stop", {"batch_id": batch_id} if batch_id else {})
    console().print(answer.get("message", "stop requested"), soft_wrap=True, markup=False)


@batch.command("status")
@click.argument("batch_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
@click.pass_obj
def batch_status(settings: Settings, batch_id: str | None, as_json: bool) -> None:
    """One batch in detail, or (without BATCH_ID) the running and recent batches."""
    client = settings.client()
    if batch_id:
        state = client.get("/api/generate/batch/status", {"batch_id": batch_id})
        if as_json:
            echo_json(state)
        else:
            console().print(batch_view(state))
        return
    listing = client.get("/api/generate/batch/status")
    if as_json:
        echo_json(listing)
        return
    states = sorted((s for s in (listing.get("batches") or {}).values() if isinstance(s, dict)),
                    key=lambda s: str(s.get("started_at") or ""), reverse=True)
    out = console()
    if not states:
        out.print("no batches yet")
    else:
        running = sum(1 for s in states if s.get("running"))
        out.print(batches_table(states, f"{running} running, {len(states) - running} recent"))


@batch.command("history")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True,
              help="Show at most this many, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the server's JSON.")
@click.pass_obj
def batch_history(settings: Settings, limit: int, as_json: bool) -> None:
    """Past and running batches, newest first."""
    answer = settings.client().get("/api/generate/batch/history")
    records = [r for r in answer.get("batches") or [] if isinstance(r, dict)]
    if as_json:
        echo_json({**answer, "batches": records[:limit]})
        return
    out = console()
    if not records:
        out.print("no batches yet")
    else:
        out.print(history_table(records[:limit], f"{min(limit, len(records))} of {len(records)} batches"))


# -- the dataset --------------------------------------------------------------------------------

@cli.command("stats")
@click.option("--top", type=click.IntRange(1, 1000), default=10, show_default=True, help="How many topics to list.")
@click.option("--json", "as_json", is_flag=True, help='Print {"stats": ..., "detailed": ...} as JSON.')
@click.pass_obj
def stats(settings: Settings, top: int, as_json: bool) -> None:
    """A summary of the dataset: size, difficulties, practice areas, topics, lengths."""
    client = settings.client()
    basic = client.get("/api/stats")
    detailed = client.get("/api/stats/detailed")
    detailed = detailed.get("stats", {}) if isinstance(detailed, dict) else {}
    if as_json:
        echo_json({"stats": basic, "detailed": detailed})
    else:
        console().print(stats_view(basic if isinstance(basic, dict) else {}, detailed, top=top))


@cli.command("export")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="File format (default: from the file name's extension, else jsonl).")
@click.option("-o", "--output", required=True, metavar="FILE", help='Where to write ("-": standard output).')
@click.option("--topic", help='Exact topic, "Practice Area - Topic".')
@click.option("--practice-area", help="Every topic of this practice area.")
@click.option("--difficulty")
@click.option("--sample-type")
@click.option("--provider")
@click.option("--model")
@click.option("--batch-id", help="Only the samples of this batch.")
@click.option("--flag", help="Only samples carrying this quality flag.")
@click.option("--without-flag", help="Only samples without this quality flag.")
@click.option("--clean", is_flag=True, default=None, help="Leave out samples with a rejecting quality flag.")
@click.option("--min-score", type=click.FloatRange(0, 1), help="Lowest quality score.")
@click.option("--simulated/--real", "simulated", default=None, help="Only simulated, or only real, samples.")
@click.pass_obj
def export(settings: Settings, fmt: str | None, output: str, **filters: Any) -> None:
    """Download the dataset (or the samples matching the filters), streamed to FILE."""
    if fmt is None:
        suffix = Path(output).suffix.lower().lstrip(".")
        fmt = {"json": "jsonl", "ndjson": "jsonl"}.get(suffix, suffix if suffix in FORMATS else "jsonl")
    if output != "-" and Path(output).is_dir():
        raise CliError(f"{output} is a directory; give a file name")
    written, total = settings.client().download("/api/export", {"format": fmt, **filters}, output)
    where = "standard output" if output == "-" else output
    samples = f"{int(total):,} sample(s)" if total and total.isdigit() else "the samples"
    click.echo(f"wrote {samples} as {fmt} ({size(written / 1024)}) to {where}", err=True)


# -- entry point --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    """Run the command; every failure ends in one line on stderr and a non-zero exit code."""
    try:
        code = cli.main(args=argv, prog_name="uk-law", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("uk-law: interrupted", err=True)
        code = following.EXIT_INTERRUPTED
    except BrokenPipeError:      # `uk-law ... | head`: the reader left; say nothing more
        try:   # what is still buffered for stdout goes nowhere, instead of failing again at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        code = 1
    except Exception as exc:      # a bug: still one line, never a traceback
        click.echo(f"uk-law: error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())}", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
