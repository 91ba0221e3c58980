"""The book builds with warnings as errors, offline, with every chapter in it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.book.book_helpers import CHAPTERS, JUPYTER_BOOK, REPO_ROOT, colab_url

pytestmark = pytest.mark.book

REMOTE = re.compile(r"""<(?:script|link|img)\b[^>]*?\s(?:src|href)="((?:https?:)?//[^"]+)\"""")


def test_build_is_clean(built_book: Path):
    assert (built_book / "index.html").is_file()


def test_mathjax_is_served_from_the_site(built_book: Path):
    bundle = built_book / "_static" / "mathjax"
    assert (bundle / "tex-mml-chtml.js").is_file()
    assert any((bundle / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    page = (built_book / "chapters" / "01_gradient_descent.html").read_text(encoding="utf-8")
    assert 'src="../_static/mathjax/tex-mml-chtml.js"' in page


def test_no_page_loads_anything_from_the_network(built_book: Path):
    for page in built_book.rglob("*.html"):
        remote = REMOTE.findall(page.read_text(encoding="utf-8"))
        assert not remote, f"{page.relative_to(built_book)} loads {remote}"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda path: path.name)
def test_each_chapter_has_a_page_with_its_figures_and_colab_link(built_book: Path, notebook):
    relative = notebook.relative_to(REPO_ROOT).with_suffix(".html")
    page = built_book / relative
    html = page.read_text(encoding="utf-8")
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', html)
    assert images, f"{relative} shows no figure"
    for image in images:
        assert (page.parent / image).resolve().is_file(), f"{relative}: missing {image}"
    assert f'href="{colab_url(notebook)}"' in html


def test_a_broken_reference_fails_the_build(tmp_path: Path):
    """-n -W must turn a dangling cross-reference into a failed build."""
    book = tmp_path / "book"
    book.mkdir()
    (book / "_config.yml").write_text("title: t\nexecute:\n  execute_notebooks: 'off'\n")
    (book / "_toc.yml").write_text("format: jb-book\nroot: index\n")
    (book / "index.md").write_text("# Index\n\nSee {doc}`missing-page`.\n")
    result = subprocess.run(
        [*JUPYTER_BOOK, "build", str(book), "-n", "-W", "--keep-going"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode != 0
    assert "missing-page" in result.stdout + result.stderr
