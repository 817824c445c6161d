"""``python -m mmsearch``: the command line (the library itself never imports Typer)."""
from mmsearch_cli.app import run

run()
