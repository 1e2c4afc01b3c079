"""Headless Chromium for the browser tests: Debian's ``chromium`` (``scripts/setup-env.sh`` installs it through
``scripts/install-chromium.sh``; :func:`chromium_path` runs that script when it is still missing) and the flags
it needs on a machine without a network (background networking refused, no sandbox as root)."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Chromium's flags for every browser test (Playwright adds --headless itself; the command-line tests add it)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium_path() -> str:
    """The system Chromium's path, installed first when missing; the test fails with the reason otherwise."""
    path = shutil.which("chromium")
    if path is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "install-chromium.sh")], timeout=900, check=False)
        path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed and scripts/install-chromium.sh could not install it (needs root "
                    "or sudo and Debian's package index)")
    return path


def launched_chromium():
    """A generator fixture body: the system Chromium launched by Playwright, closed afterwards."""
    playwright = pytest.importorskip("playwright.sync_api")
    path = chromium_path()
    with playwright.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=FLAGS, headless=True)
        yield launched
        launched.close()
