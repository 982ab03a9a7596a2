"""Test helpers for allotment and its plugin authors: a temporary runtime, keys, intents.

Use ``pytest_plugins = ["allotment.testing.fixtures"]`` to get the pytest fixtures.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from allotment.config import SAMPLE_CONFIG
from allotment.runtime import Runtime
from allotment.settings import Settings
from allotment.types import CallIntent, EndpointMode

__all__ = ["SAMPLE_CONFIG", "intent", "temporary_runtime"]


@contextmanager
def temporary_runtime(
    directory: Path | None = None,
    *,
    config: str | None = SAMPLE_CONFIG,
    database_url: str | None = None,
    plugins: Iterable[tuple[str, object]] = (),
    load_entrypoints: bool = False,
    **settings: Any,
) -> Iterator[Runtime]:
    """A runtime on a fresh SQLite file (or ``database_url``) with ``config`` applied."""
    if database_url is None:
        if directory is None:
            raise ValueError("give a directory (e.g. pytest's tmp_path) or a database_url")
        database_url = f"sqlite:///{directory / 'allotment.db'}"
    runtime = Runtime.open(
        Settings(database_url=database_url, **settings),
        plugins=plugins,
        load_entrypoints=load_entrypoints,
    )
    try:
        if config is not None:
            runtime.apply_config_text(config, "test-config.yaml")
        yield runtime
    finally:
        runtime.close()


def intent(
    credential: str | None = None,
    model: str = "gpt-5.4-mini",
    provider: str = "openai",
    *,
    input_tokens: int = 1000,
    max_output_tokens: int | None = 500,
    labels: dict[str, str] | None = None,
    mode: EndpointMode = EndpointMode.SYNC,
    **extra: Any,
) -> CallIntent:
    """A ``CallIntent`` with a fresh request id and sensible defaults."""
    return CallIntent(
        request_id=extra.pop("request_id", None) or "req_" + uuid.uuid4().hex,
        provider=provider,
        model=model,
        credential=credential,
        endpoint_mode=mode,
        input_tokens=input_tokens,
        max_output_tokens=max_output_tokens,
        labels=labels or {},
        **extra,
    )
