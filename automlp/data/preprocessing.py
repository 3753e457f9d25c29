"""The scikit-learn preprocessing: a ColumnTransformer fitted on the training split only. Numeric columns are
imputed (median) and standardized, categorical ones imputed (a "missing" category) and one-hot encoded with unknown
categories ignored and rare ones grouped (`data.max_categories`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from automlp.errors import DataError

if TYPE_CHECKING:
    from sklearn.compose import ColumnTransformer

MISSING_CATEGORY = "__missing__"


def column_kinds(X: pd.DataFrame, forced: list[str]) -> tuple[list[str], list[str]]:
    numeric, categorical = [], []
    for col in X.columns:
        if col in forced or not (pd.api.types.is_numeric_dtype(X[col]) and not pd.api.types.is_bool_dtype(X[col])):
            categorical.append(col)
        else:
            numeric.append(col)
    return numeric, categorical


def numeric_steps(method: str, n_rows: int) -> list:
    """The scaling of numeric columns after median imputation (`space.numeric_preprocessing`):
    standard: (x - mean) / std; quantile: QuantileTransformer to a normal distribution (at most 1,000 quantiles);
    robust_clip: (x - median) / IQR, then smooth clipping x / sqrt(1 + (x/3)^2), as RealMLP."""
    from sklearn.preprocessing import FunctionTransformer, QuantileTransformer, StandardScaler

    if method == "standard":
        return [("scale", StandardScaler())]
    if method == "quantile":
        return [("quantile", QuantileTransformer(n_quantiles=max(1, min(1000, n_rows)), output_distribution="normal",
                                                 subsample=1_000_000, random_state=0))]
    if method == "robust_clip":
        from automlp.data.robust import RobustRangeScaler, smooth_clip

        return [("scale", RobustRangeScaler()),
                ("clip", FunctionTransformer(smooth_clip, feature_names_out="one-to-one"))]
    raise ValueError(f"unknown numeric preprocessing {method!r}")


def make_preprocessor(numeric: list[str], categorical: list[str], max_categories: int, method: str = "standard",
                      n_rows: int = 1000, indicate: list[str] | None = None) -> ColumnTransformer:
    """Numeric columns imputed and scaled by `method`, categorical ones one-hot encoded, then a 0/1 column per
    column of `indicate` (numeric columns with missing values in the training rows): 1 where the value was missing.
    `n_rows` (the training rows) caps the quantiles."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    num = Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                    *numeric_steps(method, n_rows)])
    cat = Pipeline([("impute", SimpleImputer(strategy="constant", fill_value=MISSING_CATEGORY,
                                             keep_empty_features=True)),
                    ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=max_categories,
                                             sparse_output=False, dtype=np.float32))])
    parts = [("num", num, numeric), ("cat", cat, categorical)]
    if indicate:
        parts.append(("missing", MissingIndicator(features="all"), list(indicate)))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def missing_numeric(X: pd.DataFrame, numeric: list[str]) -> list[str]:
    """Numeric columns with a missing value in `X` (the training rows): they get an indicator column."""
    return [c for c in numeric if X[c].isna().any()]


def as_categories(X: pd.DataFrame, categorical: list[str]) -> pd.DataFrame:
    """Categorical columns as Python strings (missing stays missing), so 1 and '1' are one category."""
    if not categorical:
        return X
    X = X.copy()
    for col in categorical:
        X[col] = X[col].map(lambda v: v if pd.isna(v) else str(v).strip()).astype(object)
    return X


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
