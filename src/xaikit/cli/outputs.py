"""Output folders of the command line: checked before any work, never mixed with the user's own files.

Every folder a command writes holds a marker file listing what it wrote. A later run into the same folder first
removes exactly those files (no stale heatmaps of inputs that are gone), a folder that holds other files is
refused before anything slow runs, and input folders skip the files listed in their marker (a report written
into the photo folder is not read as photos next time). Every command also records its settings
(:func:`settings_of`) and ends with one closing line (:func:`done`).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .errors import UsageError

MARKER = ".xaikit-output.json"


def check_out(path: str, option: str = "--out") -> Path:
    """The output folder, checked before any work: not a file, writable, and either new, empty, or an earlier
    output of xaikit."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {path!r} is a file; give a folder to write the results into")
    if out.is_dir():
        ours = written_files(out)
        ours_folders = {folder for file in ours for folder in file.parents}
        foreign = sorted(p.name for p in out.iterdir()
                         if p.name != MARKER and p.resolve() not in (ours_folders if p.is_dir() else ours))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise UsageError(f"{option} {path!r} already holds files xaikit did not write ({shown}); give a new or "
                             "empty folder so that none of them is overwritten")
        if not os.access(out, os.W_OK):
            raise UsageError(f"{option} {path!r} is not writable")
    else:
        parent = next((p for p in out.absolute().parents if p.exists()), None)
        if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
            raise UsageError(f"{option} {path!r} cannot be created (is {parent} a writable folder?)")
    return out


def start_writing(out: Path) -> None:
    """Create the folder and remove what an earlier run wrote into it."""
    out.mkdir(parents=True, exist_ok=True)
    for file in sorted(written_files(out), key=lambda p: len(p.parts), reverse=True):
        if file.is_file():
            file.unlink()
    for folder in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def finish_writing(out: Path) -> None:
    """List every file of the folder in its marker (run after the command wrote its results)."""
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != MARKER)
    (out / MARKER).write_text(json.dumps({"written by": "xaikit", "files": files}, indent=1), encoding="utf-8")


def written_files(folder: Path) -> set[Path]:
    """The files an earlier xaikit run wrote into ``folder`` (resolved paths; empty without a marker)."""
    marker = folder / MARKER
    if not marker.is_file():
        return set()
    try:
        listed = json.loads(marker.read_text(encoding="utf-8")).get("files", [])
    except (ValueError, AttributeError):
        return set()
    return {(folder / name).resolve() for name in listed if isinstance(name, str)}


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The command line and every option that was set, for the record."""
    skip = {"func", "argv", "loaded"}
    return {"command line": " ".join(["xaikit", *args.argv]),
            **{k: v for k, v in vars(args).items() if k not in skip and v not in (None, [], ())}}


def done(message: str, quiet: bool) -> None:
    """The closing line of a command (left out with --quiet)."""
    if not quiet:
        print(message)
