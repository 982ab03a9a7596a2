"""A real ``allotment serve`` process on 127.0.0.1, for end-to-end tests of the core and of plugins.

``start_serve`` writes the config, starts the gateway on a free port and returns once
``/healthz`` answers 200; ``ServeProcess.stop`` (or leaving its ``with`` block) ends it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

__all__ = ["ServeProcess", "allotment_command", "free_port", "start_serve"]

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def allotment_command() -> list[str]:
    """The ``allotment`` CLI of this interpreter (its console script when installed)."""
    script = Path(sys.executable).with_name("allotment")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from allotment.cli import main; main()"]


@dataclass
class ServeProcess:
    """A running ``allotment serve``: its process, base URL, combined output log and config file."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    config_path: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` (a clean shutdown by default), kill after ``timeout``; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_serve(
    workdir: Path,
    config: str,
    *,
    database_url: str | None = None,
    admin_token: str = "test-admin-token",
    env: Mapping[str, str] | None = None,
    args: tuple[str, ...] = (),
    name: str = "allotment",
    log_level: str = "warning",
    timeout: float = 30.0,
) -> ServeProcess:
    """Start ``allotment serve`` with ``config`` in ``workdir`` and wait until it is healthy.

    :param database_url: the ledger (default: a SQLite file ``allotment.db`` in ``workdir``).
    :param admin_token: ``ALLOTMENT_ADMIN_TOKEN`` for the ``/admin`` routes.
    :param env: extra environment variables (e.g. the upstream keys the config names).
    :param args: extra ``allotment serve`` options.
    :param name: names the config file (``<name>.yaml``) and the output log (``<name>.log``).
    :returns: the running process; raises ``RuntimeError`` with its log if it never got healthy.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / f"{name}.yaml"
    config_path.write_text(config)
    database_url = database_url or f"sqlite:///{workdir / 'allotment.db'}"
    port = free_port()
    environment = {
        **os.environ,
        "ALLOTMENT_DATABASE_URL": database_url,
        "ALLOTMENT_ADMIN_TOKEN": admin_token,
        **(env or {}),
    }
    environment.pop("ALLOTMENT_CONFIG", None)  # the --config file is the only config
    log = workdir / f"{name}.log"
    command = [
        *allotment_command(),
        "serve",
        "--config",
        str(config_path),
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        log_level,
        *args,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=workdir, env=environment, stdout=out, stderr=out)
    server = ServeProcess(process, f"http://{HOST}:{port}", log, config_path)
    _wait_healthy(server, timeout)
    return server


def _wait_healthy(server: ServeProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"allotment serve exited: {server.log.read_text(errors='replace')}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.process.kill()
            server.process.wait()
            raise RuntimeError(f"allotment serve did not start: {server.log.read_text(errors='replace')}")
        time.sleep(0.05)
