"""Real-browser tests (marker ``browser``): the offline course book and the visdom dashboard,
opened in Debian's Chromium through Playwright (README, "The course book").

Playwright cannot download its own browsers here, so it drives the system Chromium
(``/usr/bin/chromium``; ``MMCOURSE_CHROMIUM`` overrides). Without it these tests are skipped
with the install command, except under ``CI=true``, where a missing browser fails.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mmcourse import book, dashboard, runner

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "build" / "screenshots"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--no-proxy-server",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BOOK_NOTEBOOKS = ["00_welcome", "04_alignment_contrastive"]


def chromium_path() -> str | None:
    return os.environ.get("MMCOURSE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    if exe is None:
        why = ("no Chromium found: install it with `sudo apt-get install -y chromium` "
               "(or set MMCOURSE_CHROMIUM to its path)")
        if os.environ.get("CI") == "true":
            pytest.fail(why + " — CI must run the browser tests")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """Notebooks 00 and 04 executed (smoke, strict checks) and the book built from them."""
    build = tmp_path_factory.mktemp("build")
    rows = runner.run(BOOK_NOTEBOOKS, build_dir=build, profile="smoke", timeout=600, strict_checks=True)
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    index = book.build_book(build)
    return build, index


def test_book_and_pages_load_nothing_from_the_web(built_book):
    build, index = built_book
    assert index.is_file()
    assert book.external_references(index.parent) == []
    pages = sorted(build.glob("*.html"))
    assert {p.stem for p in pages} >= set(BOOK_NOTEBOOKS)
    assert [r for r in book.external_references(build) if "book/" not in r] == []
    assert (build / "_static" / "mathjax" / book.MATHJAX_ENTRY).is_file()


def test_book_page_renders_math_and_figures(built_book, browser):
    build, index = built_book
    page = browser.new_page(viewport={"width": 1280, "height": 2000})
    page.goto((index.parent / "04_alignment_contrastive.html").as_uri())
    page.wait_for_selector("mjx-container", timeout=30_000)
    page.wait_for_load_state("load")
    assert page.locator("mjx-container").count() > 10
    text = page.inner_text("main")
    assert "$$" not in text and "\\frac" not in text and "InfoNCE" in text
    sizes = page.eval_on_selector_all("main img", "imgs => imgs.map(i => [i.src, i.naturalWidth])")
    assert len(sizes) >= 3 and all(w > 0 for _, w in sizes), sizes
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "book_04_alignment_contrastive.png"))
    page.close()


def test_single_notebook_page_renders_math_offline(built_book, browser):
    build, _ = built_book
    page = browser.new_page(viewport={"width": 1280, "height": 1600})
    page.goto((build / "04_alignment_contrastive.html").as_uri())
    page.wait_for_selector("mjx-container", timeout=30_000)
    assert "$$" not in page.inner_text("body")
    page.screenshot(path=str(SHOTS / "page_04_alignment_contrastive.png"))
    page.close()


def test_book_search_finds_infonce_in_notebook_04(built_book, browser):
    _, index = built_book
    page = browser.new_page()
    page.goto((index.parent / "search.html").as_uri() + "?q=InfoNCE")
    page.wait_for_selector("ul.search li", timeout=30_000)
    hits = page.eval_on_selector_all("ul.search li a", "as => as.map(a => a.getAttribute('href'))")
    assert any("04_alignment_contrastive" in h for h in hits), hits
    page.close()


def test_dashboard_page_shows_the_curve_of_a_fit(browser, tmp_path):
    from test_dashboard import _tiny_fit  # tests/ is on sys.path (pytest prepend mode)

    if missing := dashboard.static_missing():
        pytest.fail(f"visdom's static files are missing ({missing[0]}): run `make env`")
    port = dashboard.free_port()
    proc = dashboard.serve(port=port, env_path=str(tmp_path / "visdom"), block=False)
    try:
        cb = dashboard.live("browser", env="browser_test", port=port, every=2)
        assert cb.backend == "visdom"
        _tiny_fit(cb)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/env/browser_test")
        page.wait_for_selector(".js-plotly-plot", timeout=30_000)
        titles = page.inner_text("body")
        assert "browser" in titles and page.locator(".js-plotly-plot").count() >= 2
        assert page.locator(".js-plotly-plot .scatterlayer .trace").count() >= 1  # a drawn curve
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "dashboard.png"))
        page.close()
    finally:
        dashboard.stop(proc)
