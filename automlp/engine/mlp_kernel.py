"""Forward pass, backward pass and optimizer step of a plain MLP, written out by hand (no autograd).

A small tabular MLP spends most of a training step in framework overhead, not arithmetic: building the
autograd graph, the optimizer's Python, one allocation per intermediate, one update kernel per parameter.
For the networks `build_mlp` makes (Linear, elementwise activation, optional Dropout, repeated; a Linear at
the end) the backward pass is a handful of matrix products that we call directly, the gradients written
straight into place. All parameters sit in one flat tensor (weights first, then biases), so the optimizer
update is one fused kernel per step and the L2 penalty (weights only, as in sklearn) one more. On CUDA, where
each of the ~25 kernels of a step costs a launch, the epochs after the first replay as one CUDA graph.

The derivatives are the ones autograd uses (aten's threshold_backward, tanh_backward, ...), so results match a
plain autograd loop on the same weights and batches up to float rounding: tests/test_train_oracle.py checks it.
The update is the stack's (`StackedOptimizer` over the (1, P) stack of one): one definition of each rule.
One net alone takes this path when `MLPKernel.supports(model, ...)`; anything else goes through autograd.
"""

from __future__ import annotations

import torch
from torch import nn

from automlp.engine.activations import BY_MODULE
from automlp.engine.config import TrainConfig
from automlp.engine.optim import FAMILIES, StackedOptimizer, hyperparameters


def _split_layers(model: nn.Module) -> list[tuple[nn.Linear, nn.Module | None, float]] | None:
    """[(linear, activation, dropout p)] for Sequential(Linear, act, [Dropout])* Linear, else None."""
    if not isinstance(model, nn.Sequential):
        return None
    mods, layers, i = list(model), [], 0
    while i < len(mods):
        lin = mods[i]
        if type(lin) is not nn.Linear or lin.bias is None:
            return None
        i += 1
        if i == len(mods):
            layers.append((lin, None, 0.0))
            return layers
        act = mods[i]
        if type(act) not in BY_MODULE or (type(act) is nn.LeakyReLU and act.negative_slope < 0):
            return None
        i += 1
        p = 0.0
        if i < len(mods) and type(mods[i]) is nn.Dropout:
            p = float(mods[i].p)
            i += 1
        layers.append((lin, act, p))
    return None


