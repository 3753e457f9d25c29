"""Tensors on the device: resolving `training.device` and moving the splits there once per study."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from automlp.data.splits import PreparedData
from automlp.errors import SpecError

if TYPE_CHECKING:
    import torch

@dataclass
class TrainData:
    """Training and validation tensors, resident on the device for the whole study."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    task: str
    n_classes: int
    device: torch.device
    target_mean: float = 0.0
    target_std: float = 1.0


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda, then mps, then cpu; an explicit device that is not there is an error, not a fallback."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError(f"training.device: {name} was asked for, but torch sees no CUDA GPU here "
                            f"(torch {torch.__version__}); use device: auto or cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise SpecError(f"training.device: {name} does not exist; this machine has "
                            f"{torch.cuda.device_count()} GPU(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SpecError("training.device: mps was asked for, but it is not available here; use auto or cpu")
    return torch.device(name)


def to_tensors(data: PreparedData, device: torch.device) -> TrainData:
    """Move the training and validation splits to the device once, for the whole study."""
    import torch

    y_dtype = torch.long if data.task == "classification" else torch.float32

    def put(a: np.ndarray, dtype: Any) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype).to(device)

    return TrainData(
        X_train=put(data.X_train, torch.float32), y_train=put(data.y_train, y_dtype),
        X_val=put(data.X_val, torch.float32), y_val=put(data.y_val, y_dtype),
        task=data.task, n_classes=len(data.classes), device=device,
        target_mean=data.target_mean, target_std=data.target_std)
