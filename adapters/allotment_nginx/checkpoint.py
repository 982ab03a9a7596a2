"""Where a tailer's position lives: (device, inode, offset, first-bytes hash) of one log file.

Saved only after the lines before it were committed to the ledger, so a crash re-reads, never skips.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
from sqlalchemy import Engine, text

FP_BYTES = 256  # the head of a file that names it; our lines start with a time and a random id


@dataclass(frozen=True, slots=True)
class Checkpoint:
    dev: int
    ino: int
    offset: int
    fp: str  # sha256 of the file's first fp_len bytes ("" while fp_len is 0)
    fp_len: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(
            int(data["dev"]), int(data["ino"]), int(data["offset"]), str(data["fp"]), int(data["fp_len"])
        )


def fingerprint(fd: int, length: int) -> str:
    """sha256 of the first ``length`` bytes (hex), or "" when the file is shorter than that."""
    if length <= 0:
        return ""
    head = os.pread(fd, length, 0)
    return hashlib.sha256(head).hexdigest() if len(head) == length else ""


class CheckpointStore(Protocol):
    def load(self) -> Checkpoint | None: ...

    def save(self, checkpoint: Checkpoint) -> None: ...


class DbCheckpointStore:
    """A row of the core's ``checkpoints`` table: shared by every replica that runs the job."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.engine = engine
        self.name = name
        self._last: Checkpoint | None = None

    def load(self) -> Checkpoint | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                text("SELECT data FROM checkpoints WHERE name = :n"), {"n": self.name}
            ).fetchone()
        self._last = None if row is None else Checkpoint.from_dict(orjson.loads(row[0]))
        return self._last

    def save(self, checkpoint: Checkpoint) -> None:
        if checkpoint == self._last:
            return
        params = {"n": self.name, "d": orjson.dumps(checkpoint.to_dict()).decode(), "t": datetime.now(UTC)}
        # one statement per transaction: the row is replaced whole or not at all
        with self.engine.begin() as conn:
            updated = conn.execute(
                text("UPDATE checkpoints SET data = :d, updated_at = :t WHERE name = :n"), params
            ).rowcount
            if updated == 0:
                conn.execute(
                    text("INSERT INTO checkpoints (name, data, updated_at) VALUES (:n, :d, :t)"), params
                )
        self._last = checkpoint


class FileCheckpointStore:
    """A JSON file replaced atomically: tmp, fsync, rename, fsync the directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._last: Checkpoint | None = None

    def load(self) -> Checkpoint | None:
        try:
            self._last = Checkpoint.from_dict(orjson.loads(self.path.read_bytes()))
        except FileNotFoundError:
            self._last = None
        return self._last

    def save(self, checkpoint: Checkpoint) -> None:
        if checkpoint == self._last:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(orjson.dumps(checkpoint.to_dict()))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a power cut
        finally:
            os.close(dir_fd)
        self._last = checkpoint
