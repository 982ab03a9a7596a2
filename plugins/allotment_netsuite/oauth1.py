"""NetSuite token-based auth: OAuth 1.0a request signing with HMAC-SHA256, as an ``httpx.Auth``.

Query parameters are signed; a JSON body is not (no ``oauth_body_hash``), as NetSuite expects.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Generator, Iterable
from urllib.parse import urlsplit

import httpx

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def encode(value: str) -> str:
    """RFC 5849 3.6 percent-encoding: every byte but the unreserved set, upper-case hex."""
    return "".join(chr(b) if chr(b) in _UNRESERVED else f"%{b:02X}" for b in value.encode("utf-8"))


def base_string_uri(url: str) -> str:
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    port = parts.port
    default = (scheme == "http" and port == 80) or (scheme == "https" and port == 443)
    authority = host if port is None or default else f"{host}:{port}"
    return f"{scheme}://{authority}{parts.path or '/'}"


def signature_base_string(method: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    pairs = sorted((encode(k), encode(v)) for k, v in params)
    normalized = "&".join(f"{k}={v}" for k, v in pairs)
    return "&".join((method.upper(), encode(base_string_uri(url)), encode(normalized)))


def sign(base_string: str, consumer_secret: str, token_secret: str, digest: str = "sha256") -> str:
    key = f"{encode(consumer_secret)}&{encode(token_secret)}".encode()
    return base64.b64encode(hmac.new(key, base_string.encode(), getattr(hashlib, digest)).digest()).decode()


class TokenAuth(httpx.Auth):
    """Signs each request afresh: a new nonce and timestamp every time (and on every retry)."""

    def __init__(
        self,
        realm: str,
        consumer_key: str,
        consumer_secret: str,
        token_id: str,
        token_secret: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.realm = realm
        self.consumer_key, self.consumer_secret = consumer_key, consumer_secret
        self.token_id, self.token_secret = token_id, token_secret
        self.clock = clock

    def header(self, method: str, url: str, nonce: str | None = None, timestamp: str | None = None) -> str:
        oauth = {
            "oauth_consumer_key": self.consumer_key,
            "oauth_token": self.token_id,
            "oauth_signature_method": "HMAC-SHA256",
            "oauth_timestamp": timestamp or str(int(self.clock())),
            "oauth_nonce": nonce or secrets.token_hex(16),
            "oauth_version": "1.0",
        }
        query = httpx.URL(url).params.multi_items()
        base = signature_base_string(method, url, [*oauth.items(), *query])
        oauth["oauth_signature"] = sign(base, self.consumer_secret, self.token_secret)
        fields = ", ".join(f'{k}="{encode(v)}"' for k, v in oauth.items())
        return f'OAuth realm="{self.realm}", {fields}'

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self.header(request.method, str(request.url))
        yield request
