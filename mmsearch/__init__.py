"""mmsearch: cross-modal search over folders of images, text and audio.

The library never imports Typer; the command line lives in the ``mmsearch_cli`` package.
"""
__version__ = "0.1.0"
