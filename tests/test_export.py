"""Model folders end to end: a classification (adult subset) and a regression (auto_mpg) study run with the
installed `automlp`, then their exported models checked against the study's own scoring, against the fitted
scikit-learn pipeline on raw CSV rows, and against a torch-only reader that never imports automlp."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import automlp
from automlp.data import as_categories, prepare_data, read_data
from automlp.errors import ExportError
from automlp.export import AutomlpClassifier, AutomlpRegressor
from automlp.metrics import score_all
from automlp.model import MLPConfig, build_mlp
from automlp.spec import load_spec
from typer.testing import CliRunner

from automlp.cli import app
from conftest import AUTOMLP, EXAMPLE_DATA, REPO, TEST_DATA, run_cli, write_spec

SERVE = REPO / "examples" / "serve_torchscript.py"
FILES = {"metadata.json", "model.pt", "model.torchscript.pt", "preprocessing.json"}


def invoke(*args):
    """The CLI in-process (Typer's runner): same parsing and errors as the console script, no start-up cost."""
    return CliRunner().invoke(app, [str(a) for a in args])


def _spec(name: str, data: dict, space: dict, out: Path, metric: str) -> dict:
    # the plain MLP on standardized inputs (tests/test_blocks_search.py exports every block)
    plain = {"numeric_preprocessing": "standard", "embedding": "none", "arch": "mlp", "feature_scaling": False}
    return {"data": data, "space": {"depth": 1, "batch_size": 32, **plain, **space},
            "training": {"threads": 1, "early_stopping": {"patience": 5}},
            "study": {"name": name, "n_trials": 2, "seed": 1, "metric": metric, "portfolio": False,
                      "final": "best"},  # the single network's folder (tests/test_export_ensemble.py: ensembles)
            "output": {"dir": str(out)}}


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, Path]:
    """Two small studies, searched with the CLI (their best models exported at the end)."""
    root = tmp_path_factory.mktemp("export")
    with gzip.open(TEST_DATA / "adult.csv.gz", "rt") as f:
        (root / "adult.csv").write_text("".join(f.readline() for _ in range(1501)))
    shutil.copy(EXAMPLE_DATA / "auto_mpg.csv", root / "auto_mpg.csv")
    specs = {
        # max_categories 8 groups rare countries/occupations into OneHotEncoder's infrequent bucket
        "adult": _spec("adult", {"path": "adult.csv", "target": "income", "max_categories": 8},
                       {"width": [8, 16], "lr": 0.01, "max_epochs": 6}, root / "studies", "accuracy"),
        "mpg": _spec("mpg", {"path": "auto_mpg.csv", "target": "mpg", "drop": ["car_name"],
                             "categorical": ["origin"], "task": "regression"},
                     {"width": [16, 32], "lr": 0.01, "max_epochs": 25}, root / "studies", "r2"),
    }
    paths = {name: write_spec(root / f"{name}.yaml", spec) for name, spec in specs.items()}
    # both at once (one thread each): the studies are independent
    procs = {name: subprocess.Popen([AUTOMLP, "search", str(path), "-q", "--no-report"], cwd=root, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True) for name, path in paths.items()}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        assert "wrote the best model" in stdout
    return paths


def _reference(spec_path: Path):
    """The study's data (sklearn pipeline) and the exported weights in a plain `build_mlp` network."""
    spec = load_spec(spec_path)
    data = prepare_data(spec.data, spec.study.seed)
    model_dir = spec.study_dir / "model"
    meta = json.loads((model_dir / "metadata.json").read_text())
    a = meta["architecture"]
    net = build_mlp(MLPConfig(a["n_inputs"], a["n_outputs"], tuple(a["widths"]), a["activation"], a["dropout"]))
    net.load_state_dict(torch.load(model_dir / "model.pt", weights_only=True))
    net.eval()

    def outputs(X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.as_tensor(X, dtype=torch.float32)).numpy()
    return spec, data, model_dir, meta, outputs


def _decode(task: str, out: np.ndarray, data) -> np.ndarray:
    if task == "classification":
        return np.asarray(data.classes)[out.argmax(axis=1)]
    return out[:, 0].astype(np.float64) * data.target_std + data.target_mean


