"""The fitted preprocessing as data (preprocessing.json), and its re-implementation in NumPy.

This module never touches scikit-learn: a model folder is served from the JSON alone. It mirrors what
`automlp.data` fits on the training split, step for step:

- numeric columns: missing -> the training median, then the scaling `numeric.method` names: standard,
  (x - mean) / scale (StandardScaler); robust_clip, z = (x - center) / scale then z / sqrt(1 + (z / clip)^2)
  (RealMLP's robust scaling and smooth clipping); quantile, QuantileTransformer(output_distribution="normal")
  from the column's quantiles (interpolated both ways and averaged, bounds at 1e-7, then the normal quantile
  function, clipped as sklearn clips). Version 1 files (before `method`) are standard;
- categorical columns: as text (`as_categories`: str(value).strip(), so 1 and '1' are one category),
  missing -> the missing category, then one-hot. A value the training split never held (or a rare one that
  `data.max_categories` grouped) goes to the column's infrequent bucket when it has one; when it has none,
  its one-hot block stays all zeros, exactly like OneHotEncoder(handle_unknown="infrequent_if_exist");
- then one 0/1 column per name in `numeric.missing_indicators`: 1 where that value was missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from automlp.data import row_label
from automlp.errors import ExportError

FORMAT = "automlp-preprocessing"
VERSION = 2  # 2: numeric.method (standard | quantile | robust_clip) and numeric.missing_indicators
READABLE_VERSIONS = (1, 2)
BOUNDS_THRESHOLD = 1e-7  # sklearn.preprocessing._data's, for the quantile transform
# pandas' default NA strings (read_csv keep_default_na=True); written out for readers that do not use pandas
PANDAS_NA_STRINGS = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")


def dtype_kind(dtype: str) -> str:
    """How a column was typed when the model was trained (from its pandas dtype name): int, float, bool or str."""
    name = str(dtype).lower()
    if name in ("bool", "boolean"):
        return "bool"
    if name.startswith(("int", "uint")):
        return "int"
    if name.startswith("float"):
        return "float"
    return "str"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # numeric | categorical
    dtype: str  # int | float | bool | str: the column's type in the training data


@dataclass
class Typed:
    """A chunk of rows after `FeatureTransform.coerce`: numbers, category text, and category codes."""

    n_rows: int
    numeric: dict[str, np.ndarray] = field(default_factory=dict)  # float64, NaN for missing
    values: dict[str, np.ndarray] = field(default_factory=dict)  # object: the text matched (missing filled)
    codes: dict[str, np.ndarray] = field(default_factory=dict)  # index among the training categories, -1 if unseen


class FeatureTransform:
    """Raw columns -> the float32 features the network takes, from preprocessing.json's dict."""

    def __init__(self, spec: dict):
        if spec.get("format") != FORMAT or spec.get("version") not in READABLE_VERSIONS:
            raise ExportError(f"preprocessing.json: not an {FORMAT} version {VERSION} file "
                              f"(format {spec.get('format')!r}, version {spec.get('version')!r})")
        self.spec = spec
        self.columns = [Column(**c) for c in spec["columns"]]
        num = spec["numeric"]
        self.numeric = list(num["columns"])
        self.impute = np.asarray(num["impute"], np.float64)
        self.method = num.get("method", "standard")
        self.num = {k: np.asarray(v, np.float64) for k, v in num.items() if k in ("mean", "scale", "center",
                                                                                  "quantiles", "references")}
        self.clip = float(num.get("clip", 3.0))
        self.indicators = list(num.get("missing_indicators", []))
        cat = spec["categorical"]
        self.missing_category = cat["missing_category"]
        self.categorical = [c["name"] for c in cat["columns"]]
        self.blocks = []  # (name, pandas Index of known categories, positions, unknown position, offset)
        offset = len(self.numeric)
        for c in cat["columns"]:
            keys = list(c["index"])
            self.blocks.append((c["name"], pd.Index(keys, dtype=object),
                                np.asarray([c["index"][k] for k in keys], np.int64), c["unknown"], offset))
            offset += c["width"]
        offset += len(self.indicators)
        self.has_infrequent = {name: unknown is not None for name, _, _, unknown, _ in self.blocks}
        self.lookup = {name: index for name, index, _, _, _ in self.blocks}
        self.n_features = int(spec["n_features"])
        if offset != self.n_features:
            raise ExportError(f"preprocessing.json: the column blocks add up to {offset} features, "
                              f"but n_features is {self.n_features}")
        csv = spec["csv"]
        self.na_strings = set(csv["default_na_values"]) | set(csv["na_values"])

    @property
    def input_columns(self) -> list[str]:
        return [c.name for c in self.columns]

    # ------------------------------------------------------------------ raw values -> typed columns

    def coerce(self, frame: pd.DataFrame, source: str = "input", first_row: int = 0) -> "Typed":
        """Numeric columns as float64, categorical ones as text matched against the training categories,
        missing markers as missing; an unparseable number is an error naming the column and the row
        (`first_row` is the index of the frame's first row in the whole input)."""
        typed = Typed(len(frame))
        for col in self.columns:
            s = frame[col.name]
            if s.dtype == object or pd.api.types.is_string_dtype(s.dtype):
                # text is read like the training CSV: pandas' NA strings and the spec's na_values are missing
                s = s.mask(s.astype(str).str.lstrip().isin(self.na_strings) & s.notna())
            if col.kind == "numeric":
                typed.numeric[col.name] = self._numbers(s, col.name, source, first_row)
            else:
                values = self._categories(s, col.dtype).fillna(self.missing_category).to_numpy(object)
                typed.values[col.name] = values
                typed.codes[col.name] = self.lookup[col.name].get_indexer(values)  # -1: unseen in training
        return typed

    @staticmethod
    def _numbers(s: pd.Series, name: str, source: str, first_row: int) -> np.ndarray:
        if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
            return s.to_numpy(np.float64, na_value=np.nan)
        values = pd.to_numeric(s, errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() & s.notna().to_numpy())
        if len(bad):
            i = int(bad[0])
            raise ExportError(
                f"{source}: column '{name}' must hold numbers (got {s.iloc[i]!r} at {row_label(first_row + i, source)}"
                + (f", and {len(bad) - 1} more row{'s' if len(bad) > 2 else ''} like it" if len(bad) > 1 else "")
                + "); the model takes numbers there: leave a value empty for missing")
        return values.to_numpy(np.float64, na_value=np.nan)

    @staticmethod
    def _categories(s: pd.Series, dtype: str) -> pd.Series:
        """The text `data.as_categories` gave this value when the column had `dtype` in training: an integer
        column's 3 (or '3.0') is '3', a float column's 3 is '3.0', a bool column's 'true' is 'True'."""
        present = s.notna().to_numpy()
        text = s[present].astype(str).str.strip().astype(object)
        if dtype in ("int", "float"):
            nums = pd.to_numeric(text, errors="coerce")
            ok = nums.notna() & np.isfinite(nums.astype(float)) & (nums.astype(float).abs() < 2.0**63)
            if dtype == "int":
                ok &= nums.astype(float) % 1 == 0
                text[ok] = nums[ok].astype(np.int64).astype(str)
            else:
                text[ok] = nums[ok].astype(np.float64).map(str)
        elif dtype == "bool":
            low = text.str.lower()
            text[low == "true"] = "True"
            text[low == "false"] = "False"
        out = pd.Series(np.full(len(s), None, dtype=object), index=s.index)
        out[present] = text.to_numpy()
        return out

    # ------------------------------------------------------------------ typed columns -> features

    def unseen(self, typed: "Typed") -> dict[str, tuple[int, object]]:
        """Categorical columns holding values the training split never had: name -> (count, an example)."""
        out = {}
        for name, codes in typed.codes.items():
            miss = np.flatnonzero(codes < 0)
            if len(miss):
                out[name] = (len(miss), typed.values[name][miss[0]])
        return out

    def transform(self, typed: "Typed") -> np.ndarray:
        """Features (float32, n_rows x n_features) of columns returned by `coerce`."""
        n = typed.n_rows
        X = np.zeros((n, self.n_features), np.float32)
        if self.numeric:
            x = np.empty((n, len(self.numeric)), np.float64)
            for j, c in enumerate(self.numeric):
                x[:, j] = typed.numeric[c]
            missing = np.isnan(x)
            x[missing] = np.broadcast_to(self.impute, x.shape)[missing]
            X[:, : len(self.numeric)] = self._scale(x)
        rows = np.arange(n)
        for name, _, positions, unknown, offset in self.blocks:
            codes = typed.codes[name]
            pos = np.where(codes >= 0, positions[codes], -1 if unknown is None else unknown)
            hot = pos >= 0
            X[rows[hot], offset + pos[hot]] = 1.0
        start = self.n_features - len(self.indicators)
        for j, c in enumerate(self.indicators):
            X[:, start + j] = np.isnan(typed.numeric[c])
        return X

    def _scale(self, x: np.ndarray) -> np.ndarray:
        """The imputed numeric block scaled as the fitted sklearn step does, in float64 (one cast after, as the
        ColumnTransformer)."""
        if self.method == "standard":
            return (x - self.num["mean"]) / self.num["scale"]
        if self.method == "robust_clip":
            z = (x - self.num["center"]) / self.num["scale"]
            return z / np.sqrt(1.0 + (z / self.clip) ** 2)
        if self.method == "quantile":
            return np.column_stack([quantile_normal(x[:, j], q, self.num["references"])
                                    for j, q in enumerate(self.num["quantiles"])])
        raise ExportError(f"preprocessing.json: unknown numeric.method {self.method!r}; this automlp reads "
                          "standard, quantile and robust_clip")

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        return self.transform(self.coerce(frame))


def quantile_normal(x: np.ndarray, quantiles: np.ndarray, references: np.ndarray) -> np.ndarray:
    """QuantileTransformer(output_distribution="normal").transform of one column without missing values, as
    sklearn computes it (sklearn.preprocessing._data.QuantileTransformer._transform_col)."""
    from scipy.special import ndtri  # scipy.stats.norm.ppf

    low = x - BOUNDS_THRESHOLD < quantiles[0]
    high = x + BOUNDS_THRESHOLD > quantiles[-1]
    # both directions, averaged: repeated quantiles (ties) map to the middle of their references
    u = 0.5 * (np.interp(x, quantiles, references) - np.interp(-x, -quantiles[::-1], -references[::-1]))
    u[high] = 1.0
    u[low] = 0.0
    with np.errstate(divide="ignore"):
        z = ndtri(u)
    bound = BOUNDS_THRESHOLD - np.spacing(1)
    return np.clip(z, ndtri(bound), ndtri(1 - bound))
