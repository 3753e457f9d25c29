"""The learning-rate schedules the blocks' recipes use, as pure multipliers of an epoch (torch-free; the engine's
schedule registry serves them under these names of `space.lr_schedule`).

Each is evaluated at the middle of the epoch, t = (epoch - 0.5) / max_epochs in (0, 1), since the engine sets
one lr per epoch (RealMLP and TabM change it every step; with tens of epochs the difference is small).

- warmup_cosine: linear warm-up over the first 5% (at least the first epoch), then cosine to 0.
- flat_cosine: flat for the first half, then cosine to 0 (RealMLP's flat_cos).
- coslog4: RealMLP's multi-cycle schedule, 0.5 * (1 - cos(2 pi log2(1 + 15 t))): four cycles on a log time scale,
  each rising from 0 to 1 and back, the later ones longer (pytabkit's CoslogFunc(4)).
"""

from __future__ import annotations

import math

WARMUP = 0.05


def _t(epoch: int, max_epochs: int) -> float:
    return (epoch - 0.5) / max(max_epochs, 1)


def warmup_cosine(epoch: int, max_epochs: int) -> float:
    t, w = _t(epoch, max_epochs), max(WARMUP, 1.0 / max(max_epochs, 1))
    if t < w:
        return t / w
    return 0.5 * (1.0 + math.cos(math.pi * min((t - w) / (1.0 - w), 1.0)))


def flat_cosine(epoch: int, max_epochs: int) -> float:
    t = _t(epoch, max_epochs)
    return 1.0 if t < 0.5 else 0.5 * (1.0 + math.cos(math.pi * min((t - 0.5) / 0.5, 1.0)))


def coslog4(epoch: int, max_epochs: int) -> float:
    t = min(_t(epoch, max_epochs), 1.0)
    return 0.5 * (1.0 - math.cos(2.0 * math.pi * math.log2(1.0 + 15.0 * t)))


SCHEDULES = {"warmup_cosine": warmup_cosine, "flat_cosine": flat_cosine, "coslog4": coslog4}
