"""Every built chapter, opened in headless Chromium over HTTP, shows maths, figures and Colab."""

from __future__ import annotations

import functools
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.book.book_helpers import CHAPTERS, REPO_ROOT, colab_url

pytestmark = [pytest.mark.book, pytest.mark.browser]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


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


def _page(notebook: Path) -> str:
    return notebook.relative_to(REPO_ROOT).with_suffix(".html").as_posix()


@pytest.fixture(scope="module")
def rendered(chromium, site: str, tmp_path_factory) -> dict[Path, str]:
    """The DOM of every chapter after its scripts (MathJax included) have run."""
    return {
        notebook: chromium.dump_dom(f"{site}/{_page(notebook)}", tmp_path_factory.mktemp("profile"))
        for notebook in CHAPTERS
    }


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda path: path.name)
def test_maths_is_typeset_by_mathjax(rendered, built_book: Path, notebook):
    static = (built_book / _page(notebook)).read_text(encoding="utf-8")
    formulas = static.count('class="math notranslate nohighlight"')
    dom = rendered[notebook]
    typeset = dom.count("<mjx-container")
    assert formulas > 0, "the chapter has no formulas to check"
    assert typeset >= formulas, f"{typeset} of {formulas} formulas were typeset"
    assert "<mjx-merror" not in dom, "MathJax reported a TeX error"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda path: path.name)
def test_figures_are_in_the_page(rendered, notebook):
    assert re.search(r'<img[^>]+src="(\.\./_images/[^"]+\.png)"', rendered[notebook])


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda path: path.name)
def test_colab_entry_points_at_this_notebook(rendered, notebook):
    assert f'href="{colab_url(notebook)}"' in rendered[notebook]


def test_screenshot_is_not_blank(chromium, site: str, tmp_path: Path):
    from PIL import Image

    picture = chromium.screenshot(f"{site}/{_page(CHAPTERS[0])}", tmp_path)
    colours = Image.open(picture).convert("L").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 16, "the page rendered as a flat image"
