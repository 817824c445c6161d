"""Fitting and loading the store's CLAP <-> CLIP bridge (a map learnt through text, after C-MCR): the same
sentences are embedded by CLAP's and CLIP's text towers and a map is fitted between them, linear or a small
MLP (``linear.fit_space_map``: ``map`` linear, mlp or auto)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import PathNotFoundError, UsageError
from .heldout import CandidateFit, MapFit
from .linear import SpaceMap, check_map, fit_space_map

log = logging.getLogger(__name__)

BRIDGE_NAME = "bridge.npz"
SENTENCES = Path(__file__).resolve().parent / "sentences.txt"
"""~3,300 sentences about sounds and scenes shipped with mmsearch (made by ``tools/make_sentences.py``)."""


def default_sentences() -> list[str]:
    """The shipped sentence set, one sentence per line."""
    text = SENTENCES.read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_captions(path: Path) -> list[str]:
    """One sentence per line; blank lines and lines starting with '#' are skipped."""
    if not path.is_file():
        raise PathNotFoundError(path)
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    sentences = list(dict.fromkeys(line for line in lines if line and not line.startswith("#")))
    if len(sentences) < 20:
        raise UsageError(f"{path}: need at least 20 distinct sentences to fit the bridge, found {len(sentences)}")
    return sentences


def embed_all(encode, sentences: Sequence[str], batch_size: int = 64) -> np.ndarray:
    parts = [encode(list(sentences[i:i + batch_size])).vectors for i in range(0, len(sentences), batch_size)]
    return np.vstack(parts)


def fit_bridge(clap, clip, sentences: Sequence[str] | None = None, batch_size: int = 64, *,
               map: str = "auto") -> SpaceMap:
    """CLAP space -> CLIP space (forward) and back (reverse), fitted on ``sentences`` (default: the shipped set);
    ``map``: linear, mlp or auto (the MLP where it retrieves held-out sentences measurably better)."""
    check_map(map)
    sentences = list(sentences) if sentences is not None else default_sentences()
    log.info("fitting CLAP<->CLIP bridge (%s) on %d sentences", map, len(sentences))
    source = embed_all(clap.encode_texts, sentences, batch_size)
    target = embed_all(clip.encode_texts, sentences, batch_size)
    return fit_space_map(source, target, source_fingerprint=clap.identity.fingerprint,
                         target_fingerprint=clip.identity.fingerprint, map=map)


def describe_fit(fit: MapFit) -> dict[str, object]:
    """The kept map, what was asked and every candidate's held-out figures (a bridge saved before ``map``
    existed: its linear map as the only candidate)."""
    candidates = fit.candidates or (CandidateFit("linear", fit.method, fit.ridge_lambda, fit.heldout_r_at_1,
                                                 fit.heldout_mean_cosine),)
    return {"method": fit.method, "requested": fit.requested, "ridge_lambda": fit.ridge_lambda,
            "epochs": fit.epochs, "heldout_r_at_1": round(fit.heldout_r_at_1, 4),
            "heldout_mean_cosine": round(fit.heldout_mean_cosine, 4), "sentences": fit.n_sentences,
            "heldout_sentences": fit.n_heldout,
            "candidates": {candidate.map: _describe_candidate(candidate) for candidate in candidates}}


def _describe_candidate(candidate: CandidateFit) -> dict[str, object]:
    figures: dict[str, object] = {"method": candidate.method, "ridge_lambda": candidate.ridge_lambda,
                                  "heldout_r_at_1": round(candidate.heldout_r_at_1, 4),
                                  "heldout_mean_cosine": round(candidate.heldout_mean_cosine, 4)}
    if candidate.map == "mlp":
        figures.update(epochs=candidate.epochs, gained=candidate.gained, lost=candidate.lost)
    return figures
