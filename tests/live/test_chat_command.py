"""The ``chat`` command against the real server, in a conversation: a dropped connection picked up
where it broke, Ctrl-C stopping the reply on the server, and ``--follow``."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import requests

from ..support import FakeUpstream, LiveServer, Script, wait_until
from ..support.conversations import last_message, messages, new_conversation, upstream_settings
from ..support.tcp import Listener

WORDS = [f"w{i} " for i in range(300)]

CHAT = [str(Path(sys.executable).parent / "chat")]


class Cutter:
    """A TCP proxy to ``port`` that cuts its first connection after ``limit`` bytes of the answer."""

    def __init__(self, port: int, limit: int) -> None:
        self.target, self.limit = port, limit
        self.cut = 0
        self.listener = Listener(self.pipe)
        self.port = self.listener.port

    def pipe(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target))
        cutting, self.cut = self.cut == 0, self.cut + 1
        threading.Thread(target=self.copy, args=(client, upstream, None), daemon=True).start()
        self.copy(upstream, client, self.limit if cutting else None)

    def copy(self, source: socket.socket, sink: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := source.recv(65536):
                if limit is not None and sent + len(data) >= limit:
                    sink.sendall(data[: limit - sent])
                    break
                sink.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)  # the other direction's thread waits on it: wake it
            end.close()

    def close(self) -> None:
        self.listener.close()


def test_the_chat_command_picks_a_dropped_connection_up_where_it_broke(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    server = LiveServer(upstream_settings(upstream))
    cutter = Cutter(server.port, limit=2500)  # the headers and a few dozen events, then the network drops
    try:
        upstream.script = Script(deltas=WORDS[:100], delay=0.01)
        conversation_id = new_conversation(server)
        done = subprocess.run(
            [*CHAT, "--url", f"http://127.0.0.1:{cutter.port}", "--conversation", conversation_id, "Count"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cutter.cut >= 2  # it did break, and the command came back
        assert (done.returncode, done.stdout, done.stderr) == (0, "".join(WORDS[:100]) + "\n", "")
    finally:
        cutter.close()
        server.stop()


def test_ctrl_c_stops_the_reply_on_the_server_and_follow_reads_one_being_written(
    upstream: FakeUpstream,
) -> None:
    server = LiveServer(upstream_settings(upstream))
    commands: list[subprocess.Popen[str]] = []

    def chat(*argv: str) -> subprocess.Popen[str]:
        command = [*CHAT, "--url", server.url, *argv]
        commands.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        return commands[-1]

    def words_stored() -> int:
        found = messages(server, conversation_id)
        return len(found[-1]["content"].split()) if len(found) == 2 else 0

    try:
        upstream.script = Script(deltas=WORDS, delay=0.05)
        conversation_id = new_conversation(server)
        nothing = chat("--conversation", conversation_id, "--follow")
        assert nothing.communicate(timeout=30) == ("", "") and nothing.returncode == 0  # none being written
        asking = chat("--conversation", conversation_id, "Count")
        assert wait_until(lambda: words_stored() >= 20, timeout=10)  # a checkpoint of twenty words or more
        following = chat("--conversation", conversation_id, "--follow")
        assert wait_until(lambda: open_streams(server) == 2, timeout=10)  # the turn's, and the follower's
        asking.send_signal(signal.SIGINT)
        out, _ = asking.communicate(timeout=10)
        assert asking.returncode == 130
        followed, said = following.communicate(timeout=10)
        message = last_message(server, conversation_id)
        assert message["status"] == "stopped"
        assert message["content"].startswith(out)  # what arrived was printed
        stopped = "chat: the reply was stopped before its end\n"
        assert (following.returncode, followed, said) == (1, message["content"] + "\n", stopped)
        assert upstream.wait_until(lambda: upstream.open_streams() == 0, timeout=2)
    finally:
        for command in commands:
            if command.poll() is None:
                command.kill()
            command.communicate()
        server.stop()


def open_streams(server: LiveServer) -> float:
    """The server's own count of streams being sent now (its metrics)."""
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("chat_streams_open")
    )
