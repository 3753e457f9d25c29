"""The spec: Pydantic models of a search spec and `load_spec`, with YAML line numbers in every error.

Every hyperparameter in `space` accepts a fixed value, a list of choices, or a range
`{low, high, log, step}`. They are parsed into `Param` objects here, once; code after `load_spec`
trusts the spec.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from automlp.errors import SpecError
from automlp.registry import ACTIVATION_ALIASES, ACTIVATIONS, LR_SCHEDULES, OPTIMIZER_ALIASES, OPTIMIZERS  # noqa: F401

NUMERIC_PREPROCESSING = ("standard", "quantile", "robust_clip")
EMBEDDINGS = ("none", "periodic", "piecewise_linear")  # = automlp.blocks.config's (a test checks)
ARCHS = ("mlp", "tabm_mini", "tabm")
# label smoothing helps accuracy-type metrics and hurts probability-quality ones (RealMLP's ablation): it is
# sampled only when the study's metric is one of these
LABEL_SMOOTHING_METRICS = ("accuracy", "balanced_accuracy", "f1_macro")
CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
METRIC_DIRECTIONS = {
    "accuracy": "maximize", "balanced_accuracy": "maximize", "f1_macro": "maximize",
    "roc_auc": "maximize", "log_loss": "minimize", "rmse": "minimize", "mae": "minimize", "r2": "maximize",
}
SKLEARN_DATASETS = ("iris", "digits", "wine", "breast_cancer", "diabetes")
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql", "journal")
MAX_WIDTH = 16384
MAX_DEPTH = 32
MAX_WEIGHTS = 250_000_000  # (depth - 1) * width**2 of the largest net: 1 GB of fp32 weights, ~4 GB with Adam


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Param:
    """One hyperparameter of the space: exactly one of `value`, `choices` or a range (`low`, `high`)."""

    name: str
    kind: Literal["int", "float", "cat"]
    value: Any = None
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None

    @property
    def is_fixed(self) -> bool:
        return self.choices is None and self.low is None

    def grid_values(self) -> list | None:
        """The finite set of values, or None for a continuous range."""
        if self.is_fixed:
            return [self.value]
        if self.choices is not None:
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is not None:
            n = int(round((self.high - self.low) / self.step))
            return [self.low + i * self.step for i in range(n + 1)]
        return None

    def describe(self) -> str:
        if self.is_fixed:
            return repr(self.value)
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        extra = (", log" if self.log else "") + (f", step {self.step:g}" if self.step else "")
        return f"[{self.low:g}, {self.high:g}{extra}]"


def _err(msg: str) -> PydanticCustomError:
    return PydanticCustomError("automlp", "{msg}", {"msg": msg})


def _sub_error(sub: str, msg: str) -> PydanticCustomError:
    # `sub` extends the error's YAML path below the field (e.g. "low"), so messages point at the line.
    return PydanticCustomError("automlp", "{msg}", {"msg": msg, "sub": sub})


def _check_number(name: str, kind: str, x: Any, bounds: tuple, sub: str) -> float:
    lo, hi, lo_open, hi_open = bounds
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        want = "an integer" if kind == "int" else "a number"
        raise _sub_error(sub, f"must be {want}; got {x!r}")
    if kind == "int" and isinstance(x, float):
        if not x.is_integer():
            raise _sub_error(sub, f"must be an integer; got {x!r}")
        x = int(x)
    if (x < lo or (lo_open and x == lo)) or (x > hi or (hi_open and x == hi)):
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        hint = ""
        if name == "width" and x > hi:
            hint = f" (wider layers would not fit in memory for a tabular MLP; use at most {hi})"
        raise _sub_error(sub, f"must be in {left}{lo:g}, {hi:g}{right}; got {x!r}{hint}")
    return x


def parse_param(name: str, kind: str, raw: Any, bounds: tuple | None = None, allowed: tuple = (),
                aliases: dict | None = None) -> Param:
    """Turn a YAML value into a Param, raising errors that name the offending sub-key."""
    aliases = aliases or {}

    def check(x: Any, sub: str) -> Any:
        if kind == "cat":
            if allowed and isinstance(x, str):
                x = aliases.get(x.lower(), x.lower())
            if allowed and x not in allowed:
                names = [str(a) for a in allowed] + list(aliases)
                near = difflib.get_close_matches(str(x), names, n=1)
                tip = f"did you mean '{near[0]}'? " if near else ""
                raise _sub_error(sub, f"unknown value {x!r}; {tip}Valid: {', '.join(map(str, allowed))}")
            return x
        return _check_number(name, kind, x, bounds, sub)

    if isinstance(raw, dict):
        if kind == "cat":
            raise _sub_error("", "a categorical parameter takes a value or a list of choices, not a range")
        unknown = set(raw) - {"low", "high", "log", "step"}
        if unknown:
            key = sorted(map(str, unknown))[0]
            near = difflib.get_close_matches(key, ["low", "high", "log", "step"], n=1)
            tip = f"did you mean '{near[0]}'?" if near else "valid keys are low, high, log, step"
            raise _sub_error(key, f"unknown key; {tip}")
        for key in ("low", "high"):
            if key not in raw:
                raise _sub_error("", f"a range needs '{key}' (got keys: {', '.join(map(str, raw)) or 'none'})")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise _sub_error("log", f"must be true or false; got {log!r}")
        low, high = raw["low"], raw["high"]
        if log and isinstance(low, (int, float)) and not isinstance(low, bool) and low <= 0:
            raise _sub_error("low", f"must be > 0 when log: true (got {low!r})")
        low, high = check(low, "low"), check(high, "high")
        if low >= high:
            raise _sub_error("", f"low must be < high (got low={low!r}, high={high!r}); "
                                 "for a fixed value write it directly")
        step = raw.get("step")
        if step is not None:
            if log:
                raise _sub_error("step", "cannot be combined with log: true; drop one of them")
            if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
                raise _sub_error("step", f"must be a number > 0; got {step!r}")
            if kind == "int" and not float(step).is_integer():
                raise _sub_error("step", f"must be an integer for '{name}'; got {step!r}")
        return Param(name, kind, low=low, high=high, log=log, step=step)
    if isinstance(raw, list):
        if not raw:
            raise _sub_error("", "the list of choices is empty; give at least one value")
        values = tuple(check(x, str(i)) for i, x in enumerate(raw))
        if len(set(values)) != len(values):
            raise _sub_error("", f"the list of choices has duplicates: {list(raw)}")
        if len(values) == 1:
            return Param(name, kind, value=values[0])
        return Param(name, kind, choices=values)
    if raw is None:
        raise _sub_error("", "needs a value, a list of choices or a range {low, high}")
    return Param(name, kind, value=check(raw, ""))


# (kind, bounds (low, high, low_open, high_open), allowed, aliases)
PARAM_RULES: dict[str, tuple] = {
    "depth": ("int", (0, MAX_DEPTH, False, False), (), None),
    "width": ("int", (1, MAX_WIDTH, False, False), (), None),
    "activation": ("cat", None, ACTIVATIONS, ACTIVATION_ALIASES),
    "optimizer": ("cat", None, OPTIMIZERS, OPTIMIZER_ALIASES),
    "lr": ("float", (0.0, 10.0, True, False), (), None),
    "alpha": ("float", (0.0, 100.0, False, False), (), None),
    "batch_size": ("int", (1, 1_000_000, False, False), (), None),
    "dropout": ("float", (0.0, 1.0, False, True), (), None),
    "lr_schedule": ("cat", None, LR_SCHEDULES, None),
    "max_epochs": ("int", (1, 100_000, False, False), (), None),
    "momentum": ("float", (0.0, 1.0, False, False), (), None),
    "nesterov": ("cat", None, (True, False), None),
    "power_t": ("float", (0.0, 10.0, False, False), (), None),
    "numeric_preprocessing": ("cat", None, NUMERIC_PREPROCESSING, None),
    "embedding": ("cat", None, EMBEDDINGS, None),
    "d_embedding": ("int", (1, 256, False, False), (), None),
    "frequency_init_scale": ("float", (0.0, 100.0, True, False), (), None),
    "n_bins": ("int", (2, 1024, False, False), (), None),
    "feature_scaling": ("cat", None, (True, False), None),
    "arch": ("cat", None, ARCHS, None),
    "k_ensemble": ("int", (1, 256, False, False), (), None),
    "beta2": ("float", (0.0, 1.0, True, True), (), None),
    "label_smoothing": ("float", (0.0, 1.0, False, True), (), None),
}


# --------------------------------------------------------------------------- sections


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class DataSpec(_Section):
    """Where the data comes from and how it is split."""

    dataset: str | None = Field(None, description="A bundled data set: sklearn:iris|digits|wine|breast_cancer|diabetes")
    path: Path | None = Field(None, description="A CSV, Parquet or NumPy .npz file; relative to the spec's folder")
    target: str | None = Field(None, description="The target column (CSV/Parquet)")
    drop: list[str] = Field(default_factory=list, description="Columns to ignore")
    categorical: list[str] = Field(default_factory=list, description="Columns to one-hot even if they look numeric")
    task: Literal["auto", "classification", "regression"] = "auto"
    na_values: list[str] = Field(default_factory=lambda: ["?"], description="Extra strings read as missing")
    test_size: float = Field(0.2, gt=0, lt=1, description="Fraction of rows held out as the test split")
    val_size: float = Field(0.2, gt=0, lt=1, description="Fraction of the remaining rows used for validation")
    split_seed: int | None = Field(None, description="Seed of the splits (default: study.seed)")
    max_categories: int = Field(50, ge=2, le=10_000,
                                description="One-hot at most this many categories per column; rarer ones share one")
    missing_indicators: bool = Field(True, description="Add a 0/1 column per numeric column that has missing values "
                                     "in the training rows (1 = was missing; the value itself is imputed)")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str | None) -> str | None:
        if v is None:
            return v
        name = v.removeprefix("sklearn:")
        if name not in SKLEARN_DATASETS:
            near = difflib.get_close_matches(name, SKLEARN_DATASETS, n=1)
            tip = f"did you mean 'sklearn:{near[0]}'?" if near else \
                "valid: " + ", ".join("sklearn:" + d for d in SKLEARN_DATASETS)
            raise _err(f"unknown data set {v!r}; {tip}")
        return "sklearn:" + name

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if (self.dataset is None) == (self.path is None):
            raise PydanticCustomError("automlp", "give exactly one of 'dataset' (e.g. sklearn:iris) or 'path'")
        if self.path is not None and "\0" in str(self.path):
            raise _sub_error("path", "must not contain a NUL character")
        if self.path is not None and self.path.suffix.lower() not in (".csv", ".parquet", ".pq", ".npz", ".gz", ".tsv"):
            raise _sub_error("path", f"unsupported file type '{self.path.suffix}'; use .csv, .parquet or .npz")
        if self.path is not None and self.path.suffix.lower() != ".npz" and not self.target:
            raise _sub_error("target", "is required with a CSV or Parquet file: name the column to predict")
        if self.target and self.target in self.drop:
            raise _sub_error("drop", f"drops the target column '{self.target}'")
        return self


class SpaceSpec(_Section):
    """The search space. Each entry: a fixed value, a list of choices, or {low, high, log, step}."""

    depth: Any = Field({"low": 1, "high": 3}, description="Number of hidden layers")
    width: Any = Field({"low": 16, "high": 256, "log": True}, description="Units per hidden layer")
    width_mode: Literal["shared", "per_layer"] = Field(
        "shared", description="shared: one width for all layers; per_layer: width_0..width_{depth-1} sampled apart")
    activation: Any = Field(["relu", "silu"], description="identity, logistic (sigmoid), tanh, relu, leaky_relu, gelu, silu")
    optimizer: Any = Field(["adam", "adamw"], description="adam, adamw, sgd, lbfgs")
    lr: Any = Field({"low": 1e-4, "high": 3e-2, "log": True}, description="Learning rate (learning_rate_init)")
    alpha: Any = Field({"low": 1e-6, "high": 1e-2, "log": True}, description="L2 penalty / weight decay")
    batch_size: Any = Field([32, 64, 128, 256], description="Mini-batch size (ignored by lbfgs: full batch)")
    dropout: Any = Field({"low": 0.0, "high": 0.3}, description="Dropout rate after each hidden layer, in [0, 1)")
    lr_schedule: Any = Field(
        ["constant", "cosine", "coslog4"],
        description="Learning-rate multiplier per epoch: constant; invscaling; adaptive (reduce on plateau); cosine "
                    "(to 0 at max_epochs); warmup_cosine (linear warm-up over the first 5% of max_epochs, then "
                    "cosine); flat_cosine (flat for half of max_epochs, then cosine); coslog4 (RealMLP's: 4 cosine "
                    "cycles on a log time scale, each warming up from 0)")
    max_epochs: Any = Field(100, description="Most epochs a trial trains (max_iter)")
    momentum: Any = Field(0.9, description="SGD momentum; sampled only when optimizer is sgd")
    nesterov: Any = Field(True, description="SGD Nesterov momentum; sampled only when optimizer is sgd")
    power_t: Any = Field(0.5, description="Exponent of invscaling; sampled only with lr_schedule invscaling")
    numeric_preprocessing: Any = Field(
        ["standard", "quantile", "robust_clip"],
        description="Scaling of numeric columns, fitted on the training rows: standard ((x - mean) / std), quantile "
                    "(to a normal distribution), robust_clip (RealMLP's (x - median) / IQR and smooth clipping to "
                    "+-3). Each choice prepares the data once")
    embedding: Any = Field(["none", "periodic", "piecewise_linear"],
                           description="Embedding of each numeric column: none, periodic (PLR), piecewise_linear "
                                       "(quantile bins of the training rows)")
    d_embedding: Any = Field(16, description="Size of each numeric column's embedding; sampled only with an embedding")
    frequency_init_scale: Any = Field(
        {"low": 0.01, "high": 1.0, "log": True},
        description="periodic: std of the initial frequencies; small values are safe, large ones can be terrible")
    n_bins: Any = Field(16, description="piecewise_linear: most quantile bins per numeric column")
    feature_scaling: Any = Field([False, True], description="A trained per-input scale in front of the first layer")
    arch: Any = Field(["mlp", "tabm_mini"],
                      description="mlp; tabm_mini (TabM-mini: k_ensemble members sharing all layers but an input "
                                  "adapter each); tabm (BatchEnsemble adapters on every layer). TabM trains on the "
                                  "mean of its members' losses and predicts their mean")
    k_ensemble: Any = Field(8, description="Members of a tabm / tabm_mini net (32 in the paper; 8 keeps a CPU epoch "
                                           "about 8x a plain MLP's); sampled only with those archs")
    beta2: Any = Field({"low": 0.9, "high": 0.999},
                       description="Adam/AdamW second-moment decay (RealMLP: 0.95); sampled only with adam/adamw")
    label_smoothing: Any = Field({"low": 0.0, "high": 0.1},
                                 description="Classification label smoothing; sampled only for accuracy, "
                                             "balanced_accuracy and f1_macro (it hurts roc_auc and log_loss: 0 there)")

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        out = dict(raw)
        for name, (kind, bounds, allowed, aliases) in PARAM_RULES.items():
            if name in out and not isinstance(out[name], Param):
                out[name] = _wrap(name, parse_param, name, kind, out[name], bounds, allowed, aliases)
        return out

    @model_validator(mode="after")
    def _defaults_to_params(self) -> SpaceSpec:
        for name, (kind, bounds, allowed, aliases) in PARAM_RULES.items():
            val = getattr(self, name)
            if not isinstance(val, Param):
                object.__setattr__(self, name, parse_param(name, kind, val, bounds, allowed, aliases))
        return self

    def params(self) -> dict[str, Param]:
        return {name: getattr(self, name) for name in PARAM_RULES}

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        schema = handler(core_schema)
        schema = handler.resolve_ref_schema(schema)
        for name, (kind, bounds, allowed, aliases) in PARAM_RULES.items():
            schema["properties"][name].update(_param_json_schema(kind, bounds, allowed + tuple(aliases or ())))
        return schema


def _param_json_schema(kind: str, bounds: tuple | None, allowed: tuple) -> dict:
    """What editors should offer for a parameter: a value, a list of choices, or a range."""
    if kind == "cat":
        one = {"enum": list(allowed)}
        return {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}]}
    one: dict = {"type": "integer" if kind == "int" else "number"}
    lo, hi, lo_open, hi_open = bounds
    one["exclusiveMinimum" if lo_open else "minimum"] = lo
    one["exclusiveMaximum" if hi_open else "maximum"] = hi
    rng = {"type": "object", "additionalProperties": False, "required": ["low", "high"],
           "properties": {"low": one, "high": one, "log": {"type": "boolean"}, "step": {"type": "number"}}}
    return {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}, rng]}


class _ParamFieldError(Exception):
    def __init__(self, field: str, err: PydanticCustomError):
        self.field, self.err = field, err


def _wrap(field: str, fn, *args):
    try:
        return fn(*args)
    except PydanticCustomError as e:
        raise _ParamFieldError(field, e) from None


class EarlyStoppingSpec(_Section):
    enabled: bool = Field(True, description="Stop a trial when the monitored quantity stops improving")
    patience: int = Field(10, ge=1, le=100_000, description="Epochs without improvement before stopping (n_iter_no_change)")
    min_delta: float = Field(1e-4, ge=0, description="Smallest change that counts as an improvement (tol)")
    monitor: Literal["val_loss", "val_score"] = Field("val_loss", description="What early stopping watches")


class TrainingSpec(_Section):
    device: str = Field("auto", description="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads per worker (default: the cores available)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Mixed precision on CUDA: auto (= fp32: faster for small MLPs), fp32, bf16 or fp16")
    population: Literal["auto"] | int = Field(
        1, description="Trials trained at once as one stacked model: 1 (one at a time), K, or auto (K from the "
                       "device and the model size)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise _err(f"unknown device {v!r}; use auto, cpu, cuda, cuda:N or mps")
        return v

    @field_validator("population", mode="before")
    @classmethod
    def _population(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 4096):
            return v
        raise _err(f"must be auto or an integer in [1, 4096] (1 trains one trial at a time); got {v!r}")


class SamplerSpec(_Section):
    type: Literal["tpe", "random", "qmc", "cmaes", "grid"] = "tpe"
    n_startup_trials: int = Field(10, ge=0, description="Random trials before TPE/CMA-ES start modelling")


class PrunerSpec(_Section):
    type: Literal["median", "successive_halving", "hyperband", "none"] = "median"
    n_startup_trials: int = Field(5, ge=0, description="median: trials finished before pruning starts")
    n_warmup_steps: int = Field(5, ge=0, description="median: epochs a trial runs before it can be pruned")


class StudySpec(_Section):
    name: str | None = Field(None, description="Study name (default: the spec file's name)")
    metric: str | None = Field(None, description="accuracy, balanced_accuracy, f1_macro, roc_auc, log_loss; "
                                                  "rmse, mae, r2 (default: accuracy or rmse)")
    n_trials: int | None = Field(50, ge=1, description="Trials to finish (study-wide); null for no limit")
    timeout: float | None = Field(None, gt=0, description="Wall-clock budget of the search in seconds")
    seed: int = Field(0, ge=0, description="Seed of the sampler, the splits and each trial's training")
    portfolio: bool = Field(True, description="Start the study with a few proven configurations (RealMLP-like, "
                                              "TabM-mini + piecewise-linear, a plain MLP), each clipped to the space; "
                                              "see automlp.portfolio")
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    storage: str | None = Field(None, description="An Optuna storage URL; default: a journal file in the study folder")
    heartbeat_interval: int = Field(10, ge=1, le=3600, description="Seconds between a running trial's heartbeats")
    grace_period: int = Field(30, ge=2, le=86400, description="Seconds without a heartbeat before a running trial "
                              "counts as lost (failed and retried); a dead process on the same machine counts at once")

    @field_validator("sampler", "pruner", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        return {"type": v} if isinstance(v, str) else v  # `sampler: random` means `sampler: {type: random}`

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", v):
            raise _err(f"{v!r} is not a valid study name; use letters, digits, '_', '-' and '.' "
                       "(at most 100, starting with a letter or digit)")
        return v

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str | None) -> str | None:
        if v is not None and v not in METRIC_DIRECTIONS:
            near = difflib.get_close_matches(v, list(METRIC_DIRECTIONS), n=1)
            tip = f"did you mean '{near[0]}'? " if near else ""
            raise _err(f"unknown metric {v!r}; {tip}Valid: {', '.join(METRIC_DIRECTIONS)}")
        return v

    @field_validator("storage")
    @classmethod
    def _storage(cls, v: str | None) -> str | None:
        if v is not None:
            check_storage_url(v)
        return v

    @model_validator(mode="after")
    def _grace_after_heartbeat(self) -> StudySpec:
        if self.grace_period <= self.heartbeat_interval:
            raise PydanticCustomError(
                "automlp_at", "grace_period must be > heartbeat_interval (got grace_period={g}, heartbeat_interval="
                "{h}); use at least twice the interval", {"g": self.grace_period, "h": self.heartbeat_interval,
                                                          "at": "study.grace_period"})
        return self


def check_storage_url(url: str) -> None:
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower() if ":" in url else ""
    if scheme not in STORAGE_SCHEMES:
        shown = scheme or "none"  # never the whole URL: it may hold a password
        raise _err(f"unknown storage scheme {shown!r}; use sqlite:///file.db, postgresql://..., "
                   "mysql+pymysql://... or journal:///path/file.journal")


def climbs_out(path: Path | str) -> bool:
    """True when a relative path climbs out of the folder it starts from (`../x`, `a/../../x`).

    An absolute path is taken as the user's explicit choice and is not refused; a relative one is read against
    the current folder, wherever the spec came from, so `../../etc` must not slip through."""
    path = str(path)
    return not os.path.isabs(path) and os.path.normpath(path).split(os.sep)[0] == os.pardir


def storage_file(url: str) -> str | None:
    """The file a sqlite or journal storage URL writes, or None (a server, or sqlite in memory)."""
    if url.startswith("journal:"):
        rest = url.removeprefix("journal:")
        return rest[2:] if rest.startswith("//") else rest
    if url.startswith("sqlite") and ":///" in url:
        path = url.split(":///", 1)[1].split("?", 1)[0]
        return path if path and path != ":memory:" else None
    return None


class OutputSpec(_Section):
    """Where results go. A relative path stays inside the current folder unless `allow_outside`."""

    dir: Path = Field(Path("studies"), description="Folder that holds one folder per study (relative to the "
                                                   "current directory, and inside it unless allow_outside)")
    allow_outside: bool = Field(False, description="Allow a relative output.dir, or a sqlite/journal file in "
                                                   "study.storage, to climb out of the current folder with '..'")

    @model_validator(mode="after")
    def _inside(self) -> OutputSpec:
        if "\0" in str(self.dir):
            raise _sub_error("dir", "must not contain a NUL character")
        if not self.allow_outside and climbs_out(self.dir):
            raise _sub_error("dir", f"{str(self.dir)!r} climbs out of the current folder; a relative output.dir "
                                    "must stay inside it: give an absolute path, or set output.allow_outside: true")
        return self


class ReportSpec(_Section):
    """What the study report retrains to judge the best model: seeds for stability, k-fold rescoring."""

    seeds: int = Field(3, ge=1, le=100, description="Trainings of the best configuration with different seeds "
                                                   "(the trial's own run counts as the first)")
    rescore_top: int = Field(5, ge=0, le=100, description="Top trials re-scored with k-fold cross-validation on "
                                                         "train+validation (0: no rescoring)")
    folds: int = Field(3, ge=2, le=20, description="Folds of the rescoring (each fold trains every rescored "
                                                   "configuration once)")
    rescore_max_rows: int = Field(5000, ge=10, description="Rescore only when train+validation has fewer rows; "
                                                           "larger validation splits are trusted as they are")
    gap_threshold: float = Field(0.05, gt=0, le=1, description="Train-validation gap (in accuracy/r2-like units) "
                                                               "above which the best model is said to overfit")
    stable_spread: float = Field(0.02, ge=0, le=1, description="A seed spread (std) under this fraction of the mean "
                                                               "score is not called unstable, whatever the lead")
    use_rescored_choice: bool = Field(False, description="Choose the k-fold winner (instead of the best validation "
                                                         "score) for the summary and the export")


class Spec(_Section):
    """A whole automlp spec."""

    data: DataSpec
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    study: StudySpec = Field(default_factory=StudySpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)

    @model_validator(mode="after")
    def _metric_fits_task(self) -> Spec:
        metric, task = self.study.metric, self.data.task
        if metric and task != "auto":
            fits = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
            if metric not in fits:
                raise PydanticCustomError(
                    "automlp_at", "{msg}",
                    {"msg": f"metric {metric!r} does not fit a {task} task; use one of {', '.join(fits)}",
                     "at": "study.metric"})
        file = storage_file(self.study.storage or "")
        if file is not None and not self.output.allow_outside and climbs_out(file):
            raise PydanticCustomError("automlp_at", "{msg}", {
                "msg": f"the file {file!r} climbs out of the current folder; a relative path must stay inside it: "
                       "give an absolute path, or set output.allow_outside: true", "at": "study.storage"})
        self._check_size()
        return self

    def _check_size(self) -> None:
        def top(p: Param) -> float:
            return p.value if p.is_fixed else max(p.choices) if p.choices is not None else p.high

        depth, width = int(top(self.space.depth)), int(top(self.space.width))
        weights = max(depth - 1, 0) * width**2
        if weights > MAX_WEIGHTS:
            raise PydanticCustomError("automlp_at", "{msg}", {
                "msg": f"the largest network of the space (depth {depth}, width {width}) has about {weights:.2g} "
                       f"weights ({weights * 4 / 1e9:.3g} GB in float32, several times that while training); "
                       f"lower the largest depth or width so that (depth - 1) x width^2 <= {MAX_WEIGHTS:.2g}",
                "at": "space.width"})

    @property
    def study_dir(self) -> Path:
        return self.output.dir / self.study.name


# --------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """safe_load, plus refusal of duplicate keys (plain PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)  # resolve `<<: *anchor` merge keys before looking at the keys
        seen: dict = {}
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError(f"{{file}}:{line} a key must be a plain name, not a list or a mapping")
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str):
                raise SpecError(f"{{file}}:{line} the key {key_node.value!r} is read as a {type(key).__name__}; "
                                "keys are names such as 'depth' (quote it if you mean the text)")
            if key in seen:
                raise SpecError(f"{{file}}:{key_node.start_mark.line + 1} duplicate key '{key}' "
                                f"(first at line {seen[key]}); keep one of them")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _line_map(node, path=(), out=None) -> dict[tuple, int]:
    """YAML path (keys and list indices) -> 1-based line, for pointing errors at lines."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[path + (key,)] = k.start_mark.line + 1
            _line_map(v, path + (key,), out)
            out[path + (key,)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, path + (str(i),), out)
    return out


def _parse_yaml(text: str, fname: str) -> tuple[Any, dict]:
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            raise SpecError(f"{fname}: the spec is empty; it needs at least a 'data' section")
        data = loader.construct_document(node)
    except SpecError as e:
        raise SpecError(str(e).replace("{file}", fname)) from None
    except yaml.constructor.ConstructorError as e:
        line = e.problem_mark.line + 1 if e.problem_mark else 0
        tag = re.search(r"tag '([^']+)'", str(e.problem))
        what = f"the tag {tag.group(1)!r} is" if tag else "this value is"
        raise SpecError(f"{fname}:{line} {what} not allowed: specs are plain YAML (no Python objects or tags)") from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        raise SpecError(f"{fname}:{line} the character {e.character!r} is not allowed in YAML; remove it") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        lines = re.split(r"\r\n|[\n\r\x85\u2028\u2029]", text)  # YAML's line breaks
        at = lines[mark.line] if mark and mark.line < len(lines) else ""
        if "\\t" in problem or "\t" in at:
            raise SpecError(f"{fname}{line} tabs are not allowed in YAML indentation; indent with spaces") from None
        raise SpecError(f"{fname}{line} not valid YAML: {problem}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, _line_map(node)


_BOUND_WORDS = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"), "less_than": ("<", "lt"),
                "less_than_equal": ("<=", "le")}
_TYPE_WORDS = {"int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
               "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
               "bool_parsing": "true or false", "string_type": "text", "list_type": "a list"}


def _format_error(err: dict, fname: str, lines: dict, raw: Any) -> str:
    loc = [str(p) for p in err["loc"]]
    ctx = err.get("ctx") or {}
    msg = err["msg"]
    if err["type"] == "automlp_at":
        loc = ctx["at"].split(".")
    elif ctx.get("sub"):
        loc += ctx["sub"].split(".")
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        valid = list(parent.model_fields) if parent else []
        near = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.6)
        msg = f"unknown key; did you mean '{near[0]}'?" if near else \
            f"unknown key; valid keys are: {', '.join(valid)}"
    elif err["type"] == "missing":
        msg = "is required"
    elif err["type"] in _BOUND_WORDS:
        op, key = _BOUND_WORDS[err["type"]]
        bound = ctx.get(key)
        bound = f"{bound:g}" if isinstance(bound, (int, float)) else bound
        msg = f"must be {op} {bound}; got {err.get('input')!r}"
    elif err["type"] in _TYPE_WORDS:
        msg = f"must be {_TYPE_WORDS[err['type']]}; got {err.get('input')!r}"
    elif err["type"] in ("literal_error", "enum"):
        given = err.get("input")
        expected = ctx.get("expected", "")
        choices = re.findall(r"'([^']+)'", expected)
        near = difflib.get_close_matches(str(given), choices, n=1)
        tip = f"did you mean '{near[0]}'? " if near else ""
        msg = f"unknown value {given!r}; {tip}Valid: {', '.join(choices)}"
    elif err["type"] == "model_type" or err["type"] == "dict_type":
        msg = f"must be a mapping of keys to values; got {err.get('input')!r}"
    line = None
    for n in range(len(loc), -1, -1):
        if tuple(loc[:n]) in lines:
            line = lines[tuple(loc[:n])]
            break
    where = f"{fname}:{line}" if line else fname
    path = ".".join(loc)
    return f"{where} {path}: {msg}" if path else f"{where} {msg}"


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    model: type[BaseModel] = Spec
    for part in loc:
        field = model.model_fields.get(part)
        ann = getattr(field, "annotation", None) if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def validate_spec_dict(raw: Any, fname: str = "spec", lines: dict | None = None, base_dir: Path | None = None,
                       default_name: str = "study") -> Spec:
    """Validate a parsed spec document; errors become one SpecError listing every problem."""
    lines = lines or {}
    if not isinstance(raw, dict):
        kind = type(raw).__name__ if raw is not None else "empty"
        raise SpecError(f"{fname}:1 the spec must be a mapping with sections data, space, training, study, output; "
                        f"got a {kind}")
    try:
        spec = Spec.model_validate(raw)
    except _ParamFieldError as e:
        err = {"loc": ("space", e.field), "type": "automlp", "msg": e.err.message(), "ctx": e.err.context}
        raise SpecError(_format_error(err, fname, lines, raw)) from None
    except ValidationError as e:
        msgs = [_format_error(err, fname, lines, raw) for err in e.errors()]
        raise SpecError("\n".join(dict.fromkeys(msgs))) from None
    if spec.study.name is None:
        spec.study.name = default_name
    if spec.data.path is not None and base_dir is not None and not spec.data.path.is_absolute():
        spec.data.path = (base_dir / spec.data.path).resolve()
    return spec


def check_metric_fits(metric: str, task: str) -> None:
    """Refuse a metric of the other task (the task may have been inferred from the data)."""
    fits = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    if metric not in fits:
        raise SpecError(f"study.metric: {metric!r} does not fit this {task} task (inferred from the target); "
                        f"use one of {', '.join(fits)}, or set data.task")


def load_spec(path: str | Path) -> Spec:
    """Read, parse and validate a spec file. Relative data paths resolve against the spec's folder."""
    path = Path(path)
    fname = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: is a folder; give the path of a .yaml spec file") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes().count(b"\n", 0, e.start) + 1
        raise SpecError(f"{fname}:{line} not UTF-8 text (byte {e.start}); save the spec as UTF-8") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read the spec ({e.strerror})") from None
    raw, lines = _parse_yaml(text, fname)
    default_name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem) or "study"
    return validate_spec_dict(raw, fname, lines, path.resolve().parent, default_name)


