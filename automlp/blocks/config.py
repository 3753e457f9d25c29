"""What a net built from blocks is made of: a frozen config of concrete values, torch-free (spec.py and the
search read the names; `automlp.blocks.net` builds the modules).

The blocks (each a spec field of `space`, documented there):
- `embedding` of the numeric columns (the first `n_numeric` features): `none`; `periodic` (PLR: Gorishniy et al.
  2022, `rtdl_num_embeddings.PeriodicEmbeddings(lite=False)`: per feature, cos/sin of `n_frequencies` trained
  frequencies initialised N(0, frequency_init_scale), then a per-feature linear layer to `d_embedding` and ReLU);
  `piecewise_linear` (PLE on quantile bins of the training rows, `PiecewiseLinearEmbeddings(version="B",
  activation=False)`: a linear embedding plus a per-feature linear map of the bin encoding, zero at init).
- `feature_scaling`: a trained per-input scale (initialised 1) in front of the first layer, as RealMLP's.
- `arch`: `mlp`; `tabm_mini` (TabM-mini: one multiplicative adapter per internal member on the first layer's
  input, every hidden layer shared); `tabm` (BatchEnsemble: shared weights, per-member adapters r, s and bias on
  every hidden layer). Both with `k_ensemble` internal members, an output layer per member, trained on the mean of
  the members' losses, predicting the mean of their predictions (Gorishniy et al. 2025, package `tabm`).
"""

from __future__ import annotations

from dataclasses import dataclass

from automlp.registry import ARCHS, EMBEDDINGS


@dataclass(frozen=True)
class BlockConfig:
    n_numeric: int = 0  # the first n_numeric inputs are the numeric columns (automlp.data puts them first)
    embedding: str = "none"
    d_embedding: int = 16
    n_frequencies: int = 16  # periodic
    frequency_init_scale: float = 0.1  # periodic: small is safe, large can be terrible (rtdl README)
    n_bins: int = 16  # piecewise_linear: at most this many quantile bins per column
    feature_scaling: bool = False
    arch: str = "mlp"
    k_ensemble: int = 1  # internal members of tabm / tabm_mini (32 in the paper)
    task: str = "regression"  # how internal members' predictions are averaged: probabilities or values

    def __post_init__(self) -> None:
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"unknown embedding {self.embedding!r}; valid: {', '.join(EMBEDDINGS)}")
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; valid: {', '.join(ARCHS)}")
        if self.arch == "mlp" and self.k_ensemble != 1:
            raise ValueError("k_ensemble must be 1 for arch mlp")

    @property
    def is_plain(self) -> bool:
        """Nothing beyond a plain MLP: the plain stacked MLP (and its fast kernel) serves it."""
        return self.embedding == "none" and self.arch == "mlp" and not self.feature_scaling

    @property
    def n_embedded(self) -> int:
        return self.n_numeric if self.embedding != "none" else 0

    def first_layer_inputs(self, n_inputs: int) -> int:
        return n_inputs + self.n_embedded * (self.d_embedding - 1)

    def describe(self) -> str:
        """The blocks in words, for the report's architecture line (empty for a plain MLP)."""
        parts = []
        if self.embedding == "periodic":
            parts.append(f"periodic embedding of {self.n_numeric} numeric ({self.n_frequencies} frequencies, "
                         f"scale {self.frequency_init_scale:.3g}, d {self.d_embedding})")
        elif self.embedding == "piecewise_linear":
            parts.append(f"piecewise-linear embedding of {self.n_numeric} numeric (<= {self.n_bins} bins, "
                         f"d {self.d_embedding})")
        if self.feature_scaling:
            parts.append("feature scaling")
        if self.arch != "mlp":
            parts.append(f"{self.arch} x{self.k_ensemble}")
        return ", ".join(parts)
