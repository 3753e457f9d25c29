"""A frozen config of concrete values -> an `nn.Module`. No Optuna here."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from automlp.engine.activations import activation_module


@dataclass(frozen=True)
class MLPConfig:
    """The architecture: input features -> hidden layers of `widths` -> outputs."""

    n_inputs: int
    n_outputs: int
    widths: tuple[int, ...]
    activation: str = "relu"
    dropout: float = 0.0

    @property
    def depth(self) -> int:
        return len(self.widths)

    def layer_sizes(self) -> list[int]:
        return [self.n_inputs, *self.widths, self.n_outputs]

    def describe(self) -> str:
        hidden = "-".join(map(str, self.widths)) or "(no hidden layer)"
        return f"{self.n_inputs} -> {hidden} {self.activation} -> {self.n_outputs}"


def count_params(cfg: MLPConfig) -> int:
    sizes = cfg.layer_sizes()
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


def build_mlp(cfg: MLPConfig) -> nn.Sequential:
    """Linear layers with the activation (and dropout) between them; the output layer is linear."""
    layers: list[nn.Module] = []
    sizes = cfg.layer_sizes()
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), activation_module(cfg.activation)]
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)
