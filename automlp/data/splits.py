"""From the data as read to split, preprocessed arrays: the task, the encoded target, the seeded stratified
splits (refused before splitting when a class or a split would be too small), the preprocessing fitted on the
training rows, and refitting it on another split of train+validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from automlp.data.preprocessing import as_categories, column_kinds, feature_notes, make_preprocessor, missing_numeric
from automlp.data.readers import RawData, read_data, row_label
from automlp.errors import DataError
from automlp.spec import DataSpec

if TYPE_CHECKING:
    from sklearn.compose import ColumnTransformer

MAX_CLASSES_AUTO = 20  # an integer target with at most this many values is taken as classes under task: auto


@dataclass
class PreparedData:
    """Split and preprocessed data on the host, plus what is needed to undo or repeat the preprocessing."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    task: str
    classes: list  # original class labels, index = class id (classification)
    input_columns: list[str]  # raw columns the preprocessor takes, in order
    numeric_columns: list[str]
    categorical_columns: list[str]
    feature_names: list[str]  # columns after preprocessing
    preprocessor: ColumnTransformer
    target_name: str
    target_mean: float = 0.0
    target_std: float = 1.0
    raw_test: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    source: str = ""
    input_dtypes: dict[str, str] = field(default_factory=dict)  # raw column -> dtype as read (export needs it)
    raw_fit: pd.DataFrame | None = None  # raw rows of train then validation, to refit the preprocessing on
    max_categories: int = 50
    numeric_preprocessing: str = "standard"  # space.numeric_preprocessing: standard | quantile | robust_clip
    missing_indicators: list[str] = field(default_factory=list)  # numeric columns with a 0/1 missing column

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.X_train), "val": len(self.X_val), "test": len(self.X_test)}


def infer_task(y: pd.Series, requested: str) -> tuple[str, str | None]:
    """The task, and a note saying why when it was inferred."""
    if requested != "auto":
        return requested, None
    if y.dtype == object or isinstance(y.dtype, (pd.CategoricalDtype, pd.StringDtype)) or y.dtype == bool:
        return "classification", f"task: classification (the target has {y.nunique()} text labels)"
    values = y.dropna().to_numpy()
    n_unique = len(np.unique(values))
    if np.all(np.mod(values, 1) == 0) and n_unique <= MAX_CLASSES_AUTO:
        return "classification", f"task: classification (the target has {n_unique} integer values; " \
                                 "set data.task: regression to treat it as a number)"
    return "regression", f"task: regression (the target is numeric with {n_unique} distinct values)"


def _encode_target(y: pd.Series, task: str, name: str, source: str = "") -> tuple[np.ndarray, list]:
    if task == "regression":
        numeric = pd.to_numeric(y, errors="coerce")
        bad = y[numeric.isna() & y.notna()]
        if len(bad):  # (a CSV's text target is refused earlier, by _check_mixed, at its line)
            raise DataError(f"data.target: column '{name}' has text (got {bad.iloc[0]!r} at "
                            f"{row_label(bad.index[0], source)}), but a regression target must be numbers; set "
                            "data.task: classification if the values are labels")
        return numeric.to_numpy(np.float64), []
    classes, codes = np.unique(y.astype(str) if y.dtype == object else y.to_numpy(), return_inverse=True)
    return codes.astype(np.int64), [c.item() if hasattr(c, "item") else c for c in classes]


def split_sizes(n: int, test_size: float, val_size: float, given_test: bool) -> tuple[int, int, int]:
    """Rows in train, validation and test, rounded as train_test_split rounds (the held-out side up)."""
    n_test = 0 if given_test else math.ceil(test_size * n)
    n_val = math.ceil(val_size * (n - n_test))
    return n - n_test - n_val, n_val, n_test


