"""The numeric preprocessing choices against their definitions and scikit-learn, fitted on training rows only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import QuantileTransformer

from automlp.data import make_preprocessor, prepare_data
from automlp.spec import DataSpec

rng = np.random.default_rng(0)
TRAIN = pd.DataFrame({"a": rng.lognormal(size=200), "b": np.r_[np.zeros(180), rng.uniform(1, 100, 20)],
                      "c": np.r_[rng.normal(size=190), [np.nan] * 10]})
TEST = pd.DataFrame({"a": [0.0, 1.0, 50.0], "b": [0.0, 30.0, 1e4], "c": [np.nan, 0.5, -9.0]})


def test_robust_clip_is_robust_scaling_then_smooth_clipping():
    pre = make_preprocessor(["a", "b", "c"], [], 50, "robust_clip", len(TRAIN), []).fit(TRAIN)
    filled = TRAIN.fillna(TRAIN.median())
    q25, q50, q75 = (filled.quantile(q).to_numpy() for q in (0.25, 0.5, 0.75))
    scale = q75 - q25
    scale[1] = 0.5 * (filled["b"].max() - filled["b"].min())  # b is mostly 0 (IQR 0): half its range, as RealMLP
    z = (TEST.fillna(TRAIN.median()).to_numpy() - q50) / scale
    expected = z / np.sqrt(1 + (z / 3) ** 2)
    got = pre.transform(TEST)
    assert np.allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert np.abs(got).max() < 3  # far values are clipped smoothly below 3
    assert got[0, 1] == 0.0 and got[2, 1] > 2.9


def test_quantile_is_sklearns_quantile_transformer_with_normal_output():
    pre = make_preprocessor(["a", "b", "c"], [], 50, "quantile", len(TRAIN), []).fit(TRAIN)
    ref = QuantileTransformer(n_quantiles=200, output_distribution="normal", random_state=0)
    ref.fit(TRAIN.fillna(TRAIN.median()))
    assert np.array_equal(pre.transform(TEST), ref.transform(TEST.fillna(TRAIN.median())))
    assert abs(np.quantile(pre.transform(TRAIN)[:, 0], 0.75) - 0.674) < 0.03  # normal output: its upper quartile


def test_missing_indicators_come_from_the_training_rows_only(tmp_path):
    """A column with missing values only outside the training rows gets no indicator; one with missing training
    values gets a 0/1 column after the one-hot block, 1 exactly where the raw value was missing."""
    n = 100
    df = pd.DataFrame({"x": np.arange(n, dtype=float), "k": ["p", "q"] * (n // 2), "y": np.arange(n) % 7})
    df.loc[[3, 10, 20], "x"] = np.nan
    path = tmp_path / "d.csv"
    df.to_csv(path, index=False)
    spec = DataSpec(path=path, target="y", task="regression", split_seed=1)
    data = prepare_data(spec, seed=0)
    assert data.missing_indicators == ["x"] and data.feature_names == ["x", "k_p", "k_q", "missingindicator_x"]
    raw = data.raw_fit
    assert np.array_equal(np.concatenate([data.X_train, data.X_val])[:, -1], raw["x"].isna().to_numpy())
    assert prepare_data(spec.model_copy(update={"missing_indicators": False}), seed=0).feature_names == \
        ["x", "k_p", "k_q"]


@pytest.mark.parametrize("method", ["standard", "quantile", "robust_clip"])
def test_the_splits_do_not_depend_on_the_preprocessing(method):
    spec = DataSpec(dataset="sklearn:diabetes")
    base, other = prepare_data(spec, 0), prepare_data(spec, 0, numeric=method)
    assert np.array_equal(base.y_train, other.y_train) and np.array_equal(base.y_test, other.y_test)
    assert other.numeric_preprocessing == method


def test_variants_prepare_each_choice_once_on_the_same_rows():
    import torch

    from automlp.data import DataVariants

    variants = DataVariants(DataSpec(dataset="sklearn:diabetes"), 0, torch.device("cpu"))
    a, b = variants.prepared("quantile"), variants.prepared("robust_clip")
    assert variants.prepared("quantile") is a and variants.tensors("quantile") is variants.tensors("quantile")
    assert np.array_equal(a.y_train, b.y_train) and not np.allclose(a.X_train, b.X_train)
    assert torch.equal(variants.tensors("robust_clip").X_train, torch.as_tensor(b.X_train))
