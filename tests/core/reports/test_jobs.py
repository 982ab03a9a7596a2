"""Report jobs: period keys across month ends and DST, once per period, catch-up, one leader."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from freezegun import freeze_time

from allotment.jobs import (
    Job,
    JobLeader,
    catch_up,
    collect_jobs,
    execute,
    last_fire_time,
    period_key,
    run_job,
)
from allotment.runtime import Runtime

from .seed import CONFIG, Ev, in_july

NY = ZoneInfo("America/New_York")


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_month_key_follows_the_org_month_end() -> None:
    # 2026-08-01 03:00Z is still 31 July in New York: the run covers June
    assert period_key("month", _utc(2026, 8, 1, 3), NY) == "2026-06"
    assert period_key("month", _utc(2026, 8, 1, 10, 30), NY) == "2026-07"
    assert period_key("month", _utc(2026, 1, 1, 11), NY) == "2025-12"
    assert period_key("month", _utc(2026, 8, 1, 3), ZoneInfo("Asia/Tokyo")) == "2026-07"
    assert period_key("week", _utc(2026, 7, 6, 12), NY) == "2026-W27"  # Monday after week 27
    assert period_key("day", _utc(2026, 3, 8, 12), NY) == "2026-03-07"


def test_last_fire_time_in_the_org_zone_across_dst() -> None:
    monthly = Job("m", lambda rt, key: None, None, "0 6 1 * *", "", "month")
    assert last_fire_time(monthly, _utc(2026, 8, 1, 9, 59), NY) == datetime(2026, 7, 1, 6, tzinfo=NY)
    assert last_fire_time(monthly, _utc(2026, 8, 1, 10, 0), NY) == datetime(2026, 8, 1, 6, tzinfo=NY)
    nightly = Job("n", lambda rt, key: None, None, "30 1 * * *", "", "day")
    # 1 November 2026: clocks fall back at 02:00, so 01:30 happens twice; one run, one key
    fired = last_fire_time(nightly, _utc(2026, 11, 1, 12), NY)
    assert fired is not None and fired.astimezone(NY).date().isoformat() == "2026-11-01"
    assert period_key("day", fired, NY) == "2026-10-31"
    # 8 March 2026: 02:30 does not exist; a 02:30 job still fires once that day
    spring = Job("s", lambda rt, key: None, None, "30 2 * * *", "", "day")
    fired = last_fire_time(spring, _utc(2026, 3, 8, 12), NY)
    assert fired is not None and fired.astimezone(NY).date().isoformat() == "2026-03-08"


def _configure(rt: Runtime, tmp_path: Path) -> None:
    rt.apply_config_text(
        CONFIG + f"\njobs:\n  finance-report: {{destination: '{tmp_path}', exports: [csv]}}\n"
        f"  workflow-scoreboard: {{destination: '{tmp_path}', group_by: [feature]}}\n",
        "jobs.yaml",
    )


def test_finance_job_runs_once_per_month(seeded: Runtime, events: list[Ev], tmp_path: Path) -> None:
    _configure(seeded, tmp_path)
    with freeze_time("2026-08-01 10:30:00"):
        first = run_job(seeded, "finance-report")
        again = run_job(seeded, "finance-report")
    assert first["period"] == "2026-07"
    assert again == {"job": "finance-report", "period": "2026-07", "skipped": "already ran for this period"}
    report = orjson.loads((tmp_path / "spend-2026-07.json").read_bytes())
    assert report["total_nanos"] == sum(e.cost for e in events if in_july(e))
    assert (tmp_path / "finance-2026-07.csv").exists() and (tmp_path / "spend-2026-07.html").exists()


def test_missed_runs_are_caught_up_once(seeded: Runtime, tmp_path: Path) -> None:
    _configure(seeded, tmp_path)
    # down over the 1 September run and the Monday 7 September run; back on the 9th
    ran = catch_up(seeded, now=_utc(2026, 9, 9, 12))
    assert sorted(ran) == ["finance-report", "workflow-scoreboard"]
    assert (tmp_path / "spend-2026-08.json").exists()
    assert (tmp_path / "workflows-2026-W36.json").exists()
    assert catch_up(seeded, now=_utc(2026, 9, 9, 13)) == []


def test_a_failed_run_is_retried_and_then_done(seeded: Runtime) -> None:
    calls: list[str] = []

    def flaky(rt: Runtime, key: str) -> str:
        calls.append(key)
        if len(calls) == 1:
            raise RuntimeError("mail server down")
        return key

    job = Job("flaky", flaky, None, "0 6 1 * *", "", "month")
    moment = _utc(2026, 10, 1, 12)
    with pytest.raises(RuntimeError):
        execute(seeded, job, now=moment)
    assert execute(seeded, job, now=moment) == "2026-09"
    assert execute(seeded, job, now=moment)["skipped"]
    assert calls == ["2026-09", "2026-09"]


def test_config_reschedules_and_disables_jobs(seeded: Runtime) -> None:
    seeded.apply_config_text(
        CONFIG + "\njobs:\n  finance-report: {cron: '0 7 2 * *'}\n  workflow-scoreboard: {enabled: false}\n",
        "j.yaml",
    )
    jobs = {j.name: j for j in collect_jobs(seeded).jobs()}
    assert jobs["finance-report"].cron == "0 7 2 * *"
    assert "workflow-scoreboard" not in jobs and "rollup-usage" in jobs


def test_only_one_process_leads(seeded: Runtime) -> None:
    first, second = JobLeader(seeded), JobLeader(seeded)
    try:
        assert first.acquire() is True
        assert first.acquire() is True  # still held
        assert second.acquire() is False
        first.release()
        assert second.acquire() is True
    finally:
        first.release()
        second.release()


def test_finance_pack_writes_focus_as_parquet_when_configured(
    seeded: Runtime, events: list[Ev], tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    from allotment.reports.jobs import finance_report

    seeded.apply_config_text(
        CONFIG + f"\njobs:\n  finance-report: {{destination: '{tmp_path}', exports: [csv, focus], "
        "focus_format: parquet}\n",
        "jobs.yaml",
    )
    finance_report(seeded, "2026-07")  # the pack itself: job_runs are the tests above
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "focus-2026-07.parquet" in names and "focus-2026-07.csv" not in names
    assert "finance-2026-07.csv" in names and "focus-2026-07.metadata.json" in names
    table = pq.read_table(tmp_path / "focus-2026-07.parquet")
    assert sum(table.column("EffectiveCost").to_pylist()) * 10**9 == sum(e.cost for e in events if in_july(e))
