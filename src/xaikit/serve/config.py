"""What ``xaikit serve`` serves: the model, the data, the run folder, the folders files may come from, where it
listens and how large an upload may be."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

#: the host the app listens on unless told otherwise: only this machine can reach it
LOCAL_HOST = "127.0.0.1"
#: the default port
DEFAULT_PORT = 8765
#: the default upload limit in bytes (8 MiB)
DEFAULT_UPLOAD_LIMIT = 8 * 2 ** 20


class ServedModel(Protocol):
    """What the app reads of a model: :class:`xaikit.cli.models.LoadedModel` (``load_model(spec)``) has it all.

    ``model`` is the ``nn.Module``; ``kind`` is ``"image"``, ``"text"`` or ``"auto"`` (tables and tensors);
    images are resized to ``size`` and scaled to ``[low, high]``; ``label(i)`` names class ``i``; text models
    bring their ``tokenizer``.
    """

    model: Any
    spec: str
    kind: str
    size: int
    low: float | None
    high: float | None
    label: Callable[[int], str]
    tokenizer: Any


@dataclass
class ServeConfig:
    """The settings of one app.

    Parameters
    ----------
    model
        The model to explain (a :class:`ServedModel`, e.g. ``xaikit.cli.models.load_model("ground-truth-cnn")``),
        or ``None`` for an app that only browses a run folder. It comes only from the command line or from Python:
        the browser never names code to import.
    data
        A folder of inputs (images, ``.txt`` lines, ``.csv`` tables) the explain view offers, or ``None``.
    run
        A ``xaikit run`` output folder for the run explorer, or ``None``.
    roots
        The folders files may be served from; ``data`` and ``run`` are always among them. Every path the browser
        names is resolved inside one of them (:func:`xaikit.serve.paths.safe_path`).
    host, port
        Where the server listens; any host but ``127.0.0.1`` lets other machines reach it (the CLI warns).
    upload_limit
        The largest upload accepted, in bytes (larger ones are refused with 413).
    """

    model: ServedModel | None = None
    data: Path | None = None
    run: Path | None = None
    roots: tuple[Path, ...] = ()
    host: str = LOCAL_HOST
    port: int = DEFAULT_PORT
    upload_limit: int = DEFAULT_UPLOAD_LIMIT
    extra: dict[str, Any] = field(default_factory=dict)  #: settings of the views (e.g. a training data set)

    def __post_init__(self) -> None:
        self.data = None if self.data is None else Path(self.data)
        self.run = None if self.run is None else Path(self.run)
        if self.upload_limit <= 0:
            raise ValueError(f"upload_limit must be a positive number of bytes, got {self.upload_limit}")
        for name in ("data", "run"):
            folder = getattr(self, name)
            if folder is not None and not folder.exists():
                raise FileNotFoundError(f"{name} folder {str(folder)!r} does not exist")

    @property
    def served_roots(self) -> tuple[Path, ...]:
        """The resolved folders files may come from: ``roots``, the data folder (or a data file's folder) and the
        run folder, without repeats."""
        found: list[Path] = []
        for root in (*self.roots, self.data, self.run):
            if root is None:
                continue
            root = Path(root).resolve()
            root = root if root.is_dir() else root.parent
            if root not in found:
                found.append(root)
        return tuple(found)
