"""Model input -> unit vectors: the encoder contract (``base``), open_clip's image and text towers
(``clip``), CLAP's audio and text towers (``clap``, ``clap_features``), model specs and fingerprints
(``specs``), weights from the local cache or the hub, failing fast offline (``fetch``), and where and in
what precision models run (``runtime``). May import only the shared ground; torch, open_clip and
transformers are imported when a model is loaded, never at import time.
"""
