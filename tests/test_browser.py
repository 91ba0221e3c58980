"""A built chapter, opened in headless Chromium over HTTP, shows maths, figures and Colab."""

from __future__ import annotations

import functools
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.book_helpers import REPO_ROOT, colab_url

pytestmark = [pytest.mark.book, pytest.mark.browser]

CHAPTER = REPO_ROOT / "chapters" / "01_gradient_descent.ipynb"


@pytest.fixture(scope="module")
def site(built_book: Path) -> Iterator[str]:
    """Serve the built book on a loopback port for the length of the module."""
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def chapter_dom(chromium, site: str, tmp_path_factory) -> str:
    url = f"{site}/chapters/01_gradient_descent.html"
    return chromium.dump_dom(url, tmp_path_factory.mktemp("profile"))


def test_maths_is_typeset_by_mathjax(chapter_dom: str, built_book: Path):
    static = (built_book / "chapters" / "01_gradient_descent.html").read_text(encoding="utf-8")
    formulas = static.count('class="math notranslate nohighlight"')
    rendered = chapter_dom.count("<mjx-container")
    assert formulas > 20
    assert rendered >= formulas, f"{rendered} of {formulas} formulas were typeset"
    assert "<mjx-merror" not in chapter_dom, "MathJax reported a TeX error"


def test_figures_are_in_the_page(chapter_dom: str):
    images = re.findall(r'<img[^>]+src="(\.\./_images/[^"]+\.png)"', chapter_dom)
    assert len(images) >= 4


def test_colab_entry_points_at_this_notebook(chapter_dom: str):
    assert f'href="{colab_url(CHAPTER)}"' in chapter_dom


def test_screenshot_is_not_blank(chromium, site: str, tmp_path: Path):
    from PIL import Image

    picture = chromium.screenshot(f"{site}/chapters/01_gradient_descent.html", tmp_path)
    colours = Image.open(picture).convert("L").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 16, "the page rendered as a flat image"
