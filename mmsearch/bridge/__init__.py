"""Maps between model spaces: the linear CLAP <-> CLIP map fitted through text (``linear``: ridge or
orthogonal Procrustes, chosen on held-out sentences, saved with both models' fingerprints) and fitting it
with two encoders on the shipped sentences (``alignment``, ``sentences.txt``). Pure numpy over encoders it
is handed; may import the shared ground and ``encoders.base``, nothing that holds vectors.
"""
