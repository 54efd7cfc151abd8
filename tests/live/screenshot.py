"""Draw the README's picture of the chat page: ``python -m tests.live.screenshot [path]``.

It starts the real server on the demo model, keeps a few conversations in it, and photographs
the page in headless Chromium (Debian's package) at a laptop's width.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import requests
from playwright.sync_api import expect, sync_playwright

from ..support import ROOT, LiveServer
from .test_page import CHROMIUM, FLAGS

OLDER = ["Suggest a name for a bakery", "Explain how tides work"]


def draw(path: Path) -> None:
    """Photograph a conversation with one finished and one stopped reply, and the side list."""
    server = LiveServer({"DEMO_DELAY_MS": "30"})
    try:
        for message in OLDER:
            created = requests.post(f"{server.url}/api/conversations", json={}, timeout=10).json()
            turn = {"conversation_id": created["id"], "message": message}
            requests.post(f"{server.url}/api/chat", json=turn, timeout=30).raise_for_status()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 900, "height": 640})
            page.goto(server.url + "/")
            box = page.get_by_label("Message")
            box.fill("Tell me a story about a robot")
            box.press("Enter")
            expect(page.locator(".assistant").last).to_have_attribute("data-status", "complete")
            box.fill("What happened to the robot next?")
            box.press("Enter")
            expect(page.locator(".assistant .text").last).to_have_text(re.compile(r"(\S+ ){12}"))
            page.get_by_role("button", name="Stop").click()
            expect(page.locator(".assistant").last).to_have_attribute("data-status", "stopped")
            box.fill("Shift+Enter adds a new line")
            expect(page.locator("#conversations li")).to_have_count(len(OLDER) + 1)
            page.screenshot(path=str(path))
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    draw(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "chat.png")
