"""What the tests, the benchmark, the soak and the compatibility check share: the service started
as the Procfile starts it, the fake upstream, a load generator, the one way to wait for something
(``wait.py``), and throw-away Redis and PostgreSQL servers."""

from ..fake_upstream import FakeUpstream, Script
from .load import Result, fetch, fetch_many, post
from .server import ROOT, SECRET_KEY, LiveServer, free_port, procfile_command
from .wait import wait_until

__all__ = [
    "ROOT",
    "SECRET_KEY",
    "FakeUpstream",
    "LiveServer",
    "Result",
    "Script",
    "fetch",
    "fetch_many",
    "free_port",
    "post",
    "procfile_command",
    "wait_until",
]
