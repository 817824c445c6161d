"""File -> model input: images (``images``: pixels, EXIF orientation applied, decompression bombs refused),
text files (``text``: overlapping passages of words) and audio (``audio``: mono windows at the model's
rate, streamed). Every failure is a ``DecodeError`` naming the file and the reason. May import only the
shared ground (``mmsearch.errors``, ``mmsearch.records``); knows nothing of models, stores or indexes.
"""
