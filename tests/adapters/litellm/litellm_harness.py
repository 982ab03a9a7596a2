"""Start a real ``litellm --config`` proxy on 127.0.0.1 for tests and the benchmark.

Offline: the bundled price map, no LiteLLM database, a random master key.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

# dict mock: a full response with Anthropic-style cache tokens (LiteLLM prices it offline)
CLAUDE_CACHE_MOCK = {
    "id": "mock-1",
    "object": "chat.completion",
    "model": "claude-sonnet-4-5-20250929",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 50,
        "total_tokens": 1250,
        "prompt_tokens_details": {"cached_tokens": 1000},
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 0,
    },
}


@dataclass
class Proxy:
    process: subprocess.Popen[bytes]
    url: str
    master_key: str
    log_path: Path

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proxy_config(
    upstream_base: str, *, allotment: bool = True, custom_auth: bool = True, probe: bool = False
) -> dict[str, object]:
    models = [
        {
            "model_name": "gpt-4o",
            "litellm_params": {"model": "openai/gpt-4o", "api_base": upstream_base, "api_key": "sk-fake"},
        },
        {
            "model_name": "gpt-5.4-mini",
            "litellm_params": {
                "model": "openai/gpt-5.4-mini",
                "api_base": upstream_base,
                "api_key": "sk-fake",
            },
        },
        # two load-balanced groups, each over an OpenAI and an Anthropic deployment of the fake
        *(
            {"model_name": group, "litellm_params": params}
            for group, models in (
                ("mixed", ("openai/gpt-4o", "anthropic/claude-sonnet-4")),
                ("mini-or-sonnet", ("openai/gpt-5.4-mini", "anthropic/claude-sonnet-4")),
            )
            for params in (
                {"model": models[0], "api_base": upstream_base, "api_key": "sk-fake"},
                {"model": models[1], "api_base": upstream_base.removesuffix("/v1"), "api_key": "sk-fake"},
            )
        ),
        # an owner-named Azure deployment, priced through LiteLLM's model_info.base_model
        {
            "model_name": "azure-gpt4o",
            "litellm_params": {
                "model": "azure/prod-gpt4o",
                "api_base": upstream_base.removesuffix("/v1"),
                "api_key": "sk-fake",
                "api_version": "2024-10-21",
            },
            "model_info": {"base_model": "azure/gpt-4o"},
        },
        # a group over it and a Data Zone deployment named by a bare base_model
        *(
            {
                "model_name": "azure-any",
                "litellm_params": {
                    "model": f"azure/{name}",
                    "api_base": upstream_base.removesuffix("/v1"),
                    "api_key": "sk-fake",
                    "api_version": "2024-10-21",
                },
                "model_info": {"base_model": base},
            }
            for name, base in (("prod-gpt4o", "azure/gpt-4o"), ("eu-mini", "eu/gpt-4o-mini"))
        ),
        {
            "model_name": "gpt-4o-mock",
            "litellm_params": {
                "model": "openai/gpt-4o",
                "api_key": "sk-fake",
                "mock_response": "Hello from the mock",
            },
        },
        {
            "model_name": "claude-mock-cache",
            "litellm_params": {
                "model": "anthropic/claude-sonnet-4-5-20250929",
                "api_key": "sk-fake",
                "mock_response": CLAUDE_CACHE_MOCK,
            },
        },
    ]
    litellm_settings: dict[str, object] = {"num_retries": 0, "request_timeout": 30}
    general: dict[str, object] = {
        "master_key": "os.environ/LITELLM_MASTER_KEY",
        "disable_budget_reservation": True,
    }
    if allotment:
        litellm_settings["callbacks"] = (
            ["allotment_litellm.handler", "contract_probe.probe"] if probe else "allotment_litellm.handler"
        )
        if custom_auth:
            general["custom_auth"] = "allotment_litellm.auth"
    return {
        "model_list": models,
        "router_settings": {"num_retries": 0},
        "litellm_settings": litellm_settings,
        "general_settings": general,
    }


def start_proxy(
    workdir: Path, config: dict[str, object], env: dict[str, str] | None = None, timeout: float = 90.0
) -> Proxy:
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    master_key = "sk-" + secrets.token_hex(24)
    full_env = dict(os.environ)
    full_env.update(
        {
            "LITELLM_MASTER_KEY": master_key,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONUNBUFFERED": "1",
        }
    )
    full_env.pop("DATABASE_URL", None)  # LiteLLM must not find a database of its own
    full_env.update(env or {})
    binary = shutil.which("litellm", path=str(Path(sys.executable).parent)) or "litellm"
    log_path = workdir / "proxy.log"
    with log_path.open("wb") as log_file:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [binary, "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)],
            cwd=workdir,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    proxy = Proxy(process, f"http://127.0.0.1:{port}", master_key, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"litellm exited with {process.returncode}:\n{proxy.log_tail()}")
        try:
            with urllib.request.urlopen(proxy.url + "/health/liveliness", timeout=1) as reply:
                if reply.status == 200:
                    return proxy
        except OSError:
            time.sleep(0.25)
    stop_proxy(proxy)
    raise RuntimeError(f"litellm did not become live in {timeout}s:\n{proxy.log_tail()}")


def stop_proxy(proxy: Proxy) -> None:
    if proxy.process.poll() is None:
        proxy.process.terminate()
        try:
            proxy.process.wait(15)
        except subprocess.TimeoutExpired:
            proxy.process.kill()
            proxy.process.wait(5)
