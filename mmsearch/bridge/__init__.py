"""Maps between model spaces: the CLAP <-> CLIP bridge fitted through text (``linear``: ridge or orthogonal
Procrustes, chosen on held-out sentences, the one-file format with both models' fingerprints, and the
``map`` choice; ``mlp``: the best linear map plus a small ReLU correction, kept by ``auto`` only where it
retrieves held-out sentences measurably better; ``heldout``: how candidates are scored and what is
recorded) and fitting it with two encoders on the shipped sentences (``alignment``, ``sentences.txt``).
Applying a map is numpy only; torch is imported only inside the MLP's fitting. May import the shared
ground and ``encoders.base``, nothing that holds vectors.
"""
