"""One net alone (the stack of one): the hand-written kernel for plain MLPs, autograd for anything else.

Both run the same epoch as the stack does, behind the same few methods the loop calls (see `StackStepper`):
`train_epoch(perms)`, `evaluate()`, `snapshot()`, `export()`, `load()`. Autograd serves any module, L-BFGS
(full batch, a line search: never stacked) and CUDA autocast (bf16 / fp16).
"""

from __future__ import annotations

import torch
from torch import nn

from automlp.data import TrainData
from automlp.engine.config import TrainConfig, loss_module, predict, resolve_precision, seed_everything, targets
from automlp.engine.mlp_kernel import MLPKernel
from automlp.engine.optim import make_torch_optimizer
from automlp.model import MLPConfig, build_net


class _AutogradLoop:
    """The general step: any module, any optimizer (L-BFGS full batch too), CUDA autocast."""

    def __init__(self, model: nn.Module, data: TrainData, config: TrainConfig, precision: str):
        self.label_smoothing = config.label_smoothing if data.task == "classification" else 0.0
        self.model, self.loss_fn = model, loss_module(data.task, self.label_smoothing)
        # a net of blocks says its own training loss (TabM: the mean of its members' losses)
        self.own_loss = getattr(model, "training_loss", None)
        self.X, self.y = data.X_train, targets(data.y_train, data.task)
        self.opt = make_torch_optimizer(model, config, data.device)
        self.base_lr = [g["lr"] for g in self.opt.param_groups]
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
            if self.own_loss is not None:
                return self.own_loss(xb, yb.reshape(len(xb), -1).squeeze(1), self.label_smoothing)
            return self.loss_fn(self.model(xb).float(), yb)

    def run_epoch(self, perm: torch.Tensor, lr_scale: float) -> torch.Tensor:
        """One pass; returns the summed training loss on the device (no host sync)."""
        for group, lr in zip(self.opt.param_groups, self.base_lr):
            group["lr"] = lr * lr_scale
        self.model.train()
        if self.full_batch:
            return self._lbfgs_epoch()
        X, y, opt = self.X, self.y, self.opt
        loss_sum = torch.zeros((), device=X.device)
        for i in range(0, len(X), self.bs):
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

    def _lbfgs_epoch(self) -> torch.Tensor:
        first: list[torch.Tensor] = []  # the data loss before the step, as the mini-batch loops report

        def closure():
            self.opt.zero_grad(set_to_none=True)
            loss = self._loss(self.X, self.y)
            if not first:
                first.append(loss.detach())
            if self.alpha:
                loss = loss + 0.5 * self.alpha * sum(p.pow(2).sum() for p in self.penalised)
            loss.backward()
            return loss

        self.opt.step(closure)
        return first[0] * len(self.X)

    def finish(self) -> None:
        pass


class _KernelLoop:
    """The fast step for plain MLPs (see mlp_kernel.py): same batches, same maths, no autograd."""

    def __init__(self, model: nn.Module, data: TrainData, config: TrainConfig):
        self.kernel = MLPKernel(model, data.task, data.n_classes, config)
        self.X = data.X_train
        # targets as the kernel wants them: one-hot floats (classification) or an (n, 1) column (regression)
        self.T = (nn.functional.one_hot(data.y_train, data.n_classes).float() if data.task == "classification"
                  else data.y_train.view(-1, 1).float())
        self.bs = min(config.batch_size, len(self.X))
        self.weights = [self.kernel.flat]

    def run_epoch(self, perm: torch.Tensor, lr_scale: float) -> torch.Tensor:
        return self.kernel.train_epoch(self.X, self.T, perm, self.bs, lr_scale)

    def finish(self) -> None:
        self.kernel.release()


class SingleStepper:
    """One row: one model trained in place (the kernel when it supports the model, else autograd)."""

    n_rows = 1

    def __init__(self, model: nn.Module, data: TrainData, config: TrainConfig, host_export: bool = True):
        self.host_export = host_export  # False: `train(model, ...)` leaves the model where it was given
        self._setup(model, data, config)

    def _setup(self, model: nn.Module, data: TrainData, config: TrainConfig) -> None:
        self.model, self.data, self.config = model, data, config
        precision = resolve_precision(config.precision, data.device)
        if MLPKernel.supports(model, config.optimizer, data.device, precision) and not config.label_smoothing:
            self.loop: _AutogradLoop | _KernelLoop = _KernelLoop(model, data, config)
        else:
            self.loop = _AutogradLoop(model, data, config, precision)
        self.loss_fn = loss_module(data.task)
        self.yv = targets(data.y_val, data.task)
        self.best = [w.detach().clone() for w in self.loop.weights]
        self.lr_scale = 1.0

    @classmethod
    def build(cls, net: MLPConfig, data: TrainData, config: TrainConfig) -> "SingleStepper":
        """The model a K = 1 training of this config starts from: seeded as `train` always was."""
        seed_everything(config.seed)
        return cls(build_net(net, data.X_train).to(data.device), data, config)

    def load(self, row: int, net: MLPConfig, config: TrainConfig, data: TrainData) -> None:
        """A refill: the next member, built and seeded as if trained alone."""
        seed_everything(config.seed)
        self._setup(build_net(net, data.X_train).to(data.device), data, config)

    def freeze(self, row: int) -> None:
        pass

    def set_lr_scales(self, scales: list[float]) -> None:
        self.lr_scale = scales[0]

    def train_epoch(self, perms: list[torch.Tensor | None]) -> torch.Tensor:
        return (self.loop.run_epoch(perms[0], self.lr_scale) / len(self.data.X_train)).view(1)

    def evaluate(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = predict(self.model, self.data.X_val)
        return self.loss_fn(out, self.yv).view(1), out.unsqueeze(0)

    def snapshot(self, rows: list[int]) -> None:
        for b, w in zip(self.best, self.loop.weights):
            b.copy_(w)

    @torch.no_grad()
    def restore_best(self) -> nn.Module:
        """The model with its best epoch's weights, in place and with its own storage again (for export)."""
        for b, w in zip(self.best, self.loop.weights):
            w.copy_(b)
        self.loop.finish()
        return self.model

    def export(self, row: int) -> nn.Module:
        model = self.restore_best()
        return model.cpu() if self.host_export else model
