"""scikit-learn estimators that search in `fit`: `AutoMLPClassifier` and `AutoMLPRegressor`.

`fit(X, y)` runs `automlp.search` on the rows given, with a spec built from the constructor's parameters (which
mirror the spec's sections; `spec=` gives a whole base spec), then keeps the best model for `predict`. Each fit
has its own study, named after its rows and spec (`<study_name>-<digest of X, y and the spec>`). It lives in a
temporary folder removed when fit returns (nothing left on disk) unless `storage=` or `output_dir=` keeps it;
then a second fit with the same rows and parameters resumes it, and each fold of `cross_val_score` (other rows)
gets its own study.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from numbers import Integral, Real

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from automlp.errors import DataError
from automlp.spec import Spec, dump_spec, load_spec

DATA_KEYS = ("categorical", "na_values", "test_size", "val_size", "max_categories", "split_seed")


class FitDataError(DataError, ValueError):
    """Rows `fit` cannot search on: an automlp DataError that is also the ValueError scikit-learn expects."""


def memory_copy(study):
    """The study's trials and attributes in an in-memory study (picklable; outlives a temporary folder)."""
    import optuna

    from automlp.api import quiet_optuna_logs

    with quiet_optuna_logs():
        copy_ = optuna.create_study(study_name=study.study_name, directions=study.directions)
    copy_.add_trials(study.get_trials(deepcopy=False))
    for key, value in study.user_attrs.items():
        copy_.set_user_attr(key, value)
    return copy_


def _digest(frame: pd.DataFrame, y: np.ndarray, spec: dict) -> str:
    """Names a study after its rows and its spec: the same fit again resumes it, other rows or parameters
    (another fold, another random_state) get their own."""
    h = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    h.update(",".join(map(str, frame.columns)).encode())
    h.update(json.dumps(spec, sort_keys=True, default=str).encode())
    return h.hexdigest()[:10]


