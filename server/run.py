"""Starting the server: whether a bind is allowed without a token, then uvicorn on one process."""
from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

from mmsearch.engine import open_store
from mmsearch.errors import UsageError

from .guard import DEFAULT_MAX_UPLOAD

log = logging.getLogger(__name__)

TOKEN_VARIABLE = "MMSEARCH_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, token: str | None) -> None:
    """Refuse a bind that other machines can reach without a token to check on every request."""
    if token is not None and not token.strip():
        raise UsageError("{opt:token} is empty")
    if not is_loopback(host) and token is None:
        raise UsageError(f"refusing to serve on {host} without a token: anyone who can reach it could read every "
                         f"indexed file; give {{opt:token}} TOKEN (or set {TOKEN_VARIABLE}), or bind 127.0.0.1",
                         option="token")


def serve(store: Path | str | None = None, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          max_upload: int = DEFAULT_MAX_UPLOAD, warm: bool = True, log_level: str = "info",
          rerank_model: str | None = None) -> None:
    """Open the store (it must exist), load the query models, and serve until interrupted. ``rerank_model``
    (default ``$MMSEARCH_RERANK_MODEL``, else the library's) re-ranks searches that ask for it; it loads on
    the first one, not here."""
    import uvicorn

    from .app import create_app

    token = token if token is not None else os.environ.get(TOKEN_VARIABLE) or None
    check_bind(host, token)
    engine = open_store(store, rerank_model=rerank_model)
    try:
        app = create_app(engine, token=token, max_upload=max_upload)
        if warm:
            app.app.state.served.warm()
        print(f"mmsearch: serving {engine.store.path} at http://{host if ':' not in host else f'[{host}]'}:{port}/ "
              f"(API docs at /docs; Ctrl-C stops)", flush=True)
        uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)
    finally:
        engine.close()
