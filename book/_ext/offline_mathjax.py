"""Serve MathJax from the built site instead of a CDN.

MathJax 3 ships in the ``django-static-mathjax`` package (a plain data package:
it does not need Django). After an HTML build this extension copies its ``es5``
bundle to ``_static/mathjax`` in the output, where ``mathjax_path`` in
``_config.yml`` points, so the book typesets formulas with no network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError


def mathjax_bundle() -> Path:
    """The directory holding ``tex-mml-chtml.js`` and its fonts."""
    try:
        import mathjax  # the django-static-mathjax distribution
    except ImportError as error:
        raise ExtensionError(
            "offline_mathjax needs the django-static-mathjax package: "
            "pip install -c constraints.txt -e '.[book]'"
        ) from error
    bundle = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    if not (bundle / "tex-mml-chtml.js").is_file():
        raise ExtensionError(f"offline_mathjax: no MathJax bundle at {bundle}")
    return bundle


def copy_mathjax(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "mathjax"
    shutil.copytree(mathjax_bundle(), target, dirs_exist_ok=True)


def check_mathjax_path(app: Sphinx) -> None:
    if app.config.mathjax_path.startswith(("http://", "https://", "//")):
        raise ExtensionError(
            f"offline_mathjax: mathjax_path is {app.config.mathjax_path!r}, a remote URL; "
            "set it to mathjax/tex-mml-chtml.js so the copied bundle is used"
        )
    mathjax_bundle()


def setup(app: Sphinx) -> dict[str, object]:
    app.connect("builder-inited", check_mathjax_path)
    app.connect("build-finished", copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
