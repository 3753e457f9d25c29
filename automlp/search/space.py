"""The space: sample a configuration, list the active parameters, enumerate the grid, and turn params into configs.

The one place the width parameters are translated: a trial holds `width` (width_mode: shared) or `width_0` ..
`width_{depth-1}` (per_layer); everything past this module sees `widths`, a list of one width per hidden layer.
"""

from __future__ import annotations

import optuna

from automlp.data import PreparedData
from automlp.errors import SpecError
from automlp.blocks.config import BlockConfig
from automlp.model import MLPConfig
from automlp.engine import TrainConfig
from automlp.spec import LABEL_SMOOTHING_METRICS, Param, Spec

# the params a stack's members share (their trials must agree on them; the rest is each member's own)
STRUCTURAL = ("depth", "activation", "optimizer", "batch_size")  # automlp.engine.stack_key's params
MAX_LAYERS = 64  # more width_i than any spec allows


def _suggest(trial: optuna.Trial, p: Param, name: str | None = None):
    name = name or p.name
    if p.kind == "cat":
        return trial.suggest_categorical(name, list(p.choices) if p.choices is not None else [p.value])
    if p.choices is not None:
        return trial.suggest_categorical(name, list(p.choices))
    if p.is_fixed:
        low = high = p.value
        log, step = False, None
    else:
        low, high, log, step = p.low, p.high, p.log, p.step
    if p.kind == "int":
        return trial.suggest_int(name, int(low), int(high), step=int(step or 1), log=log)
    return trial.suggest_float(name, float(low), float(high), step=step, log=log)


def suggest_params(trial: optuna.Trial, spec: Spec, metric: str | None = None) -> dict:
    """Sample one configuration. Conditional parameters exist only where they act:
    momentum/nesterov with sgd, power_t with invscaling, lr and batch_size without lbfgs,
    width_i for the layers i the sampled depth creates (width_mode: per_layer), beta2 with adam/adamw,
    d_embedding with an embedding, frequency_init_scale with periodic, n_bins with piecewise_linear, k_ensemble
    with tabm/tabm_mini, label_smoothing with an accuracy-type `metric`."""
    space = spec.space
    params = {"depth": _suggest(trial, space.depth)}
    if space.width_mode == "per_layer":
        params["widths"] = [_suggest(trial, space.width, f"width_{i}") for i in range(params["depth"])]
    else:
        width = _suggest(trial, space.width) if params["depth"] > 0 else 0
        params["widths"] = [width] * params["depth"]
    for name in ("activation", "optimizer", "alpha", "dropout", "lr_schedule", "max_epochs"):
        params[name] = _suggest(trial, getattr(space, name))
    if params["optimizer"] != "lbfgs":
        params["lr"] = _suggest(trial, space.lr)
        params["batch_size"] = _suggest(trial, space.batch_size)
    if params["optimizer"] == "sgd":
        params["momentum"] = _suggest(trial, space.momentum)
        params["nesterov"] = _suggest(trial, space.nesterov)
    if params["lr_schedule"] == "invscaling":
        params["power_t"] = _suggest(trial, space.power_t)
    if params["optimizer"] in ("adam", "adamw"):
        params["beta2"] = _suggest(trial, space.beta2)
    if metric in LABEL_SMOOTHING_METRICS:
        params["label_smoothing"] = _suggest(trial, space.label_smoothing)
    return params | suggest_blocks(trial, spec)


def suggest_blocks(trial: optuna.Trial, spec: Spec) -> dict:
    """The data and block choices of a trial (see automlp.blocks.config)."""
    space = spec.space
    params = {name: _suggest(trial, getattr(space, name))
              for name in ("numeric_preprocessing", "embedding", "feature_scaling", "arch")}
    if params["embedding"] != "none":
        params["d_embedding"] = _suggest(trial, space.d_embedding)
    if params["embedding"] == "periodic":
        params["frequency_init_scale"] = _suggest(trial, space.frequency_init_scale)
    if params["embedding"] == "piecewise_linear":
        params["n_bins"] = _suggest(trial, space.n_bins)
    if params["arch"] != "mlp":
        params["k_ensemble"] = _suggest(trial, space.k_ensemble)
    return params


def blocks_of(params: dict, data: PreparedData) -> BlockConfig | None:
    """The blocks of a trial's params; None for a plain MLP (and for trials of studies from before the blocks)."""
    embedding, arch = params.get("embedding", "none"), params.get("arch", "mlp")
    cfg = BlockConfig(n_numeric=len(data.numeric_columns), embedding=embedding,
                      d_embedding=int(params.get("d_embedding", 16)),
                      frequency_init_scale=float(params.get("frequency_init_scale", 0.1)),
                      n_bins=int(params.get("n_bins", 16)), feature_scaling=bool(params.get("feature_scaling", False)),
                      arch=arch, k_ensemble=int(params.get("k_ensemble", 1)) if arch != "mlp" else 1, task=data.task)
    return None if cfg.is_plain else cfg


