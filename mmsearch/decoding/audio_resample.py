"""One window of mono samples from a file's rate to the encoder's: torchaudio's sinc resampler, or FFT
resampling for awkward ratios."""
from __future__ import annotations

import math

import numpy as np

MAX_POLYPHASE_KERNEL = 4_000_000
"""Largest torchaudio sinc kernel (elements) we build; odd rate ratios fall back to FFT resampling."""


class Resampler:
    """Native rate -> target rate for one file, window by window."""

    def __init__(self, source_rate: int, target_rate: int):
        self.source_rate, self.target_rate = source_rate, target_rate
        g = math.gcd(source_rate, target_rate)
        orig, new = source_rate // g, target_rate // g
        width = math.ceil(6 * orig / (min(orig, new) * 0.99))
        self.use_torchaudio = source_rate != target_rate and new * (2 * width + orig) <= MAX_POLYPHASE_KERNEL
        self._transform = None

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self.source_rate == self.target_rate or samples.size == 0:
            return samples
        if not self.use_torchaudio:
            return fft_resample(samples, self.source_rate, self.target_rate)
        import torch
        import torchaudio

        if self._transform is None:
            self._transform = torchaudio.transforms.Resample(self.source_rate, self.target_rate)
        with torch.inference_mode():
            out = self._transform(torch.from_numpy(np.ascontiguousarray(samples)))
        return out.numpy()


def fft_resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling of one window by truncating / zero-extending its spectrum."""
    n_in = samples.size
    n_out = max(1, round(n_in * target_rate / source_rate))
    spectrum = np.fft.rfft(samples.astype(np.float64))
    keep = min(spectrum.size, n_out // 2 + 1)
    resized = np.zeros(n_out // 2 + 1, dtype=np.complex128)
    resized[:keep] = spectrum[:keep]
    return (np.fft.irfft(resized, n=n_out) * (n_out / n_in)).astype(np.float32)
