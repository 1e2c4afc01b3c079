"""The documentation's code runs as a user copies it: every ```python block of README.md and of each page of docs/,
in order, as one script per page in a fresh interpreter and an empty working directory (a page's blocks share
their names, as in a notebook; each page sets up its own model and data from ``xaikit.zoo``)."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: every page of the documentation
DOCS = ["README.md", *sorted(f"docs/{page.name}" for page in (ROOT / "docs").glob("*.md"))]
#: the languages a fenced block may have: python runs below, bash and text are shown only
LANGUAGES = {"python", "bash", "text"}
#: seconds one page may take (2–10 s of CPU each on the 2-core development machine; more under load)
TIMEOUT = 300


def fences(page: Path) -> list[tuple[int, str, str]]:
    """``(line, language, code)`` of every fenced block of ``page``."""
    found, lines, opened = [], page.read_text(encoding="utf-8").splitlines(), None
    for number, line in enumerate(lines, 1):
        if not line.startswith("```"):
            continue
        if opened is None:
            opened = (number, line[3:].strip())
        else:
            start, language = opened
            found.append((start, language, "\n".join(lines[start:number - 1]) + "\n"))
            opened = None
    assert opened is None, f"{page.name}: the block opened on line {opened[0]} is not closed"
    return found


def blocks(page: Path) -> list[str]:
    return [code for _, language, code in fences(page) if language == "python"]


#: the pages with Python code
PAGES = [page for page in DOCS if blocks(ROOT / page)]


def run_python(program: str, cwd: Path) -> subprocess.CompletedProcess:
    """``program`` in a fresh interpreter that imports this checkout's ``src`` (one thread, as the suite runs)."""
    path = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    script = cwd / "doc_page.py"
    script.write_text(program, encoding="utf-8")
    return subprocess.run([sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


@pytest.mark.parametrize("page", PAGES)
def test_the_code_blocks_of_the_page_run(page, tmp_path):
    done = run_python("".join(blocks(ROOT / page)), tmp_path)
    assert done.returncode == 0, f"{page}: its code raised:\n{done.stderr[-3000:]}"


def test_every_page_with_code_is_run():
    assert {"README.md", "docs/api.md", "docs/concepts.md", "docs/examples.md"} <= set(PAGES)


@pytest.mark.parametrize("page", DOCS)
def test_every_code_block_names_its_language(page):
    """A block without a language (or with another name for Python) would escape the test that runs them."""
    for line, language, _ in fences(ROOT / page):
        assert language in LANGUAGES, f"{page}, line {line}: block language {language!r}; use one of {LANGUAGES}"


def test_the_rooms_the_docs_name_are_attributes_of_the_package(tmp_path):
    """``xk.viz.plot_bar`` and ``xk.zoo.make_shapes``, as the pages write them, without importing the rooms
    first; ``import xaikit`` itself still loads neither (nor matplotlib)."""
    done = run_python("import sys\nimport xaikit as xk\n"
                      "assert not {'matplotlib', 'xaikit.viz', 'xaikit.zoo'} & set(sys.modules)\n"
                      "assert callable(xk.viz.plot_bar) and callable(xk.zoo.make_shapes)\n"
                      "try:\n    xk.no_such_room\nexcept AttributeError as err:\n    print(err)\n"
                      "else:\n    raise AssertionError('an unknown attribute must raise')\n", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no attribute 'no_such_room'" in done.stdout
