"""The sections of a spec (data, space, training, study, output, report) and the whole `Spec`."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from automlp.spec.params import PARAM_RULES, Param, _err, _param_json_schema, _sub_error, _wrap, parse_param

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
METRIC_DIRECTIONS = {
    "accuracy": "maximize", "balanced_accuracy": "maximize", "f1_macro": "maximize",
    "roc_auc": "maximize", "log_loss": "minimize", "rmse": "minimize", "mae": "minimize", "r2": "maximize",
}
SKLEARN_DATASETS = ("iris", "digits", "wine", "breast_cancer", "diabetes")
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql", "journal")
MAX_WEIGHTS = 250_000_000  # (depth - 1) * width**2 of the largest net: 1 GB of fp32 weights, ~4 GB with Adam


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
    activation: Any = Field("relu", description="identity, logistic (sigmoid), tanh, relu, leaky_relu, gelu, silu")
    optimizer: Any = Field("adam", description="adam, adamw, sgd, lbfgs")
    lr: Any = Field({"low": 1e-4, "high": 3e-2, "log": True}, description="Learning rate (learning_rate_init)")
    alpha: Any = Field({"low": 1e-6, "high": 1e-2, "log": True}, description="L2 penalty / weight decay")
    batch_size: Any = Field([32, 64, 128], description="Mini-batch size (ignored by lbfgs: full batch)")
    dropout: Any = Field(0.0, description="Dropout rate after each hidden layer, in [0, 1)")
    lr_schedule: Any = Field("constant", description="constant, invscaling, adaptive (reduce on plateau), cosine")
    max_epochs: Any = Field(100, description="Most epochs a trial trains (max_iter)")
    momentum: Any = Field(0.9, description="SGD momentum; sampled only when optimizer is sgd")
    nesterov: Any = Field(True, description="SGD Nesterov momentum; sampled only when optimizer is sgd")
    power_t: Any = Field(0.5, description="Exponent of invscaling; sampled only with lr_schedule invscaling")

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


