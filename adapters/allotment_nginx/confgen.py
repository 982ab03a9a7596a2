"""Render the Nginx config snippet and njs script shipped with this package.

Templates use ``{{name}}`` placeholders, because ``$`` and braces belong to nginx itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

from allotment.errors import ConfigError

# the OpenAI- and Anthropic-shaped routes that cost money; everything else is refused (404)
LLM_ROUTES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/responses",
    "/v1/embeddings",
    "/v1/messages",
)
DEFAULT_JS_PATH = "/etc/nginx/njs/allotment.js"
DEFAULT_PROVIDER_AUTH = "/etc/nginx/allotment-provider-auth.conf"
DEFAULT_JS_MODULE = "/usr/lib/nginx/modules/ngx_http_js_module.so"


def template(name: str) -> str:
    return resources.files("allotment_nginx").joinpath("templates", name).read_text("utf-8")


def njs_script() -> str:
    """The njs module the config imports (``js_import allotment from ...``)."""
    return template("allotment.js")


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise ConfigError(f"unfilled placeholder in nginx template near {text[text.index('{{') :][:40]!r}")
    return text


def _base_url(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{what} must be an http(s) URL, got {url!r}")
    if parts.path not in ("", "/") or parts.query:
        # nginx passes the client's URI through unchanged, so the base must have no path
        raise ConfigError(f"{what} must have no path (e.g. https://api.openai.com), got {url!r}")
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class NginxOptions:
    upstream: str = "https://api.openai.com"
    decision: str = "http://127.0.0.1:4000"
    listen: str = "8080"
    log: str = "/var/log/nginx/allotment.jsonl"
    js_path: str = DEFAULT_JS_PATH
    passive: bool = False
    provider_auth: str = DEFAULT_PROVIDER_AUTH


def render_snippet(options: NginxOptions) -> str:
    """The ``http {}``-level snippet: njs variables, the JSON log format and the server."""
    proxy = _fill(template("proxy.conf").rstrip("\n"), {"provider_auth": options.provider_auth})
    if options.passive:
        locations = ""
    else:
        locations = "".join(
            f"    location = {route} {{ js_content allotment.preauth; }}\n" for route in LLM_ROUTES
        )
    values = {
        "mode": "passive" if options.passive else "enforced",
        "js_path": options.js_path,
        "listen": options.listen,
        "log": options.log,
        "upstream_url": _base_url(options.upstream, "--upstream"),
        "decision_url": _base_url(options.decision, "--decision"),
        "locations": locations,
        "proxy": proxy,
    }
    server = template("passive.conf" if options.passive else "enforced.conf")
    return _fill(template("common.conf") + server, values)


def provider_auth_conf(api_key: str) -> str:
    """The include that hands the provider its own key (OpenAI and Anthropic header styles)."""
    return f'proxy_set_header Authorization "Bearer {api_key}";\nproxy_set_header X-Api-Key "{api_key}";\n'


def render_main(options: NginxOptions, *, js_module: str = DEFAULT_JS_MODULE, workers: int = 2) -> str:
    """A complete ``nginx.conf`` with the snippet inlined (for a dedicated nginx or tests)."""
    http = "\n".join("    " + line if line else "" for line in render_snippet(options).splitlines())
    return _fill(template("main.conf"), {"js_module": js_module, "workers": str(workers), "http": http})
