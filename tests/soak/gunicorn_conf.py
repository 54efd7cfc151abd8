"""gunicorn's config for the soak: the service's own hooks, plus SIGUSR2 making a worker write its
count of live greenlets to ``$CHAT_STATE_FILE.<pid>``, which the soak reads between rounds."""

import gc
import os
import runpy
import signal
from pathlib import Path

service = runpy.run_path(str(Path(__file__).resolve().parents[2] / "gunicorn.conf.py"))
on_starting = service["on_starting"]
child_exit = service["child_exit"]


def post_worker_init(worker):
    service["post_worker_init"](worker)
    path = os.environ["CHAT_STATE_FILE"]

    def write_state(*_):
        from greenlet import greenlet

        alive = sum(1 for o in gc.get_objects() if isinstance(o, greenlet) and not o.dead)
        Path(f"{path}.{os.getpid()}").write_text(f"{alive}\n")

    signal.signal(signal.SIGUSR2, write_state)
