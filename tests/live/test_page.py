"""The chat page in a real browser: headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ..support import SECRET_KEY, FakeUpstream, LiveServer, Script

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
expect.set_options(timeout=15_000)  # a whole demo reply, on a busy machine

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Chromium is not installed (make test installs Debian's chromium where it runs as root)",
)
IN_URL = re.compile(r"\?c=")  # the open conversation's id is in the address
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
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def demo_page_server() -> Iterator[LiveServer]:
    server = LiveServer({"DEMO_DELAY_MS": "40", "LOG_FORMAT": "json", "MAX_MESSAGE_CHARS": "300"})
    yield server
    server.stop()


class Problems:
    """What the browser complained about: CSP violations and uncaught script errors."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def watch(self, page: Any) -> Any:
        page.on("console", self.console)
        page.on("pageerror", lambda error: self.seen.append(f"uncaught: {error}"))
        return page

    def console(self, message: Any) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            self.seen.append(message.text)


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 390, "height": 780})  # a phone's width
    yield context
    context.close()


@pytest.fixture
def problems() -> Iterator[Problems]:
    problems = Problems()
    yield problems
    assert problems.seen == []


@pytest.fixture
def page(context: Any, problems: Problems) -> Any:
    return problems.watch(context.new_page())


def last_reply(page: Any) -> Any:
    return page.locator(".assistant").last


def send(page: Any, message: str) -> None:
    page.get_by_label("Message").fill(message)
    page.keyboard.press("Enter")


def open_id(page: Any) -> str:
    """The id of the conversation the page shows, from its address."""
    expect(page).to_have_url(IN_URL)
    return str(page.url.split("?c=", 1)[1])


def drawn(page: Any, markdown: str) -> str:
    """The text the page's Markdown renderer makes of ``markdown`` drawn in one go."""
    return str(
        page.evaluate(
            "(text) => { const box = document.createElement('div'); box.append(renderMarkdown(text)); "
            "return box.textContent; }",
            markdown,
        )
    )


def make_conversation(server: LiveServer, *messages: str, **fields: str) -> str:
    """A stored conversation with a finished turn per message, made through the API."""
    created = requests.post(f"{server.url}/api/conversations", json=fields, timeout=10)
    assert created.status_code == 201, created.text
    conversation_id = str(created.json()["id"])
    for message in messages:
        turn = {"conversation_id": conversation_id, "message": message}
        assert requests.post(f"{server.url}/api/chat", json=turn, timeout=30).status_code == 200
    return conversation_id


def test_the_reply_grows_as_chunks_arrive(page: Any, demo_page_server: LiveServer) -> None:
    page.goto(demo_page_server.url + "/")
    # Every length the reply's text had on screen, recorded as the page changes it.
    page.evaluate(
        """() => {
            window.lengths = [];
            new MutationObserver(() => {
                const text = document.querySelector(".assistant .text");
                if (text) window.lengths.push(text.textContent.length);
            }).observe(document.getElementById("log"), {childList: true, subtree: true, characterData: true});
        }"""
    )
    send(page, "Tell me a story about a robot")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    final = last_reply(page).locator(".text").inner_text()
    growth = sorted({n for n in page.evaluate("window.lengths") if 0 < n < len(final)})
    assert len(growth) >= 2, growth  # seen part-way at least twice before it was complete
    assert "software" in final and final.endswith((".", ")"))  # the robot story: about machines
    meta = last_reply(page).locator(".meta").inner_text()
    assert meta.startswith("first token ") and " ms · total " in meta


