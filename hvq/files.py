"""Atomic file writes: outputs appear whole or not at all (a killed process leaves no half file).

A write goes to a temporary file beside its target, named ``.<name>.hvqtmp-<pid>-<random>.tmp``, and is
renamed over the target once complete. Any exception -- and a SIGTERM while :func:`sigterm_unwinds` is
active, which turns it into ``SystemExit`` -- removes the temporary file on the way out. A SIGKILL
cannot be caught: its temporary file stays, and the next write of the same target deletes it, because
the process id in its name is no longer alive.
"""

from __future__ import annotations

import glob
import os
import re
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

#: Marks a temporary file of :func:`atomic_write`; the process id that wrote it follows.
TEMP_MARK = ".hvqtmp-"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (one we may not signal counts as alive)."""
    if pid <= 0:
        return True  # not a real writer's pid: leave the file alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process, or not a pid at all
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporary files of ``path`` left by :func:`atomic_write` in processes that have died.

    Only files named ``.<name>.hvqtmp-<pid>-...`` whose ``pid`` is not a live process are removed;
    those of running writers are kept. Best effort: a file that cannot be deleted is skipped. Returns
    the removed paths.
    """
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}{TEMP_MARK}") + r"(\d+)-[0-9a-f]+\.tmp")
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}{TEMP_MARK}*"):
        match = pattern.fullmatch(candidate.name)
        if match is not None and not _pid_alive(int(match.group(1))):
            try:
                candidate.unlink(missing_ok=True)
            except OSError:
                continue
            removed.append(candidate)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(file)`` on a fresh temporary file beside ``path``, fsync, then rename it to ``path``.

    Stale temporaries of ``path`` from dead processes are removed first
    (:func:`remove_stale_temporaries`). On any exception the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    temporary = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """While active, SIGTERM raises ``SystemExit(143)`` so that ``finally`` blocks and
    :func:`atomic_write` clean up; the previous handler is restored on exit. Outside the main thread
    (where handlers cannot be installed) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
