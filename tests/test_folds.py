"""k-fold preparation: seeded folds of train + validation, preprocessing fitted per fold, one feature layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from automlp.data import RawData, prepare_data
from automlp.errors import DataError
from automlp.folds import KFOLD_AUTO_MAX_ROWS, fold_indices, out_of_fold, prepare_folds, use_kfold
from automlp.spec import DataSpec


def _raw(n: int = 160, seed: int = 0, task: str = "classification") -> RawData:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({
        "a": rng.normal(10, 3, n),
        "b": np.where(rng.random(n) < 0.15, np.nan, rng.exponential(2, n)),  # missing values: median imputed
        "color": rng.choice(["red", "green", "blue", None], n, p=[0.4, 0.3, 0.25, 0.05]),
    })
    y = pd.Series(rng.choice(["x", "y", "z"], n) if task == "classification" else rng.normal(size=n), name="t")
    return RawData(X, y, source="test")


def _data(task: str = "classification", **kw):
    spec = DataSpec(path="t.csv", target="t", categorical=["color"], task=task, **kw)
    return prepare_data(spec, 0, raw=_raw(task=task))


def _probe(data) -> pd.DataFrame:
    """Fixed raw rows to read a fitted pipeline's statistics through its outputs."""
    return pd.DataFrame({"a": [0.0, 10.0, np.nan], "b": [np.nan, 1.0, 5.0], "color": ["red", None, "blue"]})


def test_folds_partition_train_and_validation_and_repeat_with_the_seed():
    data = _data()
    n = len(data.y_train) + len(data.y_val)
    folds = prepare_folds(data, 4, seed=3)
    held = np.concatenate([f.val_rows for f in folds])
    assert sorted(held) == list(range(n))  # each row is held out exactly once
    for f in folds:
        assert not set(f.train_rows) & set(f.val_rows) and len(f.train_rows) + len(f.val_rows) == n
        assert f.data.X_train.shape == (len(f.train_rows), len(f.data.feature_names))
        assert len(f.data.X_test) == len(data.y_test)  # the test split is never in a fold
    again = prepare_folds(data, 4, seed=3)
    assert all((a.val_rows == b.val_rows).all() and np.array_equal(a.data.X_train, b.data.X_train)
               for a, b in zip(folds, again))
    other = prepare_folds(data, 4, seed=4)
    assert any(not np.array_equal(a.val_rows, b.val_rows) for a, b in zip(folds, other))


def test_classification_folds_are_stratified_unless_a_class_is_too_small():
    y = np.array([0] * 30 + [1] * 10 + [2] * 5)
    for tr, va in fold_indices(y, "classification", 5, 0):
        assert list(np.bincount(y[va], minlength=3)) == [6, 2, 1]
    y_small = np.array([0] * 30 + [1] * 3)  # 3 rows cannot be spread over 5 folds: plain KFold
    assert len(fold_indices(y_small, "classification", 5, 0)) == 5
    with pytest.raises(DataError) as e:
        fold_indices(y_small[:4], "classification", 5, 0)
    assert str(e.value) == ("study.folds: 5 folds need at least 5 train+validation rows and at least 2 folds; got 4 "
                            "rows: lower study.folds, or use study.validation: holdout")


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_no_validation_row_reaches_a_folds_preprocessing_or_training_rows(task):
    """Change every validation row of a fold (features, categories never seen anywhere else, and the target of
    a regression): the fold's training tensors and its fitted preprocessing stay exactly what they were."""
    data = _data(task)
    k = 1
    base = prepare_folds(data, 3, seed=0)[k]
    va = base.val_rows
    raw = data.raw_fit.copy()
    raw.loc[va, "a"] = raw.loc[va, "a"] * 1000 + 7
    raw.loc[va, "b"] = np.nan
    raw.loc[va, "color"] = [f"only_here_{i}" for i in range(len(va))]
    y = np.concatenate([data.y_train, data.y_val])
    y2 = y.copy()
    if task == "regression":  # (classification folds are stratified: the labels place every row, by design)
        y2[va] = y[va] * -5 + 3
    n_train = len(data.y_train)
    changed = type(data)(**{**data.__dict__, "raw_fit": raw, "y_train": y2[:n_train], "y_val": y2[n_train:]})
    moved = prepare_folds(changed, 3, seed=0)[k]
    assert np.array_equal(moved.train_rows, base.train_rows) and np.array_equal(moved.val_rows, va)
    # the fold's own pipeline: same training features, same targets, same fitted statistics
    assert np.array_equal(moved.data.X_train[:, moved.columns], base.data.X_train[:, base.columns])
    assert np.array_equal(moved.data.y_train, base.data.y_train)
    assert list(moved.data.preprocessor.get_feature_names_out()) == \
        list(base.data.preprocessor.get_feature_names_out())
    assert np.array_equal(moved.data.preprocessor.transform(_probe(data)),
                          base.data.preprocessor.transform(_probe(data)))
    # and its training rows are the raw rows it names: none of them is a validation row
    assert np.allclose(base.transform(data.raw_fit.iloc[base.train_rows]), base.data.X_train, atol=1e-6)
    assert np.array_equal(base.data.y_train, y[base.train_rows])


def test_folds_line_up_by_feature_name_and_an_unseen_category_is_all_zeros():
    data = _data()
    folds0 = prepare_folds(data, 3, seed=0)
    va = folds0[0].val_rows[:2]  # a category only fold 0 holds out: every other fold trains on it
    data.raw_fit.loc[va, "color"] = "violet"
    folds = prepare_folds(data, 3, seed=0)
    names = folds[0].data.feature_names
    assert all(f.data.feature_names == names for f in folds) and "color_violet" in names
    j = names.index("color_violet")
    assert "color_violet" not in folds[0].data.preprocessor.get_feature_names_out()
    assert not folds[0].data.X_train[:, j].any() and not folds[0].data.X_val[:, j].any()
    assert folds[1].data.X_train[:, j].sum() == 2
    # the held-out violet rows get no color at all in fold 0, as fold 0's own pipeline encodes them
    rows = np.searchsorted(folds[0].val_rows, va)
    color = [i for i, n in enumerate(names) if n.startswith("color_")]
    assert not folds[0].data.X_val[np.ix_(rows, color)].any()
    for f in folds:  # the fold's transform of raw rows gives its tensors
        assert np.allclose(f.transform(data.raw_fit.iloc[f.val_rows]), f.data.X_val, atol=1e-6)
        assert np.allclose(f.transform(data.raw_test), f.data.X_test, atol=1e-6)


def test_out_of_fold_outputs_return_to_row_order():
    data = _data()
    folds = prepare_folds(data, 3, seed=0)
    outputs = [np.full((len(f.val_rows), 2), f.index, np.float32) for f in folds]
    oof = out_of_fold(folds, outputs)
    for f in folds:
        assert (oof[f.val_rows] == f.index).all()


def test_validation_auto_means_kfold_below_the_documented_row_count():
    assert use_kfold("auto", KFOLD_AUTO_MAX_ROWS - 1) and not use_kfold("auto", KFOLD_AUTO_MAX_ROWS)
    assert use_kfold("kfold", 10**6) and not use_kfold("holdout", 10)
    from automlp.spec import StudySpec

    assert f"fewer than {KFOLD_AUTO_MAX_ROWS} rows" in StudySpec.model_fields["validation"].description
