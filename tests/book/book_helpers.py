"""Paths and facts about the book shared by the notebook, build and browser tests."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
# The jupyter-book command of the running interpreter, whatever is first on PATH.
JUPYTER_BOOK = (sys.executable, "-c", "from jupyter_book.cli.main import main; main()")
CHAPTERS = sorted((REPO_ROOT / "chapters").glob("*.ipynb"))
#: The quiet kernel profile that chapters/conftest.py gives nbval's kernels.
IPYTHON_PROFILES = REPO_ROOT / "tests" / "book" / "ipython"


def book_config() -> dict:
    return yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))


def toc_files() -> list[str]:
    """Every file named in _toc.yml, in order, without extension."""
    toc = yaml.safe_load((REPO_ROOT / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part.get("chapters", [])]
    return files


def colab_url(notebook: Path) -> str:
    """The Colab address the book's launch button must give for ``notebook``."""
    repository = book_config()["repository"]
    github = repository["url"].removeprefix("https://github.com/")
    relative = notebook.relative_to(REPO_ROOT).as_posix()
    return (
        f"https://colab.research.google.com/github/{github}/blob/{repository['branch']}/{relative}"
    )
