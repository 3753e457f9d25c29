"""The sections of a spec (data, space, training, study, output, report) and the whole `Spec`."""

from __future__ import annotations

import contextvars
import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator

from automlp.spec.base import _Section
from automlp.spec.params import PARAM_RULES, Param, Problems, _err, _param_json_schema, parse_param

CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
METRIC_DIRECTIONS = {
    "accuracy": "maximize", "balanced_accuracy": "maximize", "f1_macro": "maximize",
    "roc_auc": "maximize", "log_loss": "minimize", "rmse": "minimize", "mae": "minimize", "r2": "maximize",
}
SKLEARN_DATASETS = ("iris", "digits", "wine", "breast_cancer", "diabetes")
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql", "journal", "grpc")
MAX_WEIGHTS = 250_000_000  # (depth - 1) * width**2 of the largest net: 1 GB of fp32 weights, ~4 GB with Adam

FINAL_MODELS = ("best", "refit", "bag", "ensemble")  # study.final; also `automlp export --final`


# rows given in Python (automlp.search(data=...)): data.dataset/data.path are not required while this is set
DATA_GIVEN: contextvars.ContextVar[bool] = contextvars.ContextVar("automlp_data_given", default=False)

# --------------------------------------------------------------------------- sections


class DataSpec(_Section):
    """Where the data comes from and how it is split."""

    dataset: str | None = Field(None, description="A bundled data set: sklearn:iris|digits|wine|breast_cancer|diabetes")
    path: Path | None = Field(None, description="A CSV, Parquet or NumPy .npz file; relative to the spec's folder")
    target: str | None = Field(None, description="The target column (CSV/Parquet)")
    drop: list[str] = Field(default_factory=list, description="Columns to ignore")
    categorical: list[str] = Field(default_factory=list, description="Columns to one-hot even if they look numeric")
    task: Literal["auto", "classification", "regression"] = "auto"
    na_values: list[str] = Field(default_factory=lambda: ["?"], description="Extra strings read as missing")
    sep: str | None = Field(None, description="Column separator of a CSV file (',', ';', a tab, '|'); default: sniffed "
                                        "from the file's first lines (a tab for .tsv)")
    test_size: float = Field(0.2, gt=0, lt=1, description="Fraction of rows held out as the test split")
    val_size: float = Field(0.2, gt=0, lt=1, description="Fraction of the remaining rows used for validation")
    split_seed: int | None = Field(None, description="Seed of the splits (default: study.seed)")
    max_categories: int = Field(50, ge=2, le=10_000,
                                description="One-hot at most this many categories per column; rarer ones share one")
    missing_indicators: bool = Field(True, description="Add a 0/1 column per numeric column that has missing values "
                                     "in the training rows (1 = was missing; the value itself is imputed)")
    _rows: Any = PrivateAttr(None)  # rows given in Python (a data.RawData), read instead of dataset/path

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

    @field_validator("sep")
    @classmethod
    def _one_character(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 1 or v in "\n\r\"" or v.isalnum()):
            raise _err(f"must be one character that separates columns, such as ',', ';', '\\t' or '|' (got {v!r})")
        return v

    @classmethod
    def _checks(cls, v: dict) -> Problems:
        problems: Problems = []
        given = DATA_GIVEN.get()
        if not given and "dataset" in v and "path" in v and (v["dataset"] is None) == (v["path"] is None):
            problems.append(("", "give exactly one of 'dataset' (e.g. sklearn:iris) or 'path'"))
        path = v.get("path")
        if path is not None and "\0" in str(path):
            problems.append(("path", "must not contain a NUL character"))
        elif path is not None and path.suffix.lower() not in (".csv", ".parquet", ".pq", ".npz", ".gz", ".tsv"):
            problems.append(("path", f"unsupported file type '{path.suffix}'; use .csv, .parquet or .npz"))
        if not given and path is not None and path.suffix.lower() != ".npz" and "target" in v and not v["target"]:
            problems.append(("target", "is required with a CSV or Parquet file: name the column to predict"))
        if v.get("target") and v["target"] in v.get("drop", ()):
            problems.append(("drop", f"drops the target column '{v['target']}'"))
        return problems


