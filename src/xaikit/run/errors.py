"""Errors of the data-set pipeline: each names what is wrong and how to fix it."""
from __future__ import annotations


class RunError(RuntimeError):
    """A data-set run cannot start or cannot go on."""


class ManifestMismatch(RunError, ValueError):
    """The output folder holds the manifest of a different run."""


class WorkerSetupError(RunError):
    """A worker could not build the model, methods or metrics of the run."""


class ClusterUnreachable(RunError, ConnectionError):
    """The Ray cluster at the given address cannot be reached."""


class MissingExtra(RunError, ImportError):
    """An optional dependency of the pipeline is not installed."""


def require(module: str, extra: str) -> object:
    """Import ``module`` or raise :class:`MissingExtra` naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtra(f"xaikit.run needs {module.split('.')[0]} for this ({err}); "
                           f"install it with `pip install xaikit[{extra}]`") from None
