"""What every view of one app shares: the config, the jobs, the model's lock and small caches."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ServeConfig
from .jobs import Jobs
from .paths import safe_path
from .refusals import Refused


@dataclass
class AppState:
    """Handed to every view's ``mount(app, state)``.

    ``model_lock`` is held while a request runs the model (methods hook into it for the call), so that two
    explanations never interleave on one model; ``cache`` keeps what a view computed once (e.g. a fitted index),
    under keys the view chooses; ``views`` lists the mounted views as ``(name, title)`` for the nav bar.
    """

    config: ServeConfig
    jobs: Jobs = field(default_factory=Jobs)
    model_lock: threading.RLock = field(default_factory=threading.RLock)
    cache: dict[str, Any] = field(default_factory=dict)
    cache_lock: threading.RLock = field(default_factory=threading.RLock)  #: held while a view changes ``cache``
    views: list[tuple[str, str]] = field(default_factory=list)

    @property
    def roots(self) -> tuple[Path, ...]:
        return self.config.served_roots

    def path(self, relative: str) -> Path:
        """A path the browser named, inside the served folders (:func:`xaikit.serve.paths.safe_path`)."""
        return safe_path(self.roots, relative)

    def need_model(self) -> Any:
        """The served model, or a 409 answer saying how to give one."""
        if self.config.model is None:
            raise Refused(409, "this app serves no model: start it with xaikit serve --model NAME")
        return self.config.model
