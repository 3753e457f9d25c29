"""Rows given in Python: a DataFrame whose `data.target` column is the target, or an `(X, y)` pair.

They get the checks a file gets in `data.read_data` (target present, drop/categorical columns present, no
column mixing numbers and text, features left after dropping), with the same messages, then travel with the
spec (`DataSpec._rows`) so every later reader of the data (search, report, export) sees the same rows.
A DataFrame is taken as it is: its dtypes decide which columns are numeric; the markers of `data.na_values`
("?" by default) become missing values, as when a CSV is read.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from automlp.data.readers import RawData, _check_mixed
from automlp.errors import DataError, SpecError
from automlp.spec import DataSpec

FRAME = "the DataFrame"


def rows_from(data: Any, spec: DataSpec) -> RawData:
    """The rows of `data` (a DataFrame, or an (X, y) pair of arrays or frames) as read data."""
    if isinstance(data, pd.DataFrame):
        return from_frame(data, spec)
    if isinstance(data, tuple) and len(data) == 2:
        return from_xy(data[0], data[1], spec)
    raise DataError(f"data: expected a pandas DataFrame, the path of a data file or an (X, y) pair (got "
                    f"{type(data).__name__})")


def _columns(df: pd.DataFrame, what: str) -> pd.DataFrame:
    names = [str(c) for c in df.columns]
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise DataError(f"data: {what} has duplicate column names ({', '.join(dupes)}); give each column a "
                        "unique name")
    df = df.copy()  # never change the caller's frame
    df.columns = names
    return df.reset_index(drop=True)  # rows are counted by position in messages


def _missing_markers(df: pd.DataFrame, spec: DataSpec) -> pd.DataFrame:
    """data.na_values become missing, as read_csv makes them: a text column of numbers that held a marker
    (pd.read_csv without na_values reads "130", "?" as text) becomes numeric, unless listed in data.categorical."""
    if not spec.na_values:
        return df
    for col in df.columns:
        values = df[col]
        if not (values.dtype == object or pd.api.types.is_string_dtype(values)):
            continue
        marked = values.isin(spec.na_values)
        if not marked.any():
            continue
        values = values.astype(object).mask(marked)
        if col not in spec.categorical:
            numbers = pd.to_numeric(values, errors="coerce")
            if numbers.notna().sum() == values.notna().sum():
                values = numbers
        df[col] = values
    return df


def _check_columns(df: pd.DataFrame, spec: DataSpec, what: str) -> None:
    missing = [c for c in spec.drop + spec.categorical if c not in df.columns]
    if missing:
        raise DataError(f"data: column '{missing[0]}' (in drop/categorical) not in {what}; "
                        f"columns are: {', '.join(df.columns)}")


def from_frame(df: pd.DataFrame, spec: DataSpec) -> RawData:
    """A DataFrame holding the features and the target column (`data.target`)."""
    df = _columns(df, FRAME)
    if spec.target is None:
        raise SpecError(f"data.target: is required with a DataFrame: name the column to predict; columns are: "
                        f"{', '.join(df.columns)}")
    if len(df) == 0:
        raise DataError(f"data: {FRAME} has no rows")
    if spec.target not in df.columns:
        raise DataError(f"data.target: column '{spec.target}' not in {FRAME}; columns are: {', '.join(df.columns)}")
    _check_columns(df, spec, FRAME)
    df = _missing_markers(df.drop(columns=spec.drop), spec)
    if df.shape[1] == 1:
        raise DataError(f"data: {FRAME} has no feature columns besides the target '{spec.target}'"
                        + (" (after data.drop)" if spec.drop else ""))
    _check_mixed(df, spec, FRAME)
    n, m = df.shape
    return RawData(df.drop(columns=[spec.target]), df[spec.target],
                   source=f"DataFrame ({n} rows x {m - 1} features)")


def from_xy(X: Any, y: Any, spec: DataSpec) -> RawData:
    """Features `X` (a DataFrame, or a 2-D array whose columns become x0, x1, ...) and target `y` (1-D)."""
    if isinstance(X, pd.DataFrame):
        frame = _columns(X, "X")
    else:
        a = np.asarray(X)
        if a.ndim != 2:
            raise DataError(f"data: X must be 2-D, rows x features (got an array of shape {a.shape})")
        frame = pd.DataFrame(a, columns=[f"x{i}" for i in range(a.shape[1])])
    target = pd.Series(np.asarray(y)) if not isinstance(y, pd.Series) else y.reset_index(drop=True)
    if target.ndim != 1 or len(target) != len(frame):
        raise DataError(f"data: y must be 1-D with one value per row of X (got {len(target)} values for "
                        f"{len(frame)} rows)" if target.ndim == 1 else f"data: y must be 1-D (got shape {np.shape(y)})")
    if len(frame) == 0:
        raise DataError("data: X has no rows")
    if frame.shape[1] == 0:
        raise DataError("data: X has no feature columns")
    _check_columns(frame, spec, "X")
    frame = _missing_markers(frame.drop(columns=spec.drop), spec)
    _check_mixed(frame, spec, "X")
    name = spec.target or (str(target.name) if target.name is not None else "y")
    return RawData(frame, target.rename(name), source=f"arrays ({len(frame)} rows x {frame.shape[1]} features)")
