"""Reading the data, preprocessing it with scikit-learn, seeded splits, and tensors on the device.

Reading: sklearn's bundled sets, CSV (also .csv.gz/.tsv), Parquet and NumPy .npz (arrays X/y, or Keras'
x_train/y_train/x_test/y_test). Preprocessing is a ColumnTransformer fitted on the training split only:
numeric columns are imputed (median) and standardized, categorical ones imputed (a "missing" category) and
one-hot encoded with unknown categories ignored and rare ones grouped (`data.max_categories`).

Checks, each a DataError naming the column and the fix: unreadable or non-UTF-8 files, no data rows,
duplicate column names, a missing target, columns (or a target) that mix numbers and text, a target
without values or with one class, classes too small to stratify, splits that would be empty, and
features that are all constant. These checks run before scikit-learn and torch are imported (they are
imported where splits, preprocessing and tensors are made), so bad data gets its error in about a second.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from automlp.errors import DataError, SpecError
from automlp.spec import DataSpec

if TYPE_CHECKING:
    import torch
    from sklearn.compose import ColumnTransformer

MISSING_CATEGORY = "__missing__"
MAX_CLASSES_AUTO = 20  # an integer target with at most this many values is taken as classes under task: auto


@dataclass
class RawData:
    """The data as read: features, target, and the given test split when the source has one."""

    X: pd.DataFrame
    y: pd.Series
    X_test: pd.DataFrame | None = None
    y_test: pd.Series | None = None
    source: str = ""


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

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.X_train), "val": len(self.X_val), "test": len(self.X_test)}


@dataclass
class TrainData:
    """Training and validation tensors, resident on the device for the whole study."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    task: str
    n_classes: int
    device: torch.device
    target_mean: float = 0.0
    target_std: float = 1.0


# --------------------------------------------------------------------------- reading


def _read_sklearn(name: str) -> RawData:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{name}")(as_frame=True)
    y = bunch.target
    if name in ("iris", "wine", "breast_cancer"):  # class names instead of 0, 1, 2 (digits' names are its ids)
        y = pd.Series(np.asarray(bunch.target_names)[y.to_numpy()])
    return RawData(X=bunch.data, y=y.rename("target"), source=f"sklearn:{name}")


def _read_npz(path: Path, fname: str) -> RawData:
    try:
        arrays = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"data.path: cannot read {fname} as a NumPy archive ({e})") from None
    keys = set(arrays.files)

    def get(key: str) -> np.ndarray:
        try:
            a = arrays[key]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"data.path: cannot read '{key}' in {fname} ({e})") from None
        if not isinstance(a, np.ndarray) or a.ndim == 0:
            raise DataError(f"data.path: '{key}' in {fname} is not a NumPy array; save the arrays with numpy.savez")
        return a

    def frame(a: np.ndarray) -> pd.DataFrame:
        a = a.reshape(len(a), -1)
        return pd.DataFrame(a, columns=[f"x{i}" for i in range(a.shape[1])])

    if {"x_train", "y_train"} <= keys:
        raw = RawData(frame(get("x_train")), pd.Series(get("y_train"), name="y"), source=str(path))
        if {"x_test", "y_test"} <= keys:
            raw.X_test, raw.y_test = frame(get("x_test")), pd.Series(get("y_test"), name="y")
        return raw
    if {"X", "y"} <= keys:
        return RawData(frame(get("X")), pd.Series(get("y"), name="y"), source=str(path))
    raise DataError(f"data.path: {fname} has arrays {sorted(keys)}; expected X and y, or x_train, y_train "
                    "(and optionally x_test, y_test) as in Keras' mnist.npz")


def _first_bad_byte(path: Path) -> str:
    """Where the first byte that is not UTF-8 sits, as 'line N, byte 0xNN' (the error path only)."""
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        return f"line {line}, byte 0x{raw[e.start]:02x}"
    return "unknown position"


SNIFF_BYTES = 64 * 1024
SEPARATORS = ",;\t|"


def sniff_sep(path: Path) -> str:
    """The column separator of a CSV file, sniffed by csv.Sniffer from its first lines; ',' when unsure."""
    import csv
    import gzip

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rb") as f:
            sample = f.read(SNIFF_BYTES).decode("utf-8", errors="replace")
        if len(sample) == SNIFF_BYTES:
            sample = sample[: sample.rfind("\n") + 1] or sample  # whole lines only
        return csv.Sniffer().sniff(sample, delimiters=SEPARATORS).delimiter
    except (csv.Error, OSError, EOFError):  # one column, or unreadable: the reader reports the latter
        return ","