def test_two_turns_are_kept_on_the_server_and_shown_after_a_reload(
    page: Any, demo_page_server: LiveServer
) -> None:
    sent: list[tuple[str, dict[str, str], Any]] = []
    page.on(
        "request",
        lambda r: (
            sent.append((r.url.split("/api/")[1], r.headers, json.loads(r.post_data)))
            if r.method == "POST"
            else None
        ),
    )
    page.goto(demo_page_server.url + "/")
    send(page, "Name a planet")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    conversation_id = open_id(page)
    send(page, "And another one?")
    expect(page.locator(".assistant[data-status=complete]")).to_have_count(2)
    # A new conversation is made first; each turn then sends only its message.
    assert [(path, body) for path, _, body in sent] == [
        ("conversations", {}),
        ("chat/stream", {"conversation_id": conversation_id, "message": "Name a planet"}),
        ("chat/stream", {"conversation_id": conversation_id, "message": "And another one?"}),
    ]
    assert sent[1][1]["accept"] == "text/event-stream"
    replies = page.locator(".assistant .text").all_inner_texts()
    assert all(replies) and replies[0] != replies[1]
    # The list now has it, titled by the server after its first message.
    page.get_by_role("button", name="Chats").click()
    expect(page.locator("#conversations li").first).to_have_attribute("data-id", conversation_id)
    expect(page.locator("#conversations li").first.get_by_role("link")).to_have_text("Name a planet")

    page.reload()
    expect(page.locator(".turn")).to_have_count(4)
    assert page.locator(".user .text").all_inner_texts() == ["Name a planet", "And another one?"]
    assert page.locator(".assistant .text").all_inner_texts() == replies
    expect(page.locator(".assistant[data-status=complete]")).to_have_count(2)
    expect(page.get_by_role("heading", level=1)).to_have_text("Name a planet")


def test_stop_stops_the_reply_on_the_server_and_it_is_kept_as_stopped(
    page: Any, demo_page_server: LiveServer
) -> None:
    request_ids: list[str] = []
    page.on(
        "response",
        lambda r: request_ids.append(r.headers.get("x-request-id", "")) if "/api/chat" in r.url else None,
    )
    page.goto(demo_page_server.url + "/")
    send(page, "Explain the history of lighthouses")
    expect(last_reply(page)).to_have_attribute("data-status", "streaming")
    expect(last_reply(page).locator(".text")).to_have_text(re.compile(r"\S+ \S+ \S+"))  # a few words in
    page.get_by_role("button", name="Stop").click()
    expect(last_reply(page)).to_have_attribute("data-status", "stopped")
    stopped_at = last_reply(page).locator(".text").inner_text()
    line = demo_page_server.wait_for_access_line(request_ids[-1])
    assert line["outcome"] == "stopped"  # the stream got the reply's end: stopped on the server
    assert stopped_at and last_reply(page).locator(".error").inner_text() == "Stopped."
    assert page.get_by_role("button", name="Send").is_enabled()

    page.reload()
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "stopped")
    expect(reply.locator(".error")).to_have_text("Stopped.")
    assert reply.locator(".text").inner_text() == stopped_at  # what was shown is what was kept


def test_a_reload_mid_reply_picks_it_up_and_it_grows_to_its_end(
    page: Any, demo_page_server: LiveServer
) -> None:
    page.goto(demo_page_server.url + "/")
    send(page, "Describe the tides of the northern sea")
    expect(last_reply(page).locator(".text")).to_have_text(re.compile(r"\S+ \S+ \S+"))
    conversation_id = open_id(page)
    page.reload()
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "streaming")
    lengths = []
    while reply.get_attribute("data-status") == "streaming":
        lengths.append(len(reply.locator(".text").inner_text()))
        page.wait_for_timeout(80)
    expect(reply).to_have_attribute("data-status", "complete")
    assert len(set(lengths)) > 3  # it grew while it was followed, not in one piece at the end
    stored = requests.get(f"{demo_page_server.url}/api/conversations/{conversation_id}", timeout=10).json()
    assert stored["messages"][-1]["status"] == "complete"
    # What was shown, grown from the reattachment, is the stored reply drawn whole: no text twice.
    shown = reply.locator(".text").text_content() or ""
    assert " ".join(shown.split()) == " ".join(drawn(page, stored["messages"][-1]["content"]).split())