def test_search_writes_a_self_describing_model_folder(studies):
    spec = load_spec(studies["adult"])
    model_dir = spec.study_dir / "model"
    meta = json.loads((model_dir / "metadata.json").read_text())
    summary = json.loads((spec.study_dir / "summary.json").read_text())
    onnx = importlib.util.find_spec("onnx") is not None  # the optional extra (the test extra installs it)
    files = FILES | ({"model.onnx"} if onnx else set())
    assert {p.name for p in model_dir.iterdir()} == files
    assert set(meta["files"]) == files - {"metadata.json"}
    for name, digest in meta["files"].items():
        assert hashlib.sha256((model_dir / name).read_bytes()).hexdigest() == digest
    assert meta["versions"]["torch"] == torch.__version__ and meta["versions"]["automlp"] == automlp.__version__
    assert meta["study"]["name"] == "adult" and meta["trial"]["number"] == summary["best"]["trial"]
    assert meta["trial"]["params"] == summary["best"]["params"]
    assert meta["metrics"] == summary["best"]["scores"]
    assert meta["spec"]["data"]["target"] == "income" and meta["refit"] is None
    schema = {c["name"]: (c["kind"], c["dtype"]) for c in meta["input_schema"]}
    assert schema["age"] == ("numeric", "int") and schema["workclass"] == ("categorical", "str")
    assert meta["target"]["classes"] == ["<=50K", ">50K"]


@pytest.mark.parametrize("name", ["adult", "mpg"])
def test_exported_model_predicts_what_the_study_scored(studies, name):
    spec, data, model_dir, meta, reference = _reference(studies[name])
    # model.pt is the model the study scored: same test metrics from the sklearn pipeline's features
    ref_test = reference(data.X_test)
    scores = score_all(data.task, data.y_test, ref_test, data.target_mean, data.target_std)
    assert scores == pytest.approx(meta["metrics"]["test"], rel=1e-6)
    # the loaded predictor, from raw test rows through preprocessing.json, gives the same outputs
    p = automlp.load(model_dir)
    assert np.allclose(p.outputs(data.raw_test), ref_test, atol=1e-5)
    assert np.allclose(p.transform(data.raw_test), data.X_test, atol=1e-6)
    predicted = p.predict(data.raw_test)
    if data.task == "classification":
        assert list(predicted) == list(_decode(data.task, ref_test, data))
        assert np.allclose(p.predict_proba(data.raw_test).sum(axis=1), 1.0)
    else:
        assert np.allclose(predicted, _decode(data.task, ref_test, data), rtol=1e-6)


@pytest.mark.parametrize("name", ["adult", "mpg"])
def test_predict_cli_on_the_raw_csv_matches_the_sklearn_pipeline(studies, name, tmp_path):
    """Every row of the original file (missing values as '?', leading spaces, integer categories) through
    `automlp predict` equals the fitted ColumnTransformer + network."""
    spec, data, model_dir, meta, reference = _reference(studies[name])
    raw = read_data(spec.data)
    expected = reference(data.preprocessor.transform(as_categories(raw.X, data.categorical_columns)))
    r = run_cli("predict", model_dir, spec.data.path, "-o", tmp_path / "out.csv")
    assert r.returncode == 0, r.stderr
    extra = {"adult": "income", "mpg": "mpg, car_name"}[name]
    assert f"note: ignored {len(extra.split(','))} column(s) the model does not use: {extra}" in r.stderr
    out = pd.read_csv(tmp_path / "out.csv")
    assert list(out["row"]) == list(range(1, len(raw.X) + 1))
    if data.task == "classification":
        assert list(out.columns) == ["row", "prediction", "proba_<=50K", "proba_>50K"]
        assert np.allclose(out.iloc[:, 2:].to_numpy(), torch.softmax(torch.tensor(expected), 1).numpy(),
                           atol=1e-6)
    else:
        assert np.allclose(out["prediction"], _decode(data.task, expected, data), rtol=1e-6)