class SpaceSpec(_Section):
    """The search space. Each entry: a fixed value, a list of choices, or {low, high, log, step}."""

    depth: Any = Field({"low": 1, "high": 3}, description="Number of hidden layers")
    width: Any = Field({"low": 16, "high": 256, "log": True}, description="Units per hidden layer")
    width_mode: Literal["shared", "per_layer"] = Field(
        "shared", description="shared: one width for all layers; per_layer: width_0..width_{depth-1} sampled apart")
    activation: Any = Field(["relu", "silu"],
                            description="identity, logistic (sigmoid), tanh, relu, leaky_relu, gelu, silu")
    optimizer: Any = Field(["adam", "adamw"], description="adam, adamw, sgd, lbfgs")
    lr: Any = Field({"low": 1e-4, "high": 3e-2, "log": True}, description="Learning rate (learning_rate_init)")
    alpha: Any = Field({"low": 1e-6, "high": 1e-2, "log": True}, description="L2 penalty / weight decay")
    batch_size: Any = Field([32, 64, 128], description="Mini-batch size (ignored by lbfgs: full batch)")
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
    label_smoothing: Any = Field(0.0,
                                 description="Classification label smoothing; sampled only for accuracy, "
                                             "balanced_accuracy and f1_macro (it hurts roc_auc and log_loss: 0 there)")

    @field_validator(*PARAM_RULES, mode="before")
    @classmethod
    def _parse(cls, raw: Any, info: ValidationInfo) -> Param:
        if isinstance(raw, Param):
            return raw
        kind, bounds, allowed, aliases = PARAM_RULES[info.field_name]
        return parse_param(info.field_name, kind, raw, bounds, allowed, aliases)

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
        raise _err(f"must be auto or an integer in [1, 4096] (got {v!r}); 1 trains one trial at a time")


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
    validation: Literal["holdout", "kfold", "auto"] = Field(
        "holdout", description="How a trial is scored: on the validation split (holdout); as the mean over `folds` "
        "folds of train+validation, one model per fold (kfold); auto: kfold when train+validation has fewer than "
        "5000 rows, else holdout")
    folds: int = Field(5, ge=2, le=20, description="Folds of a k-fold trial (study.validation: kfold or auto)")
    final: Literal[FINAL_MODELS] = Field(
        "ensemble", description="The model shipped at the end of the search: the best trial's model (best); its "
                            "configuration retrained on train+validation (refit); its fold models averaged (bag); "
                            "a weighted ensemble of the top trials chosen greedily on held-out predictions "
                            "(ensemble)")
    ensemble_size: int = Field(25, ge=1, le=1000, description="Rounds of greedy ensemble selection (final: "
                                                              "ensemble): at most this many members, with repeats")
    heartbeat_interval: int = Field(10, ge=1, le=3600, description="Seconds between a running trial's heartbeats")
    grace_period: int = Field(30, ge=2, le=86400, description="Seconds without a heartbeat before a running trial "
                              "counts as lost (failed and retried); a dead process on the same machine counts at once")
    storage_patience: float = Field(300, gt=0, le=604800, description="Seconds a worker keeps retrying a storage "
                                    "that does not answer (a database restart, a lost network) before it stops "
                                    "with exit status 2; training goes on meanwhile")

    _storage_where: str | None = PrivateAttr(None)  # where a storage set after loading came from

    def set_storage(self, url: str, where: str) -> None:
        """Override study.storage (with --storage, or a study folder's journal); messages about the storage
        then name `where`."""
        self.storage, self._storage_where = url, where

    @property
    def storage_where(self) -> str:
        """Where the storage URL came from, to name it in messages: a flag or folder, the spec, or the default
        journal file in the study folder (output.dir)."""
        return self._storage_where or ("study.storage" if self.storage else "output.dir")

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

    @classmethod
    def _checks(cls, v: dict) -> Problems:
        grace, beat = v.get("grace_period"), v.get("heartbeat_interval")
        if grace is not None and beat is not None and grace <= beat:
            return [("grace_period", f"must be > heartbeat_interval (got grace_period={grace}, "
                                     f"heartbeat_interval={beat}); use at least twice the interval")]
        return []


def check_storage_url(url: str) -> None:
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower() if ":" in url else ""
    if scheme not in STORAGE_SCHEMES:
        shown = scheme or "none"  # never the whole URL: it may hold a password
        raise _err(f"unknown storage scheme {shown!r}; use sqlite:///file.db, postgresql://..., "
                   "mysql+pymysql://..., journal:///path/file.journal or grpc://host:port")


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

    @classmethod
    def _checks(cls, v: dict) -> Problems:
        folder = v.get("dir")
        if folder is not None and "\0" in str(folder):
            return [("dir", "must not contain a NUL character")]
        if folder is not None and v.get("allow_outside") is False and climbs_out(folder):
            return [("dir", f"{str(folder)!r} climbs out of the current folder; a relative output.dir must stay "
                            "inside it: give an absolute path, or set output.allow_outside: true")]
        return []


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

    @classmethod
    def _checks(cls, v: dict) -> Problems:
        problems: Problems = []
        study, data, output, space = (v.get(k) for k in ("study", "data", "output", "space"))
        metric, task = getattr(study, "metric", None), getattr(data, "task", "auto")
        if metric and task != "auto":
            fits = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
            if metric not in fits:
                problems.append(("study.metric", f"metric {metric!r} does not fit a {task} task; use one of "
                                                 f"{', '.join(fits)}"))
        file = storage_file(getattr(study, "storage", None) or "")
        if file is not None and getattr(output, "allow_outside", True) is False and climbs_out(file):
            problems.append(("study.storage", f"the file {file!r} climbs out of the current folder; a relative path "
                                              "must stay inside it: give an absolute path, or set "
                                              "output.allow_outside: true"))
        if isinstance(getattr(space, "depth", None), Param) and isinstance(getattr(space, "width", None), Param):
            problems += _size_problems(space)
        return problems

    @property
    def study_dir(self) -> Path:
        return self.output.dir / self.study.name


def _size_problems(space: SpaceSpec) -> Problems:
    def top(p: Param) -> float:
        return p.value if p.is_fixed else max(p.choices) if p.choices is not None else p.high

    depth, width = int(top(space.depth)), int(top(space.width))
    weights = max(depth - 1, 0) * width**2
    if weights <= MAX_WEIGHTS:
        return []
    return [("space.width", f"the largest network of the space (depth {depth}, width {width}) has about "
                            f"{weights:.2g} weights ({weights * 4 / 1e9:.3g} GB in float32, several times that while "
                            "training); lower the largest depth or width so that (depth - 1) x width^2 <= "
                            f"{MAX_WEIGHTS:.2g}")]
