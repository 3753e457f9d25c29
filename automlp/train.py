"""`train(model, data, config, on_epoch)`: one network, trained on device-resident tensors. No Optuna here.

The data already lives on the device (see `data.to_tensors`); an epoch is a random permutation sliced into
batches. The only host-device sync points are once per epoch (losses and the validation score), so a GPU
never waits on Python between batches.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from automlp.backprop import MLPKernel
from automlp.data import TrainData
from automlp.metrics import get_metric, score

__all__ = ["TrainConfig", "TrainData", "TrainResult", "train", "predict", "seed_everything", "early_stopping_check"]


@dataclass(frozen=True)
class TrainConfig:
    """Concrete training hyperparameters of one trial."""

    optimizer: str = "adam"  # adam | adamw | sgd | lbfgs
    lr: float = 1e-3
    alpha: float = 0.0  # L2 penalty on weights (not biases): Adam/SGD add it to the gradient, AdamW decouples it
    batch_size: int = 64
    max_epochs: int = 100
    lr_schedule: str = "constant"  # constant | invscaling | adaptive | cosine
    momentum: float = 0.9
    nesterov: bool = True
    power_t: float = 0.5
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
    stop_reason: str  # max_epochs | early_stopping | pruned | diverged
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


def early_stopping_check(value: float, best: float, epochs_since_best: int, patience: int | None,
                         min_delta: float, minimize: bool) -> tuple[bool, bool, str]:
    """Pure rule: (improved, should_stop, reason). `epochs_since_best` counts epochs before this one."""
    improved = (value < best - min_delta) if minimize else (value > best + min_delta)
    if improved:
        return True, False, ""
    waited = epochs_since_best + 1
    if patience is not None and waited >= patience:
        return False, True, f"no improvement of more than {min_delta:g} in {patience} epochs"
    return False, False, ""


def _loss_fn(task: str) -> nn.Module:
    return nn.CrossEntropyLoss() if task == "classification" else nn.MSELoss()


def _param_groups(model: nn.Module, alpha: float) -> list[dict]:
    # like sklearn, the L2 penalty applies to weights, not biases
    decay = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    return [{"params": decay, "weight_decay": alpha}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    groups = _param_groups(model, cfg.alpha)
    # fused kernels do the whole update in one call per step; that is the biggest per-step saving on small nets
    fused = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, **fused)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **fused)
    if cfg.optimizer == "sgd":
        fused = fused if cfg.momentum > 0 or not cfg.nesterov else {}
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0, **fused)
    if cfg.optimizer == "lbfgs":
        # like sklearn's lbfgs solver: full batch, learning rate replaced by a line search of up to 20
        # evaluations (scipy's maxls). One iteration per epoch; torch's default max_eval (max_iter * 5 // 4 = 1)
        # would leave the line search no evaluation beyond the first, and a trial stalled at step 0 for good.
        return torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=1, max_eval=1 + 20, history_size=10,
                                 line_search_fn="strong_wolfe")
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig):
    if cfg.lr_schedule == "invscaling":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0 / (e + 1) ** cfg.power_t)
    if cfg.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.max_epochs, 1))
    if cfg.lr_schedule == "adaptive":
        # sklearn's "adaptive" divides the rate by 5 after 2 epochs without improvement
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.2, patience=2,
                                                          threshold=cfg.min_delta, threshold_mode="abs")
    return None


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Outputs for all rows in eval mode, in chunks so memory stays bounded."""
    was_training = model.training
    model.eval()
    out = torch.cat([model(X[i:i + chunk]) for i in range(0, len(X), chunk)]) if len(X) else model(X)
    model.train(was_training)
    return out


def _targets(y: torch.Tensor, task: str) -> torch.Tensor:
    return y if task == "classification" else y.view(-1, 1)


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


class _AutogradLoop:
    """The general step: any module, any optimizer (L-BFGS full batch too), CUDA autocast."""

    def __init__(self, model: nn.Module, data: TrainData, config: TrainConfig, precision: str):
        self.model, self.loss_fn = model, _loss_fn(data.task)
        self.X, self.y = data.X_train, _targets(data.y_train, data.task)
        self.opt = make_optimizer(model, config, data.device)
        self.full_batch = config.optimizer == "lbfgs"
        self.bs = len(self.X) if self.full_batch else min(config.batch_size, len(self.X))
        self.amp = precision != "fp32"
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        # fp16 needs loss scaling against underflowing gradients; bf16 has fp32's range and does not
        self.scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        self.weights = list(model.state_dict().values())
        # L-BFGS has no weight_decay: its L2 penalty is part of the loss it minimises (and line-searches),
        # alpha/2 * |w|^2 over the weights, which has the gradient weight_decay=alpha gives the other optimizers
        self.penalised = [p for name, p in model.named_parameters() if not name.endswith("bias")]
        self.alpha = config.alpha if self.full_batch else 0.0

    def _loss(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.X.device.type, dtype=self.dtype, enabled=self.amp):
            return self.loss_fn(self.model(xb).float(), yb)

    def run_epoch(self, gen: torch.Generator) -> torch.Tensor:
        """One pass; returns the summed training loss on the device (no host sync)."""
        model, opt, X, y, n = self.model, self.opt, self.X, self.y, len(self.X)
        model.train()
        if self.full_batch:
            first: list[torch.Tensor] = []  # the data loss before the step, as the mini-batch loops report

            def closure():
                opt.zero_grad(set_to_none=True)
                loss = self._loss(X, y)
                if not first:
                    first.append(loss.detach())
                if self.alpha:
                    loss = loss + 0.5 * self.alpha * sum(p.pow(2).sum() for p in self.penalised)
                loss.backward()
                return loss
            opt.step(closure)
            return first[0] * n
        loss_sum = torch.zeros((), device=X.device)
        perm = torch.randperm(n, generator=gen, device=X.device)
        for i in range(0, n, self.bs):
            idx = perm[i:i + self.bs]
            loss = self._loss(X.index_select(0, idx), y.index_select(0, idx))  # ~5x faster than X[idx] on CPU
            opt.zero_grad(set_to_none=True)
            if self.scaler is None:
                loss.backward()
                opt.step()
            else:
                self.scaler.scale(loss).backward()
                self.scaler.step(opt)
                self.scaler.update()
            loss_sum += loss.detach() * len(idx)  # stays on the device: no sync per batch
        return loss_sum

    def finish(self) -> None:
        pass


