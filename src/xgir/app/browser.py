"""Drive the app in a real browser (Debian's Chromium through Playwright, a test dependency): the walk
of tests/test_app_browser.py and benchmarks/app_screenshots.py,
gallery -> image page with CWOX -> annotator (click a proposed segment, save with the key s) ->
reload -> fine-tune -> the before/after page. Returns what it saw; screenshots go to ``shots``."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(state) -> Iterator[str]:
    """Run the app with uvicorn in a thread on a free local port; yields its base URL."""
    import uvicorn

    from xgir.app.server import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(state), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def browser_page(timeout_ms: int = 60_000) -> Iterator:
    """A Chromium page (1280 x 860) with ``timeout_ms`` for every wait; the browser closes after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.set_default_timeout(timeout_ms)
            yield page
        finally:
            browser.close()


def walk(base: str, db: Path, shots: Path | None = None, epochs: int = 2, image: int = 0,
         timeout_ms: int = 60_000) -> dict:
    seen: dict = {}

    def shot(page, name: str) -> None:
        if shots is not None:
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / f"app-{name}.png"), full_page=True)

    with browser_page(timeout_ms) as page:
        page.goto(base + "/")
        seen["cards"] = page.locator("#gallery .card").count()
        shot(page, "gallery")
        page.locator(f'#gallery .card[data-id="{image}"]').click()
        page.wait_for_url(f"**/image/{image}")
        page.wait_for_function("document.getElementById('gradcam').complete && "
                               "document.getElementById('gradcam').naturalWidth > 0")
        page.click("#cwox-run")
        page.wait_for_selector("#cwox-tree")
        page.wait_for_function("[...document.querySelectorAll('#cwox img')].every(i => i.complete && i.naturalWidth)")
        seen["cwox_tree"] = page.inner_text("#cwox-tree")
        shot(page, "image-cwox")
        page.click("#annotate")
        page.wait_for_selector("#canvas[data-ready='1']")
        seg = page.request.get(f"{base}/api/images/{image}/segments").json()
        target = seg["proposed"][0]
        cells = [(r, c) for r, row in enumerate(seg["segments"]) for c, v in enumerate(row) if v == target]
        r, c = cells[len(cells) // 2]
        box = page.locator("#canvas").bounding_box()
        if box is None:
            raise RuntimeError("the annotator canvas is not visible")
        page.mouse.click(box["x"] + (c + 0.5) * box["width"] / seg["width"],
                         box["y"] + (r + 0.5) * box["height"] / seg["height"])
        seen["status_marked"] = page.inner_text("#status")
        shot(page, "annotator")
        # brush a stroke (key b), then undo it (key z), back to segments (key g)
        page.keyboard.press("b")
        y = box["y"] + 0.5 * box["height"]
        page.mouse.move(box["x"] + 2, y)
        page.mouse.down()
        page.mouse.move(box["x"] + 0.15 * box["width"], y, steps=5)
        page.mouse.up()
        seen["status_brushed"] = page.inner_text("#status")
        page.keyboard.press("z")
        seen["status_undone"] = page.inner_text("#status")
        page.keyboard.press("g")
        page.keyboard.press("s")
        page.wait_for_selector("#status[data-saved]")
        seen["status_saved"] = page.inner_text("#status")
        with sqlite3.connect(db) as conn:
            sql = "SELECT image_id, region_id, irrelevant, accepted, mask FROM feedback"
            seen["rows"] = conn.execute(sql).fetchall()
        seen["segment_cells"] = cells
        page.reload()
        page.wait_for_selector("#canvas[data-ready='1']")
        seen["status_reloaded"] = page.inner_text("#status")
        page.keyboard.press("n")
        page.wait_for_url(f"**/annotate/{image + 1}")
        page.goto(base + "/finetune")
        page.fill("input[name=epochs]", str(epochs))
        page.click("#start")
        page.wait_for_url("**/results/*", timeout=timeout_ms)
        page.wait_for_selector("#overlap")
        page.wait_for_function("[...document.querySelectorAll('table.maps img')]"
                               ".every(i => i.complete && i.naturalWidth)")
        seen["results_url"] = page.url
        seen["accuracy_table"] = page.inner_text("#accuracy")
        seen["checkpoint"] = page.inner_text("#checkpoint")
        shot(page, "before-after")
    return seen


def guards_walk(base: str, flagged_image: int, slow_image: int, shots: Path | None = None,
                timeout_ms: int = 60_000) -> dict:
    """The app's guards in a browser: "mark all proposed" on an image with flagged proposals (cancel,
    then confirm: the flagged ones stay unmarked), a fast brush stroke (continuous), the canvas size,
    and the progress of a long explainer (RISE) on another image."""
    seen: dict = {}
    with browser_page(timeout_ms) as page:
        page.goto(f"{base}/annotate/{flagged_image}")
        page.wait_for_selector("#canvas[data-ready='1']")
        box = page.locator("#canvas").bounding_box()
        if box is None:
            raise RuntimeError("the annotator canvas is not visible")
        seen["canvas"] = (box["width"], box["height"])
        seen["flagged_text"] = page.inner_text("#flagged")
        page.click("#mark-proposed")
        page.wait_for_selector("#confirm-mark[open]")
        seen["confirm_text"] = page.inner_text("#confirm-text")
        page.click("#confirm-cancel")
        seen["status_cancelled"] = page.inner_text("#status")
        page.click("#mark-proposed")
        page.click("#confirm-ok")
        seen["status_marked"] = page.inner_text("#status")
        if shots is not None:
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "app-annotator-flagged.png"), full_page=True)
        page.click("#clear")
        page.keyboard.press("b")
        page.eval_on_selector("#brush", "e => { e.value = '1'; }")
        y = box["y"] + 0.3 * box["height"]
        page.mouse.move(box["x"] + 0.05 * box["width"], y)
        page.mouse.down()
        page.mouse.move(box["x"] + 0.95 * box["width"], y, steps=2)  # a fast stroke: 2 pointer events
        page.mouse.up()
        seen["status_stroke"] = page.inner_text("#status")
        page.goto(f"{base}/image/{slow_image}")
        page.select_option("#method", "rise")
        page.fill("input[name='p.n_masks']", "4000")
        page.click("#explain-run")
        page.wait_for_function("Number((document.getElementById('explain-progress') || {dataset: {}})"
                               ".dataset.seen || 0) > 0")
        seen["progress_text"] = page.inner_text("#explain-progress-text")
        seen["progress_value"] = page.eval_on_selector("#explain-progress", "e => e.value")
        if shots is not None:
            page.screenshot(path=str(shots / "app-explain-progress.png"), full_page=True)
        page.wait_for_selector("#explanations figure img")
        seen["figure"] = page.inner_text("#explanations figcaption")
    return seen


def preconditions_walk(base: str, timeout_ms: int = 60_000) -> dict:
    """What the fine-tune and annotate pages say on an app whose images have no labels."""
    seen: dict = {}
    with browser_page(timeout_ms) as page:
        page.goto(f"{base}/finetune")
        seen["problems"] = page.locator("#problems ul:visible li").all_inner_texts()
        seen["start_disabled"] = page.is_disabled("#start")
        page.goto(f"{base}/annotate/0")
        page.wait_for_selector("#canvas[data-ready='1']")
        seen["annotate_banner"] = page.inner_text("#no-labels")
    return seen
