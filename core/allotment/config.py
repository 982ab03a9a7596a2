"""``allotment.yaml``: the organisation as code — org, tiers, teams, people, labels, budgets.

Parsing validates the whole document first; errors name the offending line.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from allotment.errors import ConfigError
from allotment.money import dollars_to_nanos, to_decimal
from allotment.secrets import read_env_ref
from allotment.service_tiers import STANDARD, canonical_tier

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def _money(value: object) -> Decimal:
    try:
        amount = to_decimal(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    if amount < 0:
        raise ValueError("a budget cannot be negative")
    if amount > Decimal("1000000000"):
        raise ValueError("a budget over $1,000,000,000 a month is not plausible")
    return amount


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrgConfig(_Model):
    name: str
    timezone: str = "UTC"
    monthly_budget: Decimal | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("monthly_budget", mode="before")
    @classmethod
    def _budget(cls, value: object) -> Decimal | None:
        return None if value is None else _money(value)


class TierConfig(_Model):
    name: str | None = None
    monthly_budget: Decimal | None = None
    allow: list[str] = Field(default_factory=list)
    max_request_tokens: int | None = Field(default=None, gt=0)

    @field_validator("monthly_budget", mode="before")
    @classmethod
    def _budget(cls, value: object) -> Decimal | None:
        return None if value is None else _money(value)

    @field_validator("allow")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        for glob in value:
            if not glob or any(c.isspace() for c in glob):
                raise ValueError(f"invalid model glob {glob!r}")
        return value


class TeamConfig(_Model):
    name: str | None = None
    cost_center: str | None = None
    monthly_budget: Decimal | None = None

    @field_validator("monthly_budget", mode="before")
    @classmethod
    def _budget(cls, value: object) -> Decimal | None:
        return None if value is None else _money(value)


class PersonConfig(_Model):
    email: str
    name: str | None = None
    team: str
    tier: str
    level: int | None = Field(default=None, ge=0, le=20)
    cost_center: str | None = None
    monthly_budget: Decimal | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        value = value.strip().lower()
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", value):
            raise ValueError(f"not an email address: {value!r}")
        return value

    @field_validator("monthly_budget", mode="before")
    @classmethod
    def _budget(cls, value: object) -> Decimal | None:
        return None if value is None else _money(value)


class LabelConfig(_Model):
    required: bool = False
    allowed: list[str] | None = None
    default: str | None = None

    @model_validator(mode="after")
    def _default_allowed(self) -> LabelConfig:
        if self.default is not None and self.allowed is not None and self.default not in self.allowed:
            raise ValueError(f"default {self.default!r} is not among the allowed values")
        return self


class LabelBudgetConfig(_Model):
    label: str  # "feature=content-gen"
    monthly_budget: Decimal

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        key, sep, val = value.partition("=")
        if not sep or not _LABEL_KEY.match(key.strip()) or not val.strip():
            raise ValueError(f"a label budget names key=value, got {value!r}")
        return f"{key.strip()}={val.strip()}"

    @field_validator("monthly_budget", mode="before")
    @classmethod
    def _budget(cls, value: object) -> Decimal:
        return _money(value)


class UpstreamConfig(_Model):
    api_key: str | None = None
    api_base: str | None = None
    mock: bool = False
    timeout_seconds: float = Field(default=600.0, gt=0)
    # passed to the litellm SDK as keyword arguments (e.g. Azure's api_version, Vertex's
    # vertex_project, Bedrock's aws_region_name); string values may be env:NAME references
    extra: dict[str, Any] = Field(default_factory=dict)
    # deployment name -> the model it serves, as the provider's rate card names it (Azure
    # deployments are named by their owner: `prod-gpt4o: gpt-4o`)
    deployments: dict[str, str] = Field(default_factory=dict)

    @field_validator("extra")
    @classmethod
    def _extra(cls, value: dict[str, Any]) -> dict[str, Any]:
        reserved = sorted(RESERVED_UPSTREAM_KWARGS.intersection(value))
        if reserved:
            raise ValueError(
                f"{', '.join(reserved)} cannot be set in `extra` (use api_key, api_base, timeout_seconds)"
            )
        return value

    @field_validator("deployments")
    @classmethod
    def _deployments(cls, value: dict[str, str]) -> dict[str, str]:
        for name, model in value.items():
            if not name.strip() or not model.strip():
                raise ValueError("deployment names and the models they serve must not be empty")
        return {name.strip(): model.strip() for name, model in value.items()}

    def resolved_api_key(self) -> str | None:
        """``env:NAME`` references are read from the environment when used, never stored."""
        return read_env_ref(self.api_key)

    def resolved_extra(self) -> dict[str, Any]:
        """``extra`` with its ``env:NAME`` string values read from the environment."""
        return {k: read_env_ref(v) if isinstance(v, str) else v for k, v in self.extra.items()}


# what the gateway sets itself on a litellm SDK call
RESERVED_UPSTREAM_KWARGS = frozenset(
    {"model", "messages", "prompt", "input", "stream", "api_key", "api_base", "base_url", "timeout"}
)


class PriceConfig(_Model):
    input: Decimal
    output: Decimal

    @field_validator("input", "output", mode="before")
    @classmethod
    def _price(cls, value: object) -> Decimal:
        return _money(value)


class PolicyConfig(_Model):
    unpriced: str = Field(default="deny", pattern="^(deny|fallback)$")
    fallback_price: PriceConfig | None = None
    max_request_tokens: int | None = Field(default=None, gt=0)
    default_max_output_tokens: int = Field(default=4096, gt=0)
    clamp_max_tokens: bool = False
    reservation_ttl_seconds: int | None = Field(default=None, gt=0)
    # when the ledger database cannot be reached: refuse (503) or let calls through unenforced
    ledger_unavailable: str = Field(default="closed", pattern="^(closed|open)$")
    # the service tier a request asking for none (or ``auto``) may be served on, so its
    # reservation covers it: ``priority`` when the provider project serves ``auto`` at priority
    auto_service_tier: str | None = None

    @field_validator("auto_service_tier", mode="before")
    @classmethod
    def _auto_tier(cls, value: object) -> str | None:
        if value is None:
            return None
        tier = canonical_tier(value)
        if tier is None:
            raise ValueError("auto_service_tier must be a service-tier name such as priority")
        return None if tier == STANDARD else tier

    @model_validator(mode="after")
    def _fallback(self) -> PolicyConfig:
        if self.unpriced == "fallback" and self.fallback_price is None:
            raise ValueError("unpriced: fallback needs a fallback_price {input, output}")
        return self


class AlertsConfig(_Model):
    thresholds: list[Decimal] = Field(default_factory=lambda: [Decimal("0.5"), Decimal("0.8"), Decimal("1")])

    @field_validator("thresholds", mode="before")
    @classmethod
    def _fractions(cls, value: object) -> list[Decimal]:
        if not isinstance(value, list):
            raise ValueError("thresholds is a list of fractions such as [0.5, 0.8, 1.0]")
        out = sorted({to_decimal(v) for v in value})
        if any(f <= 0 or f > 10 for f in out):
            raise ValueError("thresholds must be fractions in (0, 10]")
        return out


class AllotmentConfig(_Model):
    org: OrgConfig
    tiers: dict[str, TierConfig] = Field(default_factory=dict)
    teams: dict[str, TeamConfig] = Field(default_factory=dict)
    people: list[PersonConfig] = Field(default_factory=list)
    labels: dict[str, LabelConfig] = Field(default_factory=dict)
    budgets: list[LabelBudgetConfig] = Field(default_factory=list)
    upstreams: dict[str, UpstreamConfig] = Field(default_factory=dict)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    jobs: dict[str, Any] = Field(default_factory=dict)
    plugins: dict[str, Any] = Field(default_factory=dict)

    @field_validator("tiers", "teams")
    @classmethod
    def _ids(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not _ID.match(key):
                raise ValueError(f"{key!r} is not a valid id (lowercase letters, digits, - _ .)")
        return value

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, value: dict[str, LabelConfig]) -> dict[str, LabelConfig]:
        for key in value:
            if not _LABEL_KEY.match(key):
                raise ValueError(f"{key!r} is not a valid label key (lowercase, digits, _)")
        return value

    @model_validator(mode="after")
    def _references(self) -> AllotmentConfig:
        seen: set[str] = set()
        for index, person in enumerate(self.people):
            where = f"people[{index}] ({person.email})"
            if person.email in seen:
                raise ValueError(f"{where}: duplicate email")
            seen.add(person.email)
            if person.team not in self.teams:
                raise ValueError(f"{where}: unknown team {person.team!r}")
            if person.tier not in self.tiers:
                raise ValueError(f"{where}: unknown tier {person.tier!r}")
        labels = set()
        for budget in self.budgets:
            if budget.label in labels:
                raise ValueError(f"duplicate label budget {budget.label!r}")
            labels.add(budget.label)
        return self

    def nanos(self, amount: Decimal | None) -> int | None:
        return None if amount is None else dollars_to_nanos(amount)


# -- loading with line numbers ------------------------------------------------------------


def _line_index(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[path + (key,)] = key_node.start_mark.line + 1
            _line_index(value_node, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_index(item, path + (index,), out)


def _line_for(loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int]) -> int | None:
    path = tuple(loc)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def parse_config(text: str, source: str = "<config>") -> AllotmentConfig:
    """Parse and validate a whole document; raise ``ConfigError`` naming file and line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{where}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a mapping with at least 'org'")
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _line_index(node, (), lines)
    try:
        return AllotmentConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            line = _line_for(loc, lines)
            where = ".".join(str(part) for part in loc) or "(document)"
            message = error["msg"].removeprefix("Value error, ")
            problems.append(
                f"{source}:{line}: {where}: {message}" if line else f"{source}: {where}: {message}"
            )
        raise ConfigError(
            "invalid config:\n  " + "\n  ".join(problems), details={"problems": problems}
        ) from None


