"""Fixtures for the Slack plugin: a loopback Slack and a clock the plugin and the outbox share."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from slack_fake import FakeSlack, serve


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with serve(FakeSlack()) as fake:
        yield fake


@pytest.fixture
def clock() -> Clock:
    return Clock()
