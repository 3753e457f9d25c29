"""What one training run is given and what it returns: `TrainConfig`, `TrainResult`, and the helpers every
path shares (seeding, losses, prediction, precision)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    """Concrete training hyperparameters of one trial."""

    optimizer: str = "adam"  # a name of automlp.registry.OPTIMIZERS
    lr: float = 1e-3
    alpha: float = 0.0  # L2 penalty on weights (not biases): Adam/SGD add it to the gradient, AdamW decouples it
    batch_size: int = 64
    max_epochs: int = 100
    lr_schedule: str = "constant"  # a name of automlp.registry.LR_SCHEDULES
    momentum: float = 0.9
    nesterov: bool = True
    power_t: float = 0.5
    betas: tuple[float, float] = (0.9, 0.999)  # adam / adamw, per member of a stack
    label_smoothing: float = 0.0  # classification's training loss only (validation loss stays plain)
    patience: int | None = 10  # None: no early stopping (the best epoch's weights are still restored)
    min_delta: float = 1e-4
    monitor: str = "val_loss"  # val_loss | val_score
    seed: int = 0
    metric: str = "accuracy"
    precision: str = "fp32"  # fp32 | bf16 | fp16 (CUDA autocast)


@dataclass
class TrainResult:
    history: dict[str, list[float]]
    best_epoch: int  # 1-based
    n_epochs: int
    stop_reason: str  # max_epochs | early_stopping | pruned | diverged | interrupted
    best_val_score: float
    best_val_loss: float
    train_time_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason == "early_stopping"


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def loss_module(task: str, label_smoothing: float = 0.0) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing) if task == "classification" else nn.MSELoss()


def targets(y: torch.Tensor, task: str) -> torch.Tensor:
    """y as the loss wants it: class ids, or an (n, 1) column of standardised values."""
    return y if task == "classification" else y.view(-1, 1)


def row_losses(outputs: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Per-row loss of each member: (K, B, C) logits or (K, B, 1) values against y of (B,) or (K, B) -> (K, B)."""
    k, n = outputs.shape[0], outputs.shape[1]
    y = y.expand(k, n) if y.dim() == 1 else y
    if task == "classification":
        return F.cross_entropy(outputs.reshape(k * n, -1), y.reshape(-1), reduction="none").view(k, n)
    return (outputs.squeeze(-1) - y).square()


def member_losses(outputs: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Mean loss of each member: cross-entropy (binary too) or MSE on standardised targets -> (K,)."""
    return row_losses(outputs, y, task).mean(dim=1)


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Outputs for all rows in eval mode, in chunks so memory stays bounded."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(X[i:i + chunk]) for i in range(0, len(X), chunk)]) if len(X) else model(X)
    model.train(was_training)
    return out


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp32 | bf16 | fp16: mixed precision (CUDA autocast) only where it is asked for, and only on CUDA.

    "auto" is fp32: measured on an H200 (bench/trainer.py, 2026-11-23), bf16 autocast made these small nets
    slower, not faster (digits 2x128: 17.8 vs 14.4 ms/epoch through autograd; 100k x 50 3x512 at batch 2048:
    81 vs 68 ms), since they are bound by launches, not arithmetic, and it keeps them off the CUDA-graph path
    (3.5 and 25 ms), at no gain in accuracy.
    """
    if device.type != "cuda" or precision == "auto":
        return "fp32"
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        return "fp16"
    return precision
