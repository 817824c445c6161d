"""A small non-linear bridge: the best linear map plus a learnt ReLU correction, fitted with torch, applied
with numpy (a query through the bridge never imports torch).

    y = normalise(x_c @ A + c + relu(x_c @ W1 + b1) @ W2),   x_c = normalise(x) - source_mean

``A``, ``c`` are the best linear solution (ridge or Procrustes, see ``linear``) and stay fixed; ``W2`` starts
at zero, so training starts exactly at the linear map and can only add what it misses. ``W1`` is drawn from
a seeded generator (torch's global random state is neither used nor changed, nor is its thread count).

Loss: InfoNCE over each batch (a mapped row must pick its own partner among the batch's targets, temperature
``TEMPERATURE``), which is what held-out R@1 judges, plus ``1 - cosine`` so mapped vectors stay close to their
partners, not merely nearest. AdamW (weight decay on ``W1``, ``W2``), the learning rate warmed up over the
first ``WARMUP_STEPS`` steps so the first updates do not knock the map off its linear start.

Early stopping: a validation split carved from the training rows is scored after every epoch (epoch 0 is
the linear start itself); training stops after ``PATIENCE`` epochs without a better R@1, at most
``MAX_EPOCHS``, and the epoch kept is the best by R@1, ties broken by mean cosine. The best epoch's map is then scored on the held-out rows the linear
candidates are judged on, and the saved map is trained afresh on all rows for that many epochs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..encoders.base import l2_normalise
from .heldout import MapFit, query_rows, retrieval_hits, retrieval_score

HIDDEN = 512
"""ReLU units in the correction, at most: twice the larger dimension below that (a 512-d model gets 512)."""
MAX_EPOCHS = 30
PATIENCE = 5
BATCH_SIZE = 256
TEMPERATURE = 0.05
LEARNING_RATE = 2e-3
WEIGHT_DECAY = 1e-4
WARMUP_STEPS = 20
VALIDATION_FRACTION = 0.15
"""Share of the training rows set aside to decide when to stop."""

LinearSolution = tuple[np.ndarray, np.ndarray, np.ndarray]
"""(matrix, source_mean, target_mean) of a linear map fitted on some rows."""


@dataclass(frozen=True)
class MlpMap:
    """x -> normalise(x_c @ matrix + target_mean + relu(x_c @ hidden_weight + hidden_bias) @ output_weight),
    x_c = normalise(x) - source_mean."""

    matrix: np.ndarray
    source_mean: np.ndarray
    target_mean: np.ndarray
    hidden_weight: np.ndarray
    hidden_bias: np.ndarray
    output_weight: np.ndarray
    fit: MapFit

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        vectors = query_rows(vectors, self.matrix.shape[0])
        return l2_normalise(_forward(l2_normalise(vectors) - self.source_mean, self.matrix, self.target_mean,
                                     self.hidden_weight, self.hidden_bias, self.output_weight))


@dataclass(frozen=True)
class Correction:
    """The learnt part of an MLP map, and the epochs it was trained for."""

    hidden_weight: np.ndarray
    hidden_bias: np.ndarray
    output_weight: np.ndarray
    epochs: int


@dataclass(frozen=True)
class MlpTrial:
    """An MLP fitted without the held-out rows (nor its validation rows) and scored on the held-out rows."""

    epochs: int
    heldout_r_at_1: float
    heldout_mean_cosine: float
    hits: np.ndarray
    """Per held-out row: retrieved its own partner first."""


def try_mlp(source: np.ndarray, target: np.ndarray, train: np.ndarray, heldout: np.ndarray,
            solve: Callable[[np.ndarray], LinearSolution], *, seed: int = 0) -> MlpTrial:
    """Choose the epochs on a validation split of ``train`` and score that map on ``heldout`` (rows unit
    length); ``solve(rows)`` fits the best linear map on those rows (the MLP's start)."""
    shuffled = np.random.default_rng(seed).permutation(train)
    n_validation = max(2, round(VALIDATION_FRACTION * train.size))
    validation, rows = shuffled[:n_validation], shuffled[n_validation:]
    matrix, source_mean, target_mean = solve(rows)
    centred = source - source_mean
    correction = train_correction(centred, centred @ matrix + target_mean, target, rows,
                                  validation=validation, seed=seed)
    mapped = l2_normalise(_forward(centred[heldout], matrix, target_mean, correction.hidden_weight,
                                   correction.hidden_bias, correction.output_weight))
    hits, own = retrieval_hits(mapped, target[heldout])
    return MlpTrial(correction.epochs, float(np.mean(hits)), float(own.mean()), hits)


def fit_mlp_map(source: np.ndarray, target: np.ndarray, solve: Callable[[np.ndarray], LinearSolution],
                epochs: int, fit: MapFit, *, seed: int = 0) -> MlpMap:
    """The MLP map trained on all rows for ``epochs`` epochs (the number ``try_mlp`` chose)."""
    rows = np.arange(source.shape[0])
    matrix, source_mean, target_mean = solve(rows)
    centred = source - source_mean
    correction = train_correction(centred, centred @ matrix + target_mean, target, rows, epochs=epochs, seed=seed)
    return MlpMap(*(np.asarray(array, dtype=np.float32) for array in (
        matrix, source_mean, target_mean, correction.hidden_weight, correction.hidden_bias, correction.output_weight)),
        fit=fit)


def train_correction(centred: np.ndarray, start: np.ndarray, target: np.ndarray, rows: np.ndarray, *,
                     validation: np.ndarray | None = None, epochs: int | None = None, seed: int = 0) -> Correction:
    """Train the ReLU correction on ``rows``, from the linear map's outputs ``start`` (all rows) towards the
    unit ``target`` rows. With ``validation`` rows: the best epoch by their R@1, then mean cosine (0: the
    linear start), stopping after ``PATIENCE`` epochs without a better R@1; without: exactly ``epochs``."""
    import torch

    epochs = MAX_EPOCHS if epochs is None else epochs
    functional = torch.nn.functional
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.from_numpy(np.ascontiguousarray(centred, dtype=np.float32))
    linear = torch.from_numpy(np.ascontiguousarray(start, dtype=np.float32))
    goal = torch.from_numpy(np.ascontiguousarray(target, dtype=np.float32))
    width = min(HIDDEN, 2 * max(inputs.shape[1], goal.shape[1]))
    scale = 1.0 / max(float(inputs[rows].norm(dim=1).mean()), 1e-6)  # hidden pre-activations of unit scale
    hidden_weight = (torch.randn(inputs.shape[1], width, generator=generator) * scale).requires_grad_()
    hidden_bias = torch.zeros(width, requires_grad=True)
    output_weight = torch.zeros(width, goal.shape[1], requires_grad=True)
    optimiser = torch.optim.AdamW([{"params": [hidden_weight, output_weight], "weight_decay": WEIGHT_DECAY},
                                   {"params": [hidden_bias], "weight_decay": 0.0}], lr=LEARNING_RATE)

    def mapped(batch: torch.Tensor) -> torch.Tensor:
        return functional.normalize(linear[batch] + torch.relu(inputs[batch] @ hidden_weight + hidden_bias) @ output_weight,
                                    dim=1)

    def snapshot(epoch: int) -> Correction:
        return Correction(hidden_weight.detach().numpy().copy(), hidden_bias.detach().numpy().copy(),
                          output_weight.detach().numpy().copy(), epoch)

    def validation_score() -> tuple[float, float]:
        with torch.no_grad():
            return retrieval_score(mapped(torch.from_numpy(validation)).numpy(), target[validation])

    order, step = torch.from_numpy(np.asarray(rows, dtype=np.int64)), 0
    best = (validation_score(), snapshot(0)) if validation is not None else None
    best_r_at_1, stale = (best[0][0] if best is not None else 0.0), 0
    with torch.enable_grad():
        for epoch in range(1, epochs + 1):
            shuffled = order[torch.randperm(order.numel(), generator=generator)]
            for batch in torch.split(shuffled, BATCH_SIZE):
                out, partners = mapped(batch), goal[batch]
                logits = out @ partners.T / TEMPERATURE
                loss = (functional.cross_entropy(logits, torch.arange(batch.numel()))
                        + (1.0 - (out * partners).sum(dim=1)).mean())
                for group in optimiser.param_groups:
                    group["lr"] = LEARNING_RATE * min(1.0, (step + 1) / WARMUP_STEPS)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                step += 1
            if best is None:
                continue
            score = validation_score()
            if score > best[0]:
                best = (score, snapshot(epoch))
            if score[0] > best_r_at_1:  # a better mean cosine alone does not keep training going
                best_r_at_1, stale = score[0], 0
            else:
                stale += 1
                if stale >= PATIENCE:
                    break
    return best[1] if best is not None else snapshot(epochs)


def _forward(centred: np.ndarray, matrix: np.ndarray, target_mean: np.ndarray, hidden_weight: np.ndarray,
             hidden_bias: np.ndarray, output_weight: np.ndarray) -> np.ndarray:
    """The map before normalising, numpy only (what ``train_correction`` computes with torch)."""
    return centred @ matrix + target_mean + np.maximum(centred @ hidden_weight + hidden_bias, 0.0) @ output_weight
