"""The environment of the kernels that nbval starts for the chapters.

The IPython profile kept in tests/book/ipython sets the kernel's log level to
ERROR, so that its start-up chatter on stderr (a TCP warning on some machines)
cannot fail strict nbval.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
os.environ["IPYTHONDIR"] = str(REPO_ROOT / "tests" / "book" / "ipython")