class _AutoMLP(BaseEstimator):
    _task = ""
    _parameter_constraints: dict = {
        "spec": [None, dict, str, os.PathLike, Spec],
        "space": [None, dict],
        "metric": [None, str],
        "n_trials": [None, Interval(Integral, 1, None, closed="left")],
        "timeout": [None, Interval(Real, 0, None, closed="neither")],
        "validation": "no_validation",  # passed to study.validation, which the spec validates
        "sampler": [None, str, dict],
        "pruner": [None, str, dict],
        "training": [None, dict],
        "test_size": [None, Interval(Real, 0, 1, closed="neither")],
        "val_size": [None, Interval(Real, 0, 1, closed="neither")],
        "categorical": [None, list],
        "storage": [None, str],
        "study_name": [None, str],
        "output_dir": [None, str, os.PathLike],
        "report": ["boolean"],
        "export": ["boolean"],
        "random_state": [None, Interval(Integral, 0, None, closed="left")],
        "device": [None, str],
        "progress": [None, "boolean", StrOptions({"bar"}), callable],
    }

    def __init__(self, spec=None, *, space=None, metric=None, n_trials=None, timeout=None, validation=None,
                 sampler=None, pruner=None, training=None, test_size=None, val_size=None, categorical=None,
                 storage=None, study_name=None, output_dir=None, report=False, export=False, random_state=None,
                 device=None, progress=None):
        self.spec = spec
        self.space = space
        self.metric = metric
        self.n_trials = n_trials
        self.timeout = timeout
        self.validation = validation
        self.sampler = sampler
        self.pruner = pruner
        self.training = training
        self.test_size = test_size
        self.val_size = val_size
        self.categorical = categorical
        self.storage = storage
        self.study_name = study_name
        self.output_dir = output_dir
        self.report = report
        self.export = export
        self.random_state = random_state
        self.device = device
        self.progress = progress

    # ------------------------------------------------------------------ the spec

    def _base_spec(self) -> dict:
        if self.spec is None:
            return {}
        if isinstance(self.spec, Spec):
            return dump_spec(self.spec)
        if isinstance(self.spec, dict):
            return copy.deepcopy(self.spec)
        return dump_spec(load_spec(self.spec, data_given=True))

    def _spec_dict(self) -> dict:
        """The spec of this fit: the base spec, then every parameter that is not None on top (no study name
        and output folder yet)."""
        raw = self._base_spec()
        data = {k: v for k, v in (raw.get("data") or {}).items() if k in DATA_KEYS}
        data |= {k: v for k, v in (("test_size", self.test_size), ("val_size", self.val_size),
                                   ("categorical", self.categorical)) if v is not None}
        raw["data"] = data | {"task": self._task}
        if self.space is not None:
            raw["space"] = (raw.get("space") or {}) | self.space
        training = dict(raw.get("training") or {}) | (self.training or {})
        if self.device is not None:
            training["device"] = self.device
        raw["training"] = training
        study = dict(raw.get("study") or {})
        for key, value in (("metric", self.metric), ("n_trials", self.n_trials), ("timeout", self.timeout),
                           ("validation", self.validation), ("sampler", self.sampler), ("pruner", self.pruner),
                           ("storage", self.storage), ("seed", self.random_state)):
            if value is not None:
                study[key] = value
        raw["study"] = study
        return raw

    # ------------------------------------------------------------------ rows

    def _rows(self, X, y=None, reset: bool = True):
        """X as the frame the search and the model read (columns by name: the DataFrame's, else x0, x1, ...)."""
        if isinstance(X, pd.DataFrame):
            if reset:
                validate_data(self, X, y, skip_check_array=True)
            else:
                validate_data(self, X, reset=False, skip_check_array=True)
            frame = X.copy()
            frame.columns = [str(c) for c in X.columns]
            if not reset and getattr(self, "feature_names_in_", None) is None:
                frame.columns = self._columns_  # fitted on an array: the columns are taken by position
            return frame.reset_index(drop=True), y
        if reset:
            X, y = validate_data(self, X, y, ensure_all_finite="allow-nan", ensure_min_samples=3,
                                 y_numeric=self._task == "regression")
        else:
            X = validate_data(self, X, reset=False, ensure_all_finite="allow-nan")
        columns = self._columns_ if not reset else [f"x{i}" for i in range(X.shape[1])]
        return pd.DataFrame(X, columns=columns), y

    def _target(self, y) -> np.ndarray:
        return column_or_1d(y, warn=True).astype(np.float64)

    # ------------------------------------------------------------------ fit

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Search on (X, y): every trial trains on a split of these rows and is scored on another."""
        if (self.report or self.export) and self.output_dir is None:
            raise ValueError(f"The 'report' and 'export' parameters of {type(self).__name__} write files into "
                             "the study folder; set output_dir as well. Got output_dir=None instead.")
        frame, y = self._rows(X, y)
        self._columns_ = list(frame.columns)
        y = self._target(y)
        if len(y) != len(frame):
            raise ValueError(f"X has {len(frame)} rows and y has {len(y)} values; give one value per row")
        # the study folder (summary, budget lock) is temporary unless output_dir keeps it; the study itself
        # lives in that folder too unless a storage keeps it
        temp = tempfile.mkdtemp(prefix="automlp-fit-") if self.output_dir is None else None
        try:
            result = self._search(frame, y, temp)
            self._keep(result, temp is not None, temp is not None and self.storage is None)
        finally:
            if temp is not None:
                shutil.rmtree(temp, ignore_errors=True)
        return self

    def _search(self, frame: pd.DataFrame, y: np.ndarray, temp: str | None):
        from automlp.api import search

        spec = self._spec_dict()
        spec["study"]["name"] = f"{self.study_name or 'fit'}-{_digest(frame, y, spec)}"
        spec["output"] = dict(spec.get("output") or {}) | {"dir": temp or str(self.output_dir)}
        try:
            result = search(spec, (frame, pd.Series(y, name="y")), progress=self.progress, report=self.report,
                            export=self.export)
        except DataError as e:
            raise FitDataError(str(e)) from None
        if result.interrupted:
            raise KeyboardInterrupt  # the study (with storage= or output_dir=) resumes on the same rows
        if result.summary["best"] is None:
            raise FitDataError(f"{type(self).__name__}: no trial finished, so there is no model; see study_")
        return result

    def _keep(self, result, temporary: bool, study_in_memory: bool) -> None:
        """The fitted attributes: what predict needs and what the search found; nothing in a removed folder."""
        self.predictor_ = result.predictor
        self.study_ = memory_copy(result.study) if study_in_memory else result.study
        self.summary_ = result.summary
        self.report_facts_ = None if result.report is None else result.report.facts
        self.best_trial_ = result.best_trial
        self.best_params_ = result.best_params
        self.best_score_ = result.best_value
        self.metric_ = result.metric
        self.study_dir_ = None if temporary else result.study_dir
        self.model_dir_ = result.model_dir
        self.cv_results_ = trial_table(self.study_)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        if "study_" in state:  # a study on a storage holds locks and connections: keep its trials
            state["study_"] = memory_copy(state["study_"])
        return state

    # ------------------------------------------------------------------ predict

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "predictor_")  # a fit that failed half-way leaves no model

    def _frame(self, X) -> pd.DataFrame:
        check_is_fitted(self)
        return self._rows(X, reset=False)[0]

    def predict(self, X) -> np.ndarray:
        """Class labels (classifier) or values (regressor) of the rows of X."""
        frame = self._frame(X)  # first: NotFittedError before any fitted attribute is read
        if self._task == "classification":
            return self.classes_[self.predictor_.outputs(frame).argmax(axis=1)]
        return self.predictor_.predict(frame)

    # ------------------------------------------------------------------ display

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing values are imputed (median / a "missing" category)
        return tags

    def _inline_html(self) -> str:
        from automlp.report.inline import inline_html

        return inline_html(self.summary_, self.report_facts_, {"study": self.study_dir_, "model": self.model_dir_})

    @property
    def _repr_html_(self):
        """Fitted: the search's verdict and tables; not fitted: scikit-learn's estimator diagram."""
        if hasattr(self, "summary_"):
            return self._inline_html
        return super()._repr_html_

    def _repr_mimebundle_(self, **kwargs) -> dict:
        if hasattr(self, "summary_"):
            return {"text/plain": repr(self), "text/html": self._inline_html()}
        return super()._repr_mimebundle_(**kwargs)


class AutoMLPClassifier(ClassifierMixin, _AutoMLP):
    """Searches MLP classifiers in `fit`; then `predict`, `predict_proba`, `score` (accuracy), `classes_`.

    Parameters mirror the spec's sections (None keeps the base spec's value, or the spec's default):
    spec (a base spec: YAML path, dict or Spec; its data source is ignored), space (dict, as the spec's space),
    metric, n_trials, timeout, validation (study.validation), sampler, pruner (study.sampler / study.pruner),
    training (dict, as the spec's training), test_size, val_size, categorical (data.*), storage (an Optuna
    storage URL: the study is kept there), study_name, output_dir (keep the study folder there), report and
    export (write report.html / the model folder into it), random_state (study.seed), device (training.device),
    progress (None, "bar" or a callable taking automlp's Progress).
    """

    _task = "classification"

    def _target(self, y) -> np.ndarray:
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in the data, but the data "
                             f"contains only one class: {self.classes_[0]!r}")
        return codes

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, columns in the order of `classes_`."""
        frame = self._frame(X)
        out = self.predictor_.outputs(frame)
        z = np.exp(out - out.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


class AutoMLPRegressor(RegressorMixin, _AutoMLP):
    """Searches MLP regressors in `fit`; then `predict` and `score` (R^2). Parameters: see AutoMLPClassifier."""

    _task = "regression"


def trial_table(study) -> dict:
    """The trials as scikit-learn's `cv_results_` lays out a search: one array per column (pd.DataFrame(...)
    shows it). `value` is the validation metric as the study records it; `rank` orders the finished trials by
    it in the study's direction (1 = best; unfinished trials rank last)."""
    trials = study.get_trials(deepcopy=False)
    values = np.array([t.value if t.value is not None else np.nan for t in trials], dtype=float)
    sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0
    key = np.where(np.isnan(values), np.inf, sign * values)
    rank = np.empty(len(trials), dtype=int)
    rank[np.argsort(key, kind="stable")] = np.arange(1, len(trials) + 1)
    names = sorted({k for t in trials for k in t.params})
    table = {"number": np.array([t.number for t in trials]), "state": np.array([t.state.name for t in trials]),
             "value": values, "rank": rank, "params": [dict(t.params) for t in trials],
             "duration_s": np.array([t.duration.total_seconds() if t.duration else np.nan for t in trials])}
    for name in names:
        table[f"param_{name}"] = np.ma.masked_array([t.params.get(name) for t in trials],
                                                    mask=[name not in t.params for t in trials], dtype=object)
    table["architecture"] = np.array([t.user_attrs.get("architecture", "") for t in trials], dtype=object)
    return table