def _csv_options(path: Path, spec: DataSpec) -> dict:
    if spec.sep is not None:
        sep = spec.sep
    elif ".tsv" in [s.lower() for s in path.suffixes]:
        sep = "\t"
    else:
        sep = sniff_sep(path)
    return {"sep": sep, "na_values": spec.na_values, "skipinitialspace": True, "encoding": "utf-8"}


def _read_table(path: Path, spec: DataSpec) -> pd.DataFrame:
    fname = path.name
    suffixes = [s.lower() for s in path.suffixes]
    try:
        if ".parquet" in suffixes or ".pq" in suffixes:
            df = pd.read_parquet(path)
            return df.replace({v: np.nan for v in spec.na_values})
        opts = _csv_options(path, spec)
        if ".gz" not in suffixes:
            with open(path, "rb") as f:
                if b"\0" in f.read(8192):  # text never holds NUL bytes; the CSV parser's complaint would mislead
                    raise DataError(f"data.path: {fname} is a binary file, not CSV text; give a CSV, Parquet or "
                                    ".npz file")
        # the header as written: read_csv renames a repeated name 'a' to 'a.1' without a word
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, **opts).iloc[0].tolist()
        dupes = sorted({str(c) for c in header if header.count(c) > 1})
        if dupes:
            raise DataError(f"data.path: {fname} has duplicate column names ({', '.join(dupes)}); "
                            "give each column a unique name")
        return pd.read_csv(path, low_memory=False, **opts)
    except UnicodeDecodeError:
        raise DataError(f"data.path: {fname} is not UTF-8 text ({_first_bad_byte(path)}); re-save it as UTF-8 "
                        "(e.g. iconv -f latin1 -t utf-8)") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data.path: {fname} is empty; it needs a header row and data rows") from None
    except pd.errors.ParserError as e:
        raise DataError(f"data.path: {fname} is not a valid CSV: {str(e).strip()}") from None
    except OSError as e:
        raise DataError(f"data.path: cannot read {fname}: {e.strerror or e}") from None
    except ValueError as e:
        raise DataError(f"data.path: cannot read {fname}: {e}") from None


def row_label(i: Any, source: str) -> str:
    """Data row i (from 0) as the user finds it, one rule everywhere: `line N` of a text file (the header is
    line 1); `row N` (data rows counted from 1) where there are no lines: Parquet, arrays, DataFrames."""
    if str(source).lower().endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz", ".txt")):
        return f"line {i + 2}"
    return f"row {i + 1}"


def text_values(col: pd.Series) -> tuple[pd.Series, int]:
    """The values of a column that are not numbers, and how many values are not missing."""
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        return col.iloc[:0], int(col.notna().sum())
    values = col.dropna()
    as_num = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
    return values[as_num.isna()], len(values)


def _check_mixed(df: pd.DataFrame, spec: DataSpec, fname: str) -> None:
    """A column of numbers with some text is a typo or an unlisted missing marker; refuse to guess. (A column
    that is mostly text is categorical; a regression target must be all numbers.)"""
    for name in df.columns:
        if name in spec.categorical or (name == spec.target and spec.task == "classification"):
            continue
        text, n = text_values(df[name])
        regression_target = name == spec.target and spec.task == "regression"
        if text.empty or (len(text) * 2 > n and not regression_target):
            continue
        where = f"got {text.iloc[0]!r} at {row_label(text.index[0], fname)}; text in {len(text)} of {n} values"
        if regression_target:
            raise DataError(f"data.target: column '{name}' has text ({where}), but a regression target must be "
                            "numbers; fix those values, add them to data.na_values to read them as missing, or set "
                            "data.task: classification")
        if name == spec.target:
            raise DataError(f"data.target: column '{name}' mixes numbers and text ({where}); fix those values, "
                            "add them to data.na_values to read them as missing, or set data.task: classification "
                            "if the values are labels")
        raise DataError(f"data: column '{name}' mixes numbers and text ({where}); fix those values, add them to "
                        "data.na_values to read them as missing, or list the column in data.categorical")


