"""The two ways to post: an incoming webhook (URL is the secret) or ``chat.postMessage`` (bot token).

Both return where the message landed (channel, ts) when Slack says so, for threading repeats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from allotment_slack.wire import RetryLater, SlackError, post_json

# chat.postMessage answers HTTP 200 with ok=false; only "ratelimited" is worth retrying
_TRANSIENT_API_ERRORS = {
    "ratelimited",
    "service_unavailable",
    "internal_error",
    "fatal_error",
    "request_timeout",
}


@dataclass(frozen=True)
class Posted:
    channel: str | None = None
    ts: str | None = None


class Transport(Protocol):
    def post(self, message: dict[str, Any], thread: Posted | None = None) -> Posted: ...


@dataclass(frozen=True)
class WebhookTransport:
    url: str
    timeout: float = 10.0

    def post(self, message: dict[str, Any], thread: Posted | None = None) -> Posted:
        # a webhook's channel is fixed and it cannot thread: repeats are new messages
        reply = post_json(self.url, message, {}, self.timeout)
        if reply.status == 200 and reply.body.strip() == "ok":
            return Posted()
        raise SlackError(f"slack webhook refused the message ({reply.status}): {reply.body.strip()[:200]}")


@dataclass(frozen=True)
class BotTransport:
    token: str
    channel: str
    api_base: str = "https://slack.com/api/"
    timeout: float = 10.0

    def post(self, message: dict[str, Any], thread: Posted | None = None) -> Posted:
        body = {"channel": self.channel, "unfurl_links": False, **message}
        if thread is not None and thread.ts:
            body["channel"] = thread.channel or self.channel
            body["thread_ts"] = thread.ts
        url = self.api_base.rstrip("/") + "/chat.postMessage"
        reply = post_json(url, body, {"Authorization": f"Bearer {self.token}"}, self.timeout)
        try:
            data = reply.json()
        except ValueError:
            raise SlackError(f"chat.postMessage answered {reply.status} without JSON") from None
        if data.get("ok"):
            return Posted(str(data.get("channel") or self.channel), str(data.get("ts")))
        error = str(data.get("error", "unknown_error"))
        if error in _TRANSIENT_API_ERRORS:
            raise RetryLater(f"chat.postMessage: {error}")
        raise SlackError(f"chat.postMessage refused the message: {error}")
