"""CLAP's log-mel input features computed with torchaudio, batched (transformers' ClapFeatureExtractor
does the same in NumPy one clip at a time, which dominates CPU time for short clips)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


class ClapMelFeatures:
    """Same features as ``ClapFeatureExtractor`` (within float tolerance) for clips of at most
    ``max_length_s``: repeat-padding, Hann STFT, mel filters (Slaney for unfused models, HTK for fused
    ones, as transformers uses them), power-to-dB with a 1e-10 floor."""

    def __init__(self, extractor, *, fused: bool, device: str = "cpu"):
        import torch

        self.samples = int(extractor.nb_max_samples)
        self.n_fft = int(extractor.fft_window_size)
        self.hop = int(extractor.hop_length)
        self.fused = fused
        self.device = device
        self._torch = torch
        # The extractor's own filter banks, (frequency bins, mels), so the features match it exactly.
        filters = extractor.mel_filters if fused else extractor.mel_filters_slaney
        self.filters = torch.from_numpy(np.ascontiguousarray(filters, dtype=np.float32)).to(device)
        self.window = torch.hann_window(self.n_fft, periodic=True, device=device)

    def repeat_pad(self, wave: np.ndarray) -> np.ndarray:
        wave = np.asarray(wave, dtype=np.float32).reshape(-1)[: self.samples]
        if 0 < len(wave) < self.samples:
            wave = np.tile(wave, self.samples // len(wave))
            wave = np.pad(wave, (0, self.samples - len(wave)))
        return wave

    def __call__(self, waves: Sequence[np.ndarray]):
        """(N,) mono clips at the model's rate -> (N, channels, frames, mels) float32 tensor on ``device``."""
        torch = self._torch
        batch = torch.from_numpy(np.stack([self.repeat_pad(w) for w in waves])).to(self.device)
        with torch.inference_mode():
            spectrum = torch.stft(batch, self.n_fft, hop_length=self.hop, win_length=self.n_fft, window=self.window,
                                  center=True, pad_mode="reflect", return_complex=True)
            power = spectrum.real.square() + spectrum.imag.square()  # (N, frequency bins, frames)
            mels = torch.einsum("fm,nft->ntm", self.filters, power)
            decibels = 10.0 * torch.log10(torch.clamp(mels, min=1e-10))
        features = decibels.unsqueeze(1)
        return features.expand(-1, 4, -1, -1).contiguous() if self.fused else features
