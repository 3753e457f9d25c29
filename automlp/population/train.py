"""Train several (MLPConfig, TrainConfig) pairs as one stack: the population counterpart of `automlp.train.train`.

Members of one stack must share what one kernel cannot vary per member (`stack_key`): depth, activation,
optimizer family, batch size, max_epochs and the early-stopping rule; widths, dropout, lr, alpha, momentum, nesterov, the lr
schedule and the seed of the initial weights are each member's own. Every member starts from exactly the weights
`build_mlp` gives its config after `seed_everything(config.seed)`, as on the sequential path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from automlp.data import TrainData
from automlp.metrics import get_metric, score
from automlp.model import MLPConfig, build_mlp
from automlp.population.loop import EpochCallback, LoopConfig, StackTrainer
from automlp.population.optim import FAMILIES, StackedOptimizer
from automlp.population.stack import PopulationMLP
from automlp.train import TrainConfig, TrainResult, seed_everything


def stack_key(mlp: MLPConfig, tc: TrainConfig) -> tuple | None:
    """Configs with equal keys can share a stack; None: this one cannot be stacked (lbfgs: full-batch line search)."""
    if tc.optimizer not in FAMILIES:
        return None
    return (mlp.n_inputs, mlp.n_outputs, mlp.depth, mlp.activation, tc.optimizer, tc.batch_size, tc.max_epochs,
            tc.patience, tc.min_delta, tc.monitor, tc.metric)  # fmt: skip


def schedule_scale(tc: TrainConfig, epoch: int, val_losses: Sequence[float]) -> float:
    """The lr multiplier of `epoch` (1-based) under tc.lr_schedule, as automlp.train's torch schedulers give it."""
    e = epoch - 1  # scheduler steps taken before this epoch
    if tc.lr_schedule == "invscaling":  # LambdaLR(lambda e: 1 / (e + 1) ** power_t)
        return 1.0 / (e + 1) ** tc.power_t
    if tc.lr_schedule == "cosine":  # CosineAnnealingLR(T_max=max_epochs), closed form
        return (1.0 + math.cos(math.pi * e / max(tc.max_epochs, 1))) / 2.0
    if tc.lr_schedule == "adaptive":  # ReduceLROnPlateau(factor 0.2, patience 2, abs threshold min_delta), replayed
        scale, best, bad = 1.0, math.inf, 0
        for v in val_losses:
            if v < best - tc.min_delta:
                best, bad = v, 0
            else:
                bad += 1
            if bad > 2:
                scale, bad = scale * 0.2, 0
        return scale
    return 1.0


def train_population(mlps: Sequence[MLPConfig], configs: Sequence[TrainConfig], data: TrainData,
                     on_epoch: EpochCallback | None = None, batch_seed: int | None = None,
                     compact_below: float = 0.5, deadline: float | None = None,
                     ) -> list[tuple[nn.Module, TrainResult]]:  # fmt: skip
    """Train the members together; returns each member's plain model (holding its best epoch's weights) and result.

    on_epoch(epoch, {member index: val_score}) -> member indices to stop now (pruned). batch_seed seeds the shared
    batch order (default: the first member's seed).
    """
    keys = {stack_key(m, c) for m, c in zip(mlps, configs)}
    if len(keys) != 1 or None in keys:
        raise ValueError(f"these configs cannot share one stack (keys {keys}); group them with stack_key first")
    device, first = data.device, configs[0]
    net = PopulationMLP(mlps[0].n_inputs, mlps[0].n_outputs, [m.widths for m in mlps], mlps[0].activation,
                        dropout=[m.dropout for m in mlps], device=device)  # fmt: skip
    for k, (mlp, tc) in enumerate(zip(mlps, configs)):
        seed_everything(tc.seed)
        net.load_member(k, build_mlp(mlp))
    opt = StackedOptimizer(net.flat, net.flat_grad, first.optimizer, lr=[c.lr for c in configs],
                           alpha=[c.alpha for c in configs], momentum=[c.momentum for c in configs],
                           nesterov=[c.nesterov and c.momentum > 0 for c in configs], n_decay=net.n_weights)  # fmt: skip
    metric = get_metric(first.metric)
    y_val_host = data.y_val.cpu().numpy()
    loop = LoopConfig(
        batch_size=first.batch_size, max_epochs=first.max_epochs, task=data.task,
        score_fn=lambda out: score(first.metric, y_val_host, out, data.target_mean, data.target_std),
        minimize_score=metric.direction == "minimize", batch_seed=first.seed if batch_seed is None else batch_seed,
        patience=first.patience, min_delta=first.min_delta, monitor=first.monitor, compact_below=compact_below,
        deadline=deadline,
    )  # fmt: skip
    trainer = StackTrainer(net, opt, loop)

    def lr_scale(epoch: int, histories: dict[int, list[float]]) -> dict[int, float]:
        return {m: schedule_scale(configs[m], epoch, h) for m, h in histories.items()}

    results = trainer.fit(data.X_train, data.y_train, data.X_val, data.y_val, on_epoch, lr_scale)
    out = []
    for k, (mlp, result) in enumerate(zip(mlps, results)):
        model = net.export_member(k, build_mlp(mlp).to(device), trainer.best_flat[k])
        out.append((model, result))
    return out
