"""Follow an append-only log across rename+reopen and copytruncate rotation, complete lines only.

Each batch carries the checkpoint to save once its lines are committed (sink first, then checkpoint).
"""

from __future__ import annotations

import glob
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from allotment_nginx.checkpoint import FP_BYTES, Checkpoint, fingerprint

log = logging.getLogger("allotment.nginx")

READ_BYTES = 1 << 20
MAX_LINE = 16 << 20  # a "line" longer than this is garbage: skipped up to its newline
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


@dataclass(frozen=True, slots=True)
class Batch:
    lines: list[bytes]
    checkpoint: Checkpoint | None  # where to resume once these lines are committed
    oversized: int = 0  # lines skipped for exceeding MAX_LINE


class _File:
    """One open log file and how far it has been consumed."""

    def __init__(self, path: str, fd: int, offset: int = 0) -> None:
        st = os.fstat(fd)
        self.path, self.fd, self.dev, self.ino = path, fd, st.st_dev, st.st_ino
        self.offset = offset
        self.fp_len = 0
        self.fp = ""
        self.last_growth = 0.0  # set by the Tailer's clock
        self._refresh_fp()

    @classmethod
    def open(cls, path: str, offset: int = 0) -> _File | None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        return cls(path, fd, offset)

    def _refresh_fp(self) -> None:
        # the head grows with the file until FP_BYTES; it only ever covers consumed bytes
        want = min(FP_BYTES, self.offset)
        if want != self.fp_len:
            self.fp_len, self.fp = want, fingerprint(self.fd, want)

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(self.dev, self.ino, self.offset, self.fp, self.fp_len)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def truncated(self) -> bool:
        """Copytruncate: smaller than our offset, or regrown with different first bytes."""
        if self.size() < self.offset:
            return True
        return self.fp_len > 0 and fingerprint(self.fd, self.fp_len) != self.fp

    def read(self) -> Batch | None:
        """Complete lines from the offset on (up to READ_BYTES), or None when none are ready."""
        want = READ_BYTES
        while True:
            chunk = os.pread(self.fd, want, self.offset)
            end = chunk.rfind(b"\n")
            if end >= 0:
                break
            if len(chunk) < want:
                return None  # only a partial line so far: nginx is mid-write, or idle
            if want >= MAX_LINE:
                return self._skip_oversized()
            want *= 2
        lines = chunk.split(b"\n")
        del lines[-1]  # the partial line after the last newline (b"" when the chunk ends with one)
        self.offset += end + 1
        self._refresh_fp()
        return Batch(lines, None)

    def _skip_oversized(self) -> Batch | None:
        position = self.offset + MAX_LINE
        while True:
            chunk = os.pread(self.fd, READ_BYTES, position)
            if not chunk:
                return None
            newline = chunk.find(b"\n")
            if newline >= 0:
                self.offset = position + newline + 1
                self._refresh_fp()
                return Batch([], None, oversized=1)
            position += len(chunk)

    def close(self) -> None:
        os.close(self.fd)


def rotated_candidates(path: str) -> list[str]:
    """Files a rotation may have produced: ``path.1``, ``path.0``, ``path-20261123``... (not compressed)."""
    found = set(glob.glob(glob.escape(path) + ".*")) | set(glob.glob(glob.escape(path) + "-*"))
    return sorted(p for p in found if not p.endswith(_COMPRESSED) and not p.endswith(".tmp"))


def _find_copy(path: str, checkpoint: Checkpoint, *, by_inode: bool) -> _File | None:
    """The rotated file holding ``checkpoint``'s unread rest: same inode, or the same first bytes."""
    for candidate in rotated_candidates(path):
        handle = _File.open(candidate, checkpoint.offset)
        if handle is None:
            continue
        same = (handle.dev, handle.ino) == (checkpoint.dev, checkpoint.ino) if by_inode else True
        if (
            same
            and handle.size() >= checkpoint.offset
            and fingerprint(handle.fd, checkpoint.fp_len) == checkpoint.fp
        ):
            handle._refresh_fp()
            return handle
        handle.close()
    return None