def check_splits(y: np.ndarray | None, n: int, classes: list, spec: DataSpec, given_test: bool) -> None:
    """Refuse, before splitting, classes too small to stratify and splits that would be (nearly) empty."""
    if y is not None:
        need = 2 if given_test else 3
        counts = np.bincount(y, minlength=len(classes))
        small = [(classes[i], int(c)) for i, c in enumerate(counts) if 0 < c < need]
        if small:
            splits = "train/validation" if given_test else "train/validation/test"
            rows = [f"{c!r} ({k} row{'s' if k > 1 else ''})" for c, k in small]
            head = f"class {small[0][0]!r} has only {rows[0].split(' (')[1][:-1]}" if len(small) == 1 else \
                f"{len(small)} classes have too few rows: {', '.join(rows[:5])}"
            raise DataError(f"data.target: {head}; stratified {splits} splits need at least {need} rows of every "
                            "class: add rows of that class, or remove it or merge it into another class")
    n_train, n_val, n_test = split_sizes(n, spec.test_size, spec.val_size, given_test)
    k = len(classes) if y is not None else 1
    if n_train < max(k, 2) or n_val < k or (not given_test and n_test < k):
        sizes = f"{n_train}/{n_val}" + ("" if given_test else f"/{n_test}")
        need = f"at least {k} rows in each split (one per class)" if y is not None else \
            "at least 2 training rows and 1 row in each other split"
        raise DataError(f"data: {n} rows are too few for the splits: data.test_size {spec.test_size:g} and "
                        f"data.val_size {spec.val_size:g} give train/validation{'' if given_test else '/test'} = "
                        f"{sizes} rows, and it takes {need}; use more rows, or change data.test_size / "
                        "data.val_size")


