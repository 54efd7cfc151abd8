"""gunicorn.conf.py's hooks that need no running server."""

import json
import subprocess
import sys

from tests.support import ROOT

SCRIPT = """
import gc, json, runpy, types
hooks = runpy.run_path("gunicorn.conf.py")
import flask, openai  # what a worker has loaded by then
before = gc.get_freeze_count()
worker = types.SimpleNamespace(cfg=types.SimpleNamespace(keepalive=2), alive=True)
hooks["post_worker_init"](worker)  # as gunicorn calls it once the worker loaded the app
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}))
"""


def test_a_worker_freezes_what_it_loaded_and_collects_less_often() -> None:
    # In a process of its own: freezing is for the life of the process.
    ran = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True)
    state = json.loads(ran.stdout)
    assert state["before"] == 0
    assert state["frozen"] > 10_000  # the loaded libraries' objects, left out of every collection
    assert state["threshold"][0] == 50_000
    assert state["threshold"][1:] == [10, 10]  # the older generations as Python sets them