class Tailer:
    """Reads ``path`` from a checkpoint on; ``batches()`` yields what is ready now.

    After a rename rotation the old file keeps being drained until it has been quiet for
    ``rotate_wait`` seconds (nginx writes to it until it handles USR1); meanwhile the
    checkpoint stays on the old file, so a restart re-reads (never skips) the new one.
    """

    def __init__(
        self,
        path: str,
        checkpoint: Checkpoint | None = None,
        *,
        rotate_wait: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = os.path.abspath(path)
        self.rotate_wait = rotate_wait
        self.clock = clock
        self.live: _File | None = None
        self.olds: list[_File] = []  # rotated-away files still being drained, oldest first
        self.rotations = 0
        self._start(checkpoint)

    def _start(self, checkpoint: Checkpoint | None) -> None:
        self.live = _File.open(self.path)
        if checkpoint is None:
            return
        live = self.live
        if live is not None and (live.dev, live.ino) == (checkpoint.dev, checkpoint.ino):
            if live.size() >= checkpoint.offset and fingerprint(live.fd, checkpoint.fp_len) == checkpoint.fp:
                live.offset = checkpoint.offset
                live._refresh_fp()
                return
            # truncated while we were down (copytruncate): finish the copy, then start over
            old = _find_copy(self.path, checkpoint, by_inode=False)
            quiet_since = -float("inf")  # a copy never grows
        else:
            old = _find_copy(self.path, checkpoint, by_inode=True)
            # nginx may not have reopened yet: quiet is judged from the file's last write
            idle = time.time() - os.fstat(old.fd).st_mtime if old is not None else 0.0
            quiet_since = self.clock() - max(0.0, idle)
        if old is None:
            log.warning(
                "nginx tail: the checkpointed file of %s is gone; reading it from the start", self.path
            )
            return
        old.last_growth = quiet_since
        self.olds.append(old)

    def checkpoint(self) -> Checkpoint | None:
        """The oldest unfinished position: the first draining old file's, else the live file's."""
        current = self.olds[0] if self.olds else self.live
        return None if current is None else current.checkpoint()

    def batches(self) -> Iterator[Batch]:
        """Everything readable now, oldest file first; each batch says where to resume after it."""
        while self.olds:
            old = self.olds[0]
            yield from self._drain(old)
            if self.clock() - old.last_growth < self.rotate_wait:
                break
            old.close()
            self.olds.pop(0)
            yield Batch([], self.checkpoint())
        for old in self.olds[1:]:
            yield from self._drain(old)
        self._check_rotation()
        if self.olds and self.olds[-1].last_growth == -float("inf"):
            yield from self._drain(self.olds[-1])  # a copytruncate copy found just now
        if self.live is not None:
            yield from self._drain(self.live)

    def _drain(self, handle: _File) -> Iterator[Batch]:
        while True:
            batch = handle.read()
            if batch is None:
                return
            if handle.last_growth != -float("inf"):
                handle.last_growth = self.clock()
            yield Batch(batch.lines, self.checkpoint(), batch.oversized)

    def _check_rotation(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return  # between rename and reopen: keep reading the old fd
        live = self.live
        if live is None:
            self.live = _File.open(self.path)
            return
        if (st.st_dev, st.st_ino) != (live.dev, live.ino):
            # rename rotation: keep draining the old inode while nginx may still write to it
            self.rotations += 1
            live.last_growth = self.clock()
            self.olds.append(live)
            self.live = _File.open(self.path)
            return
        if live.truncated():
            self.rotations += 1
            copy = _find_copy(self.path, live.checkpoint(), by_inode=False)
            if copy is None:
                log.warning(
                    "nginx tail: %s was truncated and no rotated copy matches; lines written "
                    "between the copy and the truncate are lost (copytruncate's window)",
                    self.path,
                )
            else:
                copy.last_growth = -float("inf")
                self.olds.append(copy)
            live.offset = 0
            live.fp_len, live.fp = 0, ""

    def close(self) -> None:
        for handle in [*self.olds, self.live]:
            if handle is not None:
                handle.close()
        self.olds, self.live = [], None
