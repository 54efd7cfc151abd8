"""gunicorn hooks the Procfile's flags cannot carry: the database's migrations, applied once per
host before any worker starts, and Prometheus's directory for many workers.

prometheus_client picks its storage when first imported, from PROMETHEUS_MULTIPROC_DIR,
so the directory is set here, in the master, before any worker starts, and the library
is imported only inside the hooks.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def on_starting(server):
    """Bring the database up to date, and give the workers a clean directory for their metrics."""
    # In a process of its own: the master stays free of the app's imports, which the gevent
    # worker must make after it has patched the standard library.
    migrated = subprocess.run([sys.executable, "-m", "app.db"], capture_output=True, text=True)
    if migrated.returncode:
        sys.stderr.write(migrated.stderr)
        sys.exit(4)  # as when the app cannot load: the master stops instead of restarting workers
    path = Path(
        os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        or Path(tempfile.gettempdir()) / f"chat-metrics-{os.getpid()}"
    )
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):  # a previous run's values would be counted again
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def child_exit(server, worker):
    """Drop a finished worker's live gauges (open streams) from the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """With CHAT_STATE_FILE set (the soak sets it), SIGUSR2 makes a worker write its greenlet count."""
    path = os.environ.get("CHAT_STATE_FILE")
    if not path:
        return
    import gc
    import signal

    from greenlet import greenlet

    def write_state(*_):
        alive = sum(1 for o in gc.get_objects() if isinstance(o, greenlet) and not o.dead)
        Path(f"{path}.{os.getpid()}").write_text(f"{alive}\n")

    signal.signal(signal.SIGUSR2, write_state)
