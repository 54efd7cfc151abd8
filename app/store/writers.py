"""Which worker writes a reply, and whether it still runs: what any worker can tell from a stored row."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta

from .models import utcnow


def worker_id() -> str:
    """Which worker writes a reply: its host, its process-id namespace and its process (read when
    asked: gunicorn forks). Two containers may share a host name but never a process namespace."""
    return f"{socket.gethostname()}/{pid_namespace()}/{os.getpid()}"[:100]


def pid_namespace() -> str:
    """The kernel's id of this process's pid namespace ("-" where there is no /proc to tell)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def writer_is_gone(writer: str | None) -> bool:
    """Is ``writer`` a worker that no longer runs, as this host can tell? Only one in the same pid
    namespace of the same host can be looked up; of any other nothing is known here."""
    parts = (writer or "").split("/")
    if len(parts) != 3 or parts[:2] != [socket.gethostname(), pid_namespace()] or parts[1] == "-":
        return False
    pid = parts[2]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # it runs, as another user
    return False


def is_abandoned(status: str, writer: str | None, updated_at: datetime, stale_after: timedelta) -> bool:
    """A reply still marked as being written whose worker died: gone from this host, or silent for
    longer than ``stale_after`` (its checkpoints come every second)."""
    if status != "streaming":
        return False
    return updated_at < utcnow() - stale_after or writer_is_gone(writer)
