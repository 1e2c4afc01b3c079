"""The request body limit, as ASGI middleware: a request that announces a body larger than the limit is refused
before it is read (413), and one that sends more than it may (chunked, or lying about its length) is cut off
when the limit is crossed, so no upload is ever read or spooled in full."""
from __future__ import annotations

import json
from typing import Any, Callable

from starlette.exceptions import HTTPException

#: multipart headers and boundaries on top of the file itself
OVERHEAD = 64 * 1024


class TooLarge(HTTPException):
    """Raised while the body is read, past the limit: FastAPI passes HTTP exceptions on, the app answers 413."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(413, _message(size, limit))


class BodyLimit:
    """Wrap an ASGI ``app``; ``limit()`` gives the largest body in bytes (read per request: the config may
    change)."""

    def __init__(self, app: Any, limit: Callable[[], int]) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        length = dict(scope.get("headers") or ()).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit + OVERHEAD:
            await _refuse(send, int(length), limit)
            return
        seen, started = 0, False

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit + OVERHEAD:
                    raise TooLarge(seen, limit)
            return message

        async def watched(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except TooLarge:
            if not started:
                await _refuse(send, seen, limit)
            else:
                raise


def _message(size: int, limit: int) -> str:
    return f"upload too large: {size:,} bytes or more; the limit is {limit:,} bytes (xaikit serve --upload-limit)"


async def _refuse(send: Callable, size: int, limit: int) -> None:
    body = json.dumps({"error": _message(size, limit)}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
