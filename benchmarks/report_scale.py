"""Benchmark 5, report: 100,000 generations read and diagnosed, memory per page, the command's start-up.

Scale: 100,000 generations (20,000 with --quick) in 1,000 conversations, shaped as Langfuse's observations
API v2 answers them (the local Langfuse API's own JSON), are served as pages of 1,000 by a server in a
process of its own; `fetch_report(source="observations")` reads every page over HTTP and diagnoses the cache
misses (hits, provider switches, expired caches, calls without a breakpoint). Target: under 10 s for
100,000 (100 us a generation). Memory: tracemalloc's peak during the same read, at the full count and at a
fifth of it over the same 1,000 conversations: bounded by a page plus the conversations, so the two peaks
are close (target: at most 1.5x).

Start-up: `langfuse-openrouter report --no-cache-misses --format json` (the metrics path) in a fresh
interpreter against the local Langfuse API: wall time, and the CPU time the process used (user + system),
which a loaded machine does not inflate; `python -c pass` beside it. Target 0.4 s of CPU time.

    python -m benchmarks.report_scale [--quick]
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ._common import Row, Stats, print_table, quick_main, scratch

NAME = "5. report"
DAY = date(2026, 11, 3)
SESSIONS = 1000
PAGE = 1000
TARGET_US_PER_GENERATION = 100.0  # 10 s for 100,000
TARGET_MEMORY_RATIO = 1.5
TARGET_STARTUP_S = 0.4
PUBLIC_KEY, SECRET_KEY = "pk-lf-bench-report", "sk-lf-bench-report"
SONNET = "anthropic/claude-sonnet-4.5"
HASHES = ["a1b2c3d4e5f6", "0f1e2d3c4b5a"]
SONNET_PRICES = {
    "prompt": "0.000003",
    "completion": "0.000015",
    "input_cache_read": "0.0000003",
    "input_cache_write": "0.00000375",
}

_SERVER = r"""
import http.server, sys, pathlib
from urllib.parse import parse_qs, urlsplit
folder = pathlib.Path(sys.argv[1])
pages = sorted(folder.glob("page-*.json"), key=lambda p: int(p.stem.split("-")[1]))
bodies = [p.read_bytes() for p in pages]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args): pass
    def do_GET(self):
        query = parse_qs(urlsplit(self.path).query)
        body = bodies[int((query.get("cursor") or ["0"])[0])]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _templates() -> list[dict[str, Any]]:
    """Observation JSON for the call shapes of a conversation, as the local Langfuse API serves them."""
    from tests.support.langfuse_api_server import FakeLangfuseAPI, openrouter_generation

    api = FakeLangfuseAPI(PUBLIC_KEY, SECRET_KEY)
    groups = {"core", "basic", "model", "usage", "metadata", "trace_context"}
    shapes = [  # the first call writes; reads; routed to Bedrock; no breakpoint; written again (expired)
        dict(prompt_tokens=5_000, completion_tokens=200, cache_write_tokens=4_000),
        dict(prompt_tokens=5_600, completion_tokens=200, cached_tokens=4_000, cache_write_tokens=500),
        dict(prompt_tokens=6_000, completion_tokens=200, cache_write_tokens=4_000, provider="Amazon Bedrock"),
        dict(prompt_tokens=5_000, completion_tokens=200),
        dict(prompt_tokens=5_600, completion_tokens=200, cache_write_tokens=4_000),
    ]
    out = []
    for i, shape in enumerate(shapes):
        generation, _ = openrouter_generation(
            SONNET,
            datetime(2026, 11, 3, tzinfo=timezone.utc),
            pricing=SONNET_PRICES,
            openrouter={"prefix_hashes": HASHES[: 1 + min(i, 1)], "cache_control": i != 3 or None},
            **shape,
        )
        out.append(api._observation(generation, groups, {"openrouter"}))
    return out