def test_stop_after_a_reload_stops_the_reply_on_the_server(page: Any, demo_page_server: LiveServer) -> None:
    page.goto(demo_page_server.url + "/")
    send(page, "Write about the long winters of the mountains")
    expect(last_reply(page).locator(".text")).to_have_text(re.compile(r"\S+ \S+"))
    conversation_id = open_id(page)
    page.reload()
    expect(last_reply(page)).to_have_attribute("data-status", "streaming")
    expect(last_reply(page).locator(".text")).to_have_text(re.compile(r"\S+ \S+ \S+"))
    page.get_by_role("button", name="Stop").click()
    expect(last_reply(page)).to_have_attribute("data-status", "stopped")
    shown = last_reply(page).locator(".text").inner_text()
    stored = requests.get(f"{demo_page_server.url}/api/conversations/{conversation_id}", timeout=10).json()
    assert stored["messages"][-1]["status"] == "stopped"
    assert " ".join(shown.split()) == " ".join(drawn(page, stored["messages"][-1]["content"]).split())


def test_a_server_error_shows_its_sentence(page: Any, demo_page_server: LiveServer) -> None:
    page.goto(demo_page_server.url + "/")
    send(page, "x" * 301)
    expect(last_reply(page)).to_have_attribute("data-status", "error")
    error = last_reply(page).locator(".error").inner_text()
    assert error == "'message' is 301 characters long; the limit is 300."


def test_shift_enter_is_a_new_line(page: Any, demo_page_server: LiveServer) -> None:
    page.goto(demo_page_server.url + "/")
    box = page.get_by_label("Message")
    box.fill("first line")
    box.press("Shift+Enter")
    box.type("second line")
    assert box.input_value() == "first line\nsecond line"
    assert page.locator(".turn").count() == 0  # nothing was sent


def test_the_side_list_opens_renames_and_deletes(page: Any, demo_page_server: LiveServer) -> None:
    older = make_conversation(demo_page_server, "Describe the moon")
    newer = make_conversation(demo_page_server, "Describe the sea", "Why is it salty?")
    page.goto(demo_page_server.url + "/")
    chats = page.get_by_role("button", name="Chats")
    side = page.get_by_role("navigation", name="Conversations")
    expect(side).to_be_hidden()  # on a phone the list waits behind a button
    chats.click()
    expect(side).to_be_visible()
    ids = side.locator("li").evaluate_all("items => items.map(item => item.dataset.id)")
    assert ids.index(newer) < ids.index(older)  # newest first

    side.get_by_role("link", name="Describe the sea").click()
    expect(side).to_be_hidden()
    assert open_id(page) == newer
    expect(page.locator(".turn")).to_have_count(4)
    assert page.locator(".user .text").all_inner_texts() == ["Describe the sea", "Why is it salty?"]

    chats.click()
    side.get_by_role("button", name="Rename Describe the sea").click()
    title = side.get_by_label("New title")
    title.fill("Salt water")
    title.press("Enter")
    expect(side.get_by_role("link", name="Salt water")).to_be_visible()
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_have_text("Salt water")
    chats.click()
    expect(side.get_by_role("link", name="Salt water")).to_be_visible()

    page.once("dialog", lambda dialog: dialog.accept())
    side.get_by_role("button", name="Delete Salt water").click()
    expect(side.locator(f'li[data-id="{newer}"]')).to_have_count(0)
    expect(page).not_to_have_url(IN_URL)  # the open one went: a new chat
    expect(page.locator(".turn")).to_have_count(0)

    page.goto(f"{demo_page_server.url}/?c={newer}")
    gone = requests.get(f"{demo_page_server.url}/api/conversations/{newer}", timeout=10)
    assert gone.status_code == 404
    notice = page.get_by_role("alert")
    expect(notice).to_contain_text(gone.json()["error"])
    notice.get_by_role("button", name="Start a new chat").click()
    expect(notice).to_be_hidden()
    expect(page).not_to_have_url(IN_URL)


