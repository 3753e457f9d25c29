"""The one optimizer registry: Adam, AdamW and SGD over a stack of members, each with its own hyperparameters;
L-BFGS for one net alone.

torch.optim takes one learning rate per parameter group, so K members would need K groups and K times the kernel
launches. Here every hyperparameter is a (K, 1) column broadcast over the flat (K, P) parameter tensor, and one
step is a handful of tensor ops whatever K is. One net is the stack of one: the hand-written single-net kernel
(mlp_kernel.py) steps through this class too. The update rules are torch's own (torch.optim.Adam / AdamW / SGD,
dampening 0), checked member by member in tests/test_engine_stack.py:

- adam:  g = grad + alpha * p (L2 added to the gradient, like Adam's weight_decay)
- adamw: p = p * (1 - lr * alpha) before the Adam step (decoupled weight decay)
- sgd:   g = grad + alpha * p; buf = momentum * buf + g; d = g + momentum * buf if nesterov else buf; p -= lr * d

alpha acts on the first `n_decay` columns of a row (the weights; biases are not penalised, as in sklearn).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from automlp.adapters import fused_steps
from automlp.engine.config import TrainConfig
from automlp.registry import STACKABLE_OPTIMIZERS

FAMILIES = STACKABLE_OPTIMIZERS
# name -> the torch.optim class the autograd path (any module, mixed precision) uses: the same rule, torch's code
TORCH_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD, "lbfgs": torch.optim.LBFGS}
OPTIMIZERS = tuple(TORCH_OPTIMIZERS)


# a hyperparameter a caller leaves out takes torch.optim's default (nesterov: 1.0 = on, 0.0 = off)
HP_DEFAULTS = {"lr": 1e-3, "alpha": 0.0, "beta1": 0.9, "beta2": 0.999, "momentum": 0.0, "nesterov": 0.0}


def _column(values: Sequence[float], device: torch.device) -> torch.Tensor:
    return torch.as_tensor([float(v) for v in values], dtype=torch.float32, device=device).view(-1, 1)


def hyperparameters(configs: Sequence[TrainConfig]) -> dict[str, list[float]]:
    """The per-member columns of a stack's optimizer, from each member's TrainConfig."""
    return {"lr": [c.lr for c in configs], "alpha": [c.alpha for c in configs],
            "beta1": [c.betas[0] for c in configs], "beta2": [c.betas[1] for c in configs],
            "momentum": [c.momentum for c in configs],
            "nesterov": [float(c.nesterov and c.momentum > 0) for c in configs]}


class StackedOptimizer:
    """One optimizer family for all members; lr, alpha, betas, momentum and nesterov are per member.

    Two ways to run the same update. Batched (the default on GPUs): ~10 tensor ops over the whole (K, P) stack with
    (K, 1) hyperparameter columns, so the number of kernel launches does not grow with K (and a CUDA graph can
    capture it: everything that changes between epochs is written into the same tensors). Per-member fused (the
    default on CPUs): torch's own single-pass fused kernel (`torch._fused_adam_` & co, what `Adam(fused=True)`
    runs) called once per member on its row; on a CPU the batched form's passes over memory cost as much as the
    matrix products, one fused pass per member costs a fraction of that (bench/population.py measures both).
    """

    def __init__(self, params: torch.Tensor, grads: torch.Tensor, family: str, hp: dict[str, Sequence[float]],
                 eps: float = 1e-8, fused: bool | None = None, n_decay: int | None = None) -> None:
        if family not in FAMILIES:
            raise ValueError(f"the stacked optimizer supports {FAMILIES}; got {family!r}")
        k, dev = params.shape[0], params.device
        self.family, self.eps = family, eps
        self.n_decay = params.shape[1] if n_decay is None else n_decay
        self.fused = dev.type == "cpu" if fused is None else fused
        self.hp = {name: _column(hp.get(name, [default] * k), dev) for name, default in HP_DEFAULTS.items()}
        self.hp["steps"] = torch.zeros(k, 1, device=dev)
        self.state = [torch.zeros_like(params) for _ in range(1 if family == "sgd" else 2)]
        self.lr_scale = torch.ones(k, 1, device=dev)
        self._decay_factor = torch.ones(k, 1, device=dev)
        self._bind(params, grads)
        self.set_lr_scale([1.0] * k)

    def _bind(self, params: torch.Tensor, grads: torch.Tensor) -> None:
        self.params, self.grads = params, grads
        if self.fused:  # row views, made once: the fused kernels take lists of tensors
            self._rows = [list(t.unbind(0)) for t in (params, grads, *self.state, self.hp["steps"].view(-1))]
            self._host = {name: t.view(-1).tolist() for name, t in self.hp.items() if name != "steps"}

    def set_lr_scale(self, scale: Sequence[float]) -> None:
        """Per-member multipliers of lr until the next call (schedule x live mask: 0 freezes a member).

        Written into the same tensors each time, so a captured CUDA graph reads the new values."""
        self._host_scale = [float(s) for s in scale]
        self.lr_scale.copy_(torch.tensor(self._host_scale).view(-1, 1))
        self._any_decay = any(a != 0 for a in self.hp["alpha"].view(-1).tolist())
        # adamw's decoupled decay factor, fixed for the epoch: 1 - lr * alpha (1 for a frozen member)
        torch.sub(1.0, self.hp["lr"] * self.lr_scale * self.hp["alpha"], out=self._decay_factor)
        self._step_inc = (self.lr_scale != 0).float()

    def set_member(self, k: int, hp: dict[str, Sequence[float]]) -> None:
        """A new member in row k (a refilled slot): its hyperparameters, fresh state, step count 0."""
        with torch.no_grad():
            for name, values in hp.items():
                self.hp[name][k, 0] = float(values[0])
            self.hp["steps"][k] = 0.0
            for s in self.state:
                s[k].zero_()
        self._bind(self.params, self.grads)
        self.set_lr_scale(self._host_scale)

    def zero_grad(self) -> None:
        self.grads.zero_()

    @torch.no_grad()
    def step(self, rows: Sequence[int] | None = None) -> None:
        """One update of every member, or of `rows` only (members with their own rows may run out of batches
        before the others: the rest must not move, nor their optimizer state)."""
        if self.fused:
            self._fused_step(rows)
            return
        if rows is None:
            self._batched(self.params, self.grads, self.state, self.hp, self.lr_scale, self._decay_factor)
            return
        idx = torch.as_tensor(list(rows), device=self.params.device)
        p, g, state = self.params[idx], self.grads[idx], [s[idx] for s in self.state]
        hp = {name: t[idx] for name, t in self.hp.items()}
        self._batched(p, g, state, hp, self.lr_scale[idx], self._decay_factor[idx])
        for dst, src in ((self.params, p), *zip(self.state, state), (self.hp["steps"], hp["steps"])):
            dst.index_copy_(0, idx, src)

    def _batched(self, p, g, state, hp, lr_scale, decay_factor) -> None:
        if self._any_decay:
            # weight decay of the weights slice, in torch's order: before the moments see the gradient
            nd = self.n_decay
            if self.family == "adamw":
                p[:, :nd].mul_(decay_factor)
            else:
                g[:, :nd].addcmul_(p[:, :nd], hp["alpha"])
        lr = hp["lr"] * lr_scale
        if self.family == "sgd":
            (buf,) = state
            buf.mul_(hp["momentum"]).add_(g)
            # nesterov is 0/1 per member: d = g + momentum * buf where nesterov, buf elsewhere
            d = torch.addcmul(buf * (1.0 - hp["nesterov"]), g + hp["momentum"] * buf, hp["nesterov"])
            p.addcmul_(d, -lr)
            return
        m, v = state
        hp["steps"].add_(1.0)
        m.lerp_(g, 1.0 - hp["beta1"])
        v.mul_(hp["beta2"]).addcmul_(g * g, 1.0 - hp["beta2"])
        bias1 = 1.0 - hp["beta1"] ** hp["steps"]
        bias2_sqrt = (1.0 - hp["beta2"] ** hp["steps"]).sqrt()
        denom = (v.sqrt() / bias2_sqrt).add_(self.eps)
        p.addcmul_(m / denom, -lr / bias1)

    def _fused_step(self, rows: Sequence[int] | None) -> None:
        if self._any_decay:
            nd, h = self.n_decay, self._host
            for k in range(self.params.shape[0]) if rows is None else rows:
                if self.family == "adamw":
                    self.params[k, :nd].mul_(1.0 - h["lr"][k] * self._host_scale[k] * h["alpha"][k])
                elif h["alpha"][k] != 0.0:
                    self.grads[k, :nd].add_(self.params[k, :nd], alpha=h["alpha"][k])
        # One member's update is too small to share between threads: the fused CPU kernels split it anyway, and on
        # two busy cores that hand-off cost 15 ms a call instead of 12 us (measured on a K=32 step: 15.1 ms with 2
        # threads, 1.9 ms with 1). So a stack's member loop runs on one thread; one net alone keeps them all.
        n_threads = torch.get_num_threads()
        if self.params.shape[0] > 1:
            torch.set_num_threads(1)
        try:
            self._fused_members(range(self.params.shape[0]) if rows is None else rows)
        finally:
            torch.set_num_threads(n_threads)

    def _fused_members(self, members) -> None:
        h, rows = self._host, self._rows
        for k in members:
            scale = self._host_scale[k]
            if scale == 0.0:
                continue  # frozen: not even its optimizer state moves
            lr = h["lr"][k] * scale
            if self.family == "sgd":
                bufs = [rows[2][k]] if h["momentum"][k] != 0.0 else []
                fused_steps()["sgd"]([rows[0][k]], [rows[1][k]], bufs, weight_decay=0.0, momentum=h["momentum"][k],
                                  lr=lr, dampening=0.0, nesterov=bool(h["nesterov"][k]), maximize=False,
                                  is_first_step=False)  # fmt: skip
                continue
            rows[-1][k].add_(1.0)  # the fused kernels read the step count; torch.optim increments it first
            kernel = fused_steps()[self.family]  # adam | adamw
            kernel([rows[0][k]], [rows[1][k]], [rows[2][k]], [rows[3][k]], [], [rows[-1][k]], lr=lr,
                   beta1=h["beta1"][k], beta2=h["beta2"][k], weight_decay=0.0, eps=self.eps,
                   amsgrad=False, maximize=False)  # fmt: skip

    def relayout(self, move, params: torch.Tensor, grads: torch.Tensor, n_decay: int) -> None:
        """Follow the stack's net to a wider layout (`move(old (K, P)) -> new (K, P')`)."""
        self.state = [move(s) for s in self.state]
        self.n_decay = n_decay
        self._bind(params, grads)

    def select(self, rows: torch.Tensor, params: torch.Tensor, grads: torch.Tensor) -> None:
        """Keep the given members' state (compaction); params/grads are the compacted net's flat tensors."""
        self.hp = {name: t[rows].contiguous() for name, t in self.hp.items()}
        self.state = [s[rows].contiguous() for s in self.state]
        scale = [self._host_scale[r] for r in rows.tolist()]
        self.lr_scale, self._decay_factor = self.lr_scale[rows].contiguous(), self._decay_factor[rows].contiguous()
        self._bind(params, grads)
        self.set_lr_scale(scale)


def param_groups(model: nn.Module, alpha: float) -> list[dict]:
    # like sklearn, the L2 penalty applies to weights, not biases; a net of blocks names its own (linear maps'
    # weights: not adapters, frequencies or scales), the same as its stack's decayed prefix
    named = getattr(model, "decayed", None)
    decayed = set(named()) if named is not None else {n for n, _ in model.named_parameters() if not n.endswith("bias")}
    decay = [p for n, p in model.named_parameters() if n in decayed]
    no_decay = [p for n, p in model.named_parameters() if n not in decayed]
    return [{"params": decay, "weight_decay": alpha}, {"params": no_decay, "weight_decay": 0.0}]


def make_torch_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """torch.optim for the autograd path of one net: any module, CUDA autocast, L-BFGS."""
    if cfg.optimizer == "lbfgs":
        # like sklearn's lbfgs solver: full batch, learning rate replaced by a line search of up to 20
        # evaluations (scipy's maxls). One iteration per epoch; torch's default max_eval (max_iter * 5 // 4 = 1)
        # would leave the line search no evaluation beyond the first, and a trial stalled at step 0 for good.
        return torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=1, max_eval=1 + 20, history_size=10,
                                 line_search_fn="strong_wolfe")
    groups = param_groups(model, cfg.alpha)
    # fused kernels do the whole update in one call per step; that is the biggest per-step saving on small nets
    fused = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    if cfg.optimizer in ("adam", "adamw"):
        return TORCH_OPTIMIZERS[cfg.optimizer](groups, lr=cfg.lr, betas=cfg.betas, **fused)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               **fused)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")
