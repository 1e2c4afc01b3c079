"""What every view's routes do with a request: read its JSON object, and run the work off the event loop."""
from __future__ import annotations

from typing import Any, Callable

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from .refusals import Refused


async def read_json(request: Request) -> dict[str, Any]:
    """The request's body, a JSON object; anything else is refused (400)."""
    try:
        body = await request.json()
    except ValueError:
        raise Refused(400, "the request body must be JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "the request body must be a JSON object")
    return body


async def threaded(work: Callable[[], Any]) -> Any:
    """Run ``work()`` in the thread pool, off the event loop (the server keeps answering meanwhile)."""
    return await run_in_threadpool(work)
