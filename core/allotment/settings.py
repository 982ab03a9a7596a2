"""Process settings from the environment (``ALLOTMENT_*``), validated once and cached.

Organisation policy lives in ``allotment.yaml`` and the database, not here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from allotment.errors import ConfigError

PLACEHOLDER_ADMIN_TOKENS = frozenset({"", "change-me", "changeme", "admin", "dev-admin-token"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALLOTMENT_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///allotment.db",
        description="SQLAlchemy URL: sqlite:///path.db (default) or postgresql://...",
    )
    config: Path | None = Field(default=None, description="allotment.yaml to apply at start")
    admin_token: str = Field(default="dev-admin-token")
    environment: str = Field(default="development", description="development | production")
    reservation_ttl_seconds: int = Field(default=600, ge=1)
    sqlite_synchronous: str = Field(default="NORMAL", description="NORMAL or FULL")
    pg_pool_size: int = Field(default=8, ge=1)
    ledger_wait_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="how long a ledger operation waits for a locked or unreachable database "
        "before it fails with ledger_unavailable (or fails open, if the policy says so)",
    )
    settle_spool: Path | None = Field(
        default=None,
        description="where settles the ledger refused until shutdown wait for `allotment settles "
        "replay` (default: beside a SQLite ledger, else allotment.pending-settles.jsonl)",
    )

    @field_validator("sqlite_synchronous")
    @classmethod
    def _sync_mode(cls, value: str) -> str:
        value = value.upper()
        if value not in {"NORMAL", "FULL"}:
            raise ValueError("must be NORMAL or FULL")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def check_production(self) -> None:
        """Refuse to serve outside development with a placeholder admin token."""
        if self.environment != "development" and self.admin_token in PLACEHOLDER_ADMIN_TOKENS:
            raise ConfigError(
                "ALLOTMENT_ADMIN_TOKEN is a placeholder; set a real secret outside development",
                code="placeholder_admin_token",
            )


@lru_cache
def get_settings() -> Settings:
    return Settings()
