"""The strong-default portfolio: a few proven configurations every study tries first (`study.portfolio: true`),
before the sampler takes over. A few tuned defaults tried first beat long searches from scratch (auto-sklearn 2,
AutoGluon's zero-shot portfolio, RealMLP's "best of tuned defaults").

The entries (Optuna parameter names; what an entry leaves out, the sampler chooses):

- `realmlp`: RealMLP's tuned defaults (Holzmueller et al. 2024) as far as automlp has them: 3 x 256, robust scaling
  with smooth clipping, periodic embeddings (frequency scale 0.1), a per-feature scaling layer, AdamW with
  beta2 0.95, lr 0.04 on the coslog4 schedule, weight decay 0.02, dropout 0.15, batch 256, label smoothing 0.1
  (accuracy-type metrics only). Not here: its SELU/Mish activations (silu instead), per-layer lr factors, the
  data-dependent init and the flat-cosine schedules of dropout and weight decay.
- `tabm_mini_ple`: TabM-mini with piecewise-linear embeddings (Gorishniy et al. 2025: the best of their variants
  against tuned GBDTs), on quantile-transformed inputs as in the paper: 2 x 512, AdamW lr 0.002, weight decay
  3e-4, dropout 0.1, batch 256, 16 bins; k_ensemble from the space (the paper's 32 costs 32x a plain epoch on CPU).
- `mlp`: the plain MLP users know (scikit-learn's MLP defaults): 1 x 100 relu, Adam lr 0.001, L2 1e-4, standardized
  inputs, constant lr.

Each entry is clipped to the user's space: a number outside a range takes the nearest bound, a number not among
the choices the nearest choice, a fixed parameter its value; an entry whose category (arch, embedding, optimizer,
...) the space does not admit is skipped (with a note when the spec set `study.portfolio: true` itself).
"""

from __future__ import annotations

import math

import optuna

from automlp.spec import LABEL_SMOOTHING_METRICS, PLAIN_MLP, Param, Spec

PORTFOLIO: dict[str, dict] = {
    "realmlp": {"depth": 3, "width": 256, "activation": "silu", "optimizer": "adamw", "lr": 0.04, "alpha": 0.02,
                "beta2": 0.95, "batch_size": 256, "dropout": 0.15, "lr_schedule": "coslog4",
                "numeric_preprocessing": "robust_clip", "embedding": "periodic", "frequency_init_scale": 0.1,
                "feature_scaling": True, "arch": "mlp", "label_smoothing": 0.1},
    "tabm_mini_ple": {"depth": 2, "width": 512, "activation": "relu", "optimizer": "adamw", "lr": 0.002,
                      "alpha": 3e-4, "beta2": 0.999, "batch_size": 256, "dropout": 0.1, "lr_schedule": "constant",
                      "numeric_preprocessing": "quantile", "embedding": "piecewise_linear", "n_bins": 16,
                      "feature_scaling": False, "arch": "tabm_mini", "label_smoothing": 0.0},
    "mlp": {**PLAIN_MLP, "depth": 1, "width": 100, "lr": 0.001, "alpha": 1e-4, "batch_size": 200,
            "label_smoothing": 0.0},
}


def _active(name: str, entry: dict, metric: str | None) -> bool:
    """Whether `suggest_params` samples `name` for this entry (conditional parameters)."""
    if name in ("lr", "batch_size"):
        return entry.get("optimizer") != "lbfgs"
    if name == "beta2":
        return entry.get("optimizer") in ("adam", "adamw")
    if name == "frequency_init_scale":
        return entry.get("embedding") == "periodic"
    if name == "n_bins":
        return entry.get("embedding") == "piecewise_linear"
    if name == "label_smoothing":
        return metric in LABEL_SMOOTHING_METRICS
    if name == "width":
        return entry.get("depth", 1) > 0
    return True


def _nearest(value: float, choices: tuple) -> float:
    def distance(c: float) -> float:
        if value > 0 and c > 0:
            return abs(math.log(c / value))  # sizes and rates are compared by ratio
        return abs(c - value)
    return min(choices, key=distance)


def clip_value(p: Param, value):
    """`value` made admissible for `p`, or None when a category the space does not hold."""
    if p.kind == "cat":
        admitted = (p.value,) if p.is_fixed else p.choices
        return value if value in admitted else None
    if p.is_fixed:
        return p.value
    if p.choices is not None:
        return _nearest(value, p.choices)
    v = min(max(value, p.low), p.high)
    if p.step:
        v = p.low + round((v - p.low) / p.step) * p.step
    return int(round(v)) if p.kind == "int" else float(v)


def portfolio_params(spec: Spec, metric: str | None, n_train: int | None = None
                     ) -> tuple[list[tuple[str, dict]], list[str]]:
    """The entries clipped to the space, as Optuna params for `study.enqueue_trial`, and a note per skipped one.
    With `n_train` (training rows), an entry's batch size is at most n_train / 16, so that a small data set still
    gets 16 steps per epoch (RealMLP's and TabM's 256 are for thousands of rows)."""
    space, out, notes = spec.space.params(), [], []
    for name, entry in PORTFOLIO.items():
        if n_train is not None:
            entry = entry | {"batch_size": max(8, min(entry["batch_size"], n_train // 16))}
        params, missing = {}, None
        for key, value in entry.items():
            if not _active(key, entry, metric):
                continue
            clipped = clip_value(space[key], value)
            if clipped is None:
                missing = f"space.{key} does not admit {value!r}"
                break
            params[key] = clipped
            entry = entry | {key: clipped}  # conditions downstream see the clipped value
        if missing:
            notes.append(f"portfolio entry '{name}' skipped: {missing}")
            continue
        if spec.space.width_mode == "per_layer" and "width" in params:
            width = params.pop("width")
            params |= {f"width_{i}": width for i in range(params["depth"])}
        out.append((name, params))
    return out, notes


def enqueue_portfolio(study: optuna.Study, spec: Spec, metric: str | None, n_train: int | None = None) -> list[str]:
    """Put the portfolio at the head of a new study's queue (a resumed study already has it). Returns notes: what
    was skipped or left out, when the spec asked for the portfolio itself (by default, with a space of its own,
    the entries it does not admit are skipped quietly: the user chose that space)."""
    if not spec.study.portfolio or study.get_trials(deepcopy=False):
        return []
    entries, notes = portfolio_params(spec, metric, n_train)
    n_trials = spec.study.n_trials
    if n_trials is not None and len(entries) > n_trials:  # queued trials past the budget would wait for ever
        notes.append(f"study.n_trials: {n_trials} leaves room for only the first {n_trials} of the "
                     f"{len(entries)} portfolio entries ({', '.join(name for name, _ in entries[n_trials:])} "
                     "left out)")
        entries = entries[:n_trials]
    if "portfolio" not in spec.study.model_fields_set:
        notes = []
    for name, params in entries:
        study.enqueue_trial(params, user_attrs={"portfolio": name})
    return notes
