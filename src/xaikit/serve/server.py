"""Running the app: :func:`serve` (blocks, as ``xaikit serve`` does) and :func:`start` (in a thread, for tests,
benchmarks and screenshots)."""
from __future__ import annotations

import socket
import threading
import time
import warnings
from dataclasses import dataclass, replace

from .app import create_app
from .config import LOCAL_HOST, ServeConfig


def check_host(host: str) -> None:
    """Warn when ``host`` lets other machines reach the app."""
    if host not in (LOCAL_HOST, "localhost", "::1"):
        warnings.warn(f"xaikit serve listens on {host}: other machines on the network can reach it and run the "
                      f"model; serve on {LOCAL_HOST} (the default) unless you mean it", UserWarning, stacklevel=3)


def serve(config: ServeConfig) -> None:
    """Serve ``config`` until interrupted (Ctrl-C)."""
    import uvicorn

    check_host(config.host)
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="warning")


@dataclass
class Running:
    """An app served in a thread: its ``url``; :meth:`stop` ends it."""

    url: str
    server: object
    thread: threading.Thread

    @property
    def app(self) -> object:
        """The served FastAPI app (its state: ``app.state.xaikit``), e.g. for a test client on the same session."""
        return self.server.config.app

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def free_port(host: str = LOCAL_HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start(config: ServeConfig, timeout: float = 20.0) -> Running:
    """Serve ``config`` in a daemon thread (on a free port when ``config.port`` is 0) and return once it answers."""
    import uvicorn

    check_host(config.host)
    config = replace(config, port=config.port or free_port(config.host))
    server = uvicorn.Server(uvicorn.Config(create_app(config), host=config.host, port=config.port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="xaikit-serve", daemon=True)
    thread.start()
    end = time.time() + timeout
    while not server.started:
        if not thread.is_alive() or time.time() > end:
            raise RuntimeError(f"xaikit serve did not start on {config.host}:{config.port}")
        time.sleep(0.02)
    return Running(f"http://{config.host}:{config.port}", server, thread)
