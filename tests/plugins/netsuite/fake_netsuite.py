"""A local SuiteTalk REST endpoint that verifies TBA (OAuth 1.0a HMAC-SHA256) signatures itself.

SuiteQL lookups, ``PUT journalEntry/eid:{externalId}`` upserts with NetSuite's validation and errors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from allotment.testing.vendor_server import VendorAnswer, VendorRequest, serve_vendor

_PARAM = re.compile(r'(\w+)="([^"]*)"')
_QUERY = re.compile(r"^SELECT id FROM (\w+) WHERE id IN \(([\d, ]+)\)( AND isinactive = 'F')?$")


def _enc(value: str) -> str:
    return quote(value, safe="~")


def _error(
    status: int, title: str, code: str, detail: str, path: str | None = None
) -> tuple[int, dict[str, str], Any]:
    item = {"detail": detail, "o:errorCode": code}
    if path:
        item["o:errorPath"] = path
    return (
        status,
        {},
        {
            "type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1",
            "title": title,
            "status": status,
            "o:errorDetails": [item],
        },
    )


@dataclass
class FakeNetSuite:
    account: str = "1234567_SB1"
    consumer: tuple[str, str] = ("ck-1", "cs-1")
    token: tuple[str, str] = ("tk-1", "ts-1")
    records: dict[str, set[str]] = field(
        default_factory=lambda: {
            "subsidiary": {"1", "2"},
            "currency": {"1", "2"},
            "account": {"672", "215", "673"},
            "department": {"12", "14"},
            "classification": {"3"},
            "location": {"2"},
        }
    )
    journals: dict[str, dict[str, Any]] = field(default_factory=dict)  # externalId -> {id, body, puts}
    throttle: list[str] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    url: str = ""
    _next_id: int = 900

    # -- TBA ------------------------------------------------------------------------------
    def verify(self, method: str, host: str, path: str, query: str, header: str) -> str | None:
        """None when the signature is right, else why not (checked independently of the client)."""
        if not header.startswith("OAuth "):
            return "no OAuth header"
        params = {k: unquote(v) for k, v in _PARAM.findall(header)}
        if params.get("realm") != self.account:
            return f"wrong realm {params.get('realm')!r}"
        if params.get("oauth_signature_method") != "HMAC-SHA256" or params.get("oauth_version") != "1.0":
            return "unsupported signature method"
        if params.get("oauth_consumer_key") != self.consumer[0] or params.get("oauth_token") != self.token[0]:
            return "unknown consumer or token"
        if abs(time.time() - int(params.get("oauth_timestamp", "0"))) > 300:
            return "stale timestamp"
        nonce = params.get("oauth_nonce", "")
        if not nonce or nonce in self.nonces:
            return "nonce reused"
        signed = [(k, v) for k, v in params.items() if k.startswith("oauth_") and k != "oauth_signature"]
        signed += parse_qsl(query, keep_blank_values=True)
        normalized = "&".join(f"{k}={v}" for k, v in sorted((_enc(k), _enc(v)) for k, v in signed))
        base = "&".join([method, _enc(f"http://{host}{path}"), _enc(normalized)])
        key = f"{_enc(self.consumer[1])}&{_enc(self.token[1])}".encode()
        expected = base64.b64encode(hmac.new(key, base.encode(), hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, params.get("oauth_signature", "")):
            return "signature mismatch"
        self.nonces.add(nonce)
        return None

    # -- the API --------------------------------------------------------------------------
    def handle(
        self, method: str, host: str, path: str, query: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        problem = self.verify(method, host, path, query, headers.get("Authorization", ""))
        if problem is not None:
            return _error(401, "Unauthorized", "INVALID_LOGIN", f"Invalid login attempt. ({problem})")
        if self.throttle:
            status, headers_out, payload = _error(
                429, "Too Many Requests", "CONCURRENCY_LIMIT_EXCEEDED", "Concurrent request limit exceeded."
            )
            return status, {"Retry-After": self.throttle.pop(0)}, payload
        if method == "POST" and path == "/services/rest/query/v1/suiteql":
            return self._suiteql(headers, body)
        match = re.fullmatch(r"/services/rest/record/v1/journalentry/eid:(.+)", path, re.IGNORECASE)
        if method == "PUT" and match:
            return self._upsert(unquote(match.group(1)), body)
        return _error(404, "Not Found", "NONEXISTENT_ID", "The record instance does not exist.")

    def _suiteql(self, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
        if headers.get("Prefer") != "transient":
            return _error(400, "Bad Request", "INVALID_PARAMETER", "SuiteQL requires Prefer: transient.")
        match = _QUERY.match(json.loads(body)["q"])
        if match is None:
            return _error(400, "Bad Request", "INVALID_PARAMETER", "Invalid search query.")
        table, ids = match.group(1), [i.strip() for i in match.group(2).split(",")]
        items = [{"links": [], "id": i} for i in ids if i in self.records.get(table, set())]
        return (
            200,
            {},
            {
                "links": [],
                "count": len(items),
                "hasMore": False,
                "items": items,
                "offset": 0,
                "totalResults": len(items),
            },
        )

    def _upsert(self, external_id: str, body: bytes) -> tuple[int, dict[str, str], Any]:
        record = json.loads(body)
        items = record.get("line", {}).get("items", [])
        if len(items) < 2:
            return _error(400, "Bad Request", "INVALID_VALUE", "A journal needs at least two lines.", "line")
        debit = credit = Decimal(0)
        for index, item in enumerate(items):
            if ("debit" in item) == ("credit" in item):
                return _error(
                    400,
                    "Bad Request",
                    "INVALID_VALUE",
                    "A line has a debit or a credit.",
                    f"line.items[{index}]",
                )
            if item["account"]["id"] not in self.records["account"]:
                return _error(
                    400,
                    "Bad Request",
                    "INVALID_VALUE",
                    "Invalid value for the resource or sub-resource field 'account'. Provide a valid value.",
                    f"line.items[{index}].account",
                )
            debit += Decimal(str(item.get("debit", 0)))
            credit += Decimal(str(item.get("credit", 0)))
        if debit != credit:
            return _error(
                400, "Bad Request", "INVALID_VALUE", "The debits and credits are not equal.", "line"
            )
        if record.get("externalId") not in (None, external_id):
            return _error(
                400, "Bad Request", "INVALID_VALUE", "externalId differs from the URL.", "externalId"
            )
        stored = self.journals.get(external_id)
        if stored is None:
            self._next_id += 1
            stored = self.journals[external_id] = {"id": str(self._next_id), "puts": 0}
        stored["body"], stored["puts"] = record, stored["puts"] + 1
        return 204, {"Location": f"{self.url}/services/rest/record/v1/journalEntry/{stored['id']}"}, None


@contextmanager
def serve(fake: FakeNetSuite) -> Iterator[FakeNetSuite]:
    def answer(request: VendorRequest) -> VendorAnswer:
        fake.log.append(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "headers": dict(request.headers),
                "body": request.body,
            }
        )
        status, headers, payload = fake.handle(
            request.method,
            request.headers["Host"],
            request.path,
            request.query,
            request.headers,
            request.body,
        )
        if payload is None:
            return status, headers, b""
        kind = "application/vnd.oracle.resource+json; type=error" if status >= 400 else "application/json"
        return status, {**headers, "Content-Type": kind}, json.dumps(payload).encode()

    with serve_vendor(answer, methods=("POST", "PUT")) as url:
        fake.url = url
        yield fake
