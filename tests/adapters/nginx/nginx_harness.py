"""Real processes for the nginx tests: nginx with the generated config, allotment serve, a fake provider.

Started once per session on 127.0.0.1; each test issues its own keys, so money never interferes.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from allotment.testing.serve import free_port
from allotment_nginx.confgen import (
    DEFAULT_JS_MODULE,
    NginxOptions,
    njs_script,
    provider_auth_conf,
    render_main,
)

PROVIDER_KEY = "sk-provider-held-by-nginx"

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_available() -> bool:
    return Path(NGINX).exists() and Path(DEFAULT_JS_MODULE).exists()


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited: {log.read_text(errors='replace')}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{url} did not come up: {log.read_text(errors='replace')}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    prefix: Path
    url: str
    log: Path  # the allotment_json access log

    def reopen(self) -> None:
        """What logrotate's postrotate does (USR1): reopen the log at its path."""
        self.process.send_signal(signal.SIGUSR1)

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_nginx(prefix: Path, upstream: str, decision: str, *, passive: bool = False) -> Nginx:
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "logs").mkdir(exist_ok=True)
    js = prefix / "allotment.js"
    js.write_text(njs_script())
    port = free_port()
    log = prefix / "llm.jsonl"
    auth = prefix / "provider-auth.conf"
    auth.write_text(provider_auth_conf(PROVIDER_KEY))
    options = NginxOptions(
        upstream=upstream,
        decision=decision,
        listen=f"127.0.0.1:{port}",
        log=str(log),
        js_path=str(js),
        passive=passive,
        provider_auth=str(auth),
    )
    conf = prefix / "nginx.conf"
    conf.write_text(render_main(options, workers=2))
    globals_ = f"daemon off; pid {prefix / 'nginx.pid'}; error_log {prefix / 'error.log'} info;"
    if os.geteuid() == 0:
        # workers reopen the log on USR1; as root they would drop to nobody, who cannot
        # write into pytest's private temp directories
        globals_ += " user root;"
    out = prefix / "stdout.log"
    with out.open("wb") as handle:
        process = subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(conf), "-g", globals_], stdout=handle, stderr=handle
        )
    url = f"http://127.0.0.1:{port}"
    wait_for(url + "/", process, out)
    return Nginx(process, prefix, url, log)


def stream_until(url: str, headers: dict[str, str], enough, fake, **request) -> str:
    """POST a streamed call to ``url`` (``request``: ``json=`` or ``content=``) and walk away once
    ``enough(received bytes)`` (or at its end); the call's request id, as the provider saw it."""
    received = b""
    with httpx.stream("POST", url, timeout=30, headers=headers, **request) as reply:
        assert reply.status_code == 200
        for chunk in reply.iter_bytes():
            received += chunk
            if enough(received):
                break
    return {k.lower(): v for k, v in fake.requests[-1].headers.items()}["x-request-id"]
