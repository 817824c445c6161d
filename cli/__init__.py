"""The mmsearch command line: a thin Typer layer over the ``mmsearch`` library (installed as ``mmsearch_cli``)."""