def test_a_second_tab_follows_the_reply_being_written_and_the_list_marks_it(
    context: Any, problems: Problems, demo_page_server: LiveServer
) -> None:
    first, second = (problems.watch(context.new_page()) for _ in range(2))
    first.goto(demo_page_server.url + "/")
    send(first, "Tell me about the slow growth of oak trees")
    expect(last_reply(first)).to_have_attribute("data-status", "streaming")
    second.goto(first.url)
    expect(last_reply(second)).to_have_attribute("data-status", "streaming")
    second.get_by_role("button", name="☰ Chats").click()
    marked = second.locator("#conversations li[aria-current=page] .live")
    expect(marked).to_have_attribute("aria-label", "A reply is being written")
    expect(second.get_by_role("button", name="Send")).to_be_disabled()  # one reply at a time
    expect(last_reply(first)).to_have_attribute("data-status", "complete")
    expect(last_reply(second)).to_have_attribute("data-status", "complete")
    assert last_reply(second).locator(".text").inner_text() == last_reply(first).locator(".text").inner_text()
    expect(marked).to_have_count(0)  # the mark goes once the reply has ended
    expect(second.get_by_role("button", name="Send")).to_be_enabled()


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
        ('data: {"type":"done","usage":null}\n\n', "complete", None),
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
    send(page, "Think first")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", status)
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
    # No pause: the last text and the error come together, in one frame of the page's.
    upstream_server.reset(Script(deltas=["Half ", "a ", "reply"], cut_after=2))
    server = LiveServer(
        {"OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": upstream_server.base_url, "LOG_FORMAT": "json"}
    )
    try:
        page.goto(server.url + "/")
        # What the reply showed at the instant its status changed: the text is whole by then.
        page.evaluate(
            """() => {
                window.statuses = [];
                new MutationObserver((changes) => {
                    for (const {target} of changes) {
                        const text = target.querySelector(".text").textContent.trim();
                        window.statuses.push([target.dataset.status, text]);
                    }
                }).observe(document.getElementById("log"), {subtree: true, attributeFilter: ["data-status"]});
            }"""
        )
        send(page, "hello")
        expect(last_reply(page)).to_have_attribute("data-status", "error")
        assert page.evaluate("window.statuses").count(["error", "Half a"]) == 1
        assert last_reply(page).locator(".text").inner_text() == "Half a"  # Markdown: a paragraph, trimmed
        assert last_reply(page).locator(".error").inner_text() == "The connection to the model broke."
        page.reload()  # kept as failed, with the text that came before the failure
        expect(last_reply(page)).to_have_attribute("data-status", "error")
        assert last_reply(page).locator(".text").inner_text() == "Half a"  # Markdown: a paragraph, trimmed
        assert last_reply(page).locator(".error").inner_text() == "Failed."
    finally:
        server.stop()


def test_a_server_that_asks_for_a_key_gets_it_from_the_page(page: Any) -> None:
    server = LiveServer({"DEMO_DELAY_MS": "5", "API_KEYS": "page-key"})
    try:
        page.goto(server.url + "/")
        status = page.locator("#list-status")
        expect(status).to_contain_text("A valid API key is required")
        send(page, "hello")
        expect(last_reply(page)).to_have_attribute("data-status", "error")
        assert last_reply(page).locator(".error").inner_text().startswith("A valid API key is required")
        page.get_by_label("API key").fill("page-key")
        page.get_by_label("API key").dispatch_event("change")
        expect(status).to_have_text("No conversations yet.")
        send(page, "hello again")
        expect(last_reply(page)).to_have_attribute("data-status", "complete")
        page.reload()  # the key stays for the tab, and the conversation is loaded with it
        assert page.get_by_label("API key").input_value() == "page-key"
        expect(page.locator(".turn")).to_have_count(2)
        assert page.locator(".user .text").all_inner_texts() == ["hello again"]
    finally:
        server.stop()


# --- Replies shown as Markdown, safely ---------------------------------------------------------


@pytest.fixture(scope="module")
def scripted_server(upstream_server: FakeUpstream) -> Iterator[LiveServer]:
    """The real server in front of the fake upstream: each test scripts the reply it needs."""
    server = LiveServer(
        {"OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": upstream_server.base_url, "LOG_FORMAT": "json"}
    )
    yield server
    server.stop()


