"""Who may ask, and how much they may send: the token check and the upload size limit (ASGI middleware).

Token: with one set (required for any bind but loopback), every request must carry it, as
``Authorization: Bearer T``, ``X-MMSearch-Token: T`` or the ``mmsearch_token`` cookie; else 401. A page
visit with ``?token=T`` sets the cookie (HttpOnly, SameSite=Strict) and redirects to the same URL without
it, so that the page's images and players, which cannot send headers, carry it too.

Uploads: a request body larger than the limit gets 413 before it is read (by its Content-Length) or as
soon as the limit is passed (a chunked body), never spooled to disk whole.
"""
from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qsl, quote, unquote, urlencode

from .errors import HTTPProblem

COOKIE = "mmsearch_token"
HEADER = b"x-mmsearch-token"
DEFAULT_MAX_UPLOAD = 25 * 1024 * 1024
"""Default limit of one request body (all uploaded files and fields together), in bytes: 25 MiB."""
SLACK = 64 * 1024
"""Room for the multipart framing and form fields around the files."""


class TooLarge(HTTPProblem):
    """Raised from inside the application when a body passes the limit while it is read (413)."""

    def __init__(self, limit: int):
        super().__init__(413, f"upload too large: the limit is {limit / 1024 / 1024:g} MiB "
                              f"(mmsearch serve --max-upload-mb)")


async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


def _cookies(headers: dict[bytes, bytes]) -> dict[str, str]:
    found = {}
    for part in headers.get(b"cookie", b"").decode("latin-1").split(";"):
        name, _, value = part.strip().partition("=")
        if name:
            found[name] = value
    return found


class Guard:
    """ASGI middleware: the token (when one is set) and the body size limit."""

    def __init__(self, app, *, token: str | None, max_upload: int = DEFAULT_MAX_UPLOAD,
                 headers: dict[str, str] | None = None):
        self.app, self.token, self.max_upload = app, token, max_upload
        self.headers = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
        """Added to every response that does not set them itself (not to /docs: Swagger UI runs inline script)."""

    def _granted(self, scope, headers: dict[bytes, bytes]) -> bool:
        given = []
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth.lower().startswith("bearer "):
            given.append(auth[7:].strip())
        if HEADER in headers:
            given.append(headers[HEADER].decode("latin-1"))
        cookies = _cookies(headers)
        if COOKIE in cookies:
            given.append(unquote(cookies[COOKIE]))
        return any(hmac.compare_digest(g.encode(), self.token.encode()) for g in given)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.token is not None and not self._granted(scope, headers):
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if scope["method"] == "GET" and "token" in query and \
                    hmac.compare_digest(query["token"].encode(), self.token.encode()):
                rest = urlencode({k: v for k, v in query.items() if k != "token"})
                location = scope["path"] + (f"?{rest}" if rest else "")
                cookie = f"{COOKIE}={quote(self.token, safe='')}; Path=/; HttpOnly; SameSite=Strict"
                await send({"type": "http.response.start", "status": 303,
                            "headers": [(b"location", location.encode()), (b"set-cookie", cookie.encode()),
                                        (b"content-length", b"0")]})
                return await send({"type": "http.response.body", "body": b""})
            return await _send_json(send, 401, {"error": "a token is required: send it as 'Authorization: Bearer "
                                                         "TOKEN', or open the page once as /?token=TOKEN"},
                                    [(b"www-authenticate", b"Bearer")])
        declared = headers.get(b"content-length")
        limit = self.max_upload + SLACK
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _send_json(send, 413, {"error": TooLarge(self.max_upload).message})
        received = 0
        started = False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise TooLarge(self.max_upload)
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if scope["path"] != "/docs":
                    have = {name.lower() for name, _ in message.get("headers", [])}
                    extra = [(name, value) for name, value in self.headers if name not in have]
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except TooLarge as exc:  # where the application did not answer it itself
            if not started:
                await _send_json(send, 413, {"error": exc.message})
