"""optimlib needs torch alone: numpy and tqdm, which torch uses when they are
installed (``torch.hub`` imports tqdm, tensors convert to numpy), are not
needed by the library, its compiled fused path included.

``tests/repository/test_torch_floor.py`` installs torch alone and runs every
library test; this check runs in any environment by making both imports fail.
"""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys, warnings
sys.modules["numpy"] = None  # any "import numpy" now raises ImportError
sys.modules["tqdm"] = None
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch
import optimlib
weight = torch.ones(10, requires_grad=True)
weight.grad = torch.full((10,), 0.5)
optimlib.Adam([weight], foreach=False).step()
optimlib.Adam([weight], fused=True).step()
optimlib.Lion([weight], fused=True).step()
print("stepped", bool(torch.isfinite(weight).all()))
"""


def test_optimlib_imports_and_steps_with_numpy_and_tqdm_unimportable():
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "stepped True"


def test_import_optimlib_loads_no_package_that_import_torch_did_not():
    """numpy and tqdm appear in ``sys.modules`` after ``import optimlib`` only
    because ``import torch`` loaded them; optimlib itself adds nothing."""
    script = (
        "import sys, torch; before = {name.split('.')[0] for name in sys.modules}\n"
        "import optimlib; after = {name.split('.')[0] for name in sys.modules}\n"
        "print(sorted(after - before))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['optimlib']"