def apply_overrides(spec: Spec, n_trials: int | None = None, timeout: float | None = None,
                    storage: str | None = None, device: str | None = None, seed: int | None = None,
                    data_path: Path | None = None) -> Spec:
    """Command-line flags override the spec; they are validated like the spec's own fields."""
    if n_trials is not None:
        spec.study.n_trials = n_trials
    if timeout is not None:
        spec.study.timeout = timeout
    if seed is not None:
        spec.study.seed = seed
    try:
        if storage is not None:
            spec.study.storage = StudySpec._storage(storage)
        if device is not None:
            spec.training.device = TrainingSpec._device(device)
    except PydanticCustomError as e:
        flag = "--storage" if storage is not None and device is None else "--device"
        raise SpecError(f"{flag}: {e.message()}") from None
    if data_path is not None:
        spec.data.path, spec.data.dataset = data_path.resolve(), None
    return spec


def _param_raw(p: Param) -> Any:
    if p.is_fixed:
        return p.value
    if p.choices is not None:
        return list(p.choices)
    raw = {"low": p.low, "high": p.high, "log": p.log}
    return raw if p.step is None else raw | {"step": p.step}


def dump_spec(spec: Spec) -> dict:
    """The spec as plain JSON-able data that `validate_spec_dict` accepts again (stored with the study)."""
    raw = spec.model_dump(mode="json", exclude={"space"})
    raw["space"] = {name: _param_raw(p) for name, p in spec.space.params().items()}
    raw["space"]["width_mode"] = spec.space.width_mode
    return raw


def spec_json_schema() -> dict:
    """The JSON Schema of a spec, for editors (yaml-language-server) to autocomplete."""
    return Spec.model_json_schema()
