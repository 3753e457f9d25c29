"""preprocessing.json and its NumPy transform against the fitted scikit-learn ColumnTransformer, on columns of
every kind `automlp.data` treats differently: missing markers, leading spaces, rare categories grouped as
infrequent, an all-missing column, integer/float/bool columns forced categorical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from automlp.data import PreparedData, as_categories, make_preprocessor, prepare_data, read_data
from automlp.errors import ExportError
from automlp.export.load import Predictor
from automlp.export.preprocess import FeatureTransform
from automlp.export.write import preprocessing_state
from automlp.model import MLPConfig, build_mlp
from automlp.spec import DataSpec

CSV = """\
n_int,n_empty,n_float,c_text,c_int,c_float,c_bool,y
1,,0.5, red,1,1,True,a
2,,1.5, blue,2,2,False,b
?,,2.5,red ,3,,True,a
4,,,green,1,1,False,b
5,,4.5,?,2,2,True,a
6,,5.5, violet,3,1,False,b
7,,6.5,red,1,2,True,a
8,,7.5,blue,2,1,False,b
9,,8.5,NA,3,2,True,a
10,,9.5,grey,1,1,False,b
11,,1.0,red,2,2,True,a
12,,2.0,blue,3,1,False,b
"""


@pytest.fixture(params=["standard", "quantile", "robust_clip"])
def prepared(tmp_path: Path, request):
    path = tmp_path / "mixed.csv"
    path.write_text(CSV)
    spec = DataSpec(path=path, target="y", categorical=["c_int", "c_float", "c_bool"], max_categories=3,
                    test_size=0.25, val_size=0.25)
    data = prepare_data(spec, seed=0, numeric=request.param)
    transform = FeatureTransform(preprocessing_state(data, spec.na_values))
    net = build_mlp(MLPConfig(transform.n_features, 2, ()))
    return spec, data, transform, Predictor(tmp_path, {}, transform, net, torch.device("cpu"))


def _sklearn(data, X: pd.DataFrame) -> np.ndarray:
    return data.preprocessor.transform(as_categories(X, data.categorical_columns)).astype(np.float32)


def test_state_records_the_fitted_pipeline(prepared):
    spec, data, transform, _ = prepared
    s = transform.spec
    kinds = {c["name"]: (c["kind"], c["dtype"]) for c in s["columns"]}
    assert kinds == {"n_int": ("numeric", "float"), "n_empty": ("numeric", "float"),
                     "n_float": ("numeric", "float"), "c_text": ("categorical", "str"),
                     "c_int": ("categorical", "int"), "c_float": ("categorical", "float"),
                     "c_bool": ("categorical", "bool")}
    assert s["numeric"]["impute"][1] == 0.0  # all missing in training: sklearn imputes 0
    text = next(c for c in s["categorical"]["columns"] if c["name"] == "c_text")
    assert text["unknown"] == 2 and text["width"] == 3 and text["infrequent"]  # 2 frequent + the infrequent bucket
    assert s["categorical"]["missing_category"] == "__missing__"
    assert s["n_features"] == data.n_features == len(s["feature_names"])
    assert s["numeric"]["method"] == data.numeric_preprocessing
    # n_int and n_empty have missing values in the training rows (n_float's empty value went to another split)
    assert s["numeric"]["missing_indicators"] == data.missing_indicators == ["n_int", "n_empty"]
    assert data.feature_names[-2:] == ["missingindicator_n_int", "missingindicator_n_empty"]


def test_numpy_transform_equals_sklearn_on_typed_and_text_input(prepared, tmp_path):
    spec, data, transform, predictor = prepared
    X = read_data(spec).X
    expected = _sklearn(data, X)
    assert np.array_equal(transform(X), expected)  # the frame as pandas typed it for training
    as_text = pd.read_csv(spec.path, dtype=str, na_values=spec.na_values, skipinitialspace=True).drop(columns="y")
    assert np.array_equal(transform(as_text), expected)  # every value as text, as a CSV reader sees it
    assert np.array_equal(predictor.transform(spec.path, chunk_rows=5), expected)  # streamed in 3 chunks


def test_values_are_read_as_training_typed_them(prepared):
    """'2.0' in an integer column is category '2'; 2 in a float column (it had a missing value) is '2.0';
    'true' in a bool column is 'True'; an unseen text value goes to the infrequent bucket."""
    spec, data, transform, _ = prepared
    typed = read_data(spec).X.head(2)
    written = pd.DataFrame({"n_int": ["3", ""], "n_empty": ["", "7"], "n_float": ["1e0", None],
                            "c_text": ["  red  ", "ultraviolet"], "c_int": ["2.0", "9"], "c_float": ["2", None],
                            "c_bool": ["true", "FALSE"]})
    typed = pd.DataFrame({"n_int": [3.0, np.nan], "n_empty": [np.nan, 7.0], "n_float": [1.0, np.nan],
                          "c_text": ["red", "ultraviolet"], "c_int": [2, 9], "c_float": [2.0, np.nan],
                          "c_bool": [True, False]})
    assert np.array_equal(transform(written), _sklearn(data, typed))
    unseen = transform.unseen(transform.coerce(written))
    assert unseen == {"c_text": (1, "ultraviolet"), "c_int": (1, "9")}


def test_an_unparseable_number_names_the_column_and_row(prepared, tmp_path):
    spec, data, transform, predictor = prepared
    lines = CSV.splitlines()
    lines[6] = lines[6].replace("6,,5.5", "six,,5.5")
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ExportError) as e:
        predictor.transform(bad, chunk_rows=4)  # the bad row is in the second chunk
    assert str(e.value) == ("bad.csv: column 'n_int' must hold numbers (got 'six' at line 7); the model takes "
                            "numbers there: leave a value empty for missing")


numbers = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False, width=32))
words = st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d", "e", " f", "g "]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(numbers, numbers, words, words), min_size=2, max_size=30),
       new=st.lists(st.tuples(numbers, numbers, st.one_of(words, st.just("zz")), words), min_size=1, max_size=10),
       max_categories=st.integers(2, 5), method=st.sampled_from(["standard", "quantile", "robust_clip"]),
       indicate=st.sampled_from([[], ["x"], ["x", "z"]]))
def test_numpy_transform_equals_sklearn_on_random_frames(rows, new, max_categories, method, indicate):
    """Any fitted pipeline (missing values, rare and unseen categories, constant columns, each numeric scaling,
    missing indicators) is reproduced."""
    cols = ["x", "z", "u", "v"]

    def frame(values):  # missing values as a CSV reader gives them: NaN in every column
        df = pd.DataFrame(values, columns=cols).astype({"x": float, "z": float, "u": object, "v": object})
        return as_categories(df.where(df.notna(), np.nan), ["u", "v"])
    train, test = frame(rows), frame(new)
    pre = make_preprocessor(["x", "z"], ["u", "v"], max_categories, method, len(train), indicate)
    X_train = pre.fit_transform(train).astype(np.float32)
    data = PreparedData(X_train=X_train, y_train=np.zeros(len(train)), X_val=X_train, y_val=np.zeros(len(train)),
                        X_test=X_train, y_test=np.zeros(len(train)), task="regression", classes=[],
                        input_columns=cols, numeric_columns=["x", "z"], categorical_columns=["u", "v"],
                        feature_names=list(pre.get_feature_names_out()), preprocessor=pre, target_name="y",
                        input_dtypes={"x": "float64", "z": "float64", "u": "object", "v": "object"},
                        numeric_preprocessing=method, missing_indicators=indicate)
    transform = FeatureTransform(preprocessing_state(data, ["?"]))
    expected = pre.transform(test).astype(np.float32)
    assert np.allclose(transform(test), expected, rtol=1e-6, atol=1e-6)
