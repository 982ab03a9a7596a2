"""A fake vendor API on 127.0.0.1 for plugin tests: one function answers, a thread serves it.

A fake only decides each answer (status, headers, body bytes); the socket, the threading
and the shutdown are here, so every fake HR system, ERP or chat service starts the same way.

Usage::

    def answer(request: VendorRequest) -> VendorAnswer:
        if request.headers.get("Authorization") != "Bearer t0ken":
            return 401, {"Content-Type": "application/json"}, b'{"detail": "Invalid token."}'
        return 200, {"Content-Type": "application/json"}, b'{"results": []}'

    with serve_vendor(answer, methods=("GET",)) as url:
        ...  # point the plugin at url
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["VendorAnswer", "VendorRequest", "serve_vendor"]

VendorAnswer = tuple[int, Mapping[str, str], bytes]
"""Status, response headers (``Content-Length`` is added) and the body."""


@dataclass(frozen=True)
class VendorRequest:
    """One request as the vendor received it.

    :param target: the request target as sent (path and query); ``path`` and ``query`` split it.
    :param headers: the request headers; ``get`` ignores the case of names.
    """

    method: str
    target: str
    path: str
    query: str
    headers: Message
    body: bytes


@contextmanager
def serve_vendor(
    answer: Callable[[VendorRequest], VendorAnswer],
    methods: Iterable[str] = ("GET", "POST", "PUT", "PATCH", "DELETE"),
) -> Iterator[str]:
    """Serve ``answer`` on a free port of 127.0.0.1 until the ``with`` block ends.

    ``answer`` is called from the server's threads, one per connection.

    :param methods: the methods the vendor accepts; others get the standard library's 501.
    :returns: the base URL, ``http://127.0.0.1:<port>`` (no trailing slash).
    """

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers, payload = answer(
                VendorRequest(self.command, self.path, parts.path, parts.query, self.headers, body)
            )
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a test's output is not the place for an access log

    for method in methods:
        setattr(Handler, f"do_{method}", Handler._answer)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