def params_of(trial: optuna.trial.FrozenTrial) -> dict:
    """A finished trial's params in `suggest_params` form (widths as a list)."""
    p = dict(trial.params)
    depth = p["depth"]
    if "width_0" in p or depth == 0:
        p["widths"] = [p.pop(f"width_{i}") for i in range(depth)]
    else:
        p["widths"] = [p["width"]] * depth
    for i in range(MAX_LAYERS):
        p.pop(f"width_{i}", None)
    p.pop("width", None)
    return p


# what makes a net plain (the plain stacked MLP and its kernel: no label smoothing there), and what a net of blocks
# must share with its stack mates besides STRUCTURAL (automlp.engine.stack_key: widths and the BlockConfig)
PLAIN_KEYS = ("embedding", "arch", "feature_scaling", "label_smoothing")
BLOCK_KEYS = ("embedding", "d_embedding", "frequency_init_scale", "n_bins", "feature_scaling", "arch", "k_ensemble")


def structural_params(trial_params: dict) -> dict:
    """The trial params (Optuna's names) a stack mate must share, for `study.enqueue_trial`: exactly what makes
    the engine's stack key (tests/test_search_space.py), so a refill asked with them always fits its stack."""
    out = {name: trial_params[name] for name in STRUCTURAL if name in trial_params}
    plain = (trial_params.get("embedding", "none") == "none" and trial_params.get("arch", "mlp") == "mlp"
             and not trial_params.get("feature_scaling", False))
    names = PLAIN_KEYS if plain else BLOCK_KEYS + tuple(n for n in trial_params if n == "width" or
                                                        n.startswith("width_"))
    return out | {name: trial_params[name] for name in names if name in trial_params}


def active_params(spec: Spec) -> dict[str, Param]:
    """The parameters some trial can sample (conditional ones whose condition can never hold are left out)."""
    params = spec.space.params()
    values = {n: set(p.grid_values() or []) for n, p in params.items() if p.kind == "cat"}
    if values["optimizer"] == {"lbfgs"}:
        params.pop("lr"), params.pop("batch_size")
    if "sgd" not in values["optimizer"]:
        params.pop("momentum"), params.pop("nesterov")
    if "invscaling" not in values["lr_schedule"]:
        params.pop("power_t")
    if not values["optimizer"] & {"adam", "adamw"}:
        params.pop("beta2")
    if values["embedding"] <= {"none"}:
        params.pop("d_embedding")
    if "periodic" not in values["embedding"]:
        params.pop("frequency_init_scale")
    if "piecewise_linear" not in values["embedding"]:
        params.pop("n_bins")
    if values["arch"] <= {"mlp"}:
        params.pop("k_ensemble")
    return params


def grid_space(spec: Spec) -> dict[str, list]:
    """Every parameter's finite values, for the grid sampler; a continuous range is an error."""
    space = spec.space
    out = {}
    for name, p in space.params().items():
        values = p.grid_values()
        if values is None:
            raise SpecError(f"space.{name}: the grid sampler needs a finite set of values; give a list of "
                            "choices or a range with a step")
        if name == "width" and space.width_mode == "per_layer":
            for i in range(int(max(space.depth.grid_values()))):
                out[f"width_{i}"] = values
        else:
            out[name] = values
    return out


def space_fingerprint(spec: Spec) -> dict:
    """What a study may not change between runs: the space (the metric is checked beside it)."""
    return {name: p.describe() for name, p in spec.space.params().items()} | {"width_mode": spec.space.width_mode}


def configs_from_params(params: dict, spec: Spec, data: PreparedData, metric: str,
                        seed: int) -> tuple[MLPConfig, TrainConfig]:
    """Concrete configs from sampled params (as returned by `suggest_params` or rebuilt by `params_of`)."""
    es = spec.training.early_stopping
    mlp = MLPConfig(n_inputs=data.n_features, n_outputs=data.n_outputs, widths=tuple(params["widths"]),
                    activation=params["activation"], dropout=float(params["dropout"]), blocks=blocks_of(params, data))
    tc = TrainConfig(
        optimizer=params["optimizer"], lr=float(params.get("lr", 1.0)), alpha=float(params["alpha"]),
        batch_size=int(params.get("batch_size", len(data.X_train))), max_epochs=int(params["max_epochs"]),
        lr_schedule=params["lr_schedule"], momentum=float(params.get("momentum", 0.0)),
        nesterov=bool(params.get("nesterov", False)), power_t=float(params.get("power_t", 0.5)),
        betas=(0.9, float(params.get("beta2", 0.999))), label_smoothing=float(params.get("label_smoothing", 0.0)),
        patience=_patience(es.patience, params) if es.enabled else None, min_delta=es.min_delta, monitor=es.monitor,
        seed=seed,
        metric=metric, precision=spec.training.precision)
    return mlp, tc


def _patience(patience: int, params: dict) -> int:
    """coslog4 is cyclic: the validation loss rises at each cycle's peak lr, so early stopping waits out at least
    a quarter of max_epochs (RealMLP trains the whole schedule and restores its best epoch)."""
    if params.get("lr_schedule") == "coslog4":
        return max(patience, int(params["max_epochs"]) // 4)
    return patience


def trial_seed(study_seed: int, number: int) -> int:
    """The seed of a trial's initial weights (and, trained alone, its batch order)."""
    return (study_seed * 1_000_003 + number * 7_919 + 17) % (2**31 - 1)
