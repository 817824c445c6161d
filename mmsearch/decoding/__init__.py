"""File -> model input, one file at a time, with bounded memory: images (``images``: Pillow with HEIC/HEIF
through pillow-heif and camera RAW previews through rawpy (``raw_images``), EXIF orientation applied,
decompression bombs refused), text files (``text``: overlapping passages of words), documents
(``documents``: PDF, HTML, DOCX and EPUB passages that keep their page), audio (``audio``: mono windows at
the model's rate, streamed, by libsndfile or FFmpeg through PyAV) and video (``video``: sampled frames
with their time). Every failure is a ``DecodeError`` naming the file and the reason. Besides the decoding
libraries it may import only the shared ground (``mmsearch.errors``, ``mmsearch.records``); it knows
nothing of models, stores or indexes, and runs in the indexer's decoding processes (``ingest.workers``).
"""
