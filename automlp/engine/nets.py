"""Stacked modules: K members in one module, every parameter with a leading member dim K.

`StackedMLP` holds K plain MLPs of one depth and activation in a flat (K, P) tensor; per-layer weight and bias
views read it, and members narrower than the widest are zero-padded. For every activation with act(0) = 0 the
padded units output 0 and receive zero gradient, and their weights stay zero under Adam, AdamW and SGD (weight
decay of a zero weight is zero). Only `logistic` (sigmoid(0) = 0.5) needs an explicit mask after the activation.

forward(x): x of (B, d) is a batch all members share (a stride-0 view: one batched product, not K copies);
x of (K, B, d) gives each member its own rows. Either way the output is (K, B, n_outputs), and member k's
output depends only on member k's slices. `member(k)` is the plain `build_mlp` net computing exactly member k.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from automlp.engine.activations import ACTIVATIONS
from automlp.model import MLPConfig, build_mlp

# Grads are views of one flat (K, P) tensor on purpose (see _make_views); autograd notes that such strides are not
# its preferred layout and still accumulates into them in place.
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")


class StackedMLP(nn.Module):
    """K members sharing depth and activation; widths[k] are member k's hidden widths (padded to the widest)."""

    def __init__(self, n_inputs: int, n_outputs: int, widths: Sequence[Sequence[int]], activation: str,
                 dropout: Sequence[float] | None = None, device: torch.device | str = "cpu") -> None:
        super().__init__()
        depths = {len(w) for w in widths}
        if len(depths) != 1:
            raise ValueError(f"members of one stack must share their depth; got depths {sorted(depths)}")
        self.n_inputs, self.n_outputs, self.activation = n_inputs, n_outputs, activation
        self.member_widths = [tuple(int(u) for u in w) for w in widths]
        self.n_members = len(self.member_widths)
        self.layer_sizes = self._sizes(self.member_widths)
        self.flat = torch.zeros(self.n_members, self.n_params, device=device)
        self.flat_grad = torch.zeros_like(self.flat)
        self.weights, self.biases = self._make_views()
        self._act = ACTIVATIONS[activation].fn
        self.set_dropout(dropout if dropout is not None else [0.0] * self.n_members)
        self._masks = self._make_masks()
        self.generator: torch.Generator | None = None  # dropout draws; the trainer seeds one per stack

    def _sizes(self, widths: Sequence[tuple[int, ...]]) -> list[tuple[int, int]]:
        depth = len(widths[0])
        max_widths = [max(w[i] for w in widths) for i in range(depth)]
        return list(zip([self.n_inputs, *max_widths], [*max_widths, self.n_outputs]))

    @property
    def n_params(self) -> int:
        return sum(i * o + o for i, o in self.layer_sizes)

    def config(self, k: int) -> MLPConfig:
        return MLPConfig(self.n_inputs, self.n_outputs, self.member_widths[k], self.activation,
                         float(self.dropout.view(-1)[k]))

    def _make_views(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        # Layout of a row: all weights, then all biases, so the L2 penalty (weights only, as in sklearn) acts on
        # one contiguous slice [:, :n_weights].
        for name in [n for n, _ in self.named_parameters(recurse=False)]:
            delattr(self, name)
        views = self._views(self.flat)
        n = len(self.layer_sizes)
        self.n_weights = sum(i * o for i, o in self.layer_sizes)
        params = [nn.Parameter(v) for v in views]
        for i, p in enumerate(params):  # Parameters share storage with self.flat
            self.register_parameter(f"p{i}", p)
        # Each .grad is a view of flat_grad: autograd accumulates in place into an existing .grad, so after
        # backward() the whole stack's gradient is the one (K, P) tensor the optimizer reads.
        for p, view in zip(params, self._views(self.flat_grad)):
            p.grad = view
        return params[:n], params[n:]

    def _views(self, flat: torch.Tensor, sizes: list[tuple[int, int]] | None = None) -> list[torch.Tensor]:
        """Per-layer weight then bias views of a (K, P) tensor (or a (P,) row, as (1, ...) views)."""
        sizes = self.layer_sizes if sizes is None else sizes
        flat = flat.view(-1, flat.shape[-1])
        k, out, offset = flat.shape[0], [], 0
        for n_in, n_out in sizes:
            out.append(flat[:, offset : offset + n_in * n_out].view(k, n_in, n_out))
            offset += n_in * n_out
        for _, n_out in sizes:
            out.append(flat[:, offset : offset + n_out].view(k, 1, n_out))
            offset += n_out
        return out

    def _make_masks(self) -> list[torch.Tensor] | None:
        if ACTIVATIONS[self.activation].zero_at_zero or all(w == self.member_widths[0] for w in self.member_widths):
            return None
        masks = []
        for i, (_, n_out) in enumerate(self.layer_sizes[:-1]):
            m = torch.zeros(self.n_members, 1, n_out, device=self.flat.device)
            for k, w in enumerate(self.member_widths):
                m[k, 0, : w[i]] = 1.0
            masks.append(m)
        return masks

    def set_dropout(self, rates: Sequence[float]) -> None:
        rates_t = torch.as_tensor([float(r) for r in rates], dtype=torch.float32, device=self.flat.device)
        self.dropout = rates_t.view(-1, 1, 1)
        self._keep_scale = 1.0 / (1.0 - self.dropout)
        self._any_dropout = bool((rates_t > 0).any())

    # ---- members --------------------------------------------------------------------------------------------

    def member_shapes(self, k: int) -> list[tuple[int, int]]:
        sizes = [self.n_inputs, *self.member_widths[k], self.n_outputs]
        return list(zip(sizes[:-1], sizes[1:]))

    @torch.no_grad()
    def load_member(self, k: int, model: nn.Module) -> None:
        """Copy a plain MLP's weights (its nn.Linear layers, in order) into member k."""
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        shapes = [(m.in_features, m.out_features) for m in linears]
        if shapes != self.member_shapes(k):
            raise ValueError(f"member {k} has layer shapes {self.member_shapes(k)}; the model has {shapes}")
        self.flat[k].zero_()
        for lin, W, B in zip(linears, self.weights, self.biases):
            W[k, : lin.in_features, : lin.out_features].copy_(lin.weight.T)
            B[k, 0, : lin.out_features].copy_(lin.bias)

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

    def member(self, k: int, flat_row: torch.Tensor | None = None) -> nn.Module:
        """The plain, TorchScript-able net computing exactly member k (or the weights of `flat_row`), on the host."""
        return self.export_member(k, build_mlp(self.config(k)), None if flat_row is None else flat_row.cpu())

    @torch.no_grad()
    def set_member(self, k: int, config: MLPConfig, model: nn.Module) -> Callable | None:
        """Put a new member in row k (a refilled slot), with `model`'s weights. When it is wider than the stack
        pads to, the stack is laid out again: returns the function that moves any (K, P) tensor (gradients,
        optimizer state, snapshots) to the new layout, else None."""
        self.member_widths[k] = tuple(config.widths)
        rates = self.dropout.view(-1).tolist()
        rates[k] = config.dropout
        self.set_dropout(rates)
        sizes = [(max(a, c), max(b, d)) for (a, b), (c, d) in zip(self.layer_sizes, self._sizes([config.widths]))]
        move = None
        if sizes != self.layer_sizes:
            old_sizes = self.layer_sizes

            def move(old: torch.Tensor) -> torch.Tensor:
                new = torch.zeros(old.shape[0], sum(i * o + o for i, o in sizes), device=old.device)
                for src, dst in zip(self._views(old, old_sizes), self._views(new, sizes)):
                    dst[:, : src.shape[1], : src.shape[2]].copy_(src)
                return new

            self.layer_sizes = sizes
            self.flat, self.flat_grad = move(self.flat), torch.zeros(len(self.member_widths), self.n_params,
                                                                     device=self.flat.device)
            self.weights, self.biases = self._make_views()
        self._masks = self._make_masks()
        self.load_member(k, model)
        return move

    # ---- compute --------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.n_members
        h = x.unsqueeze(0).expand(k, *x.shape) if x.dim() == 2 else x  # stride 0: the batch is not copied K times
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
        self.weights, self.biases = self._make_views()
        self.set_dropout(self.dropout.view(-1)[rows].tolist())
        self._masks = self._make_masks()