@pytest.mark.parametrize("name", ["adult", "mpg"])
def test_torchscript_and_preprocessing_json_serve_without_automlp(studies, name):
    spec = load_spec(studies[name])
    model_dir = spec.study_dir / "model"
    # automlp is made unimportable in the child: the example may use torch, numpy and the stdlib only
    code = ("import runpy, sys; sys.modules['automlp'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", code, str(SERVE), str(model_dir), str(spec.data.path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    standalone = pd.read_csv(io.StringIO(r.stdout))
    buf = io.StringIO()
    automlp.load(model_dir).predict_csv(spec.data.path, buf)
    ours = pd.read_csv(io.StringIO(buf.getvalue()))
    assert list(standalone.columns) == list(ours.columns)
    assert (standalone["prediction"].astype(str) == ours["prediction"].astype(str)).all() \
        if name == "adult" else np.allclose(standalone["prediction"], ours["prediction"], rtol=1e-6)
    assert np.allclose(standalone.iloc[:, 1 if name == "mpg" else 2:].to_numpy(np.float64),
                       ours.iloc[:, 1 if name == "mpg" else 2:].to_numpy(np.float64), rtol=1e-6, atol=1e-7)


def test_onnx_file_computes_the_same_outputs(studies):
    import onnx  # a test dependency (pyproject: test extra)
    from onnx.reference import ReferenceEvaluator

    spec, data, model_dir, meta, reference = _reference(studies["adult"])
    model = onnx.load(model_dir / "model.onnx")
    onnx.checker.check_model(model)
    (out,) = ReferenceEvaluator(model).run(None, {"features": data.X_test})
    assert np.allclose(out, reference(data.X_test), atol=1e-5)


def test_a_tampered_or_missing_file_is_refused(studies, tmp_path):
    src = load_spec(studies["mpg"]).study_dir / "model"
    tampered = shutil.copytree(src, tmp_path / "tampered")
    weights = bytearray((tampered / "model.torchscript.pt").read_bytes())
    weights[-40] ^= 0xFF
    (tampered / "model.torchscript.pt").write_bytes(bytes(weights))
    with pytest.raises(ExportError, match=r"model.torchscript.pt does not match its SHA-256 in metadata.json"):
        automlp.load(tampered)
    r = invoke("predict", tampered, EXAMPLE_DATA / "auto_mpg.csv")
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.startswith(f"error: {tampered}: model.torchscript.pt does not match its SHA-256")
    assert "refusing to load it. Re-export the model" in r.stderr and "Traceback" not in r.stderr

    missing = shutil.copytree(src, tmp_path / "missing")
    (missing / "preprocessing.json").unlink()
    with pytest.raises(ExportError) as e:
        automlp.load(missing)
    assert str(e.value) == f"{missing}: preprocessing.json is missing (metadata.json lists it); re-export the model"
    with pytest.raises(ExportError, match="not an automlp model folder"):
        automlp.load(tmp_path)


def test_predict_cli_input_errors_name_the_column_and_row(studies, tmp_path):
    model_dir = load_spec(studies["mpg"]).study_dir / "model"
    rows = pd.read_csv(EXAMPLE_DATA / "auto_mpg.csv", dtype=str).head(5)
    rows.drop(columns=["weight"]).to_csv(tmp_path / "nocol.csv", index=False)
    r = invoke("predict", model_dir, tmp_path / "nocol.csv")
    assert r.exit_code == 2
    assert r.stderr == ("error: nocol.csv: column 'weight' is missing; the model needs the columns: cylinders, "
                        "displacement, horsepower, weight, acceleration, model_year, origin\n")
    bad = rows.copy()
    bad.loc[2, "horsepower"] = "fast"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    r = invoke("predict", model_dir, tmp_path / "bad.csv", "-o", tmp_path / "bad_out.csv")
    assert r.exit_code == 2 and not (tmp_path / "bad_out.csv").exists()
    assert r.stderr == ("error: bad.csv: column 'horsepower' must hold numbers (got 'fast' at line 4); the model "
                        "takes numbers there: leave a value empty for missing\n")


def test_unseen_categories_go_where_the_training_pipeline_puts_them(studies, tmp_path):
    """origin (auto_mpg) has no infrequent bucket: an unseen value is all zeros; occupation (adult, 8
    categories at most) has one: an unseen value counts as infrequent. Both as sklearn's OneHotEncoder."""
    for name, column, value in (("mpg", "origin", "4"), ("adult", "occupation", "Astronaut")):
        spec, data, model_dir, meta, reference = _reference(studies[name])
        frame = pd.read_csv(spec.data.path, dtype=str, skipinitialspace=True).head(3)
        frame.loc[1, column] = value
        frame.to_csv(tmp_path / "unseen.csv", index=False)
        r = invoke("predict", model_dir, tmp_path / "unseen.csv")
        assert r.exit_code == 0, r.stderr
        how = "its one-hot columns left at 0" if name == "mpg" else "counted in the column's infrequent category"
        assert (f"note: column '{column}': 1 row(s) with a category unseen in training (got '{value}'); {how}, "
                "as the training pipeline does\n") in r.stderr
        raw = read_data(spec.data.model_copy(update={"path": tmp_path / "unseen.csv"})).X
        expected = reference(data.preprocessor.transform(as_categories(raw, data.categorical_columns)))
        out = pd.read_csv(io.StringIO(r.stdout))
        got = out["prediction"] if name == "mpg" else out["proba_>50K"]
        want = _decode("regression", expected, data) if name == "mpg" else \
            torch.softmax(torch.tensor(expected), 1).numpy()[:, 1]
        assert np.allclose(got, want, rtol=1e-6)


def test_sklearn_estimators_wrap_a_model_folder(studies):
    from sklearn.base import clone

    spec, data, model_dir, meta, _ = _reference(studies["adult"])
    clf = AutomlpClassifier(model_dir)  # no fit needed
    assert list(clf.classes_) == ["<=50K", ">50K"]
    y_test = np.asarray(data.classes)[data.y_test]
    assert clf.score(data.raw_test, y_test) == pytest.approx(meta["metrics"]["test"]["accuracy"])
    assert clf.predict_proba(data.raw_test).shape == (len(y_test), 2)
    assert list(clone(clf).fit().predict(data.raw_test)) == list(clf.predict(data.raw_test))
    assert automlp.load(model_dir).as_sklearn().get_params()["model_dir"] == str(model_dir)
    with pytest.raises(ExportError, match="holds a classification model; use AutomlpClassifier"):
        AutomlpRegressor(model_dir).predict(data.raw_test)


@pytest.mark.slow
def test_export_command_replays_a_trial_and_refits(studies, tmp_path):
    spec_path = studies["mpg"]
    study_dir = load_spec(spec_path).study_dir  # the folder form: the spec comes from model/metadata.json
    r = run_cli("export", study_dir, "--trial", "0", "--refit", "-o", tmp_path / "refit", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "note:" not in r.stderr  # the replay matched the study's validation score
    meta = json.loads((tmp_path / "refit" / "metadata.json").read_text())
    assert meta["trial"]["number"] == 0 and meta["trial"]["replayed"]
    assert meta["trial"]["replayed_val_score"] == pytest.approx(meta["trial"]["value"], rel=1e-6)
    assert meta["refit"]["epochs"] == meta["trial"]["best_epoch"]
    assert meta["refit"]["rows"] == meta["study"]["rows"]["train"] + meta["study"]["rows"]["val"]
    assert meta["metrics"]["test"]["r2"] > 0.5
    # the preprocessing was refitted on train + validation: its means are those rows', not the training split's
    data = prepare_data(load_spec(spec_path).data, load_spec(spec_path).study.seed)
    numeric = json.loads((tmp_path / "refit" / "preprocessing.json").read_text())["numeric"]
    rows = data.raw_fit[numeric["columns"]].astype(float)
    assert numeric["impute"] == pytest.approx(rows.median().tolist())
    assert numeric["mean"] == pytest.approx(rows.fillna(rows.median()).mean().tolist())
    searched = json.loads((study_dir / "model" / "preprocessing.json").read_text())["numeric"]
    assert searched["mean"] != pytest.approx(numeric["mean"])
    assert f"trial #0 (refit on train + validation for {meta['refit']['epochs']} epochs)" in r.stdout
    p = automlp.load(tmp_path / "refit")
    assert p.predict(pd.read_csv(EXAMPLE_DATA / "auto_mpg.csv", na_values=["?"]).head(3)).shape == (3,)

    r = invoke("export", spec_path, "--trial", "99")
    assert r.exit_code == 2
    assert r.stderr.startswith("error: --trial: trial 99 of study 'mpg' does not exist; only COMPLETE trials")


def test_predict_keeps_an_id_column_and_reads_parquet(studies, tmp_path):
    model_dir = load_spec(studies["mpg"]).study_dir / "model"
    frame = pd.read_csv(EXAMPLE_DATA / "auto_mpg.csv", na_values=["?"]).head(20)
    frame.to_csv(tmp_path / "cars.csv", index=False)
    r = invoke("predict", model_dir, tmp_path / "cars.csv", "--id-column", "car_name", "--chunk-rows", "7")
    assert r.exit_code == 0, r.stderr
    out = pd.read_csv(io.StringIO(r.stdout))
    assert list(out.columns) == ["car_name", "prediction"] and list(out["car_name"]) == list(frame["car_name"])
    r = invoke("predict", model_dir, tmp_path / "cars.csv", "--id-column", "vin")
    assert r.exit_code == 2 and r.stderr.startswith("error: --id-column: column 'vin' not in cars.csv; columns are:")
    frame.to_parquet(tmp_path / "cars.parquet")
    p = automlp.load(model_dir)
    assert np.allclose(p.predict(tmp_path / "cars.parquet"), out["prediction"], rtol=1e-6)
    assert np.allclose(p.predict(frame), out["prediction"], rtol=1e-6)


def test_predictor_messages_name_the_argument_and_the_row(studies):
    p = automlp.load(load_spec(studies["mpg"]).study_dir / "model")
    with pytest.raises(ExportError) as e:
        p.predict(42)
    assert str(e.value) == "X: must be a pandas DataFrame or the path of a CSV/Parquet file (got int)"
    frame = pd.read_csv(EXAMPLE_DATA / "auto_mpg.csv", na_values=["?"]).head(5).astype({"horsepower": object})
    frame.loc[[1, 3], "horsepower"] = "fast"
    with pytest.raises(ExportError) as e:
        p.predict(frame)  # a DataFrame has no lines: its rows are counted from 1
    assert str(e.value) == ("X: column 'horsepower' must hold numbers (got 'fast' at row 2, and 1 more row like "
                            "it); the model takes numbers there: leave a value empty for missing")