SEPARATOR_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}


def _target_not_found(df: pd.DataFrame, target: str, fname: str) -> str:
    """The message for a missing target column; a single column holding separators is a file read with the
    wrong separator (a ';'-separated export read as ','), so say that and how to read it."""
    if df.shape[1] == 1:
        col = str(df.columns[0])
        counts = {sep: col.count(sep) for sep in SEPARATOR_NAMES if col.count(sep)}
        if counts:
            sep = max(counts, key=counts.get)
            shown = "'\\t'" if sep == "\t" else f"'{sep}'"
            return (f"data.target: column '{target}' not in {fname}, which looks {SEPARATOR_NAMES[sep]}-separated "
                    f"(got one column, {col!r}); set data.sep: {shown} in the spec")
    return f"data.target: column '{target}' not in {fname}; columns are: {', '.join(map(str, df.columns))}"


def read_data(spec: DataSpec) -> RawData:
    """Read the data the spec names, without any preprocessing."""
    if spec.dataset is not None:
        return _read_sklearn(spec.dataset.removeprefix("sklearn:"))
    path = Path(spec.path)
    fname = path.name
    if not path.exists():
        raise DataError(f"data.path: file not found: {path} (a relative data.path starts at the spec's folder)")
    if path.is_dir():
        raise DataError(f"data.path: {path} is a folder; give a CSV, Parquet or .npz file")
    if path.suffix.lower() == ".npz":
        raw = _read_npz(path, fname)
        return RawData(raw.X.drop(columns=[c for c in spec.drop if c in raw.X]), raw.y, raw.X_test, raw.y_test,
                       raw.source)
    df = _read_table(path, spec)
    if df.shape[1] == 0:
        raise DataError(f"data.path: {fname} has no columns; it needs a header row and data rows")
    if len(df) == 0:
        raise DataError(f"data.path: {fname} has a header but no data rows")
    if spec.target not in df.columns:
        raise DataError(_target_not_found(df, spec.target, fname))
    missing = [c for c in spec.drop + spec.categorical if c not in df.columns]
    if missing:
        raise DataError(f"data: column '{missing[0]}' (in drop/categorical) not in {fname}; "
                        f"columns are: {', '.join(map(str, df.columns))}")
    df = df.drop(columns=spec.drop)
    if df.shape[1] == 1:
        raise DataError(f"data: {fname} has no feature columns besides the target '{spec.target}'"
                        + (" (after data.drop)" if spec.drop else ""))
    _check_mixed(df, spec, fname)
    y = df[spec.target]
    X = df.drop(columns=[spec.target])
    return RawData(X, y, source=str(path))


# --------------------------------------------------------------------------- preparing


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


def _column_kinds(X: pd.DataFrame, forced: list[str]) -> tuple[list[str], list[str]]:
    numeric, categorical = [], []
    for col in X.columns:
        if col in forced or not (pd.api.types.is_numeric_dtype(X[col]) and not pd.api.types.is_bool_dtype(X[col])):
            categorical.append(col)
        else:
            numeric.append(col)
    return numeric, categorical


def make_preprocessor(numeric: list[str], categorical: list[str], max_categories: int) -> ColumnTransformer:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    num = Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                    ("scale", StandardScaler())])
    cat = Pipeline([("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY,
                                             keep_empty_features=True)),
                    ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=max_categories,
                                             sparse_output=False, dtype=np.float32))])
    return ColumnTransformer([("num", num, numeric), ("cat", cat, categorical)], remainder="drop",
                             verbose_feature_names_out=False)


def as_categories(X: pd.DataFrame, categorical: list[str]) -> pd.DataFrame:
    """Categorical columns as Python strings (missing stays missing), so 1 and '1' are one category."""
    if not categorical:
        return X
    X = X.copy()
    for col in categorical:
        X[col] = X[col].map(lambda v: v if pd.isna(v) else str(v).strip()).astype(object)
    return X


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


