"""How every command reports failure: MMSearchError -> one line on stderr and exit status 2.

Library errors carry data; this is where they are worded for the command line: a setting the message
names (``{opt:batch_size}``) becomes the option that sets it (``--batch-size``), and errors that a command
can fix get the command that fixes it.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

import typer

from mmsearch.errors import MMSearchError, StoreCorruptError, StoreNotFoundError

OPTION_NAMES = {"k": "-k", "path_glob": "--path", "text": "TEXT", "index_type": "--index-type",
                "store": "--store"}
"""Settings whose option is not simply ``--`` + the setting's name with dashes."""


def option_name(setting: str) -> str:
    """The command-line spelling of a library setting: ``batch_size`` -> ``--batch-size``."""
    return OPTION_NAMES.get(setting, "--" + setting.replace("_", "-"))


def describe(error: MMSearchError) -> str:
    """One line for the user: the library's message in command-line words, with how to fix it."""
    message = error.worded(option_name)
    if isinstance(error, StoreNotFoundError):
        message += f" (run `mmsearch index PATH --store {error.store}` first)"
    elif isinstance(error, StoreCorruptError):
        message += " (try `mmsearch verify --repair`)"
    return message.replace("\n", " ")


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
            fail(describe(exc))
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
