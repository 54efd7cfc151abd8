"""gunicorn hooks the Procfile's flags cannot carry: the database's migrations, applied once per
host before any worker starts, Prometheus's directory for many workers, and a worker's shutdown
that lets the replies it writes end (or stores them interrupted).

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
    migrated = subprocess.run([sys.executable, "-m", "app.store.db"], capture_output=True, text=True)
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
    """Close idle connections at SIGTERM and let the replies being written end in time; write each
    response chunk with one system call; spend less of the worker on the garbage collector."""
    close_idle_connections_on_exit(worker)
    finish_replies_on_exit(worker)
    send_writes_at_once()
    collect_less()


def worker_int(worker):
    """SIGINT or SIGQUIT: a quick stop, so the replies being written get no time (worker_exit)."""
    worker.quitting = True


def worker_exit(server, worker):
    """Before the worker goes: the replies it still writes get what is left of the graceful
    timeout, then are stored ``interrupted`` with their text (see finish_replies_on_exit)."""
    import time

    replies = worker_replies(worker)
    if replies is None:
        return
    finishing = getattr(worker, "finishing_replies", None)
    if finishing is not None:
        finishing.join()
    elif getattr(worker, "quitting", False):
        replies.shutdown(0.0, 0.0)
    else:  # leaving on its own (max_requests, a changed parent): no master waits to kill it
        start, stop, until = shutdown_times(worker.cfg.graceful_timeout)
        replies.shutdown(time.monotonic() + stop - start, time.monotonic() + until - start)


def shutdown_times(graceful):
    """From a stop's start (0): when replies still running are interrupted, and by when they must
    be stored: both well before the master kills the worker at ``graceful`` seconds."""
    margin = min(2.0, graceful / 3)
    return 0.0, graceful - margin, graceful - margin / 4


def worker_replies(worker):
    """The app's replies (app.replies.worker.Replies), if the worker serves the app."""
    return getattr(getattr(worker, "wsgi", None), "extensions", {}).get("replies")


def finish_replies_on_exit(worker):
    """Make SIGTERM give the conversation replies this worker writes the graceful timeout.

    A reply goes on without its client, so the worker may have no connection left while it
    still writes replies: gunicorn would let it exit at once. From SIGTERM the replies get
    the graceful timeout, less a margin (the master kills the worker when it ends); those
    still running then are stored ``interrupted`` with their text, and their readers get
    the end, before the master's kill. ``worker_exit`` waits for that before the worker goes.
    """
    import signal
    import time

    import gevent

    replies = worker_replies(worker)
    if replies is None:
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handle_term(signum, frame):
        previous(signum, frame)
        if getattr(worker, "finishing_replies", None) is None:
            now = time.monotonic()
            _, stop, until = shutdown_times(worker.cfg.graceful_timeout)
            worker.finishing_replies = gevent.spawn(replies.shutdown, now + stop, now + until)

    signal.signal(signal.SIGTERM, handle_term)


def collect_less():
    """Leave the loaded app out of the garbage collector's rounds, and start them less often.

    Every full collection walks every object the worker holds, and ~150,000 of them are the
    app and its libraries, loaded once and never freed. With 1,000 streams open, measured with
    ``make bench``'s 1,000-stream scenario, the collector took 17% of the worker's CPU, in
    pauses of up to 139 ms that every stream felt at once. Frozen (``gc.freeze``, after one
    collection of what loading left over), those objects are never walked again: 6% and 31 ms.
    A reply's objects are freed by their reference counts as it ends, so a first generation of
    50,000 instead of 700 objects costs little memory and takes the rest: 2%, 16 ms at most.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, *gc.get_threshold()[1:])


def send_writes_at_once():
    """Make gunicorn's writes a plain ``send``, and ``sendall`` only for what it left over.

    gevent's ``sendall`` asks the socket for its buffer size (``getsockopt(SO_SNDBUF)``)
    before every write, to cut big data into pieces; a streamed reply's chunks are small,
    and ``send`` takes them whole in one system call. A socket that is full waits in
    ``send`` and then ``sendall`` as before: what the client receives is the same bytes.
    gunicorn has no setting for this: its ``util.write`` and ``util.write_chunk`` are replaced,
    and tests/test_contracts.py checks that gunicorn still writes through them.
    """
    from gunicorn import util

    def write(sock, data, chunked=False):
        if chunked:
            if isinstance(data, str):
                data = data.encode("utf-8")
            data = b"%X\r\n%s\r\n" % (len(data), data)
        sent = sock.send(data)
        if sent < len(data):
            sock.sendall(memoryview(data)[sent:])

    def write_chunk(sock, data):
        write(sock, data, chunked=True)

    util.write = write
    util.write_chunk = write_chunk


def close_idle_connections_on_exit(worker):
    """Make SIGTERM close keep-alive connections that wait for a request at once.

    The gevent worker waits for a connection's next request inside ``worker.timeout_ctx()``
    (a silent ``gevent.Timeout`` of ``--keep-alive`` seconds). After SIGTERM it stops accepting
    and waits until no connection is left, so one idle client held the shutdown for the whole
    graceful timeout. Here each such wait is remembered, and SIGTERM ends them all: the timeout
    fires early, gunicorn sees no request and closes the connection. Replies in flight are not
    waits: they still get the graceful timeout, and their connection closes when they end.
    The worker's ``timeout_ctx`` is replaced: tests/test_contracts.py checks gunicorn still waits in it.
    """
    import signal

    import gevent

    waiting = {}  # the greenlet of each connection waiting for a request -> its Timeout

    class IdleWait:
        def __enter__(self):
            # After SIGTERM no new wait: a request already buffered is still read and served.
            seconds = worker.cfg.keepalive if worker.alive else 0.001
            self.greenlet = gevent.getcurrent()
            self.timeout = gevent.Timeout(seconds, False)
            waiting[self.greenlet] = self.timeout
            return self.timeout.__enter__()

        def __exit__(self, kind, value, traceback):
            waiting.pop(self.greenlet, None)
            return self.timeout.__exit__(kind, value, traceback)

    def end_wait(greenlet, timeout):
        if waiting.get(greenlet) is timeout:  # still waiting: not serving a request meanwhile
            greenlet.throw(timeout)  # caught by its own wait: no request, the connection closes

    def close_idle():
        loop = gevent.get_hub().loop
        for greenlet, timeout in list(waiting.items()):
            loop.run_callback(end_wait, greenlet, timeout)

    previous = signal.getsignal(signal.SIGTERM)

    def handle_term(signum, frame):
        previous(signum, frame)
        gevent.spawn(close_idle)  # out of the signal handler, as gunicorn does

    worker.timeout_ctx = IdleWait
    signal.signal(signal.SIGTERM, handle_term)
