"""The plugin's entry points: the config command, the one-shot tail command and the serve job."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
from typer.testing import CliRunner

from allotment.cli import build_app
from allotment.jobs import collect_jobs
from allotment.testing import SAMPLE_CONFIG, temporary_runtime


def _line(**fields: object) -> bytes:
    data = {
        "ts": "2026-11-23T10:00:00+00:00",
        "request_id": uuid.uuid4().hex,
        "status": 200,
        "upstream_status": "200",
        "model": "gpt-5.4-mini",
        **fields,
    }
    return orjson.dumps(data) + b"\n"


def test_config_command_writes_the_snippet_and_the_njs_script(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        build_app(), ["nginx", "config", "--upstream", "http://127.0.0.1:9000", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    conf = (tmp_path / "allotment.conf").read_text()
    assert "js_content allotment.preauth" in conf and "log_format allotment_json" in conf
    assert "export default" in (tmp_path / "allotment.js").read_text()
    bad = CliRunner().invoke(build_app(), ["nginx", "config", "--upstream", "http://x/v1"])
    assert bad.exit_code == 2 and "no path" in bad.output


def test_tail_job_runs_inside_serve_when_configured(tmp_path: Path) -> None:
    log = tmp_path / "llm.jsonl"
    line = _line(prompt_tokens="1000", completion_tokens="10", cached_tokens="0")
    log.write_bytes(line)
    config = SAMPLE_CONFIG + f"\nplugins:\n  nginx: {{log: {log}, rotate_wait: 0}}\n"
    with temporary_runtime(tmp_path, config=config, load_entrypoints=True) as rt:
        rt.refresh_directory()
        job = collect_jobs(rt).get("nginx-tail")
        assert job.func(rt)["recorded"] == 1
        assert job.func(rt)["recorded"] == 1  # the same ingester: nothing read twice
        event = rt.event(orjson.loads(line)["request_id"])
        # 1000 in x $0.75/M + 10 out x $4.50/M
        assert event is not None and event.cost_nanos == 750_000 + 45_000
