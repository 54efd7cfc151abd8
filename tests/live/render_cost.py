"""What rendering a long reply costs the page: ``python -m tests.live.render_cost [deltas]``.

A reply of 20,000 deltas (paragraphs, lists, a table and code blocks, a few characters each) comes
from the fake upstream at 4,000 deltas a second, through the real server, into the real page in
headless Chromium. It prints how often the reply was drawn and what a drawing cost, from the page's
own clock (render.js), and how long the main thread was busy in each animation frame.
"""

from __future__ import annotations

import statistics
import sys

from playwright.sync_api import sync_playwright

from ..fake_upstream import FakeUpstream, Script
from ..support import SECRET_KEY, LiveServer
from .test_page import CHROMIUM, FLAGS

BLOCKS = [
    "Here is a paragraph with **bold** text, `inline code` and a [link](https://example.com).\n\n",
    "- one point\n- another point\n- a third point\n\n",
    "| name | size |\n| --- | ---: |\n| apple | 3 |\n| pear | 5 |\n\n",
    "```python\ndef add(a, b):\n    return a + b\n```\n\n",
    "1. first step\n2. second step\n\n",
]


def reply(deltas: int) -> list[str]:
    """``deltas`` pieces of about five characters, cut from Markdown blocks repeated."""
    text = ""
    while len(text) < deltas * 5:
        text += "".join(BLOCKS)
    return [text[at : at + 5] for at in range(0, deltas * 5, 5)]


def measure(deltas: int) -> dict[str, float]:
    upstream = FakeUpstream(Script(deltas=reply(deltas), delay=0.00025)).start()
    server = LiveServer({"OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": upstream.base_url})
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1000, "height": 760})
            page.goto(server.url + "/")
            # The main thread's busy time per animation frame, from the browser's frame timing.
            page.evaluate(
                """() => {
                    window.frameGaps = [];
                    let last = performance.now();
                    const tick = (now) => {
                        window.frameGaps.push(now - last);
                        last = now;
                        requestAnimationFrame(tick);
                    };
                    requestAnimationFrame(tick);
                }"""
            )
            box = page.get_by_label("Message")
            box.fill("A long one, please")
            box.press("Enter")
            # Waiting by a plain property: Playwright's own locators would walk the whole page.
            page.wait_for_function(
                "() => document.querySelector('.assistant')?.dataset.status === 'complete'",
                polling=500,
                timeout=120_000,
            )
            view = page.evaluate(
                """() => {
                    const view = document.querySelector('.assistant .text').markdownView;
                    return {frames: view.frames, renderMs: view.renderMs, longestMs: view.longestMs,
                            chars: view.text.length, gaps: window.frameGaps};
                }"""
            )
            browser.close()
    finally:
        server.stop()
        upstream.stop()
    gaps = sorted(view["gaps"])
    return {
        "deltas": deltas,
        "chars": view["chars"],
        "frames_drawn": view["frames"],
        "render_ms_per_frame_mean": view["renderMs"] / view["frames"],
        "render_ms_per_frame_max": view["longestMs"],
        "frame_interval_ms_p50": statistics.median(gaps),
        "frame_interval_ms_p99": gaps[int(0.99 * (len(gaps) - 1))],
    }


if __name__ == "__main__":
    figures = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
    for name, value in figures.items():
        print(f"{name:28} {value:,.2f}" if isinstance(value, float) else f"{name:28} {value:,}")
