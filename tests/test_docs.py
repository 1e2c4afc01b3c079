"""The documentation's code runs as a user copies it: every ```python block of the pages below, in order, in
one fresh interpreter per page (a page's blocks share their names, as in a notebook)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: pages whose code blocks form a program (the other pages show fragments that need the user's model)
PAGES = ["README.md", "docs/api.md"]


def blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


@pytest.mark.parametrize("page", PAGES)
def test_the_code_blocks_of_the_page_run(page, tmp_path):
    code = blocks(ROOT / page)
    assert code, f"{page} has no python code block"
    program = "\n".join(code)
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"{page}: its code raised:\n{done.stderr[-3000:]}"
