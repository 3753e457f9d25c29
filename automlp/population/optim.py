"""Adam, AdamW and SGD over a stack of members, each with its own hyperparameters.

torch.optim takes one learning rate per parameter group, so K members would need K groups and K times the kernel
launches. Here every hyperparameter is a (K, 1) column broadcast over the flat (K, P) parameter tensor of a
`PopulationMLP`, and one step is a handful of tensor ops whatever K is. The update rules are torch's own
(torch.optim.Adam / AdamW / SGD, dampening 0), checked member by member in tests/test_population.py:

- adam:  g = grad + alpha * p (L2 added to the gradient, like Adam's weight_decay)
- adamw: p = p * (1 - lr * alpha) before the Adam step (decoupled weight decay)
- sgd:   g = grad + alpha * p; buf = momentum * buf + g; d = g + momentum * buf if nesterov else buf; p -= lr * d

alpha acts on the first `n_decay` columns of a row (the weights; biases are not penalised, as in automlp.train).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

FAMILIES = ("adam", "adamw", "sgd")


def _column(values: Sequence[float], device: torch.device) -> torch.Tensor:
    return torch.as_tensor([float(v) for v in values], dtype=torch.float32, device=device).view(-1, 1)


class StackedOptimizer:
    """One optimizer family for all members; lr, alpha, betas, momentum and nesterov are per member.

    Two ways to run the same update. Batched (the default on GPUs): ~10 tensor ops over the whole (K, P) stack with
    (K, 1) hyperparameter columns, so the number of kernel launches does not grow with K. Per-member fused (the
    default on CPUs): torch's own single-pass fused kernel (`torch._fused_adam_` & co, what `Adam(fused=True)`
    runs) called once per member on its row; on a CPU the batched form's passes over memory cost as much as the
    matrix products, one fused pass per member costs a fraction of that (bench/population.py measures both).
    """

    def __init__(
        self,
        params: torch.Tensor,
        grads: torch.Tensor,
        family: str,
        lr: Sequence[float],
        alpha: Sequence[float],
        betas: Sequence[tuple[float, float]] | None = None,
        momentum: Sequence[float] | None = None,
        nesterov: Sequence[bool] | None = None,
        eps: float = 1e-8,
        fused: bool | None = None,
        n_decay: int | None = None,
    ) -> None:
        if family not in FAMILIES:
            raise ValueError(f"the population trainer supports optimizers {FAMILIES}; got {family!r}")
        k, dev = params.shape[0], params.device
        self.family, self.eps = family, eps
        self.n_decay = params.shape[1] if n_decay is None else n_decay
        self.fused = dev.type == "cpu" if fused is None else fused
        self.hp = {
            "lr": _column(lr, dev),
            "alpha": _column(alpha, dev),
            "beta1": _column([b[0] for b in betas] if betas else [0.9] * k, dev),
            "beta2": _column([b[1] for b in betas] if betas else [0.999] * k, dev),
            "momentum": _column(momentum if momentum is not None else [0.0] * k, dev),
            "nesterov": _column(nesterov if nesterov is not None else [False] * k, dev),
            "steps": torch.zeros(k, 1, device=dev),
        }
        n_state = 1 if family == "sgd" else 2
        self.state = [torch.zeros_like(params) for _ in range(n_state)]
        self._bind(params, grads)
        self.set_lr_scale(torch.ones(k, device=dev))

    def _bind(self, params: torch.Tensor, grads: torch.Tensor) -> None:
        self.params, self.grads = params, grads
        if self.fused:  # row views, made once: the fused kernels take lists of tensors
            self._rows = [list(t.unbind(0)) for t in (params, grads, *self.state, self.hp["steps"].view(-1))]
            self._host = {name: t.view(-1).tolist() for name, t in self.hp.items() if name != "steps"}

    def set_lr_scale(self, scale: torch.Tensor) -> None:
        """Per-member multipliers of lr until the next call (schedule x live mask: 0 freezes a member)."""
        self.lr_scale = scale.view(-1, 1).to(self.params.device)
        self._any_decay = bool((self.hp["alpha"] != 0).any())
        # adamw's decoupled decay factor, fixed for the epoch: 1 - lr * alpha (1 for a frozen member)
        self._decay_factor = 1.0 - self.hp["lr"] * self.lr_scale * self.hp["alpha"]
        if self.fused:
            self._host_scale = scale.view(-1).tolist()
            self._step_inc = (self.lr_scale != 0).float()

    def zero_grad(self) -> None:
        self.grads.zero_()

    @torch.no_grad()
    def step(self) -> None:
        if self._any_decay:
            # weight decay of the weights slice, in torch's order: before the moments see the gradient
            nd = self.n_decay
            if self.family == "adamw":
                self.params[:, :nd].mul_(self._decay_factor)
            else:
                self.grads[:, :nd].addcmul_(self.params[:, :nd], self.hp["alpha"])
        if self.fused:
            self._fused_step()
        elif self.family == "sgd":
            self._sgd()
        else:
            self._adam()

    def _fused_step(self) -> None:
        # One member's update is too small to share between threads: the fused CPU kernels split it anyway, and on
        # two busy cores that hand-off cost 15 ms a call instead of 12 us (measured on a K=32 step: 15.1 ms with 2
        # threads, 1.9 ms with 1). So the member loop runs on one thread.
        n_threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self._fused_members()
        finally:
            torch.set_num_threads(n_threads)

    def _fused_members(self) -> None:
        h, rows = self._host, self._rows
        self.hp["steps"].add_(self._step_inc)  # the fused kernels read the step count; torch.optim increments it
        for k, scale in enumerate(self._host_scale):
            if scale == 0.0:
                continue  # frozen: not even its optimizer state moves
            lr = h["lr"][k] * scale
            if self.family == "sgd":
                bufs = [rows[2][k]] if h["momentum"][k] != 0.0 else []
                torch._fused_sgd_([rows[0][k]], [rows[1][k]], bufs, weight_decay=0.0,
                                  momentum=h["momentum"][k], lr=lr, dampening=0.0, nesterov=bool(h["nesterov"][k]),
                                  maximize=False, is_first_step=False)  # fmt: skip
                continue
            kernel = torch._fused_adamw_ if self.family == "adamw" else torch._fused_adam_
            kernel([rows[0][k]], [rows[1][k]], [rows[2][k]], [rows[3][k]], [], [rows[4][k]], lr=lr,
                   beta1=h["beta1"][k], beta2=h["beta2"][k], weight_decay=0.0, eps=self.eps,
                   amsgrad=False, maximize=False)  # fmt: skip

    def _adam(self) -> None:
        p, g, h, (m, v) = self.params, self.grads, self.hp, self.state
        lr = h["lr"] * self.lr_scale
        h["steps"] += 1.0
        m.lerp_(g, 1.0 - h["beta1"])
        v.mul_(h["beta2"]).addcmul_(g * g, 1.0 - h["beta2"])
        bias1 = 1.0 - h["beta1"] ** h["steps"]
        bias2_sqrt = (1.0 - h["beta2"] ** h["steps"]).sqrt()
        denom = (v.sqrt() / bias2_sqrt).add_(self.eps)
        p.addcmul_(m / denom, -lr / bias1)

    def _sgd(self) -> None:
        p, g, h, (buf,) = self.params, self.grads, self.hp, self.state
        buf.mul_(h["momentum"]).add_(g)
        # nesterov is 0/1 per member: d = g + momentum * buf where nesterov, buf elsewhere.
        d = torch.addcmul(buf * (1.0 - h["nesterov"]), g + h["momentum"] * buf, h["nesterov"])
        p.addcmul_(d, -h["lr"] * self.lr_scale)

    def select(self, rows: torch.Tensor, params: torch.Tensor, grads: torch.Tensor) -> None:
        """Keep the given members' state (compaction); params/grads are the compacted model's flat tensors."""
        self.hp = {name: t[rows] for name, t in self.hp.items()}
        self.state = [s[rows].contiguous() for s in self.state]
        self._bind(params, grads)
        self.set_lr_scale(self.lr_scale.view(-1)[rows])
