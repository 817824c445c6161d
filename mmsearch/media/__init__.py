"""What a front end shows of an indexed file: its bytes, served only by catalog id and only while the
file is still indexed and (after resolving every symlink) still under a folder given to ``index``
(``files``), and a JPEG thumbnail made once with Pillow and cached in the store's ``thumbnails/`` folder,
remade when the file changes (``thumbnails``). May import the shared ground, ``decoding`` (the same image
decoder as indexing) and ``store`` (the catalog's rows and the recorded roots); never a web framework.
"""
