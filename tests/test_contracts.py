"""The private parts of libraries the service leans on, each checked where it is used.

The lock pins what a deploy installs; these fail, with a sentence naming the hook and the
release, when an upgrade (``make lock UPGRADE=...``) changes one under the code that uses it.
"""

from __future__ import annotations

import inspect
import socket

import gevent.socket  # type: ignore[import-untyped]
import httpcore2
import httpx2
import openai
import pytest
from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.workers import base_async, ggevent

from app.upstream import client, connections, llm, transport

from .fake_upstream import FakeUpstream
from .private_names import PRIVATE_IMPORTS, broken, missing_imports


def test_every_private_name_the_app_imports_is_there() -> None:
    assert [module for _, module, _, _ in PRIVATE_IMPORTS] == ["openai._models", "httpx2._utils"]
    assert missing_imports() == []


def test_the_sdk_builds_and_sends_each_request_through_the_methods_the_client_overrides() -> None:
    where = "app/upstream/client.py (a request built from a template per path)"
    for name, parameters in (
        ("_build_request", ["self", "options", "retries_taken"]),
        ("_send_request", ["self", "request", "stream", "kwargs"]),
    ):
        hook = f"openai.OpenAI.{name}"
        method = getattr(openai.OpenAI, name, None)
        assert method is not None, broken("openai", hook, where)
        assert list(inspect.signature(method).parameters) == parameters, broken("openai", hook, where)
        source = inspect.getsource(openai.OpenAI.request)
        assert f"self.{name}(" in source, broken("openai", f"{hook} (no longer called per request)", where)
    request = list(inspect.signature(openai.OpenAI.request).parameters)[:4]
    assert request == ["self", "cast_to", "options", "stream"], broken(
        "openai", "openai.OpenAI.request", "app/upstream/llm.py (one call per reply)"
    )


def test_the_sdk_client_has_the_settings_the_template_checks() -> None:
    sdk = openai.OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    for name in ("_provider_runtime", "_api_key_provider", "_idempotency_header"):
        assert hasattr(sdk, name), broken("openai", f"openai.OpenAI.{name}", "app/upstream/client.py")
        assert getattr(sdk, name) is None, broken("openai", f"openai.OpenAI.{name}", "app/upstream/client.py")


def test_the_sdks_request_options_are_built_once_per_path() -> None:
    hook = "openai._models.FinalRequestOptions"
    options = llm.REQUESTS["/chat/completions"].model_copy(update={"json_data": {"model": "m"}})
    fields = ("method", "url", "json_data", "headers", "content", "extra_json", "params", "files", "timeout")
    for name in fields:
        assert hasattr(options, name), broken("openai", f"{hook}.{name}", "app/upstream/llm.py and client.py")
    assert (options.method, options.url, options.json_data) == ("post", "/chat/completions", {"model": "m"})
    assert isinstance(options.timeout, openai.NotGiven), broken("openai", f"{hook}.timeout", "client.py")


def test_a_request_body_is_the_json_the_sdk_would_write() -> None:
    sdk = openai.OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    body = {"model": "m", "messages": [{"role": "user", "content": "é 漢字 \u2028"}], "stream": True}
    options = llm.REQUESTS["/chat/completions"].model_copy(update={"json_data": body})
    theirs = sdk._build_request(options).read()
    assert client.dumps(body) == theirs, broken(
        "openai", "its JSON encoding", "app/upstream/client.py (dumps)"
    )


def test_the_environments_proxies_are_read_as_httpx2_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "localhost,10.0.0.1")
    hook, where = "httpx2._utils.get_environment_proxies", "app/upstream/connections.py (proxied)"
    mounts = connections.proxied(httpx2.Limits(), httpx2.create_ssl_context())
    assert set(mounts) == {"https://", "all://localhost", "all://10.0.0.1"}, broken("httpx2", hook, where)
    assert mounts["all://localhost"] is None and mounts["all://10.0.0.1"] is None  # direct: ours
    proxy = mounts["https://"]
    assert isinstance(proxy, httpx2.HTTPTransport), broken("httpx2", hook, where)
    assert isinstance(proxy._pool._network_backend, connections.Backend)
    proxy.close()


def test_a_proxy_transports_pool_connects_through_the_backend_it_holds() -> None:
    where = "app/upstream/connections.py (proxied: a reply hangs up proxied requests before their headers)"
    fresh = httpx2.HTTPTransport(proxy="http://127.0.0.1:9")  # as httpx2 builds it, before ours is set
    try:
        pool = getattr(fresh, "_pool", None)
        assert pool is not None, broken("httpx2", "httpx2.HTTPTransport._pool", where)
        backend = getattr(pool, "_network_backend", None)
        assert isinstance(backend, httpcore2.NetworkBackend), broken(
            "httpcore2", "the pools' _network_backend", where
        )
    finally:
        fresh.close()
    # The proxy's pool hands its backend to each connection it makes, which connects through it.
    for method, call in (
        (httpcore2.HTTPProxy.create_connection, "network_backend=self._network_backend"),
        (httpcore2.HTTPConnection._connect, "self._network_backend.connect_tcp("),
    ):
        assert call in inspect.getsource(method), broken("httpcore2", method.__qualname__, where)


def test_direct_requests_go_through_ours_by_the_public_door(
    monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    direct = transport.Transport(httpx2.create_ssl_context(), max_connections=2, max_idle=2)
    limits, tls = httpx2.Limits(), httpx2.create_ssl_context()
    with openai.DefaultHttpxClient(transport=direct, mounts=connections.proxied(limits, tls)) as made:
        answer = made.post(upstream.base_url + "/chat/completions", json={"model": "m", "stream": True})
        assert (answer.status_code, answer.text.endswith("data: [DONE]\n\n")) == (200, True)
        assert len(direct.live) == 1  # a NO_PROXY host: through ours, kept for the next request
    assert direct.live == set()


def test_gevent_sockets_wrap_the_operating_systems() -> None:
    sock = gevent.socket.socket()
    try:
        assert isinstance(getattr(sock, "_sock", None), socket.SocketType), broken(
            "gevent", "gevent.socket.socket._sock", "app/sockets.py (a peek that never waits)"
        )
    finally:
        sock.close()


def test_gunicorn_writes_a_response_through_the_functions_the_config_replaces() -> None:
    where = "gunicorn.conf.py (send_writes_at_once)"
    for name in ("write", "write_chunk"):
        assert callable(getattr(util, name, None)), broken("gunicorn", f"gunicorn.util.{name}", where)
    source = inspect.getsource(wsgi)  # the body, then the last chunk, through the module's names
    for call in ("util.write(self.sock, data, self.chunked)", "util.write_chunk(self.sock, "):
        assert wsgi.util is util and call in source, broken("gunicorn", f"gunicorn.http.wsgi ({call})", where)


def test_the_gevent_worker_waits_for_a_next_request_in_its_timeout_ctx() -> None:
    where = "gunicorn.conf.py (close_idle_connections_on_exit)"
    assert "with self.timeout_ctx():" in inspect.getsource(base_async.AsyncWorker.handle), broken(
        "gunicorn", "AsyncWorker.handle (its wait for a next request)", where
    )
    assert callable(getattr(ggevent.GeventWorker, "timeout_ctx", None)), broken(
        "gunicorn", "GeventWorker.timeout_ctx", where
    )
