"""One pipeline run per work dir at a time.

Two runs writing the same tables would each MERGE correctly (Delta serialises commits), but their
stages would interleave: one run's index could be built from the other's half-embedded catalogue.
:func:`pipeline_lock` takes an exclusive ``flock`` on ``<workdir>/.pipeline.lock`` for the whole
run (``soundalike duplicates`` takes it too); a second run fails at once with a message naming
the holder. On Databricks the scheduled job has ``max_concurrent_runs: 1``; where the work dir's
file system has no locks (some FUSE mounts), the lock is skipped with a warning and that setting
is what protects the tables.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from soundalike.config import Config
from soundalike.errors import SoundalikeError

LOCK_FILE = ".pipeline.lock"
log = logging.getLogger(__name__)


class PipelineBusyError(SoundalikeError):
    """Another pipeline run holds the work dir's lock."""


@contextlib.contextmanager
def pipeline_lock(cfg: Config):
    """Hold the work dir's pipeline lock for the block; raise :class:`PipelineBusyError` if taken."""
    path = Path(cfg.workdir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
                raise PipelineBusyError(
                    f"another pipeline run is using work dir {cfg.workdir} ({holder}); wait for it to finish "
                    f"(the lock is {path}, released when that process ends)"
                ) from None
            log.warning("cannot lock %s (%s); relying on one run at a time", path, exc)
            yield
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