class MLPKernel:
    """Trains a plain MLP in place. Its parameters become views into one flat tensor until `release()`."""

    @staticmethod
    def supports(model: nn.Module, optimizer: str, device: torch.device, precision: str = "fp32") -> bool:
        if optimizer not in FAMILIES or precision != "fp32":
            return False
        layers = _split_layers(model)
        if not layers or any(p >= 1 for _, _, p in layers):
            return False
        # "cuda" names the current device, whose tensors say "cuda:0": compare what is given
        return all(t.dtype == torch.float32 and t.device.type == device.type
                   and (device.index is None or t.device.index == device.index) for t in model.parameters())

    def __init__(self, model: nn.Module, task: str, n_classes: int, config: TrainConfig):
        layers = _split_layers(model)
        self.model, self.task, self.n_classes = model, task, n_classes
        lins = [lin for lin, _, _ in layers]
        self.acts = [act for _, act, _ in layers[:-1]]
        self.dropouts = [p for _, _, p in layers[:-1]]
        dev = lins[0].weight.device
        self.device = dev
        n_w = sum(lin.weight.numel() for lin in lins)
        n_b = sum(lin.bias.numel() for lin in lins)
        # one flat tensor: [all weights | all biases]; the L2 penalty touches the first part only
        self.flat = torch.empty(n_w + n_b, device=dev)
        self.grad = torch.zeros_like(self.flat)
        self.W, self.B, self.GW, self.GB = [], [], [], []
        ow, ob = 0, n_w
        with torch.no_grad():
            for lin in lins:
                nw, nb = lin.weight.numel(), lin.bias.numel()
                for store, grads, off, n, p in ((self.W, self.GW, ow, nw, lin.weight),
                                                (self.B, self.GB, ob, nb, lin.bias)):
                    view = self.flat[off:off + n].view_as(p)
                    view.copy_(p)
                    p.data = view  # the module now reads the trained weights directly (validation, best copy)
                    store.append(view)
                    grads.append(self.grad[off:off + n].view_as(p))
                ow, ob = ow + nw, ob + nb
        self.opt = StackedOptimizer(self.flat.view(1, -1), self.grad.view(1, -1), config.optimizer,
                                    hyperparameters([config]), n_decay=n_w)
        self._graph, self._perm, self._loss = None, None, None  # CUDA: the captured epoch and its inputs
        self._graph_key: tuple | None = None

    def release(self) -> None:
        """Give each parameter its own storage again (exporters such as safetensors refuse shared ones)."""
        with torch.no_grad():
            for p in self.model.parameters():
                p.data = p.data.clone()

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, X: torch.Tensor, targets: torch.Tensor, perm: torch.Tensor, batch_size: int,
                    lr_scale: float) -> torch.Tensor:
        """One pass over X in the order `perm`; returns the summed training loss as a device tensor (no sync).

        `targets` is one-hot float (classification) or (n, n_out) float (regression). On CUDA the whole epoch
        is captured once as a CUDA graph and replayed: one launch instead of ~25 per batch (see `_replay`).
        """
        self.opt.set_lr_scale([lr_scale])  # the schedule's multiplier of this epoch (the graph reads it too)
        if self.device.type == "cuda" and not self.opt.fused:
            return self._replay(X, targets, perm, batch_size)
        return self._epoch(X, targets, perm, batch_size)

    def _epoch(self, X: torch.Tensor, targets: torch.Tensor, perm: torch.Tensor, batch_size: int) -> torch.Tensor:
        # one gather per epoch (index_select: several times faster than X[perm] on CPU), then every batch
        # is a contiguous slice, a view
        Xp, Tp = torch.index_select(X, 0, perm), torch.index_select(targets, 0, perm)
        losses = []
        with torch.no_grad():
            for lo in range(0, len(X), batch_size):
                losses.append(self._step(Xp[lo:lo + batch_size], Tp[lo:lo + batch_size]))
        total = torch.stack(losses).sum()
        return -total if self.task == "classification" else total / targets.shape[1]

    def _replay(self, X: torch.Tensor, targets: torch.Tensor, perm: torch.Tensor, batch_size: int) -> torch.Tensor:
        """The epoch as a CUDA graph: the first epoch runs eagerly (it warms cuBLAS up), the second is captured.

        Everything that changes between epochs lives in tensors the graph reads: the permutation, the
        optimizer's lr multiplier and step counts; X, targets and the batch size are the same for the whole run.
        """
        key = (X.data_ptr(), targets.data_ptr(), len(X), batch_size)
        if key != self._graph_key:  # the graph reads these addresses: new inputs, new graph
            self._graph, self._perm, self._graph_key = None, None, key
        if self._graph is None:
            if self._perm is None:
                self._perm = perm.clone()
                return self._epoch(X, targets, perm, batch_size)
            self._perm.copy_(perm)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._loss = self._epoch(X, targets, self._perm, batch_size)
        else:
            self._perm.copy_(perm)
        self._graph.replay()
        return self._loss.clone()

    def _step(self, xb: torch.Tensor, tb: torch.Tensor) -> torch.Tensor:
        b = len(xb)
        ins, acts_out, pre, noises = [xb], [], [], []  # per hidden layer: its input, a = act(z), z, dropout mask
        h = xb
        for k, (act, p) in enumerate(zip(self.acts, self.dropouts)):
            z = torch.addmm(self.B[k], h, self.W[k].t())
            spec = BY_MODULE[type(act)]
            a = spec.forward(z, act)  # in place where the derivative comes from the output: z is not kept then
            pre.append(None if spec.inplace else z)
            acts_out.append(a)
            noise = None
            h = a
            if p > 0:
                # exactly what nn.Dropout does on CPU, so the random stream matches the autograd path
                noise = torch.empty_like(a).bernoulli_(1 - p).div_(1 - p)
                h = a * noise
            noises.append(noise)
            ins.append(h)
        # the output layer is computed transposed, (n_out, b): softmax over a short contiguous row of 10
        # logits is 10-20x slower on CPU than over the leading dimension of the transposed layout
        out_t = torch.addmm(self.B[-1].unsqueeze(1), self.W[-1], h.t())
        loss, g_t = self._loss_grad(out_t, tb.t(), b)
        torch.mm(g_t, ins[-1], out=self.GW[-1])
        torch.sum(g_t, 1, out=self.GB[-1])
        if self.acts:  # no gradient w.r.t. the inputs is needed
            g = torch.mm(g_t.t(), self.W[-1])
        for k in range(len(self.W) - 2, -1, -1):
            if noises[k] is not None:
                g.mul_(noises[k])
            act = self.acts[k]
            g = BY_MODULE[type(act)].backward(g, acts_out[k], pre[k], act)
            torch.mm(g.t(), ins[k], out=self.GW[k])
            torch.sum(g, 0, out=self.GB[k])
            if k > 0:
                g = torch.mm(g, self.W[k])
        self.opt.step()
        return loss

    def _loss_grad(self, out_t: torch.Tensor, t_t: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed batch loss, gradient of the batch-mean loss w.r.t. the outputs), both in (n_out, b) layout.

        For classification the returned loss is the negated sum (the sign is fixed once per epoch).
        """
        if self.task == "classification":
            # cross-entropy: loss = -sum(onehot * log_softmax); d/d logits = (softmax - onehot) / b
            ls = torch.log_softmax(out_t, 0)
            loss = torch.mul(ls, t_t).sum()
            return loss, ls.exp_().sub_(t_t).mul_(1.0 / b)
        # MSE over all b * n_out elements: d/d out = 2 (out - y) / (b * n_out)
        g = out_t.sub_(t_t)
        loss = torch.mul(g, g).sum()
        return loss, g.mul_(2.0 / g.numel())