def reply_with(upstream: FakeUpstream, text: str, pieces: int = 7, delay: float = 0.0) -> None:
    """Script the fake upstream to send ``text`` cut into deltas of about ``pieces`` characters."""
    upstream.reset(Script(deltas=[text[at : at + pieces] for at in range(0, len(text), pieces)], delay=delay))


MARKDOWN = """# Plan

Use **bold** and `inline code`, with a [link](https://example.com/docs).

1. first
2. second
   - nested

| name | size |
| --- | ---: |
| apple | 3 |

```python
def add(a, b):
    return a + b
```
"""


def test_a_reply_is_rendered_as_markdown_with_code_to_copy(
    context: Any, problems: Problems, scripted_server: LiveServer, upstream_server: FakeUpstream
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = problems.watch(context.new_page())
    reply_with(upstream_server, MARKDOWN)
    page.goto(scripted_server.url + "/")
    send(page, "Show me some Markdown")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "complete")
    text = reply.locator(".text")
    expect(text.locator("h1")).to_have_text("Plan")
    expect(text.locator("strong")).to_have_text("bold")
    expect(text.locator("p code")).to_have_text("inline code")
    link = text.locator("a")
    expect(link).to_have_attribute("href", "https://example.com/docs")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    assert text.locator("ol > li").all_inner_texts()[0] == "first"
    expect(text.locator("ol li ul li")).to_have_text("nested")
    expect(text.locator("table th")).to_have_text(["name", "size"])
    expect(text.locator("table td.align-right")).to_have_text("3")
    block = text.locator(".code")
    expect(block.locator(".code-head span")).to_have_text("python")
    expect(block.locator("pre code")).to_have_text("def add(a, b):\n    return a + b\n")
    block.get_by_role("button", name="Copy the python code").click()
    expect(block.get_by_role("button", name="Copy the python code")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == "def add(a, b):\n    return a + b\n"


HOSTILE = [
    "<script>window.pwned = 'script'</script>",
    "<img src=x onerror=\"window.pwned = 'img'\">",
    "[click me](javascript:window.pwned='link')",
    "<svg onload=\"window.pwned = 'svg'\"></svg>",
    '<iframe src="https://evil.example/"></iframe>',
    '<form action="https://evil.example/"><input name=a></form>',
    "<style>body { display: none }</style>",
    "[data](data:text/html;base64,PHNjcmlwdD53aW5kb3cucHduZWQ9MTwvc2NyaXB0Pg==)",
    "&lt;script&gt;window.pwned = 'entity'&lt;/script&gt; and &#60;img src=x onerror=alert(1)&#62;",
    "![tracker](https://evil.example/pixel.png)",
    '<a href="https://evil.example" onclick="window.pwned = \'a\'">x</a>',
    "[spaced](  JaVaScRiPt:window.pwned='case')",
]
ALLOWED = {
    "div",
    "p",
    "br",
    "strong",
    "em",
    "del",
    "s",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "a",
    "span",
    "button",
}  # button and span: the page's own code-block heads


@pytest.mark.parametrize("payload", HOSTILE)
def test_nothing_in_a_reply_runs_loads_or_escapes_the_sanitizer(
    page: Any, scripted_server: LiveServer, upstream_server: FakeUpstream, payload: str
) -> None:
    elsewhere: list[str] = []
    page.on(
        "request", lambda r: elsewhere.append(r.url) if not r.url.startswith(scripted_server.url) else None
    )
    reply_with(upstream_server, f"Look: {payload}\n\n{payload}\n", pieces=5)
    page.goto(scripted_server.url + "/")
    send(page, "Be hostile")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    found = page.evaluate(
        """() => {
            const text = document.querySelector(".assistant .text");
            const elements = [...text.querySelectorAll("*")];
            return {
                pwned: window.pwned || null,
                tags: [...new Set(elements.map((e) => e.tagName.toLowerCase()))],
                handlers: elements.flatMap((e) => [...e.attributes].map((a) => a.name))
                    .filter((n) => n.startsWith("on")),
                hrefs: elements.filter((e) => e.hasAttribute("href")).map((e) => e.getAttribute("href")),
            };
        }"""
    )
    assert found["pwned"] is None
    assert found["handlers"] == []
    assert set(found["tags"]) <= ALLOWED, found["tags"]
    assert all(href.startswith(("http:", "https:", "mailto:")) for href in found["hrefs"]), found["hrefs"]
    assert page.evaluate("window.pwned || null") is None
    assert elsewhere == []


def test_a_code_fence_or_table_still_coming_shows_as_text_until_it_is_whole(
    page: Any, scripted_server: LiveServer, upstream_server: FakeUpstream
) -> None:
    text = (
        "Intro line.\n\n```js\nconst a = 1;\nconst b = 2;\n```\n\n| a | b |\n| - | - |\n| 1 | 2 |\n\nEnd.\n"
    )
    reply_with(upstream_server, text, pieces=4, delay=0.08)
    page.goto(scripted_server.url + "/")
    page.evaluate(
        """() => {
            window.seen = [];
            new MutationObserver(() => {
                const text = document.querySelector(".assistant .text");
                if (!text) return;
                window.seen.push({
                    pendingPre: !!text.querySelector("pre.pending"),
                    code: !!text.querySelector(".code"),
                    pendingRows: !!text.querySelector("p.pending"),
                    table: !!text.querySelector("table"),
                });
            }).observe(document.getElementById("log"), {childList: true, subtree: true, characterData: true});
        }"""
    )
    send(page, "Fence and table")
    expect(last_reply(page)).to_have_attribute("data-status", "complete")
    seen = page.evaluate("window.seen")
    # While the fence was open its code was text; once it closed, a code block, never both at once.
    assert any(s["pendingPre"] and not s["code"] for s in seen)
    assert any(s["pendingRows"] and not s["table"] for s in seen)  # the table's rows as text first
    final = last_reply(page).locator(".text")
    expect(final.locator(".code pre code")).to_have_text("const a = 1;\nconst b = 2;\n")
    expect(final.locator("table td")).to_have_text(["1", "2"])
    expect(final.locator(".pending")).to_have_count(0)


def test_a_long_reply_is_rendered_at_most_once_a_frame(
    page: Any, scripted_server: LiveServer, upstream_server: FakeUpstream
) -> None:
    words = [f"w{n} " for n in range(3000)]
    upstream_server.reset(Script(deltas=words, burst=True))
    page.goto(scripted_server.url + "/")
    send(page, "Many words")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "complete")
    expect(reply.locator(".text")).to_have_text("".join(words).strip())
    frames = int(reply.locator(".text").get_attribute("data-frames") or 0)
    assert 0 < frames < len(words) / 10  # a burst of deltas, rendered a frame at a time


