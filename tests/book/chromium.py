"""Finding (or installing) headless Chromium for the browser tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Flags for a closed, sandboxed machine: no GPU, no background traffic to the
# outside world, no first-run dialogs.
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--hide-scrollbars",
)


def find_browser() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def install_with_apt() -> str:
    """Install Debian's chromium; return why it could not be done, or '' on success."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available (not a Debian-like system)"
    if os.geteuid() != 0:
        return "installing Chromium with apt-get needs root; install the 'chromium' package"
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=900,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if result.returncode != 0:
            return f"'{' '.join(command)}' failed: {result.stderr.strip()[-500:]}"
    return ""


@dataclass(frozen=True)
class Chromium:
    executable: str
    budget_ms: int = 20000

    def _run(self, profile: Path, *arguments: str) -> str:
        command = [
            self.executable,
            *HEADLESS_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={self.budget_ms}",
            *arguments,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=180)
        if result.returncode != 0:
            raise RuntimeError(f"{command} failed: {result.stderr[-2000:]}")
        return result.stdout

    def dump_dom(self, url: str, profile: Path) -> str:
        """The page's DOM after its scripts (MathJax included) have run."""
        return self._run(profile, "--dump-dom", url)

    def screenshot(self, url: str, folder: Path, size: str = "1280,2400") -> Path:
        picture = folder / "page.png"
        self._run(folder / "profile", f"--window-size={size}", f"--screenshot={picture}", url)
        return picture
