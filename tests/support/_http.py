"""Shared plumbing for the local test servers: a threaded stdlib HTTP server in a daemon thread.

Both fake servers speak real HTTP/1.1 on 127.0.0.1 with an ephemeral port, keep connections
alive like the real services, read ``Content-Length`` or chunked request bodies and record
every request as a :class:`RecordedRequest`.
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit

__all__ = ["BackgroundHTTPServer", "QuietHandler", "RecordedRequest"]


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Header names lower-cased; repeated headers joined with ", "."""
    raw_headers: list[tuple[str, str]]
    """Headers exactly as sent (original case and order)."""
    raw_body: bytes
    """Body bytes as received on the wire (possibly compressed)."""
    body: bytes
    """Body after undoing ``Content-Encoding`` (gzip/deflate)."""
    received_at: float = field(default_factory=time.time)

    def json(self) -> Any:
        """Decode the (decompressed) body as JSON; ``None`` when the body is empty."""
        return json.loads(self.body) if self.body else None

    def header(self, name: str, default: str | None = None) -> str | None:
        """Case-insensitive header lookup."""
        return self.headers.get(name.lower(), default)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # The stdlib default backlog of 5 makes 200 simultaneous connects hit SYN retransmits
    # (1 s stalls); real servers accept far more.
    request_queue_size = 1024

    owner: Any

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hang up early (timeouts, truncation tests); report anything else."""
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class QuietHandler(BaseHTTPRequestHandler):
    """Request handler base: HTTP/1.1, no stderr logging, body/response helpers."""

    protocol_version = "HTTP/1.1"
    server_version = "fake-server/1.0"
    sys_version = ""
    timeout = 60  # idle keep-alive sockets give up eventually
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging."""

    # -- request side -------------------------------------------------------------------

    def read_raw_body(self) -> bytes:
        """Read the request body honouring ``Content-Length`` or chunked transfer encoding."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size_line = self.rfile.readline().strip()
                size = int(size_line.split(b";", 1)[0] or b"0", 16)
                if size == 0:
                    # trailers end with an empty line
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def record(self) -> RecordedRequest:
        """Read the body and build a :class:`RecordedRequest` for this request."""
        raw = self.read_raw_body()
        encoding = (self.headers.get("Content-Encoding") or "").lower().strip()
        if encoding == "gzip":
            body = gzip.decompress(raw)
        elif encoding == "deflate":
            body = zlib.decompress(raw)
        else:
            body = raw
        parts = urlsplit(self.path)
        lowered: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            lowered[key] = f"{lowered[key]}, {value}" if key in lowered else value
        return RecordedRequest(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            headers=lowered,
            raw_headers=list(self.headers.items()),
            raw_body=raw,
            body=body,
        )

    # -- response side ------------------------------------------------------------------

    def send_bytes(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        *,
        declared_length: int | None = None,
    ) -> None:
        """Send a complete response; ``declared_length`` larger than ``body`` simulates truncation."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if declared_length is None else declared_length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if declared_length is not None and declared_length != len(body):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        """Send ``payload`` as a JSON response."""
        self.send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def start_chunked(self, status: int, content_type: str, headers: dict[str, str] | None = None) -> None:
        """Begin a ``Transfer-Encoding: chunked`` response (used for SSE)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def write_chunk(self, data: bytes) -> None:
        """Write one HTTP chunk and flush it to the client immediately."""
        if data:
            self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

    def end_chunked(self) -> None:
        """Terminate a chunked response."""
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def abort_connection(self) -> None:
        """Drop the connection mid-response (the client sees an incomplete body)."""
        self.close_connection = True
        self.wfile.flush()


H = TypeVar("H", bound=QuietHandler)


class BackgroundHTTPServer(Generic[H]):
    """Owns a :class:`ThreadingHTTPServer` on 127.0.0.1:0 running in a daemon thread."""

    handler_class: type[H]

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.RLock()
        self._requests: list[RecordedRequest] = []

    def start(self) -> BackgroundHTTPServer[H]:
        """Bind and start serving; idempotent. Returns ``self``."""
        if self._server is not None:
            return self
        server = _Server((self._host, self._port), self.handler_class)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}:{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> BackgroundHTTPServer[H]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (server must be started)."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:PORT`` without a trailing slash."""
        return f"http://{self._host}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Copy of every request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def _add_request(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
