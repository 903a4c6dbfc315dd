"""Shared pieces of the benchmarks: loopback-only network guard, interleaved timing, statistics, tables."""

from __future__ import annotations

import argparse
import atexit
import gc
import ipaddress
import json
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

SUMMARY_ENV = "LFOR_BENCH_SUMMARY"  # where a benchmark process appends its result rows (JSON lines)

# ---------------------------------------------------------------------------- network guard

_LOCAL_NAMES = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


def _is_loopback(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def guard_network() -> None:
    """Refuse any connection or name lookup that is not 127.0.0.1 / localhost, for the whole process.

    The benchmarks talk only to servers they start on the loopback interface; this makes a mistake
    (a default OpenRouter or Langfuse URL somewhere) fail loudly instead of reaching the internet.
    """
    if getattr(socket, "_lfor_guarded", False):
        return
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_getaddrinfo = socket.getaddrinfo

    def _check(address: Any) -> None:
        if isinstance(address, tuple) and not _is_loopback(address[0]):
            raise ConnectionRefusedError(f"benchmarks: non-loopback connection blocked: {address!r}")

    def connect(self: socket.socket, address: Any) -> None:
        _check(address)
        return original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        _check(address)
        return original_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and not _is_loopback(host):
            raise socket.gaierror(f"benchmarks: non-loopback name lookup blocked: {host!r}")
        return original_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    socket._lfor_guarded = True  # type: ignore[attr-defined]


_scratch: str | None = None


def scratch(prefix: str) -> str:
    """A new temporary folder, removed with everything in it when this process exits."""
    global _scratch
    if _scratch is None:
        _scratch = tempfile.mkdtemp(prefix="lfor-bench-")
        atexit.register(shutil.rmtree, _scratch, ignore_errors=True)
    return tempfile.mkdtemp(prefix=prefix, dir=_scratch)


def clean_environment() -> None:
    """Measure the defaults: drop this machine's Langfuse / OpenRouter settings (keys, base URLs, opt-in
    flags such as the `/generation` lookups) and keep any price cache out of the user's cache folder."""
    for name in list(os.environ):
        if name.startswith(("LANGFUSE_", "OPENROUTER_")):
            del os.environ[name]
    if "LFOR_BENCH_KEEP_CACHE_HOME" not in os.environ:
        os.environ["XDG_CACHE_HOME"] = scratch("xdg-")


def prepare() -> None:
    """What every benchmark process does first: loopback-only network, a clean environment."""
    guard_network()
    clean_environment()


# ---------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stats:
    """Median and spread (interquartile range, min, max) of repeated measurements."""

    median: float
    p25: float
    p75: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        ordered = sorted(values)
        if len(ordered) == 1:
            v = ordered[0]
            return cls(v, v, v, v, v, 1)
        q = statistics.quantiles(ordered, n=4, method="inclusive")
        return cls(statistics.median(ordered), q[0], q[2], ordered[0], ordered[-1], len(ordered))

    def fmt(self, unit: str = "", digits: int = 2) -> str:
        """`3.41 µs [3.38-3.47]`: the median and the interquartile range of the rounds."""
        u = f" {unit}" if unit else ""
        return f"{self.median:.{digits}f}{u} [{self.p25:.{digits}f}-{self.p75:.{digits}f}]"


def settle() -> None:
    """Collect garbage, then freeze what is left (imports, fixtures) out of the collector's way.

    With LangChain, LlamaIndex and pydantic loaded a full collection takes a quarter of a second; frozen,
    the collections before each block (and during it) only walk what the benchmark itself allocates.
    """
    gc.collect()
    gc.freeze()


def interleaved(
    contenders: dict[str, Callable[[], float]], rounds: int, *, collect: bool = True
) -> dict[str, list[float]]:
    """Run each contender's block once per round, alternating which goes first; their results per round.

    A block returns one figure (e.g. µs per event over the block). Alternating the order and pairing
    the contenders round by round cancels slow drifts of a noisy machine (CPU frequency, neighbours).
    """
    settle()
    names = list(contenders)
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            if collect:
                gc.collect()
            results[name].append(contenders[name]())
    return results


def ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Per-round ratios of paired measurements."""
    return [a / b for a, b in zip(numerator, denominator, strict=True)]


def per_call_us(fn: Callable[[], Any], calls: int) -> Callable[[], float]:
    """A block that calls `fn` `calls` times and returns µs per call."""

    def block() -> float:
        counter = time.perf_counter_ns
        start = counter()
        for _ in range(calls):
            fn()
        return (counter() - start) / calls / 1000

    return block


# ---------------------------------------------------------------------------- results and tables


@dataclass
class Row:
    """One printed figure; `target` and `passed` when it is checked against a target."""

    benchmark: str
    metric: str
    value: str
    target: str = ""
    passed: bool | None = None
    number: float | None = None  # the figure as a number (medians), for the summary
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return "" if self.passed is None else ("PASS" if self.passed else "FAIL")


def print_table(title: str, rows: Iterable[Row], notes: Iterable[str] = ()) -> None:
    rows = list(rows)
    headers = ("metric", "median [p25-p75]", "target", "")
    cells = [(r.metric, r.value, r.target, r.status) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    print()
    print(f"== {title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    print(line)
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
    for note in notes:
        print(f"   {note}")
    sys.stdout.flush()


def emit(rows: Iterable[Row]) -> None:
    """Hand the rows to the runner (`python -m benchmarks`), when this process runs under it."""
    path = os.environ.get(SUMMARY_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(asdict(row)) + "\n")


def environment() -> str:
    """One line naming the interpreter and machine the figures come from."""
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    )


def begin() -> None:
    """Set this benchmark process up; print the machine when it runs on its own."""
    prepare()
    if not os.environ.get(SUMMARY_ENV):  # run on its own, not under `python -m benchmarks`
        print(environment())


def quick_main(run: Callable[[bool], list[Row]], description: str, argv: list[str] | None = None) -> None:
    """The command line of a benchmark whose only option is `--quick`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a few seconds)")
    args = parser.parse_args(argv)
    begin()
    emit(run(args.quick))
