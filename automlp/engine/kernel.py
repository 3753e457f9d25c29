"""Forward pass, backward pass and optimizer step of a stack of K plain MLPs, written out by hand (no autograd).

The stacked form of the single-net fast path. Member k's parameters are row k of one flat (K, P) tensor in the
stack layout (all weights, then all biases; a layer's weight is a (K, in, out) view, its bias a (K, out) view), so
each layer of all members is one `baddbmm`. A batch shared by all members enters as a stride-0 (K, B, d) view, never
copied (one wide (B, d) x (d, K * h) product was no faster on a CPU, 252 vs 271 us at K = 32 on digits, and needs a
member-interleaved weight copy every step); members with their own rows pass (K, B, d). The output layer is
computed transposed, (K, n_out, B): a softmax over 10 contiguous logits is many times slower on a CPU.

The derivatives are the ones autograd uses (aten's threshold_backward, ...), so each member trains as its own net
would under autograd and torch.optim, to float rounding (tests/test_engine_kernel.py). Narrower members are
zero-padded: a padded unit has zero weights in and out and a zero bias, so it outputs act(0) = 0, gets zero
gradient and stays zero; only `logistic` (sigmoid(0) = 1/2) needs a mask after the activation.

The update is torch's fused single-pass kernel (`torch._fused_adam_` & co, what `Adam(fused=True)` runs) once per
member on its slices, its lr, betas and decay as plain floats; or, with `fused=False`, ~10 ops over the whole (K, P)
stack with (K, 1) hyperparameter columns (for GPUs: the kernel count does not grow with K). On a CPU the fused form
wins (bench/stack_kernel.py). With it each layer's weight gradient is one contiguous (K, in * out) block: a CPU bmm
writing into a (K, in, out) view with member stride P took 2-3x as long. The vectorised update reads one (K, P)
gradient, `grad`, of which the blocks are views.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from automlp.adapters import fused_steps

_aten = torch.ops.aten
_SLOPE = 0.01  # nn.LeakyReLU()'s default slope, which the model registry uses


# name -> (forward in place on the pre-activation?, forward(z, out), backward(g, a, z) into g), a = act(z).
# In-place ones take their derivative from the output a, so the pre-activation z need not be kept.
ACTIVATIONS = {
    "identity": (True, lambda z, out: z, lambda g, a, z: g),
    "relu": (True, lambda z, out: z.relu_(),
             lambda g, a, z: _aten.threshold_backward.grad_input(g, a, 0.0, grad_input=g)),
    "leaky_relu": (True, lambda z, out: F.leaky_relu_(z, _SLOPE),
                   lambda g, a, z: _aten.leaky_relu_backward.grad_input(g, a, _SLOPE, True, grad_input=g)),
    "tanh": (True, lambda z, out: z.tanh_(), lambda g, a, z: _aten.tanh_backward.grad_input(g, a, grad_input=g)),
    "logistic": (True, lambda z, out: z.sigmoid_(),
                 lambda g, a, z: _aten.sigmoid_backward.grad_input(g, a, grad_input=g)),
    "gelu": (False, lambda z, out: _aten.gelu.out(z, out=out),
             lambda g, a, z: _aten.gelu_backward.grad_input(g, z, approximate="none", grad_input=g)),
    "silu": (False, lambda z, out: _aten.silu.out(z, out=out),
             lambda g, a, z: _aten.silu_backward.grad_input(g, z, grad_input=g)),
}  # fmt: skip
OPTIMIZERS, TASKS = ("adam", "adamw", "sgd"), ("classification", "regression")
_NONZERO_AT_ZERO = {"logistic"}


def _per_member(values, k: int, default, name: str) -> list:
    out = [default] * k if values is None else list(values)
    if len(out) != k:
        raise ValueError(f"StackKernel: {name} needs one value per member ({k}); got {len(out)}")
    return out


class StackKernel:
    """Trains K plain MLPs held in `flat` (K, P) in place: forward, backward and update of one batch per `step`.

    layer_sizes: [(in, out)] of the padded stack, input layer first (P = sum(in * out + out)).
    widths: each member's own hidden widths (needed only to mask padded units of `logistic`; default: all full).
    Per-member hyperparameters: lr, alpha (L2 / decoupled decay on weights only), betas, momentum, nesterov,
    dropout. `generator` draws the dropout masks exactly as PopulationMLP does (one torch.rand per hidden layer).
    """

    @staticmethod
    def supports(activation: str, optimizer: str, flat: torch.Tensor) -> bool:
        """Whether this kernel can train a plain-MLP stack (else the engine takes autograd)."""
        return activation in ACTIVATIONS and optimizer in OPTIMIZERS and flat.dtype == torch.float32

    def __init__(self, flat: torch.Tensor, layer_sizes: Sequence[tuple[int, int]], activation: str, task: str,
                 optimizer: str, *, lr: Sequence[float], alpha: Sequence[float] | None = None,
                 betas: Sequence[tuple[float, float]] | None = None, momentum: Sequence[float] | None = None,
                 nesterov: Sequence[bool] | None = None, eps: float = 1e-8, dropout: Sequence[float] | None = None,
                 widths: Sequence[Sequence[int]] | None = None, fused: bool | None = None,
                 generator: torch.Generator | None = None) -> None:  # fmt: skip
        for name, value, choices in (("activation", activation, ACTIVATIONS), ("task", task, TASKS),
                                     ("optimizer", optimizer, OPTIMIZERS)):  # fmt: skip
            if value not in choices:
                raise ValueError(f"StackKernel: {name} must be one of {sorted(choices)}; got {value!r}")
        self.sizes = [(int(i), int(o)) for i, o in layer_sizes]
        k, n_params = flat.shape
        if n_params != sum(i * o + o for i, o in self.sizes):
            raise ValueError(f"StackKernel: flat has {n_params} columns; layer sizes {self.sizes} need "
                             f"{sum(i * o + o for i, o in self.sizes)}")  # fmt: skip
        self.flat, self.k, self.task, self.optimizer = flat, k, task, optimizer
        self.activation, self.eps, self.generator = activation, eps, generator
        self.device = flat.device
        self.fused = (self.device.type == "cpu") if fused is None else fused
        self.n_weights = sum(i * o for i, o in self.sizes)
        self.W, self.B = self._views(flat)  # (K, in, out) and (K, out) views of the parameters
        self.gw_blocks, self.gb_block, self.grad = self._store()  # grad: the (K, P) gradient, vectorised only
        self.GW = [b.view(k, i, o) for b, (i, o) in zip(self.gw_blocks, self.sizes)]
        self.GB = self._bias_views(self.gb_block)
        n_state = 1 if optimizer == "sgd" else 2
        self.state = [self._store() for _ in range(n_state)]  # same layout as the gradients
        self.steps = torch.zeros(k, device=self.device)  # the fused kernels read the step count from tensors
        given = {"lr": (lr, None), "alpha": (alpha, 0.0), "betas": (betas, (0.9, 0.999)),
                 "momentum": (momentum, 0.0), "nesterov": (nesterov, False), "dropout": (dropout, 0.0)}  # fmt: skip
        self.hp = {name: _per_member(v, k, default, name) for name, (v, default) in given.items()}
        self.active = [True] * k
        full = tuple(o for _, o in self.sizes[:-1])
        self.widths = [tuple(w) for w in _per_member(widths, k, full, "widths")]
        self._masks = self._make_masks()
        self._buffers: dict[int, dict] = {}
        self._minus_one = torch.full((1, 1, 1), -1.0, device=self.device)
        n_in, n_out = self.sizes[-1]
        self._wt, self._gwt = (torch.empty(k, n_out, n_in, device=self.device) for _ in range(2))
        self._rows = [self._member_rows(m) for m in range(k)] if self.fused else None
        self._refresh()

    def _split(self, full: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """A (K, P) tensor's per-layer weight blocks (K, in * out) and its bias block (K, n_biases)."""
        return list(full[:, :self.n_weights].split([i * o for i, o in self.sizes], 1)), full[:, self.n_weights:]

    def _views(self, flat: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        blocks, biases = self._split(flat)
        return [b.view(-1, i, o) for b, (i, o) in zip(blocks, self.sizes)], self._bias_views(biases)

    def _bias_views(self, block: torch.Tensor) -> list[torch.Tensor]:
        return list(block.split([o for _, o in self.sizes], 1))

    def _store(self) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
        """Zeroed (weight blocks, bias block, their (K, P) tensor or None: fused, each block a tensor of its own)."""
        if not self.fused:
            full = torch.zeros_like(self.flat)
            return (*self._split(full), full)
        k, n_b = self.k, self.flat.shape[1] - self.n_weights
        blocks = [torch.zeros(k, i * o, device=self.device) for i, o in self.sizes]
        return blocks, torch.zeros(k, n_b, device=self.device), None

    def _member_rows(self, m: int) -> tuple[list, ...]:
        """Member m's slices for the fused kernels: (params, grads, *state), each [weight blocks..., biases]."""
        p = [w[m].view(-1) for w in self.W] + [self.flat[m, self.n_weights:]]
        g = [b[m] for b in self.gw_blocks] + [self.gb_block[m]]
        states = [[b[m] for b in blocks] + [bias[m]] for blocks, bias, _ in self.state]
        return (p, g, *states)

    def _make_masks(self) -> list[torch.Tensor] | None:
        """Per hidden layer, (K, 1, width): 1 on a member's own units, 0 on its padding (logistic only)."""
        full = tuple(o for _, o in self.sizes[:-1])
        if self.activation not in _NONZERO_AT_ZERO or all(w == full for w in self.widths):
            return None
        masks = [torch.zeros(self.k, 1, o, device=self.device) for o in full]
        for k, w in enumerate(self.widths):
            for mask, units in zip(masks, w):
                mask[k, 0, :units] = 1.0
        return masks

    def set_lr(self, lr: Sequence[float]) -> None:
        """Each member's learning rate from now on (the engine applies its schedule here, once per epoch)."""
        self.hp["lr"] = _per_member(lr, self.k, None, "lr")
        self._refresh()

    def set_active(self, active: Sequence[bool]) -> None:
        """A member marked False does not move at all: neither its weights nor its optimizer state or step."""
        self.active = [bool(a) for a in _per_member(active, self.k, True, "active")]
        self._refresh()

    def set_member(self, m: int, widths: Sequence[int] | None = None, **hp) -> None:
        """New hyperparameters of member m (a refilled slot): any of lr, alpha, betas, momentum, nesterov, dropout,
        and its own hidden widths (its padding must be zero in `flat`)."""
        for name, value in hp.items():
            if name not in self.hp:
                raise ValueError(f"StackKernel.set_member: unknown hyperparameter {name!r}; "
                                 f"choose from {list(self.hp)}")  # fmt: skip
            self.hp[name][m] = value
        if widths is not None:
            self.widths[m] = tuple(widths)
            self._masks = self._make_masks()
        self._refresh()

    @torch.no_grad()
    def reset_member(self, m: int) -> None:
        """Fresh optimizer state for member m (its slot was re-initialised): zero moments, step count 0."""
        for blocks, bias, _ in self.state:
            for b in blocks:
                b[m].zero_()
            bias[m].zero_()
        self.steps[m] = 0.0

    def _refresh(self) -> None:
        """Device columns of the hyperparameters, rebuilt when they change (at most once an epoch)."""
        col = lambda v: torch.tensor([float(x) for x in v], device=self.device).view(-1, 1)  # noqa: E731
        h = self.hp
        self._cols = {"lr": col(h["lr"]), "alpha": col(h["alpha"]), "beta1": col([b[0] for b in h["betas"]]),
                      "beta2": col([b[1] for b in h["betas"]]), "momentum": col(h["momentum"]),
                      "nesterov": col(h["nesterov"]), "active": col(self.active)}  # fmt: skip
        self._any_decay = any(a != 0 for a, on in zip(h["alpha"], self.active) if on)
        self._all_active = all(self.active)
        p = torch.tensor([float(x) for x in h["dropout"]], device=self.device)
        self._drop = p.view(-1, 1, 1) if bool((p > 0).any()) else None
        self._drop_scale = (1.0 / (1.0 - p)).view(-1, 1, 1)
        if self.fused:  # stopped members make no call: nothing of theirs moves
            self._calls = [c for m in range(self.k) if self.active[m] for c in self._fused_calls(m)]

    def _bufs(self, b: int) -> dict:
        """Work tensors for a batch of b rows, made once per batch size: no allocation per step."""
        if b not in self._buffers:
            k, dev = self.k, self.device
            hidden = [o for _, o in self.sizes[:-1]]
            new = lambda on: [torch.empty(k, b, w, device=dev) if on else None for w in hidden]  # noqa: E731
            inplace = ACTIVATIONS[self.activation][0]
            self._buffers[b] = {"z": new(True), "a": new(not inplace), "h": new(True), "g": new(True),
                                "out": torch.empty(k, self.sizes[-1][1], b, device=dev)}  # fmt: skip
        return self._buffers[b]

    @torch.no_grad()
    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward, backward and update on one batch; returns each member's mean batch loss, (K,), no host sync.

        x: (B, d) shared by all members or (K, B, d) per member. y: class indices (B,) / (K, B) for
        classification; targets (B,), (B, n_out) or (K, B, n_out) for regression.
        """
        b = x.shape[-2]
        bufs = self._bufs(b)
        ins, acts, pres, noises = self._forward(x, bufs, train=True)
        out_t = self._output(ins[-1], bufs["out"])
        loss, g_t = self._loss(out_t, y, grad=True)
        self._backward(ins, acts, pres, noises, g_t, bufs)
        self._update()
        return loss

    def _forward(self, x, bufs, train):
        k, (inplace, fwd, _) = self.k, ACTIVATIONS[self.activation]
        h = x.unsqueeze(0).expand(k, *x.shape) if x.dim() == 2 else x  # stride 0: the batch is not copied
        ins, acts, pres, noises = [h], [], [], []
        for layer in range(len(self.sizes) - 1):
            z = torch.baddbmm(self.B[layer].unsqueeze(1), h, self.W[layer],
                              out=bufs["z"][layer] if bufs else None)  # fmt: skip
            a = fwd(z, bufs["a"][layer] if bufs else None if inplace else torch.empty_like(z))
            if self._masks is not None:
                a.mul_(self._masks[layer])  # padded logistic units output 0, as their own (narrower) net has none
            h, noise = a, None
            if train and self._drop is not None:
                # what PopulationMLP draws: keep where U[0, 1) >= p, scaled by 1 / (1 - p)
                keep = torch.rand(a.shape, device=a.device, generator=self.generator) >= self._drop
                noise = keep * self._drop_scale
                h = torch.mul(a, noise, out=bufs["h"][layer])
            ins.append(h)
            acts.append(a)
            pres.append(None if inplace else z)
            noises.append(noise)
        return ins, acts, pres, noises

    def _output(self, h: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """The output layer transposed: (K, n_out, B) = W^T h^T + b.

        W^T is copied to a contiguous (K, n_out, h) first (K * h * n_out floats): a product of two transposed views
        with a leading dimension of 5 ran 9x slower (2.2 ms vs 0.24 ms, K = 16, 128 -> 5 outputs)."""
        wt = torch.transpose(self.W[-1], 1, 2)
        wt = self._wt.copy_(wt) if out is not None else wt.contiguous()
        return torch.baddbmm(self.B[-1].unsqueeze(2), wt, h.transpose(1, 2), out=out)

    def _loss(self, out_t: torch.Tensor, y: torch.Tensor, grad: bool):
        """Each member's mean loss (K,) and, with grad, d(its loss)/d(out_t) in place of out_t."""
        k, _, b = out_t.shape
        if self.task == "classification":
            # cross-entropy: loss = -mean log_softmax[y]; d/d logits = (softmax - onehot) / b
            idx = y.view(-1, 1, b).expand(k, 1, b)
            ls = torch.log_softmax(out_t, 1)
            loss = ls.gather(1, idx).sum((1, 2)).mul_(-1.0 / b)
            if not grad:
                return loss, None
            # exp of a log-probability below -87 is 0 in float32 (or a subnormal): the clamp keeps the CPU's exp off
            # its slow path for such inputs (40x slower), which confident members reach within a few epochs
            g = ls.clamp_(min=-87.0).exp_().scatter_add_(1, idx, self._minus_one.expand(k, 1, b))
            return loss, g.mul_(1.0 / b)
        t = y.view(b, 1) if y.dim() == 1 else y  # (B, n_out) or (K, B, n_out)
        diff = out_t.sub_(t.transpose(-1, -2))  # MSE over b * n_out elements: d/d out = 2 (out - y) / (b n_out)
        n = diff.shape[1] * b
        loss = torch.mul(diff, diff).sum((1, 2)).div_(n)
        return loss, (diff.mul_(2.0 / n) if grad else None)

    def _backward(self, ins, acts, pres, noises, g_t, bufs) -> None:
        bwd = ACTIVATIONS[self.activation][2]
        last = len(self.sizes) - 1
        # the output layer's gradient transposed, from two contiguous operands (see _output)
        self.GW[last].copy_(torch.bmm(g_t, ins[-1], out=self._gwt).transpose(1, 2))
        torch.sum(g_t, 2, out=self.GB[last])
        if last == 0:
            return
        g = torch.bmm(g_t.transpose(1, 2), self._wt, out=bufs["g"][last - 1])
        for layer in range(last - 1, -1, -1):
            if noises[layer] is not None:
                g.mul_(noises[layer])
            g = bwd(g, acts[layer], pres[layer])
            torch.bmm(ins[layer].transpose(1, 2), g, out=self.GW[layer])  # no gradient w.r.t. the inputs
            torch.sum(g, 1, out=self.GB[layer])
            if layer > 0:
                g = torch.bmm(g, self.W[layer].transpose(1, 2), out=bufs["g"][layer - 1])

    def _update(self) -> None:
        self.steps.add_(self._cols["active"].view(-1))  # torch.optim counts the step before its update
        if self.fused:
            # One member's update is too small to share between threads: on two busy cores the fused CPU kernels'
            # hand-off cost more than the update (measured: a K=16 digits update 2.9 ms on 1 thread, 9.6 on 2).
            n_threads = torch.get_num_threads()
            torch.set_num_threads(1 if self.device.type == "cpu" else n_threads)
            try:
                for kernel, args, kwargs in self._calls:
                    kernel(*args, **kwargs)
            finally:
                torch.set_num_threads(n_threads)
        elif self.optimizer == "sgd":
            self._sgd()
        else:
            self._adam()

    def _fused_calls(self, m: int) -> list[tuple]:
        """Member m's update as (kernel, args, kwargs) calls, made when hyperparameters change, not every step."""
        h, rows, n = self.hp, self._rows[m], len(self.sizes)
        lr, alpha = float(h["lr"][m]), float(h["alpha"][m])
        # weight decay acts on the weights only: with alpha > 0 the weights and the biases take two calls
        parts = [(slice(0, n), alpha), (slice(n, n + 1), 0.0)] if alpha else [(slice(0, n + 1), 0.0)]
        calls = []
        for part, decay in parts:
            p, g, *state = [r[part] for r in rows]
            if self.optimizer == "sgd":  # a zero buffer: the first step gives buf = grad, as torch.optim.SGD
                mu = float(h["momentum"][m])
                calls.append((fused_steps()["sgd"], (p, g, state[0] if mu else []),
                              {"weight_decay": decay, "momentum": mu, "lr": lr, "dampening": 0.0,
                               "nesterov": bool(h["nesterov"][m]) and mu > 0, "maximize": False,
                               "is_first_step": False}))  # fmt: skip
                continue
            kernel = fused_steps()[self.optimizer]  # adam | adamw
            b1, b2 = h["betas"][m]
            calls.append((kernel, (p, g, state[0], state[1], [], [self.steps[m]] * len(p)),
                          {"lr": lr, "beta1": float(b1), "beta2": float(b2), "weight_decay": decay, "eps": self.eps,
                           "amsgrad": False, "maximize": False}))  # fmt: skip
        return calls

    def _prologue(self) -> tuple[torch.Tensor, torch.Tensor, dict, torch.Tensor]:
        p, g, c = self.flat, self.grad, self._cols
        if not self._all_active:  # a stopped (maybe diverged) member's NaN gradient must not reach its state
            g.masked_fill_(c["active"] == 0, 0.0)
        if self._any_decay:  # weight decay of the weights slice, in torch's order: before the moments see g
            nw = self.n_weights
            if self.optimizer == "adamw":
                p[:, :nw].mul_(1.0 - c["lr"] * c["alpha"] * c["active"])
            else:
                g[:, :nw].addcmul_(p[:, :nw], c["alpha"])
        return p, g, c, c["active"]

    def _adam(self) -> None:
        p, g, c, on = self._prologue()
        (m, v) = (s[2] for s in self.state)
        beta1 = torch.where(on > 0, c["beta1"], 1.0)  # 1: a stopped member's moments stay as they are
        beta2 = torch.where(on > 0, c["beta2"], 1.0)
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).addcmul_(g * g, 1.0 - beta2)
        steps = self.steps.view(-1, 1).clamp(min=1.0)
        bias1 = 1.0 - c["beta1"] ** steps
        bias2_sqrt = (1.0 - c["beta2"] ** steps).sqrt()
        upd = m / (v.sqrt() / bias2_sqrt).add_(self.eps)
        if not self._all_active:
            upd.masked_fill_(on == 0, 0.0)
        p.addcmul_(upd, -c["lr"] / bias1)

    def _sgd(self) -> None:
        p, g, c, on = self._prologue()
        buf = self.state[0][2]
        buf.mul_(torch.where(on > 0, c["momentum"], 1.0)).add_(g)  # g is 0 for a stopped member
        d = torch.addcmul(buf * (1.0 - c["nesterov"]), g + c["momentum"] * buf, c["nesterov"])
        if not self._all_active:
            d.masked_fill_(on == 0, 0.0)
        p.addcmul_(d, -c["lr"])

    def train_epoch(self, X: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, batch_size: int) -> torch.Tensor:
        """One pass in the order `perm`; returns each member's mean training loss, (K,), as a device tensor.

        X (n, d) with y (n,) / (n, n_out): rows shared by all members; X (K, n, d) with y (K, n) / (K, n, n_out):
        each member its own rows. perm (n,): one batch order for all; (K, n): each member its own order.
        """
        own = X.dim() == 3
        if self.task == "regression" and y.dim() == X.dim() - 1:
            y = y.unsqueeze(-1)
        Xp, yp = self._gather(X, perm, own), self._gather(y, perm, own)
        dim = 1 if own or perm.dim() == 2 else 0  # the rows' dimension after the gather
        n = Xp.shape[dim]
        total = torch.zeros(self.k, device=self.device)
        # Adam's second moments of rarely-used inputs decay into subnormal floats, which a CPU computes on up to
        # 100x slower. The flag is process-wide, so it is set back to torch's default when the epoch ends.
        flushed = self.device.type == "cpu" and torch.set_flush_denormal(True)
        try:
            for lo in range(0, n, batch_size):
                b = min(batch_size, n - lo)
                total.add_(self.step(Xp.narrow(dim, lo, b), yp.narrow(dim, lo, b)), alpha=b)
        finally:
            if flushed:
                torch.set_flush_denormal(False)
        return total.div_(n)

    def _gather(self, t: torch.Tensor, perm: torch.Tensor, own: bool) -> torch.Tensor:
        """t in the order perm: one gather an epoch (index_select is several times faster than t[perm] on a
        CPU); every batch is then a view."""
        if perm.dim() == 1:
            return torch.index_select(t, 1 if own else 0, perm)
        if own:
            return t[torch.arange(self.k, device=perm.device).view(-1, 1), perm]
        return t[perm]  # shared rows, each member in its own order: (K, n, ...)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs (K, B, n_out) without dropout; x (B, d) shared or (K, B, d)."""
        ins, _, _, _ = self._forward(x, None, train=False)
        return self._output(ins[-1], None).transpose(1, 2)

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(each member's mean loss (K,), outputs (K, B, n_out)) without dropout."""
        out = self.predict(x)
        loss, _ = self._loss(out.transpose(1, 2).clone(), y, grad=False)
        return loss, out
