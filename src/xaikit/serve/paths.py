"""Paths named by the browser, resolved only inside the folders the app serves."""
from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Sequence


class PathRefused(PermissionError):
    """A path the app does not serve: absolute, climbing out with ``..``, or leading out through a symlink."""


def safe_path(roots: Sequence[Path], relative: str) -> Path:
    """The file or folder ``relative`` names inside one of ``roots``, resolved.

    ``relative`` is a path as the browser sends it, e.g. ``"cats/1.png"``; the first root that holds it wins
    (``""`` is the first root itself). Refused with :class:`PathRefused`:
    an absolute path, a drive, a ``..`` part, a NUL byte, and any path whose resolved form (symlinks followed)
    lies outside every root.
    """
    if not roots:
        raise PathRefused("this app serves no folder: start it with --data or --run")
    text = str(relative).replace("\\", "/")
    if "\x00" in text:
        raise PathRefused("path refused: it holds a NUL byte")
    parts = PurePosixPath(text).parts
    if text.startswith("/") or (parts and ":" in parts[0]):
        raise PathRefused(f"path refused: {relative!r} is absolute; name a file relative to a served folder")
    if ".." in parts:
        raise PathRefused(f"path refused: {relative!r} climbs out with '..'; name a file inside a served folder")
    for root in roots:
        root = Path(root).resolve()
        candidate = (root / text).resolve()
        if not candidate.is_relative_to(root):
            raise PathRefused(f"path refused: {relative!r} leads out of the served folders (through a link)")
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no file {relative!r} in the served folders")


def relative_name(roots: Sequence[Path], path: Path) -> str:
    """``path`` relative to the first root that holds it, with ``/`` (what :func:`safe_path` reads back)."""
    path = Path(path).resolve()
    for root in roots:
        root = Path(root).resolve()
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    raise PathRefused(f"{str(path)!r} is not in a served folder")
