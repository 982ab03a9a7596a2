"""The wheel as users get it: rate cards and migrations inside, and a working CLI in a fresh venv.

Built from this checkout and installed with its dependencies from the package index, once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    # nothing from this checkout or its environment may leak into the fresh install
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALLOTMENT_", "PYTHON", "VIRTUAL_ENV"))}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args[:4]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(ROOT),
        ],
        cwd=out,
        timeout=300,
    )
    (built,) = out.glob("allotment-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "env"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=venv.parent, timeout=300)
    _run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        cwd=venv.parent,
        timeout=1800,
    )
    return venv


def test_wheel_ships_rate_cards_and_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for card in sorted((ROOT / "rate_cards").rglob("*.yaml")):
        assert f"allotment/rate_cards/{card.relative_to(ROOT / 'rate_cards').as_posix()}" in names
    assert "allotment/rate_cards/openai/2026-06-08.yaml" in names
    migrations = ROOT / "core" / "allotment" / "migrations"
    for path in [
        migrations / "env.py",
        migrations / "script.py.mako",
        *sorted(migrations.glob("versions/*.py")),
    ]:
        assert f"allotment/{path.relative_to(migrations.parent).as_posix()}" in names
    assert "allotment/py.typed" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[console_scripts]\nallotment = allotment.cli:main" in text
    assert "[allotment]" in text


def test_installed_wheel_prices_from_its_own_cards(fresh_venv: Path, tmp_path: Path) -> None:
    python = str(fresh_venv / "bin" / "python")
    where = _run([python, "-c", "import allotment; print(allotment.__file__)"], cwd=tmp_path, timeout=60)
    assert Path(where.stdout.strip()).resolve().is_relative_to(fresh_venv.resolve())

    result = _run(
        [
            str(fresh_venv / "bin" / "allotment"),
            "price",
            "--provider",
            "openai",
            "--model",
            "gpt-5.4-mini",
            "--input",
            "8000",
            "--cached",
            "2000",
            "--output",
            "1200",
            "--json",
        ],
        cwd=tmp_path,
        timeout=120,
    )
    priced = json.loads(result.stdout)
    # $0.75 / 1M x 8,000 + $0.075 / 1M x 2,000 + $4.50 / 1M x 1,200 = $0.01155
    assert priced["cost_nanos"] == 11_550_000
    assert priced["card_version"].startswith("openai-")


def test_installed_wheel_migrates_a_new_database(fresh_venv: Path, tmp_path: Path) -> None:
    env_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = _run(
        [str(fresh_venv / "bin" / "allotment"), "db", "upgrade", "--database-url", env_url],
        cwd=tmp_path,
        timeout=120,
    )
    assert "revision 0" in result.stdout
    assert (tmp_path / "fresh.db").is_file()
