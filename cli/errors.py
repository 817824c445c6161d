"""How every command reports failure: MMSearchError -> one line on stderr and exit status 2."""
from __future__ import annotations

import functools
import os
from typing import Callable

import typer

from mmsearch.errors import MMSearchError


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"mmsearch: error: {message}", err=True)
    raise typer.Exit(code)


def guarded(command: Callable) -> Callable:
    """Turn library errors into one line and exit status 2; never show a traceback unless MMSEARCH_DEBUG."""
    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MMSearchError as exc:
            fail(str(exc).replace("\n", " "))
        except KeyboardInterrupt:
            typer.echo("mmsearch: interrupted", err=True)
            raise typer.Exit(130)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:
            if os.environ.get("MMSEARCH_DEBUG"):
                raise
            fail(f"internal error: {type(exc).__name__}: {exc} (set MMSEARCH_DEBUG=1 for a traceback)", code=1)
    return wrapper
