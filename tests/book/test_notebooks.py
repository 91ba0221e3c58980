"""The chapters are stored executed, in order, and install optimlib the right way.

The notebooks themselves are re-executed and compared cell by cell by nbval
(``--nbval`` in pyproject.toml): these tests make sure there is something for
it to compare, and that strict mode really catches a changed number.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tests.book.book_helpers import (
    CHAPTERS,
    IPYTHON_PROFILES,
    REPO_ROOT,
    book_config,
    toc_files,
)


def _code_cells(notebook: Path) -> list:
    cells = nbformat.read(notebook, as_version=4).cells
    return [cell for cell in cells if cell.cell_type == "code" and cell.source.strip()]


def test_there_are_chapters():
    assert CHAPTERS, "no notebooks found in chapters/"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda path: path.name)
def test_every_code_cell_was_executed_top_to_bottom_and_outputs_are_stored(notebook):
    cells = _code_cells(notebook)
    counts = [cell.execution_count for cell in cells]
    unexecuted = [index for index, count in enumerate(counts) if count is None]
    assert not unexecuted, (
        f"{notebook.name}: code cells {unexecuted} have no stored outputs; re-execute the "
        "notebook (see README.md, 'Changing a chapter')"
    )
    assert counts == list(range(1, len(cells) + 1)), (
        f"{notebook.name}: execution counts {counts} show cells run out of order or twice; "
        "re-execute the whole notebook in a fresh kernel"
    )
    assert any(cell.outputs for cell in cells), f"{notebook.name} stores no outputs at all"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda path: path.name)
def test_no_errors_are_stored(notebook):
    for cell in _code_cells(notebook):
        errors = [output for output in cell.outputs if output.output_type == "error"]
        assert not errors, f"{notebook.name}: a cell stores an error: {errors[0].get('ename')}"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda path: path.name)
def test_first_cell_installs_optimlib_from_the_books_repository(notebook):
    first = _code_cells(notebook)[0].source
    repository = book_config()["repository"]["url"]
    assert 'find_spec("optimlib") is None' in first
    # IPython expands {REPOSITORY} in the magic, which keeps the line short.
    assert f'REPOSITORY = "{repository}"' in first, "the repository URL must be _config.yml's"
    assert '%pip install --quiet "optimizers-from-scratch @ git+{REPOSITORY}"' in first


def test_every_chapter_is_in_the_table_of_contents():
    listed = set(toc_files())
    for notebook in CHAPTERS:
        assert notebook.relative_to(REPO_ROOT).with_suffix("").as_posix() in listed


def test_strict_nbval_fails_when_a_stored_number_changes(tmp_path):
    """Change one printed number in Chapter 1's stored outputs: nbval must object."""
    chapter = REPO_ROOT / "chapters" / "01_gradient_descent.ipynb"
    notebook = json.loads(chapter.read_text(encoding="utf-8"))
    changed = False
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            text = "".join(output.get("text", ""))
            if "after one step: theta = 76.0, b = 42.0" in text and not changed:
                output["text"] = text.replace("theta = 76.0", "theta = 76.5")
                changed = True
    assert changed, "the worked example's output line was not found"
    tampered = tmp_path / chapter.name
    tampered.write_text(json.dumps(notebook), encoding="utf-8")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--nbval",
            "--nbval-current-env",
            "-p",
            "no:cacheprovider",
            "-q",
            "-o",
            "addopts=",
            "--rootdir",
            str(tmp_path),
            str(tampered),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "IPYTHONDIR": str(IPYTHON_PROFILES)},
    )
    assert result.returncode == 1, result.stdout[-3000:]
    assert "76.5" in result.stdout and "1 failed" in result.stdout


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda path: path.stem)
def test_each_cells_printed_lines_are_stored_as_one_output(notebook):
    """Split stream outputs render as separate boxes; regenerate with coalescing (README)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    for index, cell in enumerate(cells):
        outputs = cell.get("outputs", [])
        for first, second in itertools.pairwise(outputs):
            adjacent_streams = first.get("output_type") == second.get("output_type") == "stream"
            assert not (adjacent_streams and first.get("name") == second.get("name")), (
                f"{notebook.name} cell {index}: split {first.get('name')} output"
            )


#: The book's column is about 760 px; a figure at most 11 inches wide at the
#: chapters' 100 dpi keeps its labels legible there (CONVENTIONS.md).
WIDEST_FIGURE_PX = 1100


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda path: path.stem)
def test_no_stored_figure_is_wider_than_eleven_inches(notebook):
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    for index, cell in enumerate(cells):
        for output in cell.get("outputs", []):
            png = output.get("data", {}).get("image/png")
            if png:
                (width,) = struct.unpack(">I", base64.b64decode(png)[16:20])
                assert width <= WIDEST_FIGURE_PX, (
                    f"{notebook.name} cell {index}: a figure {width} px wide "
                    f"({width / 100:.1f} in at 100 dpi)"
                )
