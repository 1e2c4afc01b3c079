"""Long work off the request thread: background jobs with an id, progress, a message, cancel, a result or an error.

A view starts a job with ``state.jobs.submit(work, *args)``; ``work(job, *args)`` runs in a thread pool, reports
with ``job.report(fraction, message)`` and checks ``job.cancelled`` (or calls ``job.check()``, which raises
:class:`Cancelled`) between steps. ``GET /api/jobs/{id}`` reads a job, ``POST /api/jobs/{id}/cancel`` asks it to
stop.
"""
from __future__ import annotations

import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable


class Cancelled(Exception):
    """Raised by :meth:`Job.check` inside a job whose cancel was asked."""


@dataclass
class Job:
    """One piece of background work and what the browser may read of it."""

    id: str
    name: str
    progress: float = 0.0  #: 0..1
    message: str = ""
    status: str = "queued"  #: queued, running, done, failed, cancelled
    result: Any = None  #: what the work returned (JSON-able for the route to show it)
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    trace: str | None = field(default=None, repr=False)  #: the traceback of a failed job (server side only)

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def report(self, progress: float, message: str = "") -> None:
        """Set the progress (clipped to 0..1) and the message shown beside it."""
        self.progress = min(max(float(progress), 0.0), 1.0)
        if message:
            self.message = message

    def check(self) -> None:
        """Raise :class:`Cancelled` when the cancel was asked (call between steps)."""
        if self.cancel_event.is_set():
            raise Cancelled()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "progress": self.progress, "message": self.message,
                "status": self.status, "error": self.error, "result": self.result if self.status == "done" else None,
                "seconds": (self.finished or time.time()) - self.started}


class Jobs:
    """The jobs of one app: a thread pool of ``workers`` threads and the jobs by id (the last ``keep`` only)."""

    def __init__(self, workers: int = 2, keep: int = 200) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xaikit-job")
        self.keep = keep
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def submit(self, work: Callable[..., Any], *args: Any, name: str = "", **kwargs: Any) -> Job:
        """Start ``work(job, *args, **kwargs)`` in the pool; returns the job at once."""
        job = Job(uuid.uuid4().hex[:12], name or getattr(work, "__name__", "job"))
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status in ("queued", "running"):
                    break
                del self._jobs[oldest]
        self.pool.submit(self._run, job, work, args, kwargs)
        return job

    def _run(self, job: Job, work: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        if job.cancelled:
            job.status, job.finished = "cancelled", time.time()
            return
        job.status = "running"
        try:
            job.result = work(job, *args, **kwargs)
        except Cancelled:
            job.status = "cancelled"
            job.message = job.message or "cancelled"
        except Exception as err:  # noqa: BLE001 - a job's error is shown to the user, the server goes on
            job.status = "failed"
            job.error = f"{type(err).__name__}: {err}"
            job.message = "failed"
            job.trace = traceback.format_exc()
        else:
            job.status = "cancelled" if job.cancelled else "done"
            if job.status == "done":
                job.progress = 1.0
        finally:
            job.finished = time.time()

    def get(self, job_id: str) -> Job:
        """The job ``job_id``; ``KeyError`` with a clear message when there is none."""
        try:
            return self._jobs[job_id]
        except KeyError:
            raise KeyError(f"no job {job_id!r} (finished jobs are kept for a while only)") from None

    def cancel(self, job_id: str) -> Job:
        """Ask the job to stop (it stops at its next check); a queued job never starts."""
        job = self.get(job_id)
        job.cancel_event.set()
        return job

    def wait(self, job_id: str, timeout: float = 60.0) -> Job:
        """Block until the job finished or ``timeout`` seconds passed (for tests and scripts)."""
        end = time.time() + timeout
        job = self.get(job_id)
        while job.finished is None and time.time() < end:
            time.sleep(0.01)
        return job

    def shutdown(self) -> None:
        for job in list(self._jobs.values()):
            job.cancel_event.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
