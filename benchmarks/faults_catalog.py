"""Benchmark 6, price-list faults: what a misbehaving `/models` or disk cache does to the user's calls.

The user's program makes `ChatOpenAI.invoke` calls through our handler to a local OpenRouter (in its
own process) while the handler's `PriceCatalog` meets a fault; its calls are timed and compared with
the same calls measured in the same process just before and after it (ratios of p50, p99 and the
slowest, so a shared machine's drift mostly cancels):

- `/models` answering 65 MB (OpenRouter's is about 1 MB), from a price server in its own process;
- `/models` sending one byte every 2 s (a read never times out; the whole list would take days);
- a 21 MB `models.json` in the disk cache; a cache file that blocks on read (a FIFO, as a hung network
  mount); an endpoints cache with `fetched_at: "yesterday"`: the program's first call (its first price
  lookup, then the first invoke) against the same with the usual cache.

    python -m benchmarks.faults_catalog [--quick]
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ._common import Row, print_table, quick_main, scratch
from ._fixtures import DATED, MODEL, cache_folder, marker, synthetic_models, write_price_cache
from ._servers import spawn_openrouter

NAME = "8. price-list faults"
HUGE = 65_000_000
TRICKLE_EVERY = 2.0
TARGET_P99 = 2.0
TARGET_FIRST = 1.5


# ---------------------------------------------------------------------------- the faulty price server


class _PriceServer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    huge_body = b""
    usual_body = b""

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        mode = self.path.split("/")[1]
        body = self.huge_body if mode == "huge" else self.usual_body
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "trickle":
            with contextlib.suppress(OSError):
                for i in range(len(body)):
                    time.sleep(TRICKLE_EVERY)
                    self.wfile.write(body[i : i + 1])
                    self.wfile.flush()
            return
        with contextlib.suppress(OSError):
            self.wfile.write(body)


def _serve() -> None:
    models = synthetic_models(1000)
    _PriceServer.usual_body = json.dumps({"data": models}).encode()
    filler = json.dumps({"data": models * (HUGE // len(_PriceServer.usual_body) + 1)}).encode()
    _PriceServer.huge_body = filler
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PriceServer)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"base_url": f"http://127.0.0.1:{server.server_address[1]}"}), flush=True)
    sys.stdin.read()


@contextlib.contextmanager
def price_server() -> Iterator[str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.faults_catalog", "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        yield json.loads(child.stdout.readline())["base_url"]
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


# ---------------------------------------------------------------------------- the user's program


def _timed_calls(
    call: Callable[[], Any], until: Callable[[], bool], at_least: int, limit: float
) -> list[float]:
    """ms per `call()`, until `until()` holds (and at least `at_least` calls), at most `limit` s."""
    took: list[float] = []
    deadline = time.monotonic() + limit
    while (len(took) < at_least or not until()) and time.monotonic() < deadline:
        t0 = time.perf_counter()
        call()
        took.append((time.perf_counter() - t0) * 1000)
    return took


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(quick: bool) -> list[Row]:
    from langchain_openai import ChatOpenAI

    from langfuse_openrouter_callbacks import PriceCatalog
    from langfuse_openrouter_callbacks.demo.langfuse_server import EmbeddedLangfuse
    from langfuse_openrouter_callbacks.langchain import CallbackHandler

    calls, runs = (40, 3) if quick else (150, 9)
    receiver = EmbeddedLangfuse().start()
    os.environ.update(
        LANGFUSE_PUBLIC_KEY="pk-lf-bench",
        LANGFUSE_SECRET_KEY="sk-lf-bench",
        LANGFUSE_BASE_URL=receiver.base_url,
    )
    rows: list[Row] = []
    with spawn_openrouter() as openrouter, price_server() as prices:
        llm = ChatOpenAI(base_url=openrouter, api_key="sk-or-bench", model=MODEL, max_retries=0)
        offline = PriceCatalog(offline=True)
        offline.preload()
        offline.wait_until_idle(60)
        user = CallbackHandler(price_catalog=offline)

        def call(handler: Any = user) -> None:
            llm.invoke(f"hello {marker(1)}", config={"callbacks": [handler]})

        _timed_calls(call, lambda: True, 10, 30)  # warm

        def network_fault(label: str, mode: str, timeout: float) -> None:
            receiver.spans.clear()
            before = _timed_calls(call, lambda: True, calls, 120)
            catalog = PriceCatalog(
                api_base=f"{prices}/{mode}/api/v1", cache_dir=scratch("cache-"), timeout=timeout
            )
            rss = _rss_mb()
            started = time.monotonic()
            catalog.preload()
            during = _timed_calls(call, lambda: catalog.wait_until_idle(0), calls, 120)
            freed = time.monotonic() - started if catalog.wait_until_idle(0) else None
            baseline = before + _timed_calls(
                call, lambda: True, calls, 120
            )  # the fault between: drift cancels
            p99 = _p(during, 0.99) / _p(baseline, 0.99)
            rows.append(
                Row(
                    NAME,
                    f"{label}: the user's p99 / without the fault (p50, slowest: "
                    f"{statistics.median(during) / statistics.median(baseline):.2f}x, "
                    f"{max(during) / max(baseline):.2f}x)",
                    f"{p99:.2f}x",
                    f"<= {TARGET_P99:g}x",
                    p99 <= TARGET_P99,
                    p99,
                )
            )
            free = f"{freed:.1f} s" if freed is not None else "not within 120 s"
            rows.append(
                Row(
                    NAME,
                    f"  {label}: the catalog's thread free again after; RSS growth; the price used",
                    f"{free}; +{_rss_mb() - rss:.0f} MB; {catalog.pricing_for(DATED).source}",
                    number=freed,
                )
            )

        network_fault("/models of 65 MB", "huge", 30.0)
        network_fault(f"/models at a byte per {TRICKLE_EVERY:g} s", "trickle", 5.0)

        # The disk: a new catalog per first call, its cache laid out beforehand.
        api_base = "http://127.0.0.1:9/api/v1"  # never reached: a fetch fails at once
        models = synthetic_models(1000)

        def first_call(cache_dir: str) -> float | None:
            """ms for the program's first price lookup and first invoke; None if blocked for 60 s."""
            outcome: dict[str, float] = {}

            def program() -> None:
                catalog = PriceCatalog(api_base=api_base, cache_dir=cache_dir)
                handler = CallbackHandler(price_catalog=catalog)
                t0 = time.perf_counter()
                catalog.pricing_for(DATED, provider="Anthropic")
                call(handler)
                outcome["ms"] = (time.perf_counter() - t0) * 1000

            thread = threading.Thread(target=program, daemon=True)
            thread.start()
            thread.join(60)
            return outcome.get("ms")

        def usual() -> str:
            root = scratch("cache-")
            write_price_cache(root, api_base, models)
            return root

        def huge() -> str:
            root = scratch("cache-")
            many = [{**models[i % 1000], "id": f"filler/model-{i}"} for i in range(100_000)]
            write_price_cache(root, api_base, many)
            return root

        def fifo() -> str:
            root = scratch("cache-")
            folder = cache_folder(root, api_base)
            folder.mkdir(parents=True)
            os.mkfifo(folder / "models.json")
            return root

        def bad_endpoints() -> str:
            root = usual()
            path = cache_folder(root, api_base) / "endpoints" / "anthropic%2Fclaude-sonnet-4.5.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({"format": 1, "fetched_at": "yesterday", "endpoints": []}))
            return root

        for label, make in (
            ("models.json of 21 MB on disk", huge),
            ("a cache file that blocks on read (FIFO)", fifo),
            ('an endpoints cache with fetched_at "yesterday"', bad_endpoints),
        ):
            receiver.spans.clear()
            size = sum(p.stat().st_size for p in Path(make()).rglob("*.json") if p.is_file())
            pairs = [(first_call(make()), first_call(usual())) for _ in range(runs)]  # fault, then usual
            blocked = any(fault is None for fault, _ in pairs)
            ratio = float("inf") if blocked else statistics.median(f / u for f, u in pairs if f and u)
            reference = statistics.median(u for _, u in pairs if u)
            rows.append(
                Row(
                    NAME,
                    f"{label}: the first call / with the usual cache ({reference:.0f} ms; "
                    f"{size / 1e6:.0f} MB of cache)",
                    "blocked (60 s)" if blocked else f"{ratio:.2f}x",
                    f"<= {TARGET_FIRST:g}x",
                    ratio <= TARGET_FIRST,
                    ratio,
                )
            )
    receiver.stop()
    print_table(
        f"{NAME} ({calls} user calls per window; a loaded machine moves these: compare the ratios)",
        rows,
        [
            "user call: ChatOpenAI.invoke through our handler to a local OpenRouter in its own process.",
            "too big or too slow: the fetch is abandoned with one warning; a bad cache file is ignored",
            "with one.",
        ],
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    if argv is None and sys.argv[1:] == ["--serve"]:
        _serve()
        return
    quick_main(run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
