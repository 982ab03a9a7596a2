"""The tailer and line parser without nginx: partial lines, fingerprints, restarts, bad lines."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import orjson
import pytest

from allotment.types import Usage
from allotment_nginx.checkpoint import FileCheckpointStore
from allotment_nginx.logline import MalformedLine, parse_line
from allotment_nginx.tailer import Tailer


def line(**fields: object) -> bytes:
    data = {"ts": "2026-11-23T10:00:00+00:00", "request_id": uuid.uuid4().hex, "status": 200, **fields}
    return orjson.dumps(data) + b"\n"


def read_all(tailer: Tailer) -> list[bytes]:
    return [ln for batch in tailer.batches() for ln in batch.lines]


def test_only_complete_lines_are_read(tmp_path: Path) -> None:
    log = tmp_path / "llm.jsonl"
    whole = line()
    log.write_bytes(whole + b'{"ts":"2026-11-23T10:00:01')  # nginx mid-write
    tailer = Tailer(str(log))
    assert read_all(tailer) == [whole.rstrip(b"\n")]
    assert tailer.checkpoint().offset == len(whole)
    with log.open("ab") as handle:
        handle.write(b'","request_id":"x","status":200}\n')
    assert [orjson.loads(x)["request_id"] for x in read_all(tailer)] == ["x"]
    tailer.close()


def test_copytruncate_regrown_past_the_offset_is_caught_by_the_fingerprint(tmp_path: Path) -> None:
    log = tmp_path / "llm.jsonl"
    first = [line() for _ in range(3)]
    log.write_bytes(b"".join(first))
    tailer = Tailer(str(log), rotate_wait=0)
    assert len(read_all(tailer)) == 3
    unread = line()
    with log.open("ab") as handle:
        handle.write(unread)
    # copytruncate, then the live file grows past the old offset before the next look
    (tmp_path / "llm.jsonl-20261123").write_bytes(log.read_bytes())
    fresh = [line() for _ in range(6)]
    with log.open("r+b") as handle:
        handle.truncate(0)
        handle.write(b"".join(fresh))
    assert log.stat().st_size > tailer.checkpoint().offset
    got = read_all(tailer)
    assert got == [unread.rstrip(b"\n")] + [x.rstrip(b"\n") for x in fresh]
    assert tailer.rotations == 1
    tailer.close()


def test_restart_finds_the_checkpointed_file_after_a_rename_by_inode(tmp_path: Path) -> None:
    log = tmp_path / "llm.jsonl"
    store = FileCheckpointStore(tmp_path / "state.json")
    log.write_bytes(line() + line())
    tailer = Tailer(str(log))
    for batch in tailer.batches():
        store.save(batch.checkpoint)
    tailer.close()
    late = line()
    with log.open("ab") as handle:
        handle.write(late)  # written before rotation, never read
    os.rename(log, tmp_path / "llm.jsonl.1")
    newer = line()
    log.write_bytes(newer)
    restarted = Tailer(str(log), store.load(), rotate_wait=0)
    assert read_all(restarted) == [late.rstrip(b"\n"), newer.rstrip(b"\n")]
    restarted.close()


def test_checkpoint_file_is_replaced_atomically(tmp_path: Path) -> None:
    log = tmp_path / "llm.jsonl"
    log.write_bytes(line())
    store = FileCheckpointStore(tmp_path / "state.json")
    tailer = Tailer(str(log))
    checkpoint = next(iter(tailer.batches())).checkpoint
    store.save(checkpoint)
    assert store.load() == checkpoint and not (tmp_path / "state.json.tmp").exists()
    tailer.close()


def test_line_parser_reads_usage_and_refuses_garbage() -> None:
    record = parse_line(
        line(
            prompt_tokens="1200",
            cached_tokens="200",
            completion_tokens="300",
            cache_write_tokens="0",
            reasoning_tokens="",
            reservation_id="res_1",
        ).rstrip()
    )
    assert record.usage == Usage(input_tokens=1000, cache_read_tokens=200, output_tokens=300)
    assert parse_line(line(prompt_tokens="", completion_tokens="")).usage is None
    for bad in (
        b"not json",
        b"[1]",
        b'{"status":200}',
        line(prompt_tokens="12x"),
        line(prompt_tokens="10", cached_tokens="20"),
    ):
        with pytest.raises(MalformedLine):
            parse_line(bad)


def test_malformed_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    from allotment.testing import temporary_runtime
    from allotment_nginx.ingest import LogIngester

    log = tmp_path / "llm.jsonl"
    good = line(model="gpt-5.4-mini", prompt_tokens="1000", completion_tokens="100", cached_tokens="0")
    log.write_bytes(b"garbage\n" + good + b'{"request_id": 5}\n')
    with temporary_runtime(tmp_path) as rt:
        ingester = LogIngester(rt, str(log), store=FileCheckpointStore(tmp_path / "c"))
        stats = ingester.run()
        ingester.close()
        assert (stats.malformed, stats.outcomes["recorded"]) == (2, 1)
        event = rt.event(orjson.loads(good)["request_id"])
        # passive, unattributed: 1000 in x $0.75/M + 100 out x $4.50/M
        assert event is not None and event.cost_nanos == 750_000 + 450_000 and not event.enforced