def test_the_page_follows_the_systems_dark_setting(browser: Any, demo_page_server: LiveServer) -> None:
    colours = {}
    for scheme in ("light", "dark"):
        context = browser.new_context(color_scheme=scheme)
        page = context.new_page()
        page.goto(demo_page_server.url + "/")
        colours[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
        context.close()
    assert colours == {"light": "rgb(255, 255, 255)", "dark": "rgb(13, 17, 23)"}


def test_the_page_works_by_keyboard_and_tells_a_screen_reader_when_a_reply_ends(
    page: Any, demo_page_server: LiveServer
) -> None:
    page.goto(demo_page_server.url + "/")
    expect(page.get_by_label("Message")).to_be_focused()  # ready to type
    page.keyboard.type("Tell me about rivers")
    page.keyboard.press("Enter")
    expect(last_reply(page)).to_have_attribute("data-status", "streaming")
    page.keyboard.press("Escape")  # stops the reply being written
    expect(last_reply(page)).to_have_attribute("data-status", "stopped")
    expect(page.locator("#announce")).to_have_text("The reply was stopped.")
    expect(page.locator("#announce")).to_have_attribute("aria-live", "polite")
    page.keyboard.type("And lakes?")
    page.keyboard.press("Enter")
    expect(page.locator("#announce")).to_have_text("The reply is complete.")
    # Tab reaches the side list's controls, and what has the focus is outlined.
    page.keyboard.press("Shift+Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid", outline
