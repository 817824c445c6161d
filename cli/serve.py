"""``mmsearch serve``: the HTTP API and the web page (the ``mmsearch_server`` package) on one process."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .errors import guarded


def register(app: typer.Typer) -> None:
    @app.command()
    @guarded
    def serve(
        store: Optional[Path] = typer.Option(None, "--store", help="Store folder (default: $MMSEARCH_STORE, else "
                                                                  "indexes/default)."),
        host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Any but loopback needs --token."),
        port: int = typer.Option(8000, "--port", help="Port to listen on."),
        token: Optional[str] = typer.Option(None, "--token", help="Require this token on every request (header "
                                            "'Authorization: Bearer T' or the page's cookie); default "
                                            "$MMSEARCH_TOKEN."),
        max_upload_mb: float = typer.Option(25.0, "--max-upload-mb", help="Largest request body (uploaded query "
                                            "files), in MiB."),
        warm: bool = typer.Option(True, "--warm/--no-warm", help="Load the query models before listening."),
        rerank_model: Optional[str] = typer.Option(None, "--rerank-model", help="What re-ranks: a BLIP retrieval "
                                                   "model on the Hugging Face hub (default "
                                                   "Salesforce/blip-itm-base-coco), a saved model's folder, or "
                                                   "test-tiny:random (tiny, random weights: try it offline). "
                                                   "Loaded on the first search with rerank=N, not before "
                                                   "listening."),
    ) -> None:
        """Serve the store: a JSON API (docs at /docs) and a web page at / to see and hear results."""
        from mmsearch.errors import UsageError
        from mmsearch_server.run import serve as run_server

        if max_upload_mb <= 0:
            raise UsageError("{opt:max_upload_mb} must be more than 0")
        run_server(store, host=host, port=port, token=token, max_upload=int(max_upload_mb * 1024 * 1024), warm=warm,
                   rerank_model=rerank_model)
