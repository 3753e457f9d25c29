"""Reading and preparing real data: missing markers, text categories, Keras .npz, splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from automlp.data import prepare_data
from automlp.errors import DataError
from automlp.spec import DataSpec

from conftest import EXAMPLE_DATA, TEST_DATA


def test_auto_mpg_question_marks_are_missing_values():
    data = prepare_data(DataSpec(path=EXAMPLE_DATA / "auto_mpg.csv", target="mpg", drop=["car_name"],
                                 categorical=["origin"], split_seed=3), seed=0)
    assert data.task == "regression"
    assert data.numeric_columns == ["cylinders", "displacement", "horsepower", "weight", "acceleration",
                                    "model_year"]
    # horsepower's '?' rows: imputed, plus a 0/1 column saying which were missing
    assert data.feature_names[-4:] == ["origin_1", "origin_2", "origin_3", "missingindicator_horsepower"]
    assert not np.isnan(data.X_train).any()
    assert sum(data.sizes().values()) == 398


def test_adult_leading_spaces_and_question_marks():
    data = prepare_data(DataSpec(path=TEST_DATA / "adult.csv.gz", target="income"), seed=0)
    assert data.task == "classification" and data.classes == ["<=50K", ">50K"]
    assert "workclass" in data.categorical_columns and "age" in data.numeric_columns
    # ' ?' is read as missing (its own category), not as a category named '?'
    assert "workclass___missing__" in data.feature_names and "workclass_?" not in data.feature_names
    assert "workclass_State-gov" in data.feature_names  # the leading space is gone
    # stratified: both splits keep the 25% positive rate (764 of 3053)
    assert abs(data.y_train.mean() - 764 / 3053) < 0.002 and abs(data.y_test.mean() - 764 / 3053) < 0.002


def test_california_empty_values_and_a_text_column():
    data = prepare_data(DataSpec(path=TEST_DATA / "california_housing.csv.gz", target="median_house_value"), seed=0)
    assert data.task == "regression" and sum(data.sizes().values()) == 2064
    assert data.categorical_columns == ["ocean_proximity"]
    # one-hot of the text column, then the missing-value indicator of total_bedrooms (data.missing_indicators)
    assert data.feature_names[-5:] == ["ocean_proximity_<1H OCEAN", "ocean_proximity_INLAND",
                                       "ocean_proximity_NEAR BAY", "ocean_proximity_NEAR OCEAN",
                                       data.feature_names[-1]]
    assert "total_bedrooms" in data.feature_names[-1] and set(np.unique(data.X_train[:, -1])) <= {0.0, 1.0}
    assert not np.isnan(data.X_train).any()  # the 28 empty total_bedrooms are imputed with the median
    assert abs(data.y_train.mean()) < 1e-6 and abs(data.y_train.std() - 1) < 1e-3  # the target is standardized


def test_keras_npz_layout_uses_the_given_test_split(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny_mnist.npz"
    np.savez(path, x_train=rng.integers(0, 255, (200, 4, 4), dtype=np.uint8), y_train=np.arange(200) % 4,
             x_test=rng.integers(0, 255, (50, 4, 4), dtype=np.uint8), y_test=np.arange(50) % 4)
    data = prepare_data(DataSpec(path=path, val_size=0.25), seed=0)
    assert data.sizes() == {"train": 150, "val": 50, "test": 50}
    assert data.n_features == 16 and data.task == "classification"


def test_missing_target_column_lists_columns(tmp_path):
    path = tmp_path / "data.csv"
    pd.DataFrame({"a": [1, 2], "b": [3, 4], "y": [0, 1]}).to_csv(path, index=False)
    with pytest.raises(DataError) as e:
        prepare_data(DataSpec(path=path, target="label"), seed=0)
    assert str(e.value) == "data.target: column 'label' not in data.csv; columns are: a, b, y"


def test_refit_preprocessing_learns_only_from_its_fit_rows(tmp_path):
    """k-fold rescoring and export --refit refit the preprocessing: rows held out of a fit must not shape it."""
    from automlp.data import refit_preprocessing

    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({"x": rng.normal(size=n), "c": rng.choice(["a", "b"], size=n),
                          "y": rng.choice(["p", "q"], size=n)})
    frame.loc[::7, "x"] = np.nan
    frame.to_csv(tmp_path / "d.csv", index=False)
    data = prepare_data(DataSpec(path=tmp_path / "d.csv", target="y", split_seed=1), seed=0)
    n_fit = len(data.y_train) + len(data.y_val)
    raw = data.raw_fit.copy()
    assert len(raw) == n_fit
    held = np.arange(n_fit - 40, n_fit)  # the last 40 rows: shift them far away and give them a new category
    data.raw_fit.loc[held, "x"] = 1e6
    data.raw_fit.loc[held, "c"] = "only_in_held_out"
    part = refit_preprocessing(data, np.arange(n_fit - 40), held)
    scaler = part.preprocessor.named_transformers_["num"].named_steps["scale"]
    fit_x = raw["x"].iloc[: n_fit - 40]
    assert scaler.mean_[0] == pytest.approx(fit_x.fillna(fit_x.median()).mean())
    assert "c_only_in_held_out" not in part.feature_names
    assert part.X_train.shape == (n_fit - 40, part.n_features) and part.X_val.shape == (40, part.n_features)
    assert (part.X_val[:, 0] > 1000).all()  # held-out rows are transformed, not fitted
    assert list(part.y_val) == list(np.concatenate([data.y_train, data.y_val])[held])
    assert part.X_test.shape == (len(data.y_test), part.n_features)

    whole = refit_preprocessing(data, np.arange(n_fit), None)  # export --refit: train + validation
    assert "c_only_in_held_out" in whole.feature_names and whole.n_features == data.n_features + 1
    assert whole.X_val is whole.X_train


def test_the_test_data_are_the_files_their_readme_describes():
    """tests/data holds small real subsets (no test reads the benchmarks' data folder); each file's SHA-256 is
    the one its README states, so a rebuild with tests/data/make_subsets.py is checkable."""
    import hashlib
    import re

    readme = (TEST_DATA / "README.md").read_text()
    stated = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, re.M))
    files = sorted(p.name for p in TEST_DATA.iterdir() if p.suffix == ".gz")
    assert files == sorted(stated) == ["adult.csv.gz", "california_housing.csv.gz"]
    for name in files:
        assert hashlib.sha256((TEST_DATA / name).read_bytes()).hexdigest() == stated[name], name
    # spelled apart so this file does not match itself: the path as text, and as a pathlib expression
    needles = ("/".join(("shared", "data")), ' / '.join(('"shared"', '"data"')))
    readers = [p.name for p in TEST_DATA.parent.rglob("*.py")
               if p.name != "make_subsets.py" and any(n in p.read_text() for n in needles)]
    assert readers == []