def load_config_file(path: str | Path) -> tuple[AllotmentConfig, str]:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    return parse_config(text, str(file)), text


SAMPLE_CONFIG = """\
# allotment.yaml: the Acme organisation as code. Apply with: allotment apply -f allotment.yaml
org:
  name: Acme
  timezone: America/New_York
  monthly_budget: 50000          # USD per calendar month, all teams together

tiers:                           # role tiers: a monthly budget per person and a model allowlist
  eng-principal:
    name: Engineering Principal (L6+)
    monthly_budget: 3000
    allow: ["*"]                 # all providers
  eng-senior:
    name: Engineering Senior (L4-5)
    monthly_budget: 2000
    allow: ["openai/*", "anthropic/*"]
  eng-mid:
    name: Engineering Mid (L2-3)
    monthly_budget: 1200
    allow: ["openai/*", "anthropic/*"]
  product:
    name: Product
    monthly_budget: 1500
    allow: ["openai/*", "anthropic/*"]
  design:
    name: Design
    monthly_budget: 800
    allow: ["openai/gpt-5.4", "openai/gpt-5.4-mini"]
  support:
    name: Support
    monthly_budget: 200
    allow: ["openai/gpt-5.4-mini"]

teams:
  engineering: {name: Engineering, cost_center: CC-ENG-001, monthly_budget: 30000}
  product: {name: Product, cost_center: CC-PROD-001, monthly_budget: 8000}
  design: {name: Design, cost_center: CC-DES-001, monthly_budget: 4000}
  support: {name: Support, cost_center: CC-SUP-001, monthly_budget: 2000}

people:
  - {email: ada@acme.example, name: Ada Lovelace, team: engineering, tier: eng-principal, level: 6}
  - {email: grace@acme.example, name: Grace Hopper, team: engineering, tier: eng-senior, level: 5}
  - {email: linus@acme.example, name: Linus Torvalds, team: engineering, tier: eng-mid, level: 3}
  - {email: pat@acme.example, name: Pat Product, team: product, tier: product}
  - {email: dee@acme.example, name: Dee Designer, team: design, tier: design}
  - {email: sam@acme.example, name: Sam Support, team: support, tier: support}

labels:                          # X-Allotment-Label-<Name> headers or the body's metadata
  feature: {required: false}
  environment: {allowed: [prod, staging, dev], default: prod}

budgets:                         # label budgets: every request carrying the label fits them too
  - {label: feature=content-gen, monthly_budget: 500}

upstreams:                       # provider credentials are env references, never stored
  openai: {api_key: env:OPENAI_API_KEY}
  anthropic: {api_key: env:ANTHROPIC_API_KEY}
  mock: {mock: true}             # offline demo: answers EVERY provider locally; delete to reach real ones

policy:
  unpriced: deny                 # a model with no rate card is refused, never priced at $0
  default_max_output_tokens: 4096
  clamp_max_tokens: false

alerts:
  thresholds: [0.5, 0.8, 1.0]
"""
