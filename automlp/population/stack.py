"""K MLPs of one structure held as one stacked model.

Every member's parameters live in one row of a flat (K, P) tensor; each layer's weight is a (K, in, out) view of it
and is applied with `torch.baddbmm`, so one framework call does the work of K small ones. Keeping the whole stack in
one flat tensor lets the optimizer update every parameter of every member in a handful of tensor ops.

Members may differ in width: the stack is padded to the widest member and the padded units of a member have zero
weights, zero biases and zero outgoing weights. Their pre-activation is exactly 0, so for every activation with
act(0) = 0 they output 0 and receive zero gradient, and their weights stay zero under Adam, AdamW and SGD (weight
decay of a zero weight is zero). Only `logistic` (sigmoid(0) = 0.5) needs an explicit mask after the activation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATION_FNS = {
    "identity": lambda x: x,
    "logistic": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "leaky_relu": F.leaky_relu,  # slope 0.01, as nn.LeakyReLU()
    "gelu": F.gelu,  # exact erf form, as nn.GELU()
    "silu": F.silu,
}
_NONZERO_AT_ZERO = {"logistic"}
# Grads are views of one flat (K, P) tensor on purpose (see _make_views); autograd notes that such strides are not
# its preferred layout and still accumulates into them in place.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


class PopulationMLP(nn.Module):
    """K members sharing depth and activation; widths[k] are member k's hidden widths (padded to the widest).

    forward(x) takes a shared batch (B, n_inputs) and returns (K, B, n_outputs).
    """

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        widths: Sequence[Sequence[int]],
        activation: str,
        dropout: Sequence[float] | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        depths = {len(w) for w in widths}
        if len(depths) != 1:
            raise ValueError(f"members of one stack must share their depth; got depths {sorted(depths)}")
        self.n_inputs, self.n_outputs, self.activation = n_inputs, n_outputs, activation
        self.member_widths = [tuple(int(u) for u in w) for w in widths]
        self.n_members = len(self.member_widths)
        depth = depths.pop()
        max_widths = [max(w[i] for w in self.member_widths) for i in range(depth)]
        self.layer_sizes = list(zip([n_inputs, *max_widths], [*max_widths, n_outputs]))
        n_params = sum(i * o + o for i, o in self.layer_sizes)
        self.flat = torch.zeros(self.n_members, n_params, device=device)
        self.flat_grad = torch.zeros_like(self.flat)
        self.weights, self.biases = self._make_views()
        self._act = ACTIVATION_FNS[activation]
        self.set_dropout(dropout if dropout is not None else [0.0] * self.n_members)
        self._masks = self._make_masks() if activation in _NONZERO_AT_ZERO else None
        self.generator: torch.Generator | None = None  # dropout draws; the trainer seeds one per stack

    def _make_views(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        # Layout of a row: all weights, then all biases, so the L2 penalty (weights only, as in sklearn and
        # automlp.train) acts on one contiguous slice [:, :n_weights].
        k, weights, biases = self.n_members, [], []
        offset = 0
        for n_in, n_out in self.layer_sizes:
            weights.append(nn.Parameter(self.flat[:, offset : offset + n_in * n_out].view(k, n_in, n_out)))
            offset += n_in * n_out
        self.n_weights = offset
        for _, n_out in self.layer_sizes:
            biases.append(nn.Parameter(self.flat[:, offset : offset + n_out].view(k, 1, n_out)))
            offset += n_out
        for i, p in enumerate([*weights, *biases]):  # Parameters share storage with self.flat
            self.register_parameter(f"p{i}", p)
        # Each .grad is a view of flat_grad: autograd accumulates in place into an existing .grad, so after
        # backward() the whole stack's gradient is the one (K, P) tensor the optimizer reads.
        for p, view in zip([*weights, *biases], self._views(self.flat_grad)):
            p.grad = view
        return weights, biases

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer weight then bias views of a (K, P) tensor (or a (P,) row, as (1, ...) views)."""
        flat = flat.view(-1, flat.shape[-1])
        k, out, offset = flat.shape[0], [], 0
        for n_in, n_out in self.layer_sizes:
            out.append(flat[:, offset : offset + n_in * n_out].view(k, n_in, n_out))
            offset += n_in * n_out
        for _, n_out in self.layer_sizes:
            out.append(flat[:, offset : offset + n_out].view(k, 1, n_out))
            offset += n_out
        return out

    def _make_masks(self) -> list[torch.Tensor] | None:
        if all(w == self.member_widths[0] for w in self.member_widths):
            return None
        masks = []
        for i, (_, n_out) in enumerate(self.layer_sizes[:-1]):
            m = torch.zeros(self.n_members, 1, n_out, device=self.flat.device)
            for k, w in enumerate(self.member_widths):
                m[k, 0, : w[i]] = 1.0
            masks.append(m)
        return masks

    def set_dropout(self, rates: Sequence[float]) -> None:
        rates_t = torch.as_tensor(list(rates), dtype=torch.float32, device=self.flat.device)
        self.dropout = rates_t.view(-1, 1, 1)
        self._keep_scale = 1.0 / (1.0 - self.dropout)
        self._any_dropout = bool((rates_t > 0).any())

    # ---- initialisation -------------------------------------------------------------------------------------

    def member_shapes(self, k: int) -> list[tuple[int, int]]:
        sizes = [self.n_inputs, *self.member_widths[k], self.n_outputs]
        return list(zip(sizes[:-1], sizes[1:]))

    @torch.no_grad()
    def init_member(self, k: int, seed: int) -> None:
        """nn.Linear's default init (kaiming-uniform a=sqrt(5), bias U(+-1/sqrt(fan_in))) on the member's own widths.

        Draws come from a generator seeded with `seed` in the order nn.Linear draws them, so member k starts from
        the same weights as `build_mlp` gives after `torch.manual_seed(seed)`.
        """
        gen = torch.Generator().manual_seed(seed)
        layers = []
        for n_in, n_out in self.member_shapes(k):
            w = torch.empty(n_out, n_in)
            nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=gen)
            bound = 1.0 / math.sqrt(n_in)
            b = torch.empty(n_out).uniform_(-bound, bound, generator=gen)
            layers.append((w, b))
        self._write_member(k, layers)

    @torch.no_grad()
    def load_member(self, k: int, model: nn.Module) -> None:
        """Copy a plain MLP's weights (its nn.Linear layers, in order) into member k."""
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        shapes = [(m.in_features, m.out_features) for m in linears]
        if shapes != self.member_shapes(k):
            raise ValueError(f"member {k} has layer shapes {self.member_shapes(k)}; the model has {shapes}")
        self._write_member(k, [(m.weight, m.bias) for m in linears])

    def _write_member(self, k: int, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.flat[k].zero_()
        for (w, b), W, B in zip(layers, self.weights, self.biases):
            W[k, : w.shape[1], : w.shape[0]].copy_(w.T)
            B[k, 0, : b.shape[0]].copy_(b)

    @torch.no_grad()
    def export_member(self, k: int, model: nn.Module, flat_row: torch.Tensor | None = None) -> nn.Module:
        """Write member k's weights (or those in `flat_row`, e.g. a best-epoch snapshot) into a plain MLP."""
        views = self._views(self.flat[k] if flat_row is None else flat_row)
        n = len(self.layer_sizes)
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        for lin, w, b in zip(linears, views[:n], views[n:]):
            lin.weight.copy_(w[0, : lin.in_features, : lin.out_features].T)
            lin.bias.copy_(b[0, 0, : lin.out_features])
        return model

    # ---- compute --------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.n_members
        h = x.unsqueeze(0).expand(k, *x.shape)  # a stride-0 view: the batch is not copied K times
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i == last:
                break
            h = self._act(h)
            if self._masks is not None:
                h = h * self._masks[i]
            if self.training and self._any_dropout:
                keep = torch.rand(h.shape, device=h.device, generator=self.generator) >= self.dropout
                h = h * keep * self._keep_scale
        return h

    @torch.no_grad()
    def select(self, rows: torch.Tensor) -> None:
        """Keep only the given members (compaction of the stack); rows index the current members."""
        rows_list = rows.tolist()
        self.flat = self.flat[rows].contiguous()
        self.flat_grad = torch.zeros_like(self.flat)
        self.member_widths = [self.member_widths[r] for r in rows_list]
        self.n_members = len(rows_list)
        for name in [n for n, _ in self.named_parameters(recurse=False)]:
            delattr(self, name)
        self.weights, self.biases = self._make_views()
        self.set_dropout(self.dropout.view(-1)[rows].tolist())
        self._masks = self._make_masks() if self.activation in _NONZERO_AT_ZERO else None


def member_losses(outputs: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Mean loss of each member on a shared batch: (K, B, C) logits or (K, B, 1) values -> (K,).

    Classification: cross-entropy over the class logits (binary too); regression: MSE on standardised targets.
    """
    k, n = outputs.shape[0], outputs.shape[1]
    if task == "classification":
        flat = F.cross_entropy(outputs.reshape(k * n, -1), y.repeat(k), reduction="none")
        return flat.view(k, n).mean(dim=1)
    return (outputs.squeeze(-1) - y).square().mean(dim=1)
