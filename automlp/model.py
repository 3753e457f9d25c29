"""A frozen config of concrete values -> an `nn.Module`. No Optuna here."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from automlp.blocks.config import BlockConfig
from automlp.engine.activations import activation_module


@dataclass(frozen=True)
class MLPConfig:
    """The architecture: input features -> hidden layers of `widths` -> outputs."""

    n_inputs: int
    n_outputs: int
    widths: tuple[int, ...]
    activation: str = "relu"
    dropout: float = 0.0
    blocks: BlockConfig | None = None  # embeddings, feature scaling, TabM (automlp.blocks); None: a plain MLP

    @property
    def plain(self) -> bool:
        return self.blocks is None or self.blocks.is_plain

    @property
    def depth(self) -> int:
        return len(self.widths)

    def layer_sizes(self) -> list[int]:
        return [self.n_inputs, *self.widths, self.n_outputs]

    def describe(self) -> str:
        hidden = "-".join(map(str, self.widths)) or "(no hidden layer)"
        blocks = "" if self.plain else f" [{self.blocks.describe()}]"
        return f"{self.n_inputs} -> {hidden} {self.activation} -> {self.n_outputs}{blocks}"


def count_params(cfg: MLPConfig) -> int:
    if not cfg.plain:
        return sum(p.numel() for p in build_mlp(cfg).parameters())
    sizes = cfg.layer_sizes()
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def build_net(cfg: MLPConfig, X_train: torch.Tensor | None = None) -> nn.Module:
    """The net of `cfg`, initialised from torch's global generator (seed it first): a plain MLP, or a net of blocks
    (automlp.blocks) whose piecewise-linear bins, if any, come from the training rows `X_train`."""
    if cfg.plain:
        return build_mlp(cfg)
    from automlp.blocks.net import BlockNet, ServedMember, compute_bins

    b = cfg.blocks
    bins = None
    if b.embedding == "piecewise_linear" and X_train is not None:
        bins = [compute_bins(X_train[:, : b.n_numeric].detach().cpu(), b.n_bins)]
    net = BlockNet(cfg.n_inputs, cfg.n_outputs, cfg.widths, cfg.activation, b, b.task, 1, [cfg.dropout], bins)
    net.init_member(0, int(torch.randint(0, 2**31 - 1, (1,))))
    return ServedMember(net)


def build_mlp(cfg: MLPConfig) -> nn.Module:
    """Linear layers with the activation (and dropout) between them; the output layer is linear. A config with
    blocks gets its BlockNet (without piecewise-linear bins: load a state dict, or use `build_net`)."""
    if not cfg.plain:
        return build_net(cfg)
    layers: list[nn.Module] = []
    sizes = cfg.layer_sizes()
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), activation_module(cfg.activation)]
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)