def feature_notes(X: pd.DataFrame, categorical: list[str], max_categories: int) -> list[str]:
    """Refuse features that are all constant; note constant columns and one-hot columns that get capped."""
    constant = [str(c) for c in X.columns if X[c].nunique(dropna=False) <= 1]
    if constant and len(constant) == X.shape[1]:
        shown = ", ".join(constant[:10]) + (", ..." if len(constant) > 10 else "")
        raise DataError(f"data: every feature column is constant ({shown}); there is nothing to learn from: "
                        "check data.drop and the file")
    notes = []
    if constant:
        notes.append(f"constant columns carry no information (consider data.drop): {', '.join(constant[:10])}")
    for col in categorical:
        n = X[col].nunique()
        if n > max_categories:
            ident = "; every row has its own value, which looks like an identifier (consider data.drop)" \
                if n == len(X) else ""
            notes.append(f"column '{col}' has {n} categories: one-hot keeps the {max_categories - 1} most frequent "
                         f"and groups the rest into one (data.max_categories: {max_categories}){ident}")
    return notes


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


def prepare_data(spec: DataSpec, seed: int, raw: RawData | None = None) -> PreparedData:
    """Read (unless given), split with the seed, fit the preprocessing on the training split, transform."""
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

    numeric, categorical = _column_kinds(X, spec.categorical)
    input_dtypes = {str(c): str(X[c].dtype) for c in X.columns}
    X = as_categories(X, categorical)
    notes += feature_notes(X, categorical, spec.max_categories)
    pre = make_preprocessor(numeric, categorical, spec.max_categories)
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
        classes=classes, input_columns=list(map(str, X.columns)), numeric_columns=numeric,
        categorical_columns=categorical, feature_names=list(pre.get_feature_names_out()), preprocessor=pre,
        target_name=target_name, target_mean=mean, target_std=std, raw_test=raw_test, notes=notes,
        source=raw.source, input_dtypes=input_dtypes,
        raw_fit=pd.concat([X.iloc[train_idx], X.iloc[val_idx]], ignore_index=True), max_categories=spec.max_categories)


def refit_preprocessing(data: PreparedData, fit_rows: np.ndarray, eval_rows: np.ndarray | None) -> PreparedData:
    """`data` re-split within train+validation (row i: the i-th training row, then the validation rows): the
    preprocessing is fitted anew on `fit_rows` alone and applied to `eval_rows` (the new validation part;
    None: the fit rows themselves) and to the test split, so rows held out of a fit never shape its imputation
    values, scales or categories. The target keeps the search's scaling (an affine map, fitted on train)."""
    if data.raw_fit is None:
        raise ValueError("these data carry no raw rows to refit the preprocessing on")
    y = np.concatenate([data.y_train, data.y_val])
    pre = make_preprocessor(data.numeric_columns, data.categorical_columns, data.max_categories)
    X_fit = pre.fit_transform(data.raw_fit.iloc[fit_rows]).astype(np.float32)
    if eval_rows is None:
        eval_rows, X_eval = fit_rows, X_fit
    else:
        X_eval = pre.transform(data.raw_fit.iloc[eval_rows]).astype(np.float32)
    X_test = pre.transform(as_categories(data.raw_test, data.categorical_columns)).astype(np.float32)
    return replace(data, X_train=X_fit, y_train=y[fit_rows], X_val=X_eval, y_val=y[eval_rows], X_test=X_test,
                   preprocessor=pre, feature_names=list(pre.get_feature_names_out()))


# --------------------------------------------------------------------------- device


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda, then mps, then cpu; an explicit device that is not there is an error, not a fallback."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SpecError(f"training.device: {name} was asked for, but torch sees no CUDA GPU here "
                            f"(torch {torch.__version__}); use device: auto or cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise SpecError(f"training.device: {name} does not exist; this machine has "
                            f"{torch.cuda.device_count()} GPU(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SpecError("training.device: mps was asked for, but it is not available here; use auto or cpu")
    return torch.device(name)


def to_tensors(data: PreparedData, device: torch.device) -> TrainData:
    """Move the training and validation splits to the device once, for the whole study."""
    import torch

    y_dtype = torch.long if data.task == "classification" else torch.float32

    def put(a: np.ndarray, dtype: Any) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype).to(device)

    return TrainData(
        X_train=put(data.X_train, torch.float32), y_train=put(data.y_train, y_dtype),
        X_val=put(data.X_val, torch.float32), y_val=put(data.y_val, y_dtype),
        task=data.task, n_classes=len(data.classes), device=device,
        target_mean=data.target_mean, target_std=data.target_std)