class _KernelLoop:
    """The fast step for plain MLPs (see automlp.backprop): same batches, same maths, no autograd."""

    def __init__(self, model: nn.Module, data: TrainData, config: TrainConfig):
        self.kernel = MLPKernel(model, data.task, data.n_classes, config.optimizer, config.alpha,
                                config.momentum, config.nesterov)
        self.X = data.X_train
        # targets as the kernel wants them: one-hot floats (classification) or an (n, 1) column (regression)
        self.T = (nn.functional.one_hot(data.y_train, data.n_classes).float() if data.task == "classification"
                  else data.y_train.view(-1, 1).float())
        self.bs = min(config.batch_size, len(self.X))
        # an optimizer that updates nothing: it only holds the learning rate the lr scheduler sets
        self.opt = torch.optim.SGD([torch.zeros(1, device=data.device)], lr=config.lr)
        self.weights = [self.kernel.flat]

    def run_epoch(self, gen: torch.Generator) -> torch.Tensor:
        perm = torch.randperm(len(self.X), generator=gen, device=self.X.device)
        return self.kernel.train_epoch(self.X, self.T, perm, self.bs, self.opt.param_groups[0]["lr"])

    def finish(self) -> None:
        self.kernel.release()


def train(model: nn.Module, data: TrainData, config: TrainConfig,
          on_epoch: Callable[[int, float], bool] | None = None) -> TrainResult:
    """Train until max_epochs, early stopping, divergence, or `on_epoch` returning True (pruned).

    On return the model holds the weights of its best epoch (by `config.monitor`).
    """
    device = data.device
    metric = get_metric(config.metric)
    loss_fn = _loss_fn(data.task)
    Xv, yv = data.X_val, _targets(data.y_val, data.task)
    yv_host = data.y_val.cpu().numpy()
    precision = resolve_precision(config.precision, device)
    if MLPKernel.supports(model, config.optimizer, device, precision):
        loop: _AutogradLoop | _KernelLoop = _KernelLoop(model, data, config)
    else:
        loop = _AutogradLoop(model, data, config, precision)
    sched = make_scheduler(loop.opt, config)
    if sched is not None and isinstance(loop, _KernelLoop):
        # the kernel's stand-in optimizer never steps, and torch would warn on every trial that the schedule
        # steps first; its parameter has no gradient, so this step changes nothing but tells the scheduler
        loop.opt.step()
    gen = torch.Generator(device=device).manual_seed(config.seed)
    minimize = config.monitor == "val_loss" or metric.direction == "minimize"

    n = len(data.X_train)
    best_weights = [w.detach().clone() for w in loop.weights]
    history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "val_score": []}
    best_monitor = math.inf if minimize else -math.inf
    best_epoch, since_best, stop_reason = 0, 0, "max_epochs"
    notes: list[str] = []
    start = time.perf_counter()
    for epoch in range(1, config.max_epochs + 1):
        loss_sum = loop.run_epoch(gen)
        out_val = predict(model, Xv)
        # the one host-device sync of the epoch
        train_loss = float(loss_sum) / n
        val_loss = float(loss_fn(out_val, yv))
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            stop_reason = "diverged"
            notes.append(f"loss became {train_loss if not math.isfinite(train_loss) else val_loss} at epoch {epoch}")
            break
        val_score = score(config.metric, yv_host, out_val.float().cpu().numpy(), data.target_mean, data.target_std)
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val_loss)
        history["val_score"].append(val_score)
        monitored = val_loss if config.monitor == "val_loss" else val_score
        improved, stop, reason = early_stopping_check(monitored, best_monitor, since_best, config.patience,
                                                      config.min_delta, minimize)
        if improved or best_epoch == 0:
            best_monitor, best_epoch, since_best = monitored, epoch, 0
            for b, w in zip(best_weights, loop.weights):
                b.copy_(w)
        else:
            since_best += 1
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val_loss)
        elif sched is not None:
            sched.step()
        if on_epoch is not None and on_epoch(epoch, val_score):
            stop_reason = "pruned"
            break
        if stop:
            stop_reason = "early_stopping"
            notes.append(reason)
            break
    with torch.no_grad():
        for b, w in zip(best_weights, loop.weights):
            w.copy_(b)
    loop.finish()
    del loop, sched, best_weights
    i = best_epoch - 1
    return TrainResult(
        history=history, best_epoch=best_epoch, n_epochs=len(history["train_loss"]), stop_reason=stop_reason,
        best_val_score=history["val_score"][i] if best_epoch else float("nan"),
        best_val_loss=history["val_loss"][i] if best_epoch else float("nan"),
        train_time_s=time.perf_counter() - start, notes=notes)
