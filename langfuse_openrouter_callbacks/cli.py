"""The `langfuse-openrouter` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date
from decimal import Decimal, InvalidOperation


def _demo(args: argparse.Namespace) -> int:
    from .demo.render import run, serve

    return serve() if args.serve else run()


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _usd(text: str) -> Decimal:
    try:
        amount = Decimal(text)
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or amount < 0:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}")
    return amount


def _add_report_parser(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report",
        allow_abbrev=False,
        help="cost, cache savings and what cache misses lost, per model, day, session or user, from Langfuse",
        description="Read OpenRouter generations from Langfuse (LANGFUSE_PUBLIC_KEY, LANGFUSE_SECRET_KEY, "
        "LANGFUSE_BASE_URL) and report per model and UTC day: calls, input, cached and written tokens, "
        "cache hit ratio, cost, no-cache cost, savings and cost disagreements; and why the prompt cache "
        "missed (provider_switch, expired, prefix_changed, below_minimum, not_enabled, write_unread), "
        "in dollars.",
    )
    report.add_argument(
        "--from", dest="start", type=_day, required=True, metavar="YYYY-MM-DD", help="first day"
    )
    report.add_argument("--to", dest="end", type=_day, required=True, metavar="YYYY-MM-DD", help="last day")
    report.add_argument(
        "--model", help="only this model (the generation's model name in Langfuse; its dated ids too)"
    )
    report.add_argument(
        "--by",
        choices=("model", "day", "session", "user", "trace_name"),
        default="model",
        help="cost, savings and lost to cache misses per this (default model)",
    )
    report.add_argument("--format", choices=("table", "csv", "json", "html"), default="table")
    report.add_argument(
        "--table",
        choices=("rows", "by", "cache_misses"),
        default="rows",
        help="with --format csv: which table (per day and model, per --by, or per cache-miss cause)",
    )
    report.add_argument("--output", "-o", metavar="FILE", help="write the report here instead of stdout")
    report.add_argument(
        "--chart",
        metavar="FILE.png",
        help="also write a chart (.png, .jpg, .jpeg): daily cost and savings, and the dollars lost by cause",
    )
    report.add_argument(
        "--source",
        choices=("auto", "metrics", "observations"),
        default="auto",
        help="metrics: Langfuse aggregates; observations: read every generation; auto (default): read every "
        "generation to diagnose cache misses, else metrics when they give every figure",
    )
    report.add_argument(
        "--no-cache-misses",
        dest="cache_misses",
        action="store_false",
        help="do not diagnose cache misses (auto then lets Langfuse aggregate: fast on millions of calls)",
    )
    report.add_argument(
        "--disagreements",
        action="store_true",
        help="with server-side aggregation, also read every generation's metadata for cost disagreements",
    )
    report.add_argument(
        "--tolerance",
        type=_usd,
        default=Decimal("0.000001"),
        metavar="USD",
        help="a reported/computed cost difference up to this is no disagreement (default 0.000001)",
    )


def _report(args: argparse.Namespace) -> int:
    from .report._command import run_report

    return run_report(
        start=args.start,
        end=args.end,
        model=args.model,
        fmt=args.format,
        table=args.table,
        by=args.by,
        chart=args.chart,
        output=args.output,
        source=args.source,
        cache_misses=args.cache_misses,
        check_disagreements=args.disagreements,
        tolerance=args.tolerance,
    )


def _is_known(exc: Exception) -> bool:
    """An error that is one line for the user (a missing extra, a service refusing or unreachable)."""
    from ._extras import MissingExtra
    from .demo.run import DemoError

    return isinstance(exc, (MissingExtra, DemoError))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="langfuse-openrouter",
        description="OpenRouter prompt-cache usage, true cost and savings for Langfuse.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="run a LangChain chain and a LlamaIndex query with prompt caching and show what was exported "
        "(embedded OpenRouter and Langfuse unless OPENROUTER_API_KEY / LANGFUSE_* keys are set)",
    )
    demo.add_argument(
        "--serve",
        action="store_true",
        help="then keep the embedded OpenRouter and Langfuse running and print the OPENROUTER_* and "
        "LANGFUSE_* variables that point at them (for the README's snippets, the notebooks and report)",
    )
    _add_report_parser(commands)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            return _demo(args)
        if args.command == "report":
            return _report(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _is_known(exc):
            raise
        print(f"langfuse-openrouter {args.command}: {exc}", file=sys.stderr)
        return 1
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
