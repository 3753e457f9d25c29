"""Reading the data: sklearn's bundled sets, CSV (also .csv.gz/.tsv), Parquet and NumPy .npz (arrays X/y, or
Keras' x_train/y_train/x_test/y_test), with the checks that need no scikit-learn or torch: unreadable or non-UTF-8
files, no data rows, duplicate column names, a missing target, and columns (or a target) that mix numbers and text.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from automlp.errors import DataError
from automlp.spec import DataSpec


@dataclass
class RawData:
    """The data as read: features, target, and the given test split when the source has one."""

    X: pd.DataFrame
    y: pd.Series
    X_test: pd.DataFrame | None = None
    y_test: pd.Series | None = None
    source: str = ""


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
    if spec._rows is not None:  # rows given in Python (automlp.search(data=...)), checked by automlp.frames
        return spec._rows
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
