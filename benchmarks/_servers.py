"""A tiny OpenRouter on 127.0.0.1 for the benchmarks (asyncio, so 1,000 concurrent connections are cheap).

- `POST /api/v1/chat/completions`: answers as OpenRouter does for Claude Sonnet 4.5; the usage, cost and
  generation id come from the last `[bench:<n>]` marker in the messages, so every call is distinguishable.
  `"stream": true` gets the same answer as server-sent events: a chunk per word, the finish chunk, then
  OpenRouter's usage chunk (`choices: []`) and `[DONE]`.
- `GET /api/v1/models`: a synthetic 1,000-model list; `GET /api/v1/models/<id>/endpoints`: its endpoints.

In a thread of this process (`LocalOpenRouter().start()`), or in a process of its own so it does not
compete with the measured process for the GIL: `python -m benchmarks._servers` prints
`{"base_url": ...}` and serves until its stdin closes (`spawn_openrouter()` does both).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlsplit

from ._fixtures import (
    MODEL,
    chat_completion,
    chat_completion_events,
    endpoint_entries,
    marker_number,
    synthetic_models,
)

API_PREFIX = "/api/v1"


def _text(messages: Any) -> str:
    parts: list[str] = []
    for message in messages if isinstance(messages, list) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "\n".join(parts)


class LocalOpenRouter:
    """OpenRouter's chat completions and model list on 127.0.0.1 (see the module docstring)."""

    def __init__(self, models: int = 1000) -> None:
        self._models_body = json.dumps({"data": synthetic_models(models)}).encode()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.requests = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    def route(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        path = urlsplit(target).path.removeprefix(API_PREFIX)
        if method == "POST" and path == "/chat/completions":
            self.requests += 1
            try:
                request = json.loads(body or b"{}")
            except ValueError:
                return 400, b'{"error":{"code":400,"message":"Invalid JSON"}}'
            n = marker_number(_text(request.get("messages")))
            if request.get("stream"):
                return 200, chat_completion_events(n)
            return 200, json.dumps(chat_completion(n)).encode()
        if method == "GET" and path == "/models":
            return 200, self._models_body
        if method == "GET" and path.startswith("/models/") and path.endswith("/endpoints"):
            model_id = unquote(path[len("/models/") : -len("/endpoints")])
            endpoints = endpoint_entries() if model_id == MODEL else []
            return 200, json.dumps({"data": {"id": model_id, "endpoints": endpoints}}).encode()
        return 404, b'{"error":{"code":404,"message":"Not found"}}'

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    break
                method, target, _ = request_line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    key, _, value = line.decode("latin-1").partition(":")
                    headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                status, data = self.route(method, target, body)
                kind = b"text/event-stream" if data.startswith(b"data: ") else b"application/json"
                writer.write(
                    b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                    % (status, b"OK" if status == 200 else b"Error", kind, len(data))
                    + data
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError, ValueError):
            pass  # a client that hung up, or the server stopping
        finally:
            writer.close()

    async def _start_server(self) -> None:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> LocalOpenRouter:
        """Serve from a daemon thread of this process."""
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._start_server())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="bench-openrouter", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        self._loop = None
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()


@contextlib.contextmanager
def spawn_openrouter() -> Iterator[str]:
    """A `LocalOpenRouter` in a child process; yields its base URL and stops it on exit."""
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._servers"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark OpenRouter did not start")
        yield json.loads(line)["base_url"]
    finally:
        if child.stdin is not None:
            child.stdin.close()  # the child stops when its stdin closes
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _main() -> None:
    from ._common import guard_network

    guard_network()
    server = LocalOpenRouter().start()
    print(json.dumps({"base_url": server.base_url}), flush=True)
    sys.stdin.read()  # until the parent closes our stdin (or exits)
    server.stop()


if __name__ == "__main__":
    _main()