def _pages(folder: Path, count: int) -> int:
    """Write `count` generations in SESSIONS conversations as pages, newest first; their number."""
    templates = _templates()
    per_session = max(1, count // SESSIONS)
    start = datetime(2026, 11, 3, 0, 0, tzinfo=timezone.utc)
    items = []
    for n in range(count):
        session, k = divmod(n, per_session)
        kind = 0 if k == 0 else 2 if (session % 5 == 1 and k == 1) else 3 if session % 5 == 2 else 1
        kind = 4 if session % 5 == 3 and k in (1, 2) else kind
        gap = 400 * min(k, 2) if session % 5 == 3 else 0  # two calls after the 5-minute lifetime
        moment = start + timedelta(seconds=session * 60 + k + gap + n % 7 / 10)
        item = dict(templates[kind])
        item.update(
            id=f"obs-{n:07d}",
            traceId=f"trace-{session:05d}",
            sessionId=f"session-{session:05d}",
            userId=f"user-{session % 50:03d}",
            startTime=moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
        )
        items.append(item)
    items.sort(key=lambda o: o["startTime"], reverse=True)
    pages = [items[i : i + PAGE] for i in range(0, len(items), PAGE)]
    for i, page in enumerate(pages):
        meta = {"cursor": str(i + 1)} if i + 1 < len(pages) else {}
        (folder / f"page-{i}.json").write_text(json.dumps({"data": page, "meta": meta}), encoding="utf-8")
    return len(pages)


def _serve(folder: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-c", _SERVER, str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    port = int(process.stdout.readline())
    return process, f"http://127.0.0.1:{port}"


def _read(base_url: str) -> Any:
    from langfuse_openrouter_callbacks import PriceCatalog
    from langfuse_openrouter_callbacks.report import LangfuseConnection, fetch_report

    connection = LangfuseConnection.from_keys(base_url, PUBLIC_KEY, SECRET_KEY)
    catalog = PriceCatalog({SONNET: SONNET_PRICES}, offline=True)
    return fetch_report(DAY, DAY, client=connection, source="observations", catalog=catalog, progress=False)


def _scale(count: int, rounds: int) -> tuple[Stats, Any]:
    folder = Path(scratch("report-pages-"))
    _pages(folder, count)
    process, base_url = _serve(folder)
    try:
        _read(base_url)  # warm: imports, connections
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            report = _read(base_url)
            times.append(time.perf_counter() - t0)
        assert report.totals.calls == count, report.totals.calls
        return Stats.of(times), report
    finally:
        process.terminate()
        process.wait()


def _peak(count: int) -> int:
    folder = Path(scratch("report-pages-"))
    _pages(folder, count)
    process, base_url = _serve(folder)
    try:
        _read(base_url)
        tracemalloc.start()
        report = _read(base_url)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert report.totals.calls == count
        return peak
    finally:
        process.terminate()
        process.wait()


def _startup(rounds: int) -> tuple[Stats, Stats, Stats]:
    from tests.support.langfuse_api_server import FakeLangfuseAPI, openrouter_generation

    server = FakeLangfuseAPI(PUBLIC_KEY, SECRET_KEY).start()
    try:
        for hour in range(4):
            moment = datetime(2026, 11, 3, hour, tzinfo=timezone.utc)
            usage = {"prompt_tokens": 5_000, "completion_tokens": 100, "cached_tokens": 4_000}
            server.add(*openrouter_generation(SONNET, moment, pricing=SONNET_PRICES, **usage))
        env = {
            **os.environ,
            "LANGFUSE_PUBLIC_KEY": PUBLIC_KEY,
            "LANGFUSE_SECRET_KEY": SECRET_KEY,
            "LANGFUSE_BASE_URL": server.root_url,
        }
        command = [sys.executable, "-m", "langfuse_openrouter_callbacks", "report", "--from", "2026-11-03",
                   "--to", "2026-11-03", "--no-cache-misses", "--format", "json"]  # fmt: skip
        report_times, report_cpu, bare_times = [], [], []
        for _ in range(rounds):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            report_times.append(time.perf_counter() - t0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            report_cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            assert done.returncode == 0 and json.loads(done.stdout)["source"] == "metrics", done.stderr
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], env=env, check=True)
            bare_times.append(time.perf_counter() - t0)
        return Stats.of(report_times), Stats.of(report_cpu), Stats.of(bare_times)
    finally:
        server.stop()


def run(quick: bool) -> list[Row]:
    count = 20_000 if quick else 100_000
    rounds = 3 if quick else 5
    elapsed, report = _scale(count, rounds)
    us = elapsed.median / count * 1e6
    small, large = _peak(count // 5), _peak(count)
    startup, startup_cpu, bare = _startup(5 if quick else 11)
    causes = ", ".join(f"{m.cause} {m.calls:,}" for m in report.cache_misses)
    rows = [
        Row(NAME, f"read + diagnose {count:,} generations", elapsed.fmt(" s"), "", None, elapsed.median),
        Row(NAME, "per generation", f"{us:.1f} us", f"<= {TARGET_US_PER_GENERATION:.0f} us (10 s / 100,000)",
            us <= TARGET_US_PER_GENERATION, us),
        Row(NAME, f"peak memory, {count // 5:,} generations", f"{small / 2**20:.1f} MiB", "", None, small),
        Row(NAME, f"peak memory, {count:,} generations", f"{large / 2**20:.1f} MiB",
            f"<= {TARGET_MEMORY_RATIO}x the fifth", large <= TARGET_MEMORY_RATIO * small, large / small),
        Row(NAME, "report start-up, metrics path: wall time", startup.fmt(" s", 3), "", None, startup.median),
        Row(NAME, "report start-up, metrics path: CPU time", startup_cpu.fmt(" s", 3),
            f"<= {TARGET_STARTUP_S} s", startup_cpu.median <= TARGET_STARTUP_S, startup_cpu.median),
        Row(NAME, "python -c pass (the floor)", bare.fmt(" s", 3), "", None, bare.median),
    ]  # fmt: skip
    print_table(
        f"{NAME}: {count:,} generations in {SESSIONS:,} conversations, pages of {PAGE:,}",
        rows,
        [f"causes found: {causes}; lost ${report.lost_usd:.2f}", "figures from a loaded shared machine"],
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    quick_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
