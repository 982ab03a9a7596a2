"""A loopback Slack: incoming webhooks and ``chat.postMessage`` with Slack's documented answers.

Switches make the next N responses fail (5xx) or rate limit (429 + Retry-After); every request is logged.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from allotment.testing.vendor_server import VendorAnswer, VendorRequest, serve_vendor

WEBHOOK_PATH = "/services/T0001/B0001/s3cr3tWebhookToken"
BOT_TOKEN = "xoxb-test-token"
CHANNELS = {"#ai-spend": "C0123", "C0123": "C0123"}


@dataclass
class Logged:
    path: str
    headers: dict[str, str]
    body: Any
    status: int


@dataclass
class FakeSlack:
    requests: list[Logged] = field(default_factory=list)
    _failures: list[tuple[int, str | None]] = field(default_factory=list)
    _ts: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def fail(self, count: int, status: int = 500) -> None:
        self._failures.extend([(status, None)] * count)

    def rate_limit(self, count: int, retry_after: str = "30") -> None:
        self._failures.extend([(429, retry_after)] * count)

    @property
    def delivered(self) -> list[Any]:
        """Bodies Slack accepted (posted messages), in order."""
        return [r.body for r in self.requests if r.status == 200 and _accepted(r)]

    @property
    def webhook_url(self) -> str:
        return self.url + WEBHOOK_PATH

    @property
    def api_base(self) -> str:
        return self.url + "/api/"

    def handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], str]:
        with self._lock:
            if self._failures:
                status, retry_after = self._failures.pop(0)
                extra = {"Retry-After": retry_after} if retry_after else {}
                body = "rate_limited" if status == 429 else "internal_error"
                self.requests.append(Logged(path, headers, None, status))
                return status, {"Content-Type": "text/plain", **extra}, body
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if path.startswith("/services/"):
                status, reply = self._webhook(path, body)
                self.requests.append(Logged(path, headers, body, status))
                return status, {"Content-Type": "text/plain"}, reply
            if path == "/api/chat.postMessage":
                reply_json = self._post_message(headers, body)
                self.requests.append(Logged(path, headers, body, 200 if reply_json.get("ok") else 299))
                return 200, {"Content-Type": "application/json"}, json.dumps(reply_json)
            self.requests.append(Logged(path, headers, body, 404))
            return 404, {"Content-Type": "text/plain"}, "not_found"

    def _webhook(self, path: str, body: Any) -> tuple[int, str]:
        if path != WEBHOOK_PATH:
            return 404, "no_service"
        if not isinstance(body, dict):
            return 400, "invalid_payload"
        if not body.get("text") and not body.get("blocks"):
            return 400, "no_text"
        if not _blocks_valid(body.get("blocks") or []):
            return 400, "invalid_blocks"
        return 200, "ok"

    def _post_message(self, headers: dict[str, str], body: Any) -> dict[str, Any]:
        if headers.get("authorization") != f"Bearer {BOT_TOKEN}":
            return {"ok": False, "error": "invalid_auth"}
        if not headers.get("content-type", "").startswith("application/json"):
            return {"ok": False, "error": "invalid_arguments"}
        if not isinstance(body, dict) or body.get("channel") not in CHANNELS:
            return {"ok": False, "error": "channel_not_found"}
        if not body.get("text") and not body.get("blocks"):
            return {"ok": False, "error": "no_text"}
        if not _blocks_valid(body.get("blocks") or []):
            return {"ok": False, "error": "invalid_blocks"}
        self._ts += 1
        ts = f"1700000000.{self._ts:06d}"
        return {
            "ok": True,
            "channel": CHANNELS[body["channel"]],
            "ts": ts,
            "message": {"text": body.get("text")},
        }


def _accepted(logged: Logged) -> bool:
    return logged.path.startswith("/services/") or logged.status == 200


def _blocks_valid(blocks: list[Any]) -> bool:
    """The limits Slack enforces that our messages could plausibly break."""
    if len(blocks) > 50:
        return False
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            if block["text"]["type"] != "plain_text" or len(block["text"]["text"]) > 150:
                return False
        elif kind == "section":
            if len(block.get("text", {}).get("text", "")) > 3000 or len(block.get("fields", [])) > 10:
                return False
            if any(len(f["text"]) > 2000 for f in block.get("fields", [])):
                return False
        elif kind == "context":
            if len(block["elements"]) > 10:
                return False
        elif kind == "actions":
            if any(len(e["text"]["text"]) > 75 for e in block["elements"]):
                return False
        else:
            return False
    return True


@contextmanager
def serve(fake: FakeSlack) -> Iterator[FakeSlack]:
    def answer(request: VendorRequest) -> VendorAnswer:
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, reply_headers, body = fake.handle(request.target, headers, request.body)
        return status, reply_headers, body.encode()

    with serve_vendor(answer, methods=("POST",)) as url:
        fake.url = url
        yield fake
