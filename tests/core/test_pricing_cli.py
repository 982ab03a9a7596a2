"""``allotment price`` and ``allotment rates list|check``, through Typer's CliRunner.

A fresh root app gets the commands from ``register()``, exactly as the real CLI does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from allotment.cli.rates import register

runner = CliRunner()


@pytest.fixture
def app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """allotment (test root)."""

    register(root)
    return root


def test_price_prints_exact_usd_nanos_version_and_model(app: typer.Typer) -> None:
    args = ["price", "--provider", "openai", "--model", "gpt-5.4-mini"]
    args += ["--input", "8000", "--cached", "2000", "--output", "1200", "--at", "2026-07-01"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "cost_usd: 0.01155" in result.stdout
    assert "cost_nanos: 11550000" in result.stdout
    assert "openai-2026-06-08" in result.stdout
    assert "gpt-5.4-mini" in result.stdout


def test_price_json(app: typer.Typer) -> None:
    args = ["price", "--provider", "anthropic", "--model", "claude-sonnet-4", "--input", "250000"]
    args += ["--output", "2000", "--at", "2026-07-01T00:00:00Z", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["cost_usd"] == "1.545"
    assert data["cost_nanos"] == 1_545_000_000
    assert data["card_version"] == "anthropic-2026-06-08"
    assert data["model"] == "claude-sonnet-4"
    assert data["provider"] == "anthropic"
    assert data["components"]["input"] == 1_500_000_000
    assert data["components"]["output"] == 45_000_000


def test_price_batch_and_cache_writes(app: typer.Typer) -> None:
    args = ["price", "--provider", "openai", "--model", "gpt-4.1", "--input", "20000000"]
    args += ["--output", "4000000", "--batch", "--json", "--at", "2026-07-01"]
    assert json.loads(runner.invoke(app, args).stdout)["cost_usd"] == "36"
    args = ["price", "--provider", "anthropic", "--model", "claude-sonnet-4", "--cache-write"]
    args += ["2000", "--cache-write-1h", "3000", "--json", "--at", "2026-07-01"]
    data = json.loads(runner.invoke(app, args).stdout)
    assert data["cost_nanos"] == 2_000 * 3_750 + 3_000 * 6_000  # nanos per token: 3.75, 6.00 per 1M


def test_price_with_extra_cards(app: typer.Typer, tmp_path: Path) -> None:
    (tmp_path / "acme.yaml").write_text(
        "provider: acme\nversion: acme-1\neffective_from: 2026-01-01\nsource: t\n"
        "models:\n  w:\n    input: 1\n    output: 2\n"
    )
    args = ["price", "--provider", "acme", "--model", "w", "--input", "1000000", "--output", "1"]
    args += ["--cards", str(tmp_path), "--json", "--at", "2026-02-01"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cost_nanos"] == 1_000_002_000


def test_price_errors_are_one_clear_line(app: typer.Typer) -> None:
    result = runner.invoke(app, ["price", "--provider", "openai", "--model", "gpt-9", "--input", "1"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no rate card prices model 'gpt-9'")
    assert len(result.stderr.strip().splitlines()) == 1
    bad = runner.invoke(app, ["price", "--provider", "openai", "--model", "gpt-4o", "--input", "-5"])
    assert bad.exit_code == 2 and "error: input_tokens must not be negative" in bad.stderr
    when = runner.invoke(app, ["price", "--provider", "openai", "--model", "gpt-4o", "--at", "soon"])
    assert when.exit_code == 2 and "error: --at" in when.stderr


def test_rates_list(app: typer.Typer) -> None:
    result = runner.invoke(app, ["rates", "list", "--provider", "openai", "--json", "--at", "2026-07-01"])
    assert result.exit_code == 0, result.output
    rows = {row["model"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {"gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-5.4", "gpt-5.4-mini"}
    assert rows["gpt-5.4-mini"]["input"] == "0.75"
    assert rows["gpt-5.4-mini"]["cache_read"] == "0.075"
    assert rows["gpt-5.4-mini"]["card_version"] == "openai-2026-06-08"
    text = runner.invoke(app, ["rates", "list", "--at", "2026-07-01"])
    assert text.exit_code == 0
    assert "claude-sonnet-4" in text.stdout and "ollama" in text.stdout


def test_rates_check_bundled_and_broken(app: typer.Typer, tmp_path: Path) -> None:
    ok = runner.invoke(app, ["rates", "check"])
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.startswith("ok: ")
    (tmp_path / "bad.yaml").write_text(
        "provider: acme\nversion: v\neffective_from: 2026-01-01\nmodels:\n  m:\n    input: -1\n"
        "    output: 1\n"
    )
    bad = runner.invoke(app, ["rates", "check", str(tmp_path)])
    assert bad.exit_code == 2
    assert "bad.yaml:6:" in bad.stderr and "negative" in bad.stderr
    as_json = runner.invoke(app, ["rates", "check", str(tmp_path), "--json"])
    assert as_json.exit_code == 2
    assert json.loads(as_json.stdout)["ok"] is False
    missing = runner.invoke(app, ["rates", "check", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such rate-card directory" in missing.stderr
