"""Draw the README's picture of the chat page: ``python -m tests.live.screenshot [path]``.

It starts the real server on the demo model, keeps a few conversations in it, and photographs
the page in headless Chromium (Debian's package) at a laptop's width.
"""

from __future__ import annotations

import sys
from pathlib import Path

import requests
from playwright.sync_api import expect, sync_playwright

from ..support import ROOT, LiveServer
from .test_page import CHROMIUM, FLAGS

OLDER = ["Give me tips for a trip to Lisbon", "Explain how tides work"]


def draw(path: Path) -> None:
    """Photograph a conversation with a reply rendered from Markdown (a list, a code block), and
    the side list; ``-dark`` beside it, the same in the dark scheme."""
    server = LiveServer({"DEMO_DELAY_MS": "30"})
    try:
        for message in OLDER:
            created = requests.post(f"{server.url}/api/conversations", json={}, timeout=10).json()
            turn = {"conversation_id": created["id"], "message": message}
            requests.post(f"{server.url}/api/chat", json=turn, timeout=30).raise_for_status()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.goto(server.url + "/")
            box = page.get_by_label("Message")
            box.fill("Give me tips for learning a language")
            box.press("Enter")
            expect(page.locator(".assistant").last).to_have_attribute("data-status", "complete")
            box.fill("Write a python function that checks for a palindrome")
            box.press("Enter")
            expect(page.locator(".assistant").last).to_have_attribute("data-status", "complete")
            expect(page.locator("#conversations li")).to_have_count(len(OLDER) + 1)
            page.locator(".assistant .code").last.scroll_into_view_if_needed()
            page.screenshot(path=str(path))
            page.emulate_media(color_scheme="dark")
            page.screenshot(path=str(path.with_name(path.stem + "-dark" + path.suffix)))
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    draw(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "chat.png")
