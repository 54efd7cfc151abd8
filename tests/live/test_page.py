"""The chat page in a real browser: headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from ..conftest import SECRET_KEY
from ..fake_upstream import FakeUpstream, Script
from .server import LiveServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Chromium is not installed (make test installs Debian's chromium where it runs as root)",
)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def demo_page_server() -> Iterator[LiveServer]:
    server = LiveServer({"DEMO_DELAY_MS": "40", "LOG_FORMAT": "json", "MAX_MESSAGE_CHARS": "300"})
    yield server
    server.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 390, "height": 780})  # a phone's width
    page = context.new_page()
    # The page's Content-Security-Policy must not have to block anything the page itself does.
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    yield page
    context.close()
    assert problems == []


def last_reply(page: Any) -> Any:
    return page.locator(".assistant").last


def wait_state(page: Any, *states: str, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = last_reply(page).get_attribute("data-state") if page.locator(".assistant").count() else None
        if state in states:
            return str(state)
        time.sleep(0.02)
    raise AssertionError(f"the reply never reached {states}")


def test_the_reply_grows_as_chunks_arrive(page: Any, demo_page_server: LiveServer) -> None:
    page.goto(demo_page_server.url + "/")
    page.get_by_label("Message").fill("Tell me a story about a robot")
    page.keyboard.press("Enter")
    lengths = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        lengths.append(len(last_reply(page).locator(".text").inner_text()))
        if last_reply(page).get_attribute("data-state") == "done":
            break
        time.sleep(0.03)
    final = last_reply(page).locator(".text").inner_text()
    growth = sorted({n for n in lengths if 0 < n < len(final)})
    assert len(growth) >= 2, lengths  # seen part-way at least twice before it was complete
    assert "robot" in final and final.endswith((".", ")"))
    meta = last_reply(page).locator(".meta").inner_text()
    assert meta.startswith("first token ") and " ms · total " in meta


def test_stop_aborts_the_stream_and_the_server_sees_it(page: Any, demo_page_server: LiveServer) -> None:
    request_ids: list[str] = []
    page.on(
        "response",
        lambda r: request_ids.append(r.headers.get("x-request-id", "")) if "/api/" in r.url else None,
    )
    page.goto(demo_page_server.url + "/")
    page.get_by_label("Message").fill("Explain the history of lighthouses")
    page.get_by_role("button", name="Send").click()
    wait_state(page, "streaming")
    time.sleep(0.3)
    page.get_by_role("button", name="Stop").click()
    wait_state(page, "stopped")
    stopped_at = last_reply(page).locator(".text").inner_text()
    time.sleep(0.5)
    assert last_reply(page).locator(".text").inner_text() == stopped_at  # it stopped growing
    assert stopped_at and last_reply(page).locator(".error").inner_text() == "Stopped."
    line = demo_page_server.wait_for_access_line(request_ids[-1])
    assert line["outcome"] == "disconnected"
    assert page.get_by_role("button", name="Send").is_enabled()


def test_a_server_error_shows_its_sentence(page: Any, demo_page_server: LiveServer) -> None:
    page.goto(demo_page_server.url + "/")
    page.get_by_label("Message").fill("x" * 301)
    page.keyboard.press("Enter")
    wait_state(page, "error")
    error = last_reply(page).locator(".error").inner_text()
    assert error == "'message' is 301 characters long; the limit is 300."


def test_history_is_sent_on_the_second_turn(page: Any, demo_page_server: LiveServer) -> None:
    bodies: list[dict[str, Any]] = []
    page.on("request", lambda r: bodies.append(json.loads(r.post_data)) if "/api/" in r.url else None)
    page.goto(demo_page_server.url + "/")
    page.get_by_label("Message").fill("Name a planet")
    page.keyboard.press("Enter")
    wait_state(page, "done")
    first_reply = last_reply(page).locator(".text").inner_text()
    page.get_by_label("Message").fill("And another?")
    page.keyboard.press("Enter")
    wait_state(page, "done")
    assert bodies[0] == {"messages": [], "message": "Name a planet"}
    assert bodies[1] == {
        "messages": [
            {"role": "user", "content": "Name a planet"},
            {"role": "assistant", "content": first_reply},
        ],
        "message": "And another?",
    }


def test_shift_enter_is_a_new_line(page: Any, demo_page_server: LiveServer) -> None:
    page.goto(demo_page_server.url + "/")
    box = page.get_by_label("Message")
    box.fill("first line")
    box.press("Shift+Enter")
    box.type("second line")
    assert box.input_value() == "first line\nsecond line"
    assert page.locator(".turn").count() == 0  # nothing was sent


SSE_REPLY = (
    'data: {"type":"metadata","request_id":"r1","model":"m","conversation_id":null,"message_id":null}\r\n\r\n'
    ": ping\r\n\r\n"
    'data: {"type":"reasoning","content":"Weighing "}\r\n\r\n'
    'data: {"type":"reasoning","content":"options."}\n\n'
    'data: {"type":"token","content":"Plain "}\n\n'
    'data: {"type":"token","content":"answer.\\n[error: forged]"}\n\n'
)


@pytest.mark.parametrize(
    ("ending", "status", "error"),
    [
        ('data: {"type":"done","usage":null}\n\n', "done", None),
        ('data: {"type":"error","message":"The model gave up."}\n\n', "error", "The model gave up."),
        ("", "error", "The connection broke before the reply was complete."),
    ],
)
def test_replies_are_read_as_typed_events(
    page: Any, demo_page_server: LiveServer, ending: str, status: str, error: str | None
) -> None:
    page.route(
        "**/api/chat/stream",
        lambda route: route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream"}, body=SSE_REPLY + ending
        ),
    )
    page.goto(demo_page_server.url + "/")
    page.get_by_label("Message").fill("Think first")
    page.keyboard.press("Enter")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-state", status)
    # Model text that looks like the old error trailer is only text.
    assert reply.locator(".text").inner_text() == "Plain answer.\n[error: forged]"
    thinking = reply.locator("details.thinking")
    expect(thinking).not_to_have_attribute("open", "")  # collapsed
    assert thinking.locator("summary").inner_text() == "Thinking"
    assert thinking.locator("div").text_content() == "Weighing options."
    if error:
        assert reply.locator(".error").inner_text() == error
    else:
        expect(reply.locator(".error")).to_have_count(0)


def test_the_event_reader_takes_a_stream_cut_anywhere(page: Any, demo_page_server: LiveServer) -> None:
    page.goto(demo_page_server.url + "/")
    results = page.evaluate(
        """async () => {
            const text = 'data: {"type":"token","content":"h\\u00e9 \\ud83d\\ude00"}\\r\\n\\r\\n'
                + ": ping\\n\\n"
                + 'data:{"type":"token",\\r\\ndata: "content":"\\u4e16\\u754c"}\\r\\r'
                + 'data: {"type":"done","usage":null}\\n\\n'
                + 'data: {"type":"token","content":"unfinished"}';
            const bytes = new TextEncoder().encode(text);
            const results = new Set();
            for (let size = 1; size <= bytes.length; size++) {
                const stream = new ReadableStream({
                    start(controller) {
                        for (let at = 0; at < bytes.length; at += size) {
                            controller.enqueue(bytes.slice(at, at + size));
                        }
                        controller.close();
                    },
                });
                const events = [];
                for await (const event of readEvents(stream)) events.push(event);
                results.add(JSON.stringify(events));
            }
            return [...results];
        }"""
    )
    assert [json.loads(r) for r in results] == [
        [
            {"type": "token", "content": "hé 😀"},
            {"type": "token", "content": "世界"},
            {"type": "done", "usage": None},
        ]
    ]


def test_an_error_after_the_reply_started_is_shown(page: Any, upstream_server: FakeUpstream) -> None:
    upstream_server.reset(Script(deltas=["Half ", "a ", "reply"], delay=0.05, cut_after=2))
    server = LiveServer(
        {"OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": upstream_server.base_url, "LOG_FORMAT": "json"}
    )
    try:
        page.goto(server.url + "/")
        page.get_by_label("Message").fill("hello")
        page.keyboard.press("Enter")
        wait_state(page, "error")
        assert last_reply(page).locator(".text").inner_text() == "Half a "
        assert last_reply(page).locator(".error").inner_text() == "The connection to the model broke."
    finally:
        server.stop()


def test_a_server_that_asks_for_a_key_gets_it_from_the_page(page: Any) -> None:
    server = LiveServer({"DEMO_DELAY_MS": "5", "API_KEYS": "page-key"})
    try:
        page.goto(server.url + "/")
        page.get_by_label("Message").fill("hello")
        page.keyboard.press("Enter")
        wait_state(page, "error")
        assert last_reply(page).locator(".error").inner_text().startswith("A valid API key is required")
        page.get_by_label("API key").fill("page-key")
        page.get_by_label("API key").dispatch_event("change")
        page.get_by_label("Message").fill("hello again")
        page.keyboard.press("Enter")
        assert wait_state(page, "done") == "done"
        page.reload()  # the key stays for the tab
        assert page.get_by_label("API key").input_value() == "page-key"
    finally:
        server.stop()


def test_the_history_sent_stays_within_the_servers_limits(page: Any, demo_page_server: LiveServer) -> None:
    page.goto(demo_page_server.url + "/")
    sizes = page.evaluate(
        """() => {
            for (let i = 0; i < 150; i++) remember(`question ${i}`, "x".repeat(5000));
            return [turns.length, JSON.stringify(turns).length, turns[turns.length - 2].content];
        }"""
    )
    assert sizes[0] <= 198 and sizes[1] <= 500_000
    assert sizes[2] == "question 149"  # the newest exchanges are the ones kept