def _split(n: int, y: np.ndarray | None, size: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(n)
    if y is not None:
        counts = np.bincount(y)
        rare = np.flatnonzero((counts > 0) & (counts < 2))
        if len(rare):
            raise DataError(f"data: class id {rare[0]} has only {counts[rare[0]]} row(s) left for the {what} split; "
                            "stratified splits need at least 2 rows per class: add rows, drop that class, or merge it")
    try:
        from sklearn.model_selection import train_test_split

        return train_test_split(idx, test_size=size, random_state=seed, stratify=y)
    except ValueError as e:
        raise DataError(f"data: cannot make the {what} split of {n} rows with size {size}: {e}; "
                        "use a larger data set or change data.test_size / data.val_size") from None


def prepare_data(spec: DataSpec, seed: int, raw: RawData | None = None, numeric: str = "standard") -> PreparedData:
    """Read (unless given), split with the seed, fit the preprocessing on the training split (numeric columns
    scaled by `numeric`), transform. The splits depend on the seed alone, never on `numeric`."""
    raw = raw if raw is not None else read_data(spec)
    seed = spec.split_seed if spec.split_seed is not None else seed
    target_name = spec.target or str(raw.y.name)
    notes = []
    keep = raw.y.notna().to_numpy()
    if not keep.any():
        raise DataError(f"data.target: column '{target_name}' has no values (all missing); check data.target "
                        "and data.na_values")
    if not keep.all():
        notes.append(f"dropped {int((~keep).sum())} rows whose target is missing")
    X, y_raw = raw.X[keep].reset_index(drop=True), raw.y[keep].reset_index(drop=True)
    if raw.y_test is not None:
        y_raw_all = pd.concat([y_raw, raw.y_test], ignore_index=True)
    else:
        y_raw_all = y_raw
    task, note = infer_task(y_raw_all, spec.task)
    if note:
        notes.append(note)
    y_all, classes = _encode_target(y_raw_all, task, target_name, raw.source)
    if task == "classification" and len(classes) < 2:
        raise DataError(f"data.target: column '{target_name}' has a single class ({classes[0]!r}); "
                        "classification needs at least two")
    y = y_all[: len(y_raw)]
    strat = y if task == "classification" else None
    check_splits(strat, len(X), classes, spec, raw.X_test is not None)
    if raw.X_test is not None:
        rest, test_idx = np.arange(len(X)), None
    else:
        rest, test_idx = _split(len(X), strat, spec.test_size, seed, "test")
    tr, va = _split(len(rest), strat[rest] if strat is not None else None, spec.val_size, seed + 1, "validation")
    train_idx, val_idx = rest[tr], rest[va]

    numeric_cols, categorical = column_kinds(X, spec.categorical)
    input_dtypes = {str(c): str(X[c].dtype) for c in X.columns}
    X = as_categories(X, categorical)
    notes += feature_notes(X, categorical, spec.max_categories)
    indicate = missing_numeric(X.iloc[train_idx], numeric_cols) if spec.missing_indicators else []
    pre = make_preprocessor(numeric_cols, categorical, spec.max_categories, numeric, len(train_idx), indicate)
    X_train = pre.fit_transform(X.iloc[train_idx]).astype(np.float32)
    X_val = pre.transform(X.iloc[val_idx]).astype(np.float32)
    if raw.X_test is not None:
        raw_test = raw.X_test.reset_index(drop=True)
        y_test = y_all[len(y_raw):]
    else:
        raw_test = X.iloc[test_idx].reset_index(drop=True)
        y_test = y[test_idx]
    X_test = pre.transform(as_categories(raw_test, categorical)).astype(np.float32)
    y_train, y_val = y[train_idx], y[val_idx]
    mean, std = 0.0, 1.0
    if task == "regression":
        mean, std = float(y_train.mean()), float(y_train.std()) or 1.0
        y_train, y_val, y_test = ((a - mean) / std for a in (y_train, y_val, y_test))
        y_train, y_val, y_test = (a.astype(np.float32) for a in (y_train, y_val, y_test))
    return PreparedData(
        X_train=X_train, y_train=y_train, X_val=X_val, y_val=y_val, X_test=X_test, y_test=y_test, task=task,
        classes=classes, input_columns=list(map(str, X.columns)), numeric_columns=numeric_cols,
        categorical_columns=categorical, feature_names=list(pre.get_feature_names_out()), preprocessor=pre,
        target_name=target_name, target_mean=mean, target_std=std, raw_test=raw_test, notes=notes,
        source=raw.source, input_dtypes=input_dtypes,
        raw_fit=pd.concat([X.iloc[train_idx], X.iloc[val_idx]], ignore_index=True), max_categories=spec.max_categories,
        numeric_preprocessing=numeric, missing_indicators=indicate)


def refit_preprocessing(data: PreparedData, fit_rows: np.ndarray, eval_rows: np.ndarray | None) -> PreparedData:
    """`data` re-split within train+validation (row i: the i-th training row, then the validation rows): the
    preprocessing is fitted anew on `fit_rows` alone and applied to `eval_rows` (the new validation part;
    None: the fit rows themselves) and to the test split, so rows held out of a fit never shape its imputation
    values, scales or categories. The target keeps the search's scaling (an affine map, fitted on train)."""
    if data.raw_fit is None:
        raise ValueError("these data carry no raw rows to refit the preprocessing on")
    y = np.concatenate([data.y_train, data.y_val])
    # the same indicator columns as the search's data, so a refit model takes the same kind of features
    pre = make_preprocessor(data.numeric_columns, data.categorical_columns, data.max_categories,
                            data.numeric_preprocessing, len(fit_rows), data.missing_indicators)
    X_fit = pre.fit_transform(data.raw_fit.iloc[fit_rows]).astype(np.float32)
    if eval_rows is None:
        eval_rows, X_eval = fit_rows, X_fit
    else:
        X_eval = pre.transform(data.raw_fit.iloc[eval_rows]).astype(np.float32)
    X_test = pre.transform(as_categories(data.raw_test, data.categorical_columns)).astype(np.float32)
    return replace(data, X_train=X_fit, y_train=y[fit_rows], X_val=X_eval, y_val=y[eval_rows], X_test=X_test,
                   preprocessor=pre, feature_names=list(pre.get_feature_names_out()))
