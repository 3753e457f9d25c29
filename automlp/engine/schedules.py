"""The one lr-schedule registry: each name of `automlp.registry.LR_SCHEDULES` is a multiplier of a member's lr
for an epoch, a pure function of its config, the epoch (1-based, the member's own) and its val_loss history.

The same multiplier serves one net and every member of a stack, so a refilled slot starts its schedule afresh.
The forms are torch's schedulers written in closed form (automlp trained with those before).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from automlp.blocks.schedules import SCHEDULES as RECIPE_SCHEDULES
from automlp.engine.config import TrainConfig

Schedule = Callable[[TrainConfig, int, Sequence[float]], float]


def _constant(tc: TrainConfig, epoch: int, val_losses: Sequence[float]) -> float:
    return 1.0


def _invscaling(tc: TrainConfig, epoch: int, val_losses: Sequence[float]) -> float:
    return 1.0 / epoch ** tc.power_t  # sklearn's invscaling per epoch: LambdaLR(lambda e: 1 / (e + 1) ** power_t)


def _cosine(tc: TrainConfig, epoch: int, val_losses: Sequence[float]) -> float:
    # CosineAnnealingLR(T_max=max_epochs), closed form
    return (1.0 + math.cos(math.pi * (epoch - 1) / max(tc.max_epochs, 1))) / 2.0


def _adaptive(tc: TrainConfig, epoch: int, val_losses: Sequence[float]) -> float:
    # sklearn's "adaptive": divide by 5 after 2 epochs without improvement; as ReduceLROnPlateau(factor 0.2,
    # patience 2, abs threshold min_delta), replayed over the history
    scale, best, bad = 1.0, math.inf, 0
    for v in val_losses:
        if v < best - tc.min_delta:
            best, bad = v, 0
        else:
            bad += 1
        if bad > 2:
            scale, bad = scale * 0.2, 0
    return scale


def _recipe(name: str) -> Schedule:
    fn = RECIPE_SCHEDULES[name]  # warmup_cosine, flat_cosine, coslog4: see automlp.blocks.schedules
    return lambda tc, epoch, val_losses: fn(epoch, tc.max_epochs)


SCHEDULES: dict[str, Schedule] = {"constant": _constant, "invscaling": _invscaling, "adaptive": _adaptive,
                                  "cosine": _cosine} | {name: _recipe(name) for name in RECIPE_SCHEDULES}


def lr_multiplier(tc: TrainConfig, epoch: int, val_losses: Sequence[float]) -> float:
    return SCHEDULES[tc.lr_schedule](tc, epoch, val_losses)
